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
"""

from __future__ import annotations

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
    k = k.float()
    mean = k.mean(dim=-2, keepdim=True)  # (B, H, 1, D)
    return k - mean, mean


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
    scales = padded.abs().amax(dim=-1) / qmax  # (..., nB)
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
