"""Per-block symmetric quantization of Q and K for quantized block-sparse attention.

The scheme of SageAttention (Zhang et al., 2025, https://arxiv.org/abs/2410.02367) as PAROAttention
(Zhao et al., 2025, https://arxiv.org/abs/2506.16054) uses it next to its block-sparse masks:

1. **Smooth K.** Subtract K's mean over tokens, per (batch, head, channel). For a query row ``q`` every
   score shifts by the same ``q . mean(k)``, so the softmax (and the attention output) is unchanged, while
   a large offset shared by all keys in a channel, common in DiT keys, no longer eats the quantization
   range. Only the log-sum-exp moves, by that per-row constant; :func:`lse_offset` adds it back.
2. **Quantize per block.** Q in blocks of the mask's q block size, K in blocks of its kv block size, each
   with one scale per (batch, head, block): ``scale = max|x| / qmax`` and ``x_int = round(x / scale)``,
   with ``qmax = 127`` (int8) or ``7`` (int4). A block whose values are all zero gets scale 0 and
   dequantizes to exact zeros. The scores are then ``q_scale * k_scale * (q_int . k_int)``: one dot of
   integers and one multiply per score tile, because a kernel tile never straddles two mask blocks.
   The softmax scale is folded into the q block's scale once per kernel program, not applied per score.

P and V are not quantized: ``P V`` runs in V's dtype (fp16, bf16 or fp32) as in unquantized attention.

**int4 is held in int8 containers, not packed** two values per byte. Its values lie in ``[-7, 7]`` and go
through the same int8 kernel as int8 does, so int4 here measures the *accuracy* of a 4-bit Q/K and gives
no speed over int8: the same bytes are read (no bandwidth gain), and Triton exposes no int4 tensor-core
dot (the hardware's ``mma`` on int4 operands, which is what would make int4 faster), only int8. Packed int4
would halve Q/K traffic but need unpacking to int8 before the dot, which Triton would then run at int8
speed anyway.

All tensors are ``(B, H, N, D)``; scales are fp32 ``(B, H, ceil(N / block))``.

Two implementations give the same integers and scales bit for bit: :func:`quantize_qk` in PyTorch (about ten
passes over Q and K; the reference, and the twin in tests) and :func:`quantize_qk_triton`, one Triton kernel
launch per tensor after K's mean (one pass), each program quantizing one mask block of one (batch, head).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# quant mode -> bits; the public ``quant=`` values of :func:`dit_sparse.block_sparse_attention`.
QUANT_MODES: dict[str, int] = {"int8": 8, "int4": 4}


def check_quant(quant: object) -> str | None:
    """``quant`` if it is ``None``, ``"int8"`` or ``"int4"``; otherwise a ValueError saying so."""
    if quant is not None and (not isinstance(quant, str) or quant not in QUANT_MODES):
        raise ValueError(f"quant must be None, 'int8' or 'int4', got {quant!r}")
    return quant


def quant_max(bits: int) -> int:
    """Largest magnitude of a symmetric ``bits``-bit integer: 127 for 8 bits, 7 for 4 bits."""
    if bits not in QUANT_MODES.values():
        raise ValueError(f"bits must be 8 or 4, got {bits!r}")
    return 2 ** (bits - 1) - 1


def smooth_keys(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K minus its mean over tokens, per (batch, head, channel).

    Args:
        k (`torch.Tensor` of shape ``(B, H, N, D)``): keys.

    Returns:
        ``(k - mean, mean)`` in fp32, shapes ``(B, H, N, D)`` and ``(B, H, 1, D)``. Computed in fp32 so that
        an fp16 or bf16 key with a large offset is not rounded before the subtraction.
    """
    mean = key_mean(k)
    return k.float() - mean, mean


def key_mean(k: torch.Tensor) -> torch.Tensor:
    """K's mean over tokens in fp32, ``(B, H, 1, D)``: one pass, shared by both quantizers so they agree."""
    return k.mean(dim=-2, keepdim=True, dtype=torch.float32)


