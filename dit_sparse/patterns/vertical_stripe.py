"""Sparse-vDiT vertical-stripe pattern: a few key columns that every query attends to.

Chen et al., "Sparse-vDiT" (2025), https://arxiv.org/abs/2506.03065. Some heads put most of their mass
on a small set of key tokens (often in the first frame); every row keeps those columns. The default
columns are the first frame's tokens, the usual attention sink of video DiTs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..layout import VideoLayout
from ..mask import BlockSparseMask
from ._segments import Segments, blocks_from_segment_rule, mask_from_blocks, token_grid, video_index_range, with_text


def _columns(layout: VideoLayout, columns: Sequence[int] | None) -> torch.Tensor:
    if columns is None:
        return torch.arange(layout.frame_tokens)
    cols = torch.as_tensor(list(columns), dtype=torch.long)
    if cols.numel() == 0:
        raise ValueError("columns must name at least one video token")
    if int(cols.min()) < 0 or int(cols.max()) >= layout.video_tokens:
        raise ValueError(f"columns must be video-token indices in [0, {layout.video_tokens}), got {cols.tolist()}")
    return cols.unique()


def vertical_stripe_token_mask(layout: VideoLayout, *, columns: Sequence[int] | None = None) -> torch.Tensor:
    """Token-level definition ``(N, N)``: every row keeps the listed video-token columns; text dense."""
    is_video, vid = token_grid(layout)
    chosen = torch.zeros(layout.video_tokens, dtype=torch.bool)
    chosen[_columns(layout, columns)] = True
    keep_col = is_video & chosen[vid.clamp(min=0)]
    return with_text(keep_col[None, :].expand(layout.num_tokens, -1), is_video)


def vertical_stripe(
    layout: VideoLayout, *, columns: Sequence[int] | None = None, num_heads: int = 1, block_size: int = 128
) -> BlockSparseMask:
    """Key columns ``columns`` (video-token indices; default the first frame) kept for every query.

    The block mask is the exact reduction of :func:`vertical_stripe_token_mask`.
    """
    cols = _columns(layout, columns)
    counts = torch.zeros(layout.video_tokens + 1, dtype=torch.long)
    counts[cols + 1] = 1
    prefix = counts.cumsum(0)  # prefix[i] = number of chosen columns below i

    def rule(q: Segments, k: Segments) -> torch.Tensor:
        k0, k1 = video_index_range(k, layout)
        k0, k1 = k0.clamp(min=0), k1.clamp(min=0)
        has_column = prefix[k1 + 1] - prefix[k0] > 0
        return has_column.expand(q.frame.shape[0], -1)

    blocks = blocks_from_segment_rule(layout, block_size, rule)
    return mask_from_blocks(
        blocks, layout, block_size, num_heads, f"vertical_stripe(columns={cols.numel()},block={block_size})"
    )
