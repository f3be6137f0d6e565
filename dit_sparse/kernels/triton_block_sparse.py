"""Block-sparse flash-attention forward in Triton.

FlashAttention (Dao et al., 2022, https://arxiv.org/abs/2205.14135) restricted to the kv blocks that a
:class:`~dit_sparse.BlockSparseMask` keeps, as in the block-sparse kernels of Sparse-vDiT, radial
attention and DraftAttention.

Layout: q, k, v are ``(B, H, N, D)`` with any strides; the mask's compressed table gives, for every
(batch or broadcast batch, head, q block), the number of kept kv blocks and their ids (ascending). One program
owns ``BLOCK_M`` query rows of one (batch, head) and walks that row's kept kv blocks as **one flattened,
software-pipelined loop over ``BLOCK_N``-token tiles** (tile ``t`` is tile ``t % (MASK_BK / BLOCK_N)`` of
kept block ``t // (MASK_BK / BLOCK_N)``), so shared memory grows with ``BLOCK_N`` and ``num_stages``, never with
the mask block. The online softmax runs in fp32 in log2 units with the scale folded into one FMA per score
(``exp2(qk * scale * log2(e) - m)``, as in Triton's fused-attention tutorial); only the sequence's partial last
kv block (if kept, it is the last id) is masked, in a short tail loop after the main one. The head dim is a
compile-time constant; batch and head offsets are int64 (B x H x N x D may pass 2^31 elements).

Configs: the autotuner tries only the tile configs that :mod:`dit_sparse.kernels.gpu_model` says fit the
GPU's shared memory and registers; ``benchmarks/compile_check.py`` compiles every one of them for sm_80 and
sm_90 with ptxas and the test suite checks a subset (no GPU needed).

Limits: fp16 and bf16 on a GPU; fp32 inputs on a GPU run with bf16 operands (fp32 softmax, accumulation and
output; bf16's tolerance) since fp32 dots compile to spilling FMA code; under ``TRITON_INTERPRET=1`` on CPU
tensors fp32 (IEEE dots) and fp16 (bf16 is silently wrong in the interpreter, so it is refused there). Head
dims up to 256 (padded to a power of two inside the kernel, so 64, 128 and also 80 or 96 work); any N; empty
rows give zeros and LSE ``-inf``. Forward only.

Quantized variant (``QUANT``, launched by :func:`triton_quantized_block_sparse_attention`): Q and K arrive
as int8 with one fp32 scale per mask block (see :mod:`dit_sparse.kernels.quant`); ``QK^T`` is an int8 dot
accumulated in int32 (exact), turned into scores by the q block's scale (softmax scale and ``log2(e)``
folded in once per program) times the kv block's scale. The softmax and ``P V`` are those of the
unquantized kernel, in V's dtype. The interpreter runs the int8 dot natively (Triton 3.x), so the tests
exercise the same code path as the GPU. An int8 dot needs a reduction dim of at least 32, so head dims
are padded to at least 32 there.
"""

from __future__ import annotations

import functools
import os

import torch

from ..mask import BlockSparseMask
from .gpu_model import (
    all_tile_configs,
    attention_configs,
    autotune_candidates,
    padded_head_dim,
    tma_attention_configs,
)
from .quant import lse_offset, quantize_qk_triton

