"""Sparse-vDiT multi-diagonal pattern: bands repeating every frame (the same place in other frames).

Chen et al., "Sparse-vDiT" (2025), https://arxiv.org/abs/2506.03065. Temporal heads attend to the same
spatial neighbourhood in other frames, which in the frame-major sequence is a set of diagonals offset by
multiples of the frame size ``S = H' * W'``: keep video tokens i, j when ``|i - j - m * S| <= width`` for
an integer ``m`` with ``|m| <= max_distance`` (frames; default all).
"""

from __future__ import annotations

import torch

from ..layout import VideoLayout
from ..mask import BlockSparseMask
from ._segments import Segments, blocks_from_segment_rule, mask_from_blocks, token_grid, video_index_range, with_text


def _check(width: int, max_distance: int | None) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f"width must be an int >= 0, got {width!r}")
    if max_distance is not None and (not isinstance(max_distance, int) or max_distance < 0):
        raise ValueError(f"max_distance must be None or an int >= 0, got {max_distance!r}")


def multi_diagonal_token_mask(layout: VideoLayout, *, width: int, max_distance: int | None = None) -> torch.Tensor:
    """Token-level definition ``(N, N)``; text rows and columns dense."""
    _check(width, max_distance)
    s = layout.frame_tokens
    limit = layout.frames - 1 if max_distance is None else max_distance
    is_video, vid = token_grid(layout)
    delta = vid[:, None] - vid[None, :]
    keep = torch.zeros_like(delta, dtype=torch.bool)
    for m in range(-limit, limit + 1):
        keep |= (delta - m * s).abs() <= width
    return with_text(keep, is_video)


def multi_diagonal(
    layout: VideoLayout,
    *,
    width: int | None = None,
    max_distance: int | None = None,
    num_heads: int = 1,
    block_size: int = 128,
) -> BlockSparseMask:
    """Bands of half-width ``width`` (default ``S // 8``) at every frame offset up to ``max_distance``.

    The block mask is the exact reduction of :func:`multi_diagonal_token_mask`.
    """
    s = layout.frame_tokens
    width = max(1, s // 8) if width is None else width
    _check(width, max_distance)
    limit = layout.frames - 1 if max_distance is None else max_distance

    def rule(q: Segments, k: Segments) -> torch.Tensor:
        q0, q1 = video_index_range(q, layout)
        k0, k1 = video_index_range(k, layout)
        low, high = q0 - k1 - width, q1 - k0 + width  # i - j - m*S within +-width <=> m*S in [low, high]
        m_low = torch.clamp(torch.div(low + s - 1, s, rounding_mode="floor"), min=-limit)  # ceil(low / S)
        m_high = torch.clamp(torch.div(high, s, rounding_mode="floor"), max=limit)
        return m_low <= m_high

    blocks = blocks_from_segment_rule(layout, block_size, rule)
    name = f"multi_diagonal(width={width},max_distance={max_distance},block={block_size})"
    return mask_from_blocks(blocks, layout, block_size, num_heads, name)
