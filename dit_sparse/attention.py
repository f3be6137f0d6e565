"""The block-sparse attention entry point: :func:`block_sparse_attention` and backend selection."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .kernels import BACKENDS, quantized_backends
from .kernels.backend_table import cuda_backend_order, cuda_device_name
from .kernels.gather import flash_cpu_op, fused_cpu_attention
from .kernels.pyramid import (
    PYRAMID_BACKENDS,
    cached_read_blocks,
    gather_pyramid_attention,
    reference_pyramid_attention,
    triton_pyramid_attention,
    triton_pyramid_unsupported_reason,
)
from .kernels.quant import check_quant
from .levels import LevelMask
from .mask import BlockSparseMask
from .utils import synchronized_clock

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Seconds the first call of each kernel signature took in this process (see first_call_seconds).
_first_calls: dict[tuple, float] = {}


def first_call_seconds() -> float:
    """Seconds this process has spent in the first call of each kernel signature.

    A signature is (backend, quantization, LSE or not, q and k shapes, dtype, device, block size, mask batch).
    Its first call compiles (compiled FlexAttention: 10-20 s a signature on two CPU cores; Triton: its JIT)
    and runs once; later calls with the signature reuse the compiled kernel. Timing reports read this before
    and after a run and state the difference apart from the steady-state times (``dit-sparse generate``).
    """
    return sum(_first_calls.values())


def backend_status(device: torch.device | str | None = None) -> dict[str, str | None]:
    """Per backend, ``None`` if it runs on ``device`` (default: CUDA if present, else CPU), else why not."""
    device = _default_device(device)
    return {name: backend.unavailable_reason(device) for name, backend in BACKENDS.items()}


def list_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends that can run on ``device`` (default: CUDA if present, else CPU), in registry order."""
    return [name for name, reason in backend_status(device).items() if reason is None]


