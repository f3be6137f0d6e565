"""Exact block-sparse attention by masked SDPA: the twin every kernel is tested against.

It expands the block map into an ``(Nq, Nk)`` token mask, so it allocates N x N and is meant for tests,
references and small inputs only. Rows whose mask is empty produce zeros and an LSE of ``-inf``, which is
what the fast kernels produce as well (SDPA alone would return NaN there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..mask import BlockSparseMask


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
