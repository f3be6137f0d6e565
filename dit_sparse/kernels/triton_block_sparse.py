"""Block-sparse flash-attention forward in Triton.

FlashAttention (Dao et al., 2022, https://arxiv.org/abs/2205.14135) restricted to the kv blocks that a
:class:`~dit_sparse.BlockSparseMask` keeps, as in the block-sparse kernels of Sparse-vDiT, radial
attention and DraftAttention.

Layout: q, k, v are ``(B, H, N, D)`` with any strides; the mask's compressed table gives, for every
(batch or broadcast batch, head, q block), the number of kept kv blocks and their ids. One program owns
``BLOCK_M`` query rows of one (batch, head) and walks that row's kv-block ids, each cut into ``BLOCK_N``
token tiles, with an online softmax in fp32 (exp2 with ``scale * log2(e)`` folded in).

Limits: fp16, bf16 and fp32 inputs (fp32 dots in IEEE precision); head dims up to 256 (padded to a power
of two inside the kernel, so 64, 128 and also 80 or 96 work); sequence tails masked, so any N; empty rows
give zeros and LSE ``-inf``. Forward only. Under ``TRITON_INTERPRET=1`` the kernel runs on CPU tensors
(fp32 and fp16 only: bf16 is silently wrong in the interpreter, so it is refused there).

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
from .quant import lse_offset, quantize_qk

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
    """Compile-time objects, built on first use so that importing dit_sparse never imports triton."""
    import triton
    import triton.language as tl

    @triton.jit
    def _block_sparse_fwd_kernel(
        Q, K, V, Out, Lse, KV_NUM, KV_IDX, Q_SCALE, K_SCALE,
        qk_scale_log2,
        stride_qb, stride_qh, stride_qn, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd,
        stride_ob, stride_oh, stride_on, stride_od,
        stride_numb, stride_numh, stride_numm,
        stride_idxb, stride_idxh, stride_idxm,
        stride_qsb, stride_qsh, stride_ksb, stride_ksh,
        H, N_Q, N_K, HEAD_DIM,
        MASK_BQ: tl.constexpr, MASK_BK: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        OUTPUT_LSE: tl.constexpr, IEEE_DOT: tl.constexpr, QUANT: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H

        # -- this program's query rows and its row of the block table
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        row_ok = offs_m < N_Q
        d_ok = offs_d < HEAD_DIM
        mask_row = (pid_m * BLOCK_M) // MASK_BQ
        q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
        q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        n_kept = tl.load(KV_NUM + b * stride_numb + h * stride_numh + mask_row * stride_numm)
        idx_row = KV_IDX + b * stride_idxb + h * stride_idxh + mask_row * stride_idxm
        k_base = K + b * stride_kb + h * stride_kh
        v_base = V + b * stride_vb + h * stride_vh
        qk_scale = qk_scale_log2
        if QUANT:
            # BLOCK_M divides MASK_BQ, so all of this program's rows share one q block and one scale.
            qk_scale = qk_scale * tl.load(Q_SCALE + b * stride_qsb + h * stride_qsh + mask_row)
            k_scale_row = K_SCALE + b * stride_ksb + h * stride_ksh

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

        # -- walk the kept kv blocks, each in BLOCK_N-token tiles, with an online softmax
        for i in range(0, n_kept):
            kv_block = tl.load(idx_row + i)
            if QUANT:
                tile_scale = qk_scale * tl.load(k_scale_row + kv_block)
            for j in tl.static_range(MASK_BK // BLOCK_N):
                offs_n = kv_block * MASK_BK + j * BLOCK_N + tl.arange(0, BLOCK_N)
                col_ok = offs_n < N_K
                k = tl.load(
                    k_base + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                    mask=col_ok[None, :] & d_ok[:, None],
                    other=0.0,
                )  # (BLOCK_D, BLOCK_N)
                if QUANT:
                    # int8 x int8 summed in int32 is exact; both block scales make it a score again.
                    qk = tl.dot(q, k, out_dtype=tl.int32).to(tl.float32) * tile_scale
                elif IEEE_DOT:
                    qk = tl.dot(q, k, input_precision="ieee") * qk_scale
                else:
                    qk = tl.dot(q, k) * qk_scale
                qk = tl.where(col_ok[None, :], qk, float("-inf"))  # (BLOCK_M, BLOCK_N)
                m_new = tl.maximum(m_i, tl.max(qk, 1))
                # A tile past the sequence end is all -inf; keep the running max finite so no NaN appears.
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                alpha = tl.exp2(m_i - m_safe)
                p = tl.exp2(qk - m_safe[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                v = tl.load(
                    v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=col_ok[:, None] & d_ok[None, :],
                    other=0.0,
                )  # (BLOCK_N, BLOCK_D)
                if IEEE_DOT:
                    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
                else:
                    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
                m_i = m_new

        # -- normalize and store; a row with no kept block yields zeros and LSE -inf
        has_mass = l_i > 0.0
        acc = acc / tl.where(has_mass, l_i, 1.0)[:, None]
        o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
        tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
        if OUTPUT_LSE:
            lse = tl.where(has_mass, (m_i + tl.log2(tl.where(has_mass, l_i, 1.0))) * 0.6931471805599453,
                           float("-inf"))  # fmt: skip
            tl.store(Lse + pid_bh * N_Q + offs_m, lse, mask=row_ok)

    configs = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm in (64, 128)
        for bn in (32, 64, 128)
        for w in (4, 8)
        for s in (2, 3, 4)
    ]

    def _prune(configs, named_args, **kwargs):
        """Keep tiles that divide the mask blocks and fit in shared memory."""
        mask_bq, mask_bk, block_d = kwargs["MASK_BQ"], kwargs["MASK_BK"], kwargs["BLOCK_D"]
        kept = []
        for cfg in configs:
            bm, bn = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]
            if mask_bq % bm or mask_bk % bn:
                continue
            if block_d >= 256 and (bm * bn > 64 * 64 or cfg.num_stages > 2):
                continue
            if block_d >= 128 and bm == 128 and bn == 128 and cfg.num_stages > 2:
                continue
            kept.append(cfg)
        return kept or [triton.Config({"BLOCK_M": min(64, mask_bq), "BLOCK_N": min(32, mask_bk)}, num_warps=4)]

    autotuned = triton.autotune(
        configs=configs,
        key=["N_Q", "N_K", "HEAD_DIM", "MASK_BQ", "MASK_BK", "OUTPUT_LSE", "IEEE_DOT", "QUANT"],
        prune_configs_by={"early_config_prune": _prune},
    )(_block_sparse_fwd_kernel)
    return _block_sparse_fwd_kernel, autotuned


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
    out = torch.empty_like(q, dtype=v.dtype)
    lse = torch.empty((B, H, N_Q) if return_lse else (0,), device=q.device, dtype=torch.float32)
    block_d = max(32 if quant else 16, 1 << (D - 1).bit_length())
    plain, autotuned = _kernels()
    # A broadcast mask (batch 1) is read with batch stride 0.
    num_strides = (0 if kv_num.shape[0] == 1 else kv_num.stride(0), kv_num.stride(1), kv_num.stride(2))
    idx_strides = (0 if kv_idx.shape[0] == 1 else kv_idx.stride(0), kv_idx.stride(1), kv_idx.stride(2))
    # Without quantization the scale pointers are never read; any tensor will do.
    q_scale = q_scale if quant else lse
    k_scale = k_scale if quant else lse
    scale_strides = (*q_scale.stride()[:2], *k_scale.stride()[:2]) if quant else (0, 0, 0, 0)
    args = (
        q, k, v, out, lse if return_lse else out, kv_num, kv_idx, q_scale, k_scale,
        scale * LOG2E,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        *num_strides, *idx_strides, *scale_strides,
        H, N_Q, N_K, D,
    )  # fmt: skip
    common = dict(MASK_BQ=mask_bq, MASK_BK=mask_bk, BLOCK_D=block_d, OUTPUT_LSE=return_lse, QUANT=quant)
    common["IEEE_DOT"] = v.dtype == torch.float32
    if q.device.type == "cpu":
        # The interpreter is slow: one fixed tile, no autotuning.
        bm, bn = min(64, mask_bq), min(32, mask_bk)
        plain[(_cdiv(N_Q, bm), B * H)](*args, BLOCK_M=bm, BLOCK_N=bn, **common)
    else:
        with torch.cuda.device(q.device):
            autotuned[lambda meta: (_cdiv(N_Q, meta["BLOCK_M"]), B * H)](*args, **common)
    return out, lse


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


def triton_quantized_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockSparseMask,
    scale: float,
    return_lse: bool,
    quant: str,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Quantize Q and smoothed K per mask block (in PyTorch), then run the kernel with ``QUANT``.

    The twin is :func:`~dit_sparse.kernels.reference.reference_quantized_block_sparse_attention`; the LSE
    gets the same smoothing correction (:func:`~dit_sparse.kernels.quant.lse_offset`).
    """
    bq, bk = mask.block_size
    quantized = quantize_qk(q, k, mask.block_size, quant)
    out, lse = torch.ops.dit_sparse.block_sparse_attention_fwd(
        quantized.q, quantized.k, v, mask.kv_num_blocks, mask.kv_indices, float(scale), bq, bk, return_lse,
        quantized.q_scale, quantized.k_scale,
    )  # fmt: skip
    if not return_lse:
        return out, None
    return out, lse + lse_offset(q, quantized.k_mean, scale)