def _default_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def select_backend(q: torch.Tensor, mask: BlockSparseMask, return_lse: bool = False, quant: str | None = None) -> str:
    """The backend ``"auto"`` runs for this call.

    On a CUDA GPU: ``triton`` (fastest; measured in ``benchmarks/attention.py``), else ``flex``, else
    ``reference``; where the measured table ``kernels/gpu_backend_table.json`` has an entry for this GPU,
    dtype and head dim, its backend is tried first (see :mod:`dit_sparse.kernels.backend_table`; it ships
    empty, and ``flex-flash`` is never chosen without such an entry). On a CPU: ``gather`` (kept kv blocks
    gathered per q block into torch's fused CPU attention; faster than compiled ``flex`` at every density
    measured, with no compilation and with the LSE), else ``flex``, else ``reference``. Triton never runs
    on a CPU under ``auto``: its interpreter is for tests. A backend that cannot take the call (dtype, head
    dim, block size) is passed over, and with ``quant`` so is every backend without quantized Q/K
    (``triton`` on a GPU, else ``reference``).
    """
    if q.device.type == "cuda":
        order = cuda_backend_order(cuda_device_name(q.device.index), q.dtype, q.shape[-1])
    else:
        order = ("gather", "flex", "reference")
    if quant is not None:
        order = tuple(name for name in order if name in quantized_backends())
    for name in order:
        backend = BACKENDS[name]
        if backend.unavailable_reason(q.device) is None and backend.unsupported_reason(q, mask, return_lse) is None:
            return name
    return "reference"


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, return_lse: bool
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Exact dense attention by the device's fused SDPA, with the LSE (fp32) where asked; ``None`` if unable.

    On a CPU the fused flash kernel returns the LSE itself; elsewhere SDPA has no public LSE, so a call that
    asks for it gets ``None`` (the caller runs its block-sparse backend on the full mask instead).
    """
    if q.device.type == "cpu" and flash_cpu_op() is not None:
        return fused_cpu_attention(q, k, v, scale, return_lse)
    if return_lse:
        return None
    return F.scaled_dot_product_attention(q, k, v, scale=scale), None


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: BlockSparseMask) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, N, D), got {tuple(t.shape)}")
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name} must be a floating tensor (fp16, bf16, fp32, fp64), got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape (B, H, Nk, D), got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree on batch, heads and head dim (B, H, *, D)"
        )
    if not isinstance(mask, BlockSparseMask):
        raise ValueError(f"mask must be a dit_sparse.BlockSparseMask, got {type(mask).__name__}")
    B, H, Nq, _ = q.shape
    if mask.seq_len != (Nq, k.shape[2]):
        raise ValueError(f"mask was built for seq_len {mask.seq_len}, but q and k have {(Nq, k.shape[2])} tokens")
    if mask.num_heads != H:
        raise ValueError(f"mask has {mask.num_heads} heads, q has {H}")
    if mask.batch not in (1, B):
        raise ValueError(f"mask batch must be 1 or the batch size {B}, got {mask.batch}")
    if mask.device != q.device:
        raise ValueError(f"mask is on {mask.device} but q is on {q.device}; move it with mask.to(q.device)")


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockSparseMask,
    *,
    backend: str = "auto",
    scale: float | None = None,
    return_lse: bool = False,
    quant: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``q`` over ``k, v`` computed only on the blocks that ``mask`` keeps.

    Args:
        q (`torch.Tensor` of shape ``(B, H, Nq, D)``): queries.
        k, v (`torch.Tensor` of shape ``(B, H, Nk, D)``): keys and values, same dtype and device as ``q``.
        mask (`BlockSparseMask`): kept blocks for ``seq_len == (Nq, Nk)``, with ``H`` heads and batch 1
            (broadcast) or ``B``, on ``q``'s device.
        backend (`str`, defaults to ``"auto"``): ``"reference"``, ``"gather"``, ``"flex"``, ``"flex-flash"``,
            ``"triton"`` or ``"auto"`` (see :func:`select_backend`). Under ``"auto"`` a mask that keeps every
            block runs the device's dense SDPA (the same result, at dense speed); a named backend always runs itself.
        scale (`float`, optional): softmax scale; defaults to ``1 / sqrt(D)``.
        return_lse (`bool`, defaults to False): also return the log-sum-exp of each row's kept scores,
            ``(B, H, Nq)`` fp32 in natural-log units (``-inf`` for rows with no kept block).
        quant (`str`, optional): ``"int8"`` or ``"int4"`` quantizes Q and K per mask block after smoothing
            K (SageAttention / PAROAttention style, see :mod:`dit_sparse.kernels.quant`); ``P V`` stays in
            the inputs' dtype. Backends ``"reference"`` (its exact twin) and ``"triton"``; int4 is held in
            int8 and measures accuracy, not speed.

    Returns:
        ``(B, H, Nq, D)`` in ``q``'s dtype, and the LSE when ``return_lse`` is set.

    Example:
        >>> import torch, dit_sparse as ds
        >>> q = k = v = torch.randn(1, 2, 300, 64)
        >>> blocks = torch.ones(1, 2, 3, 3, dtype=torch.bool).tril()
        >>> mask = ds.BlockSparseMask.from_dense(blocks, block_size=128, seq_len=(300, 300))
        >>> ds.block_sparse_attention(q, k, v, mask, backend="reference").shape
        torch.Size([1, 2, 300, 64])
    """
    _check_inputs(q, k, v, mask)
    check_quant(quant)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if backend == "auto":
        if quant is None and mask.is_full():
            dense = dense_attention(q, k, v, scale, return_lse)
            if dense is not None:
                return dense if return_lse else dense[0]
        backend = select_backend(q, mask, return_lse, quant)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {['auto', *BACKENDS]}")
    chosen = BACKENDS[backend]
    if quant is not None and chosen.quantized_forward is None:
        raise ValueError(
            f"backend {backend!r} has no quantized attention (quant={quant!r}); use one of {quantized_backends()}"
        )
    reason = chosen.unavailable_reason(q.device) or chosen.unsupported_reason(q, mask, return_lse)
    if reason is not None:
        raise ValueError(f"backend {backend!r} cannot run this call: {reason}")
    # Inside a torch.compile'd caller there is no clock to read (and no per-call compilation to time).
    signature = None
    if not torch.compiler.is_compiling():
        signature = (backend, quant, return_lse, *q.shape, *k.shape, q.dtype, q.device, mask.block_size, mask.batch)
    first = signature is not None and signature not in _first_calls
    if first:
        start = synchronized_clock(q.device)
    if quant is None:
        out, lse = chosen.forward(q, k, v, mask, float(scale), return_lse)
    else:
        out, lse = chosen.quantized_forward(q, k, v, mask, float(scale), return_lse, quant)
    if first:
        _first_calls[signature] = synchronized_clock(q.device) - start
    return (out, lse) if return_lse else out


