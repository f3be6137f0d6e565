"""Radial attention: a static O(n log n) mask whose spatial band shrinks with temporal distance.

Li et al., "Radial Attention: O(n log n) Sparse Attention with Energy Decay for Long Video Generation"
(2025), https://arxiv.org/abs/2506.19852. Attention energy between two frames decays with their temporal
distance ``d``, so:

- frame pairs with ``d <= dense_distance`` (default 1) are dense, and every frame attends densely to the
  first ``sink_frames`` frames (1 for Wan, as in the paper's Wan setting, else 0);
- further pairs keep a band ``|s_q - s_k| <= width(d)`` over the flattened spatial index ``s = h * W' + w``,
  with ``width(d) = decay_factor * 2**bitlen(S) / 2**bitlen(d)`` (``S`` tokens per frame), which halves each
  time ``d`` doubles, but never narrower than one block;
- once the undecayed width ``2**bitlen(S) / 2**bitlen(d)`` falls below one block, only the frame pairs with
  ``d % (block / width) == 0`` are kept, so the kept frame pairs thin out geometrically.

These are the rules of the paper's public implementation (its ``get_window_width`` and
``get_diagonal_split_mask``); the one difference is the reduction to blocks, done here exactly (a block is
kept iff any token pair in it is kept) where the public code uses its own block-shrinking rule.
Text rows and columns are dense.
"""

from __future__ import annotations

import torch

from ..layout import VideoLayout
from ..mask import BlockSparseMask
from ._segments import Segments, blocks_from_segment_rule, mask_from_blocks


def _frame_rules(layout: VideoLayout, block_size: int, decay_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per temporal distance d in [0, F): (band width, whether frame pairs at d are kept)."""
    d = torch.arange(layout.frames)
    bitlen_s = layout.frame_tokens.bit_length()
    group = torch.tensor([int(x).bit_length() for x in d])
    undecayed = 2.0**bitlen_s / 2.0**group  # (F,)
    width = torch.clamp(undecayed * decay_factor, min=float(block_size))
    split = torch.where(undecayed >= block_size, torch.ones_like(d), (block_size / undecayed).floor().long())
    kept = (d % split.clamp(min=1)) == 0
    return width, kept


def _check(layout: VideoLayout, decay_factor: float, sink_frames: int, dense_distance: int) -> None:
    if not isinstance(layout, VideoLayout):
        raise ValueError(f"radial needs a VideoLayout, got {type(layout).__name__}")
    if not decay_factor > 0:
        raise ValueError(f"decay_factor must be positive, got {decay_factor!r}")
    if sink_frames < 0 or dense_distance < 0:
        raise ValueError(f"sink_frames and dense_distance must be >= 0, got {sink_frames}, {dense_distance}")


def radial_token_mask(
    layout: VideoLayout,
    *,
    block_size: int = 128,
    decay_factor: float = 1.0,
    sink_frames: int = 0,
    dense_distance: int = 1,
) -> torch.Tensor:
    """The token-level definition: ``(N, N)`` bool, ``True`` where query token i attends key token j.

    Allocates N x N: for tests and small layouts. ``block_size`` enters the definition itself (the
    minimum band width and the frame-pair thinning), as in the paper.
    """
    _check(layout, decay_factor, sink_frames, dense_distance)
    n, s, v0 = layout.num_tokens, layout.frame_tokens, layout.video_start
    idx = torch.arange(n)
    is_video = (idx >= v0) & (idx < v0 + layout.video_tokens)
    frame, spatial = (idx - v0) // s, (idx - v0) % s
    width, kept = _frame_rules(layout, block_size, decay_factor)
    d = (frame[:, None] - frame[None, :]).abs().clamp(max=layout.frames - 1)
    band = (spatial[:, None] - spatial[None, :]).abs() <= width[d]
    video_keep = (d <= dense_distance) | (frame[None, :] < sink_frames) | (kept[d] & band)
    text = ~is_video[:, None] | ~is_video[None, :]
    return text | video_keep


def radial_token_density(
    layout: VideoLayout,
    *,
    block_size: int = 128,
    decay_factor: float = 1.0,
    sink_frames: int = 0,
    dense_distance: int = 1,
) -> float:
    """Density of :func:`radial_token_mask` (the token-level definition), exactly, without building it.

    Per frame pair the kept token pairs have a closed form (a band ``|a - b| <= w`` over ``S`` positions keeps
    ``S (2w + 1) - w (w + 1)`` pairs), so this costs O(F^2) for any size. Against the block mask's density it
    shows what the reduction to blocks adds.
    """
    _check(layout, decay_factor, sink_frames, dense_distance)
    s, f = layout.frame_tokens, layout.frames
    width, kept = _frame_rules(layout, block_size, decay_factor)
    kept_pairs = 0
    for i in range(f):
        for j in range(f):
            d = abs(i - j)
            if d <= dense_distance or j < sink_frames:
                kept_pairs += s * s
            elif kept[d]:
                w = min(int(width[d].item()), s - 1)
                kept_pairs += s * (2 * w + 1) - w * (w + 1)
    n, video = layout.num_tokens, layout.video_tokens
    return (n * n - video * video + kept_pairs) / (n * n)


def radial(
    layout: VideoLayout,
    *,
    num_heads: int = 1,
    block_size: int = 128,
    decay_factor: float = 1.0,
    sink_frames: int = 0,
    dense_distance: int = 1,
) -> BlockSparseMask:
    """Radial attention block mask (the same for every head).

    Args:
        layout (`VideoLayout`): token grid of the attention call.
        num_heads (`int`, defaults to 1): heads of the returned mask (all equal).
        block_size (`int`, defaults to 128): q and kv block size.
        decay_factor (`float`, defaults to 1.0): scales the band width (larger keeps more).
        sink_frames (`int`, defaults to 0): leading frames every frame attends to densely (Wan: 1).
        dense_distance (`int`, defaults to 1): frame pairs this close are dense.

    Example:
        >>> mask = radial(VideoLayout(frames=16, height=16, width=16), block_size=64)
        >>> round(mask.density(), 3) < 0.5
        True
    """
    _check(layout, decay_factor, sink_frames, dense_distance)
    width, kept = _frame_rules(layout, block_size, decay_factor)
    last = layout.frames - 1

    def rule(q: Segments, k: Segments) -> torch.Tensor:
        d = (q.frame - k.frame).abs().clamp(max=last)  # (Sq, Sk)
        gap = torch.maximum(torch.maximum(k.first - q.last, q.first - k.last), torch.zeros_like(d))
        return (d <= dense_distance) | (k.frame < sink_frames) | (kept[d] & (gap <= width[d]))

    blocks = blocks_from_segment_rule(layout, block_size, rule)
    name = (
        f"radial(F={layout.frames},H={layout.height},W={layout.width},text={layout.text_len}:"
        f"{layout.text_position},block={block_size},decay={decay_factor},sink={sink_frames},"
        f"dense_d={dense_distance})"
    )
    return mask_from_blocks(blocks, layout, block_size, num_heads, name)