def _check_block(x: torch.Tensor, block: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a tensor of shape (..., N, D), got {getattr(x, 'shape', type(x).__name__)}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int (tokens per block), got {block!r}")


def quantize_per_block(x: torch.Tensor, block: int, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization with one scale per block of ``block`` tokens.

    Args:
        x (`torch.Tensor` of shape ``(..., N, D)``): floating values; any N (the last block may be partial).
        block (`int`): tokens per block.
        bits (`int`): 8 (values in ``[-127, 127]``) or 4 (values in ``[-7, 7]``, held in int8).

    Returns:
        ``(x_int, scales)``: int8 ``(..., N, D)`` and fp32 ``(..., ceil(N / block))`` with
        ``|x - x_int * scale| <= scale / 2`` elementwise (up to fp32 rounding of ``x / scale``).

    Example:
        >>> x = torch.tensor([[[[1.5, -2.0], [0.5, 0.0], [4.0, 3.0]]]])  # (1, 1, 3, 2)
        >>> x_int, scales = quantize_per_block(x, block=2, bits=8)
        >>> x_int[0, 0].tolist(), [round(s, 4) for s in scales[0, 0].tolist()]
        ([[95, -127], [32, 0], [127, 95]], [0.0157, 0.0315])
    """
    _check_block(x, block)
    qmax = quant_max(bits)
    *lead, n, d = x.shape
    n_blocks = math.ceil(n / block)
    # Zero padding of the last block leaves its max unchanged and is cut off again below.
    padded = F.pad(x.float(), (0, 0, 0, n_blocks * block - n)).reshape(*lead, n_blocks, block * d)
    # Times the fp32 reciprocal, not divided by qmax: torch on CUDA turns a division by a Python scalar into
    # this multiplication anyway, so written out it gives the same scales on every device and in the kernel.
    scales = padded.abs().amax(dim=-1) * (1.0 / qmax)  # (..., nB)
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    x_int = torch.round(padded / safe[..., None]).clamp_(-qmax, qmax).to(torch.int8)
    return x_int.reshape(*lead, n_blocks * block, d)[..., :n, :], scales


def dequantize_per_block(
    x_int: torch.Tensor, scales: torch.Tensor, block: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``x_int * scale`` of each token's block: the inverse of :func:`quantize_per_block` up to rounding.

    Args:
        x_int (`torch.Tensor` of shape ``(..., N, D)``): integer values.
        scales (`torch.Tensor` of shape ``(..., ceil(N / block))``): one scale per block.
        block (`int`): tokens per block.
        dtype (`torch.dtype`, defaults to fp32): dtype of the result.
    """
    _check_block(x_int, block)
    n = x_int.shape[-2]
    if scales.shape != (*x_int.shape[:-2], math.ceil(n / block)):
        raise ValueError(
            f"scales must have shape {(*x_int.shape[:-2], math.ceil(n / block))} for {n} tokens in blocks of "
            f"{block}, got {tuple(scales.shape)}"
        )
    per_token = scales.to(dtype).repeat_interleave(block, dim=-1)[..., :n]  # (..., N)
    return x_int.to(dtype) * per_token[..., None]


@dataclass(frozen=True)
class QuantizedQK:
    """Q and smoothed K quantized per block, with what it takes to recover exact-attention quantities.

    Attributes:
        q, k (`torch.Tensor`): int8 ``(B, H, Nq, D)`` and ``(B, H, Nk, D)`` (K after smoothing).
        q_scale, k_scale (`torch.Tensor`): fp32 ``(B, H, ceil(Nq / bq))`` and ``(B, H, ceil(Nk / bk))``.
        k_mean (`torch.Tensor`): fp32 ``(B, H, 1, D)``, the mean subtracted from K.
        block_size (`(int, int)`): ``(bq, bk)``, the blocks the scales belong to.
    """

    q: torch.Tensor
    q_scale: torch.Tensor
    k: torch.Tensor
    k_scale: torch.Tensor
    k_mean: torch.Tensor
    block_size: tuple[int, int]


def quantize_qk(q: torch.Tensor, k: torch.Tensor, block_size: tuple[int, int], quant: str) -> QuantizedQK:
    """Smooth K, then quantize Q per q block and K per kv block (``block_size = (bq, bk)``).

    Every quantized backend and its reference twin call this, so they see the same integers and scales.
    """
    bits = QUANT_MODES[check_quant(quant)]
    bq, bk = block_size
    k_smooth, k_mean = smooth_keys(k)
    q_int, q_scale = quantize_per_block(q, bq, bits)
    k_int, k_scale = quantize_per_block(k_smooth, bk, bits)
    return QuantizedQK(q_int, q_scale, k_int, k_scale, k_mean, (bq, bk))


def lse_offset(q: torch.Tensor, k_mean: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * q . mean(k)`` per row, fp32 ``(B, H, Nq)``: what smoothing took out of every score.

    Added to the LSE of the smoothed scores it gives the LSE of the original scores. It uses the
    unquantized q: the term is one dot per row, cheap to compute exactly.
    """
    return (q.float() @ k_mean.transpose(-2, -1)).squeeze(-1) * scale  # (B, H, Nq)


# --------------------------------------------------------------------------------------------------
# The same in Triton: smoothing and per-block quantization fused, one program per mask block
# --------------------------------------------------------------------------------------------------
# Elements one program holds at once (fp32): a 128-token block of head dim 128 fits in one load, larger
# blocks or head dims are read in chunks of rows, twice (max first, then quantize).
_TILE_ELEMENTS = 128 * 128


@functools.cache
def _quantize_kernel():
    """Compile-time objects, built on first use so that importing dit_sparse never imports triton."""
    import triton
    import triton.language as tl

    @triton.jit
    def _quantize_per_block_kernel(
        X, MEAN, X_INT, SCALE,
        inv_qmax,
        stride_xb, stride_xh, stride_xn, stride_xd,
        stride_mb, stride_mh, stride_md,
        H, N, HEAD_DIM, N_BLOCKS,
        QMAX: tl.constexpr, MASK_BLOCK: tl.constexpr, ROWS: tl.constexpr, N_CHUNKS: tl.constexpr,
        BLOCK_D: tl.constexpr, SMOOTH: tl.constexpr,
    ):  # fmt: skip
        # -- this program's (batch, head, block); int64 so that offsets into huge tensors cannot overflow
        pid = tl.program_id(0).to(tl.int64)
        bh = pid // N_BLOCKS
        b = bh // H
        h = bh % H
        start = (pid % N_BLOCKS) * MASK_BLOCK
        x_base = X + b * stride_xb + h * stride_xh
        out_base = X_INT + bh * N * HEAD_DIM  # contiguous (B, H, N, D)
        offs_r = tl.arange(0, ROWS)
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < HEAD_DIM
        if SMOOTH:
            mean = tl.load(MEAN + b * stride_mb + h * stride_mh + offs_d * stride_md, mask=d_ok, other=0.0)

        # -- the block's scale: max |x| / qmax (x smoothed); an all-zero block keeps 0 and divides by 1
        absmax = tl.zeros((ROWS,), dtype=tl.float32)
        for c in tl.static_range(N_CHUNKS):
            rows = start + c * ROWS + offs_r
            ok = ((c * ROWS + offs_r < MASK_BLOCK) & (rows < N))[:, None] & d_ok[None, :]
            x = tl.load(x_base + rows[:, None] * stride_xn + offs_d[None, :] * stride_xd, mask=ok, other=0.0)
            x = x.to(tl.float32)
            if SMOOTH:
                # Rows past N stay 0 (the twin pads after smoothing), not -mean.
                x = tl.where(ok, x - mean[None, :], 0.0)
            absmax = tl.maximum(absmax, tl.max(tl.abs(x), axis=1))
        scale = tl.max(absmax, axis=0) * inv_qmax
        safe_scale = tl.where(scale > 0, scale, 1.0)

        # -- integers: round(x / scale) clamped to [-qmax, qmax], as the twin computes them
        for c in tl.static_range(N_CHUNKS):
            rows = start + c * ROWS + offs_r
            ok = ((c * ROWS + offs_r < MASK_BLOCK) & (rows < N))[:, None] & d_ok[None, :]
            if N_CHUNKS > 1:  # with one chunk, x is still the tile loaded above
                x = tl.load(x_base + rows[:, None] * stride_xn + offs_d[None, :] * stride_xd, mask=ok, other=0.0)
                x = x.to(tl.float32)
                if SMOOTH:
                    x = tl.where(ok, x - mean[None, :], 0.0)
            # div_rn: Triton's `/` is an approximate fp32 division on CUDA (div.full); the twin's is IEEE.
            x = tl.div_rn(x, safe_scale)
            # tl has no round, and libdevice.rint does not run in the interpreter. Adding 1.5 * 2**23 moves
            # any |x| <= 2**22 to where fp32's spacing is 1, so the add rounds to an integer, half to even
            # (IEEE's default, as torch.round), and the subtraction is exact. Here |x| <= qmax.
            x = (x + 12582912.0) - 12582912.0
            x = tl.minimum(tl.maximum(x, -QMAX), QMAX)
            tl.store(out_base + rows[:, None] * HEAD_DIM + offs_d[None, :], x.to(tl.int8), mask=ok)
        tl.store(SCALE + pid, scale)  # contiguous (B, H, nB): index bh * nB + block == pid

    return _quantize_per_block_kernel


def _quantize_launch_config(block: int, head_dim: int) -> dict[str, int]:
    """Tile of a program: rows per chunk, chunks per block, padded head dim and warps."""
    block_d = 1 << max(head_dim - 1, 0).bit_length()
    rows = min(1 << (block - 1).bit_length(), max(1, _TILE_ELEMENTS // block_d))
    n_chunks = -(-block // rows)
    return dict(ROWS=rows, N_CHUNKS=n_chunks, BLOCK_D=block_d, num_warps=4 if rows * block_d <= 4096 else 8)


@torch.library.custom_op("dit_sparse::quantize_per_block", mutates_args=())
def _quantize_per_block_triton(
    x: torch.Tensor, mean: torch.Tensor | None, block: int, qmax: int
) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, N, D = x.shape  # (B, H, N, D), any strides
    n_blocks = -(-N // block)
    x_int = torch.empty((B, H, N, D), dtype=torch.int8, device=x.device)
    scales = torch.empty((B, H, n_blocks), dtype=torch.float32, device=x.device)
    if x_int.numel() == 0:
        return x_int, scales.zero_()
    smooth = mean is not None
    mean_arg, mean_strides = (mean, (mean.stride(0), mean.stride(1), mean.stride(3))) if smooth else (x, (0, 0, 0))
    config = _quantize_launch_config(block, D)
    num_warps = config.pop("num_warps")
    args = (x, mean_arg, x_int, scales, 1.0 / qmax, *x.stride(), *mean_strides, H, N, D, n_blocks)
    kernel = _quantize_kernel()
    grid = (B * H * n_blocks,)
    constexprs = dict(QMAX=qmax, MASK_BLOCK=block, SMOOTH=smooth, **config)
    if x.device.type == "cuda":
        with torch.cuda.device(x.device):
            kernel[grid](*args, **constexprs, num_warps=num_warps)
    else:
        kernel[grid](*args, **constexprs)
    return x_int, scales


@_quantize_per_block_triton.register_fake
def _(x, mean, block, qmax):
    B, H, N, D = x.shape
    return x.new_empty((B, H, N, D), dtype=torch.int8), x.new_empty((B, H, -(-N // block)), dtype=torch.float32)


def quantize_qk_triton(q: torch.Tensor, k: torch.Tensor, block_size: tuple[int, int], quant: str) -> QuantizedQK:
    """:func:`quantize_qk` fused in Triton: the same integers, scales and mean, bit for bit.

    K's mean is one PyTorch pass (fp32, the twin's own :func:`key_mean`); then one kernel launch per tensor,
    each program loading one mask block of one (batch, head) in any strides (a ``(B, N, H, D)`` view
    transposed to ``(B, H, N, D)`` needs no copy), subtracting the mean (K only), and writing int8 values and
    the block's fp32 scale. That replaces the PyTorch path's cast, subtraction, padding, max, division,
    rounding and clamping passes over Q and K. The twin is :func:`quantize_qk` (a test checks bit equality).

    Args:
        q (`torch.Tensor` of shape ``(B, H, Nq, D)``): queries, fp16, bf16 or fp32 (bf16 not on a CPU).
        k (`torch.Tensor` of shape ``(B, H, Nk, D)``): keys, same device; any N, any head dim.
        block_size (`(int, int)`): ``(bq, bk)``, tokens per q block and per kv block.
        quant (`str`): ``"int8"`` or ``"int4"``.

    Runs on a CUDA GPU, or on CPU tensors under ``TRITON_INTERPRET=1`` (for tests).
    """
    from .triton_block_sparse import interpreting, triton_unavailable_reason  # it imports this module

    if check_quant(quant) is None:
        raise ValueError("quant must be 'int8' or 'int4' to quantize, got None")
    if not isinstance(block_size, tuple) or len(block_size) != 2:
        raise ValueError(f"block_size must be a (bq, bk) tuple, got {block_size!r}")
    for x, block in ((q, block_size[0]), (k, block_size[1])):
        _check_block(x, block)
    if q.dim() != 4 or k.dim() != 4 or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must be (B, H, N, D) with matching B, H, D; got {tuple(q.shape)}, {tuple(k.shape)}")
    for name, x in (("q", q), ("k", k)):
        if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"triton quantization takes fp16, bf16 or fp32 {name}, got {x.dtype}")
    if q.device != k.device:
        raise ValueError(f"q and k must be on one device, got {q.device} and {k.device}")
    reason = triton_unavailable_reason(q.device)
    if reason is not None:
        raise ValueError(f"triton quantization cannot run on {q.device}: {reason}")
    if q.device.type == "cpu" and interpreting() and torch.bfloat16 in (q.dtype, k.dtype):
        raise ValueError("bf16 is silently wrong under the Triton interpreter; use fp16 or fp32 on a CPU")
    qmax = quant_max(QUANT_MODES[quant])
    bq, bk = block_size
    k_mean = key_mean(k)  # (B, H, 1, D)
    q_int, q_scale = torch.ops.dit_sparse.quantize_per_block(q, None, bq, qmax)
    k_int, k_scale = torch.ops.dit_sparse.quantize_per_block(k, k_mean, bk, qmax)
    return QuantizedQK(q_int, q_scale, k_int, k_scale, k_mean, (bq, bk))
