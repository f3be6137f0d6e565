"""Exact block-sparse attention by masked SDPA: the twin every kernel is tested against.

It expands the block map into an ``(Nq, Nk)`` token mask, so it allocates N x N and is meant for tests,
references and small inputs only. Rows whose mask is empty produce zeros and an LSE of ``-inf``, which is
what the fast kernels produce as well (SDPA alone would return NaN there).

:func:`reference_quantized_block_sparse_attention` is the twin of the quantized kernels: the same
integers and scales (:func:`~dit_sparse.kernels.quant.quantize_qk`), their exact dequantized scores, a
masked softmax and ``P V`` in V's dtype. Its distance to exact attention is the quantization error; the
kernel's distance to it should be rounding only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..mask import BlockSparseMask
from .quant import lse_offset, quantize_qk


def reference_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockSparseMask,
    scale: float,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Masked SDPA in the inputs' dtype; LSE (natural log, fp32) from the fp32 scores when asked."""
    token_mask = mask.token_mask()  # (B or 1, H, Nq, Nk)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=token_mask, scale=scale)  # (B, H, Nq, D)
    empty_rows = ~token_mask.any(dim=-1, keepdim=True)  # (B or 1, H, Nq, 1)
    out = out.masked_fill(empty_rows, 0.0)
    lse = None
    if return_lse:
        scores = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale  # (B, H, Nq, Nk)
        lse = torch.logsumexp(scores.masked_fill(~token_mask, float("-inf")), dim=-1)  # (B, H, Nq)
    return out, lse


def reference_quantized_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockSparseMask,
    scale: float,
    return_lse: bool,
    quant: str,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Block-sparse attention with Q and K quantized per block (``quant`` ``"int8"`` or ``"int4"``).

    Scores are ``(q_int * q_scale) @ (k_int * k_scale)^T * scale`` in fp32, K smoothed first (see
    :mod:`dit_sparse.kernels.quant`); masked softmax in fp32; ``P`` cast to V's dtype times ``V``. The LSE
    (fp32, natural log) is that of the smoothed scores plus :func:`~dit_sparse.kernels.quant.lse_offset`,
    so it estimates the LSE of the unsmoothed scores.
    """
    quantized = quantize_qk(q, k, mask.block_size, quant)
    bq, bk = mask.block_size
    n_q, n_k = mask.seq_len
    # The integer dot is exact in fp32 (|sum| <= 127^2 * D < 2^24 for D <= 1040), so scaling it afterwards is
    # the dequantized product with one rounding instead of D.
    scores = torch.matmul(quantized.q.float(), quantized.k.float().transpose(-2, -1))  # (B, H, Nq, Nk)
    row_scale = (quantized.q_scale * scale).repeat_interleave(bq, dim=-1)[..., :n_q]  # (B, H, Nq)
    col_scale = quantized.k_scale.repeat_interleave(bk, dim=-1)[..., :n_k]  # (B, H, Nk)
    scores = scores * row_scale[..., :, None] * col_scale[..., None, :]
    scores = scores.masked_fill(~mask.token_mask(), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, Nq)
    # Rows with no kept block have LSE -inf; subtracting 0 there keeps their probabilities at exp(-inf) = 0.
    probs = torch.exp(scores - lse.masked_fill(lse == float("-inf"), 0.0)[..., None])
    out = torch.matmul(probs.to(v.dtype), v)  # (B, H, Nq, D)
    if not return_lse:
        return out, None
    return out, lse + lse_offset(q, quantized.k_mean, scale)
