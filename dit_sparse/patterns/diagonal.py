"""Sparse-vDiT diagonal pattern: a band around the main diagonal (frame-local attention).

Chen et al., "Sparse-vDiT: Unleashing the Power of Sparse Attention to Accelerate Video Diffusion
Transformers" (2025), https://arxiv.org/abs/2506.03065. Many heads attend mostly to tokens near
themselves in the frame-major sequence; the diagonal pattern keeps ``|i - j| <= width`` over video-token
indices ``i, j``. With ``width`` below the frame size this is a frame-local band.
"""

from __future__ import annotations

import torch

from ..layout import VideoLayout
from ..mask import BlockSparseMask
from ._segments import Segments, blocks_from_segment_rule, mask_from_blocks, token_grid, video_index_range, with_text


def _check_width(width: int) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f"width must be an int >= 0, got {width!r}")


def diagonal_token_mask(layout: VideoLayout, *, width: int) -> torch.Tensor:
    """Token-level definition ``(N, N)``: video tokens i, j with ``|i - j| <= width``; text dense."""
    _check_width(width)
    is_video, vid = token_grid(layout)
    return with_text((vid[:, None] - vid[None, :]).abs() <= width, is_video)


def diagonal(
    layout: VideoLayout, *, width: int | None = None, num_heads: int = 1, block_size: int = 128
) -> BlockSparseMask:
    """Diagonal band of half-width ``width`` video tokens (default: one frame, ``H' * W'``).

    The block mask is the exact reduction of :func:`diagonal_token_mask` (a block is kept iff any token
    pair in it is).

    Example:
        >>> mask = diagonal(VideoLayout(8, 16, 16), width=128, block_size=64)
        >>> mask.density() < 0.3
        True
    """
    width = layout.frame_tokens if width is None else width
    _check_width(width)

    def rule(q: Segments, k: Segments) -> torch.Tensor:
        q0, q1 = video_index_range(q, layout)
        k0, k1 = video_index_range(k, layout)
        gap = torch.clamp(torch.maximum(k0 - q1, q0 - k1), min=0)
        return gap <= width

    blocks = blocks_from_segment_rule(layout, block_size, rule)
    return mask_from_blocks(blocks, layout, block_size, num_heads, f"diagonal(width={width},block={block_size})")