LOG2E = 1.4426950408889634


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why the Triton backend cannot run on ``device`` (None if it can)."""
    device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    return _triton_unavailable_reason(device.type, device.index, interpreting())


@functools.cache
def _triton_unavailable_reason(device_type: str, index: int | None, interpret: bool) -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (it ships for Linux; `pip install triton`)"
    if device_type == "cuda":
        device = torch.device("cuda", index)
        if not torch.cuda.is_available():
            return "no CUDA device is visible to torch"
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return f"needs a GPU of compute capability >= 8.0, this one is {major}.{minor}"
        return None
    if device_type == "cpu":
        if interpret:
            return None
        return "triton kernels need a CUDA GPU (on a CPU only under TRITON_INTERPRET=1, for testing)"
    return f"triton is not wired up for device type {device_type!r}"


def triton_unsupported_reason(q: torch.Tensor, mask: BlockSparseMask, return_lse: bool) -> str | None:
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"triton runs fp16, bf16 and fp32, not {q.dtype}"
    if q.shape[-1] > 256:
        return f"triton supports head dims up to 256, got {q.shape[-1]}"
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        return "bf16 is silently wrong under the Triton interpreter; use fp16 or fp32 on a CPU"
    return None


@functools.cache
def _kernels():
    """(plain kernel, autotuned kernel), built on first use so that importing dit_sparse never imports triton."""
    from .triton_jit import _block_sparse_fwd_kernel

    def configs_for(arch, kwargs, named_args):
        return attention_configs(arch, kwargs["MASK_BQ"], kwargs["MASK_BK"], kwargs["HEAD_DIM"],
                                 named_args["V"].element_size(), quant=kwargs["QUANT"])  # fmt: skip

    key = ["N_Q", "N_K", "HEAD_DIM", "MASK_BQ", "MASK_BK", "EVEN_N", "OUTPUT_LSE", "IEEE_DOT", "QUANT"]
    return _block_sparse_fwd_kernel, autotuned(_block_sparse_fwd_kernel, key, configs_for)


def autotuned(kernel, key: list[str], configs_for):
    """``kernel`` autotuned over the candidates of the per-architecture model (:mod:`.gpu_model`).

    ``configs_for(arch, kwargs, named_args)`` gives the :class:`~dit_sparse.kernels.gpu_model.TileConfig` tiles
    the model keeps for a launch (``arch`` of the device of the ``Q`` argument); the autotuner benchmarks at most
    ``AUTOTUNE_MAX_CONFIGS`` of them, so no config that spills or cannot launch is ever compiled.
    """
    import triton

    def prune(configs, named_args, **kwargs):
        arch = device_arch(named_args["Q"].device)
        return triton_configs(autotune_candidates(configs_for(arch, kwargs, named_args)))

    return triton.autotune(
        configs=triton_configs(all_tile_configs()), key=key, prune_configs_by={"early_config_prune": prune}
    )(kernel)


def launch_tiled(kernels, n_rows: int, programs: int, args: tuple, mask_bq: int, mask_bk: int, device, **common):
    """Run ``(plain, autotuned)`` over ``cdiv(n_rows, BLOCK_M) x programs``: on a GPU the autotuned kernel, under
    the interpreter (CPU tensors) the plain one with one fixed tile (the interpreter is slow; no autotuning)."""
    plain, tuned = kernels
    if device.type == "cpu":
        block_m, block_n = min(64, mask_bq), min(32, mask_bk)
        plain[(_cdiv(n_rows, block_m), programs)](*args, BLOCK_M=block_m, BLOCK_N=block_n, **common)
    else:
        with torch.cuda.device(device):
            tuned[lambda meta: (_cdiv(n_rows, meta["BLOCK_M"]), programs)](*args, **common)


def triton_configs(tile_configs) -> list:
    """``triton.Config`` objects for :class:`~dit_sparse.kernels.gpu_model.TileConfig` tiles."""
    import triton

    return [
        triton.Config({"BLOCK_M": c.block_m, "BLOCK_N": c.block_n}, num_warps=c.num_warps, num_stages=c.num_stages)
        for c in tile_configs
    ]


@functools.cache
def device_arch(device: torch.device) -> int:
    """Compute capability of a CUDA device as one number: 90 for 9.0 (H100), 80 for 8.0 (A100)."""
    major, minor = torch.cuda.get_device_capability(device)
    return major * 10 + minor


def _launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_num: torch.Tensor,
    kv_idx: torch.Tensor,
    scale: float,
    mask_bq: int,
    mask_bk: int,
    return_lse: bool,
    q_scale: torch.Tensor | None = None,
    k_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, N_Q, D = q.shape  # (B, H, N, D)
    N_K = k.shape[2]
    quant = q_scale is not None
    if quant:
        _check_quantized(q, k, q_scale, k_scale, mask_bq, mask_bk)
    out_dtype = v.dtype
    if q.device.type == "cuda" and v.dtype == torch.float32:
        # fp32 dots on a GPU compile to plain FMAs that spill; fp32 inputs run with bf16 operands instead
        # (fp32 softmax and accumulation, fp32 output): the documented tolerance is bf16's.
        q, k = (q, k) if quant else (q.to(torch.bfloat16), k.to(torch.bfloat16))
        v = v.to(torch.bfloat16)
    out = torch.empty_like(q, dtype=v.dtype)
    lse = torch.empty((B, H, N_Q) if return_lse else (0,), device=q.device, dtype=torch.float32)
    num_strides, idx_strides = table_strides(kv_num, 3), table_strides(kv_idx, 3)
    # Without quantization the scale pointers are never read; any tensor will do.
    q_scale = q_scale if quant else lse
    k_scale = k_scale if quant else lse
    scale_strides = (*q_scale.stride()[:2], *k_scale.stride()[:2]) if quant else (0, 0, 0, 0)
    args = (
        q, k, v, out, lse if return_lse else out, kv_num, kv_idx, q_scale, k_scale,
        scale * LOG2E,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        *num_strides, *idx_strides, *scale_strides,
        H, N_Q, N_K,
    )  # fmt: skip
    common = dict(
        HEAD_DIM=D, MASK_BQ=mask_bq, MASK_BK=mask_bk, BLOCK_D=padded_head_dim(D, quant), EVEN_N=N_K % mask_bk == 0,
        OUTPUT_LSE=return_lse, IEEE_DOT=v.dtype == torch.float32, QUANT=quant,
    )  # fmt: skip
    launch_tiled(_kernels(), N_Q, B * H, args, mask_bq, mask_bk, q.device, **common)
    return out.to(out_dtype), lse


def table_strides(table: torch.Tensor, count: int, batch_dim: int = 0) -> tuple[int, ...]:
    """The first ``count`` strides of a block table as a kernel reads it: a broadcast mask (batch 1 in
    ``batch_dim``) is read with batch stride 0 by every sample."""
    strides = list(table.stride()[:count])
    if table.shape[batch_dim] == 1:
        strides[batch_dim] = 0
    return tuple(strides)


def _check_quantized(
    q: torch.Tensor,
    k: torch.Tensor,
    q_scale: torch.Tensor | None,
    k_scale: torch.Tensor | None,
    mask_bq: int,
    mask_bk: int,
) -> None:
    """The quantized kernel reads int8 q/k and contiguous fp32 scales, one per (batch, head, mask block)."""
    if q.dtype != torch.int8 or k.dtype != torch.int8:
        raise ValueError(f"quantized attention needs int8 q and k, got {q.dtype} and {k.dtype}")
    B, H, N_Q, _ = q.shape
    for name, scales, n, block in (("q_scale", q_scale, N_Q, mask_bq), ("k_scale", k_scale, k.shape[2], mask_bk)):
        expected = (B, H, _cdiv(n, block))
        if scales is None or scales.dtype != torch.float32 or tuple(scales.shape) != expected:
            got = None if scales is None else f"{scales.dtype} {tuple(scales.shape)}"
            raise ValueError(f"{name} must be float32 of shape {expected} (one per mask block), got {got}")
        if scales.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in its last dim, got strides {scales.stride()}")


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


@torch.library.custom_op("dit_sparse::block_sparse_attention_fwd", mutates_args=())
def _block_sparse_attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_num: torch.Tensor,
    kv_idx: torch.Tensor,
    scale: float,
    mask_bq: int,
    mask_bk: int,
    return_lse: bool,
    q_scale: torch.Tensor | None = None,
    k_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch(q, k, v, kv_num, kv_idx, scale, mask_bq, mask_bk, return_lse, q_scale, k_scale)


@_block_sparse_attention_fwd.register_fake
def _(q, k, v, kv_num, kv_idx, scale, mask_bq, mask_bk, return_lse, q_scale=None, k_scale=None):
    B, H, N_Q, _ = q.shape
    lse = q.new_empty((B, H, N_Q) if return_lse else (0,), dtype=torch.float32)
    return torch.empty_like(q, dtype=v.dtype), lse


def triton_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockSparseMask,
    scale: float,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch through the ``dit_sparse::block_sparse_attention_fwd`` op, so ``torch.compile`` can trace it."""
    bq, bk = mask.block_size
    out, lse = torch.ops.dit_sparse.block_sparse_attention_fwd(
        q, k, v, mask.kv_num_blocks, mask.kv_indices, float(scale), bq, bk, return_lse
    )
    return out, (lse if return_lse else None)


