"""Cut a token sequence into segments that lie in one block and one frame (or in the text).

Block builders decide, for each pair of segments, whether any token pair between them is kept; a
segment is small enough to describe by its frame and its range of spatial indices, so "any pair kept"
can be decided exactly from intervals, and a block is kept iff any of its segment pairs is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import VideoLayout
from ..mask import BlockSparseMask


@dataclass(frozen=True)
class Segments:
    """Per segment: its block, whether it is text, and for video its frame and spatial index range."""

    block: torch.Tensor  # (S,) long
    is_text: torch.Tensor  # (S,) bool
    frame: torch.Tensor  # (S,) long, -1 for text
    first: torch.Tensor  # (S,) long, first spatial index within the frame (h * W + w)
    last: torch.Tensor  # (S,) long, last spatial index, inclusive


def token_segments(layout: VideoLayout, block: int) -> Segments:
    n, s, v0 = layout.num_tokens, layout.frame_tokens, layout.video_start
    cuts = {0, n, v0, v0 + layout.video_tokens}
    cuts.update(range(0, n, block))
    cuts.update(v0 + f * s for f in range(layout.frames))
    bounds = torch.tensor(sorted(c for c in cuts if 0 <= c <= n))
    start, stop = bounds[:-1], bounds[1:] - 1  # inclusive token ranges
    is_video = (start >= v0) & (start < v0 + layout.video_tokens)
    rel_start, rel_stop = start - v0, stop - v0
    frame = torch.where(is_video, rel_start // s, torch.full_like(start, -1))
    return Segments(
        block=start // block,
        is_text=~is_video,
        frame=frame,
        first=torch.where(is_video, rel_start % s, 0),
        last=torch.where(is_video, rel_stop % s, 0),
    )


def blocks_from_segment_rule(layout: VideoLayout, block_size: int, rule) -> torch.Tensor:
    """Block map ``(nQ, nK)`` kept iff ``rule(q_segments, k_segments)`` keeps any segment pair in it.

    ``rule`` gets two :class:`Segments` viewed as column (q) and row (k) vectors and returns an
    ``(Sq, Sk)`` bool tensor for the video-video pairs; text pairs are kept here.
    """
    seg = token_segments(layout, block_size)
    q = Segments(*(t[:, None] for t in (seg.block, seg.is_text, seg.frame, seg.first, seg.last)))
    k = Segments(*(t[None, :] for t in (seg.block, seg.is_text, seg.frame, seg.first, seg.last)))
    keep = rule(q, k) | q.is_text | k.is_text  # (S, S)
    n_blocks = -(-layout.num_tokens // block_size)
    one_hot = torch.nn.functional.one_hot(seg.block, n_blocks).to(torch.float32)  # (S, nB)
    counts = one_hot.T @ keep.to(torch.float32) @ one_hot  # (nB, nB) kept segment pairs per block pair
    return counts > 0


def mask_from_blocks(blocks: torch.Tensor, layout: VideoLayout, block_size: int, num_heads: int, name: str):
    n = layout.num_tokens
    table = blocks[None, None].expand(1, num_heads, *blocks.shape).contiguous()
    return BlockSparseMask.from_dense(table, block_size, (n, n), name=name)


def video_index_range(seg: Segments, layout: VideoLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last video-token index (0-based within the video part) of each video segment."""
    base = seg.frame * layout.frame_tokens
    return base + seg.first, base + seg.last


def token_grid(layout: VideoLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token of the sequence: whether it is video, and its video index (-1 for text)."""
    idx = torch.arange(layout.num_tokens)
    is_video = (idx >= layout.video_start) & (idx < layout.video_start + layout.video_tokens)
    return is_video, torch.where(is_video, idx - layout.video_start, torch.full_like(idx, -1))


def with_text(video_keep: torch.Tensor, is_video: torch.Tensor) -> torch.Tensor:
    """Token mask with text rows and text columns kept."""
    return video_keep | ~is_video[:, None] | ~is_video[None, :]