def pyramid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: LevelMask,
    *,
    scale: float | None = None,
    return_lse: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of q over the full, pooled and dropped kv blocks of a :class:`~dit_sparse.LevelMask`.

    Args:
        q, k, v (`torch.Tensor` of shape ``(B, H, N, D)``): as for :func:`dit_sparse.block_sparse_attention`.
        mask (`LevelMask`): levels per (batch or 1, head, q block, kv block).
        scale (`float`, optional): softmax scale, default ``1 / sqrt(D)``.
        return_lse (`bool`, defaults to False): also return the LSE ``(B, H, Nq)`` fp32, natural log.
        backend (`str`, defaults to ``"auto"``): ``"reference"`` (the token-level definition), ``"gather"``
            (CPU), ``"triton"`` (GPU), or ``"auto"`` (``gather`` on a CPU, ``triton`` on a CUDA GPU where it can
            run, else ``reference``; ``reference`` wherever gradients are needed). A binary mask (full and
            dropped blocks only) runs :func:`dit_sparse.block_sparse_attention` with that backend choice instead.
    """
    if not isinstance(mask, LevelMask):
        raise ValueError(f"mask must be a dit_sparse.LevelMask, got {type(mask).__name__}")
    if backend not in PYRAMID_BACKENDS:
        raise ValueError(f"backend must be one of {list(PYRAMID_BACKENDS)}, got {backend!r}")
    if mask.is_binary():
        return block_sparse_attention(q, k, v, mask.to_block_mask(), scale=scale, return_lse=return_lse,
                                      backend=backend)  # fmt: skip
    _check_inputs(q, k, v, cached_read_blocks(mask))
    if mask.device != q.device:
        raise ValueError(f"mask is on {mask.device} but q is on {q.device}; move it with mask.to(q.device)")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if backend == "auto":
        if needs_grad:
            backend = "reference"
        elif q.device.type == "cpu" and flash_cpu_op() is not None:
            backend = "gather"
        elif q.device.type == "cuda" and triton_pyramid_unsupported_reason(q, mask, return_lse) is None:
            backend = "triton"
        else:
            backend = "reference"
    if backend == "gather":
        if q.device.type != "cpu" or flash_cpu_op() is None:
            raise ValueError("the gather pyramid backend runs on a CPU with torch's fused CPU attention kernel")
        if needs_grad:
            raise ValueError("the gather pyramid backend is inference only; use backend='reference' for gradients")
        out, lse = gather_pyramid_attention(q, k, v, mask, scale, return_lse)
    elif backend == "triton":
        reason = triton_pyramid_unsupported_reason(q, mask, return_lse)
        if reason is not None:
            raise ValueError(f"the triton pyramid backend cannot run this call: {reason}")
        if needs_grad:
            raise ValueError("the triton pyramid backend is inference only; use backend='reference' for gradients")
        out, lse = triton_pyramid_attention(q, k, v, mask, scale, return_lse)
    else:
        out, lse = reference_pyramid_attention(q, k, v, mask, scale, return_lse)
    return (out, lse) if return_lse else out