def triton_tma_unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why the tensor-descriptor (TMA) kernel cannot run on ``device`` (None if it can)."""
    reason = triton_unavailable_reason(device)
    if reason is not None:
        return reason
    import triton.language as tl

    if not hasattr(tl, "make_tensor_descriptor"):
        return "this triton has no tl.make_tensor_descriptor (needs triton >= 3.4)"
    device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if device.type == "cuda" and device_arch(device) < 90:
        return f"tensor-descriptor copies (TMA) need sm_90 or newer, this GPU is sm_{device_arch(device)}"
    return None


TMA_HEAD_DIMS = (64, 128)


def triton_tma_unsupported_reason(q: torch.Tensor, mask: BlockSparseMask, return_lse: bool) -> str | None:
    """The descriptor kernel takes fp16/bf16 (fp32 and fp16 under the interpreter), head dim 64 or 128 (the
    compile-checked ones), a contiguous head dim and 16-byte aligned rows; otherwise ``triton`` serves."""
    if q.device.type == "cpu":
        if q.dtype not in (torch.float16, torch.float32):
            return f"under the Triton interpreter triton-tma runs fp16 and fp32, not {q.dtype}"
    elif q.dtype not in (torch.float16, torch.bfloat16):
        return f"triton-tma runs fp16 and bf16 on a GPU, not {q.dtype}"
    if q.shape[-1] not in TMA_HEAD_DIMS:
        return f"triton-tma supports head dims {TMA_HEAD_DIMS}, got {q.shape[-1]}"
    if not _tma_ready(q):
        return "triton-tma needs a contiguous head dim and 16-byte aligned rows (use triton)"
    return None


def _tma_ready(*tensors: torch.Tensor) -> bool:
    return all(t.stride(-1) == 1 and (t.stride(-2) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0
               for t in tensors)  # fmt: skip


@functools.cache
def _tma_kernels():
    """(plain, autotuned) tensor-descriptor kernel; configs pruned by the same model as the pointer kernel."""
    from .triton_jit import _block_sparse_fwd_tma_kernel

    def configs_for(arch, kwargs, named_args):
        return tma_attention_configs(arch, kwargs["MASK_BQ"], kwargs["MASK_BK"], kwargs["HEAD_DIM"],
                                     named_args["V"].element_size())  # fmt: skip

    key = ["N_Q", "N_K", "HEAD_DIM", "MASK_BQ", "MASK_BK", "EVEN_N", "OUTPUT_LSE", "WARP_SPECIALIZE"]
    return _block_sparse_fwd_tma_kernel, autotuned(_block_sparse_fwd_tma_kernel, key, configs_for)


def _launch_tma(q, k, v, kv_num, kv_idx, scale, mask_bq, mask_bk, return_lse) -> tuple[torch.Tensor, torch.Tensor]:
    from triton.runtime import _allocation

    if not _tma_ready(q, k, v):  # K or V strided in a way a descriptor cannot take: the pointer kernel
        return _launch(q, k, v, kv_num, kv_idx, scale, mask_bq, mask_bk, return_lse)
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    out = torch.empty_like(q)  # q's layout (or contiguous): descriptor-ready as q is
    lse = torch.empty((B, H, N_Q) if return_lse else (0,), device=q.device, dtype=torch.float32)
    num_strides, idx_strides = table_strides(kv_num, 3), table_strides(kv_idx, 3)
    args = (
        q, k, v, out, lse if return_lse else out, kv_num, kv_idx, scale * LOG2E,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        *num_strides, *idx_strides, H, N_Q, N_K,
    )  # fmt: skip
    common = dict(HEAD_DIM=D, MASK_BQ=mask_bq, MASK_BK=mask_bk, EVEN_N=N_K % mask_bk == 0, OUTPUT_LSE=return_lse)
    common["WARP_SPECIALIZE"] = TMA_WARP_SPECIALIZE and q.device.type == "cuda"
    # Descriptors built in the kernel need a scratch allocator; set ours only for this launch, and only
    # where the caller has not set one.
    token = None
    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        token = _allocation._allocator.set(
            lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device=q.device)
        )
    try:
        launch_tiled(_tma_kernels(), N_Q, B * H, args, mask_bq, mask_bk, q.device, **common)
    finally:
        if token is not None:
            _allocation._allocator.reset(token)
    return out, lse


# Warp specialization of the descriptor kernel's loop: on only once a GPU run shows it compiles and helps.
TMA_WARP_SPECIALIZE = False


@torch.library.custom_op("dit_sparse::block_sparse_attention_tma_fwd", mutates_args=())
def _block_sparse_attention_tma_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_num: torch.Tensor,
    kv_idx: torch.Tensor,
    scale: float,
    mask_bq: int,
    mask_bk: int,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch_tma(q, k, v, kv_num, kv_idx, scale, mask_bq, mask_bk, return_lse)


@_block_sparse_attention_tma_fwd.register_fake
def _(q, k, v, kv_num, kv_idx, scale, mask_bq, mask_bk, return_lse):
    B, H, N_Q, _ = q.shape
    return torch.empty_like(q), q.new_empty((B, H, N_Q) if return_lse else (0,), dtype=torch.float32)


def triton_tma_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockSparseMask,
    scale: float,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tensor-descriptor (TMA) kernel for Hopper and newer, through ``dit_sparse::block_sparse_attention_tma_fwd``.

    Same inputs, outputs and twin (``reference``) as :func:`triton_block_sparse_attention`; K and V tiles
    arrive by bulk tensor copies instead of per-thread loads. ``auto`` uses it only where the measured table
    (:mod:`dit_sparse.kernels.backend_table`) says it is the fastest on that GPU.
    """
    bq, bk = mask.block_size
    out, lse = torch.ops.dit_sparse.block_sparse_attention_tma_fwd(
        q, k, v, mask.kv_num_blocks, mask.kv_indices, float(scale), bq, bk, return_lse
    )
    return out, (lse if return_lse else None)


def triton_quantized_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockSparseMask,
    scale: float,
    return_lse: bool,
    quant: str,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Quantize Q and smoothed K per mask block (one fused Triton pass each), then run the kernel with ``QUANT``.

    The twin is :func:`~dit_sparse.kernels.reference.reference_quantized_block_sparse_attention`; the LSE
    gets the same smoothing correction (:func:`~dit_sparse.kernels.quant.lse_offset`). The quantization is
    :func:`~dit_sparse.kernels.quant.quantize_qk_triton`, bit-equal to the twin's PyTorch ``quantize_qk``.
    """
    bq, bk = mask.block_size
    quantized = quantize_qk_triton(q, k, mask.block_size, quant)
    out, lse = torch.ops.dit_sparse.block_sparse_attention_fwd(
        quantized.q, quantized.k, v, mask.kv_num_blocks, mask.kv_indices, float(scale), bq, bk, return_lse,
        quantized.q_scale, quantized.k_scale,
    )  # fmt: skip
    if not return_lse:
        return out, None
    return out, lse + lse_offset(q, quantized.k_mean, scale)
