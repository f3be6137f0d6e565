"""Radial attention: a static O(n log n) mask whose spatial band shrinks with temporal distance.

Li et al., "Radial Attention: O(n log n) Sparse Attention with Energy Decay for Long Video Generation"
(2025), https://arxiv.org/abs/2506.19852. Attention energy between two frames decays with their temporal
distance ``d``, so:

- frame pairs with ``d <= dense_distance`` (default 1) are dense, and every frame attends densely to the
  first ``sink_frames`` frames (1 for Wan, as in the paper's Wan setting, else 0);
- further pairs keep a band ``|s_q - s_k| <= width(d)`` over the flattened spatial index ``s = h * W' + w``,
  with ``width(d) = decay_factor * 2**bitlen(S) / 2**bitlen(d)`` (``S`` tokens per frame), which halves each
  time ``d`` doubles, but never narrower than one block;
- once the undecayed width ``2**bitlen(S) / 2**bitlen(d)`` falls below a threshold ``T``, only the frame pairs
  with ``d % (T / width) == 0`` are kept, so the kept frame pairs thin out geometrically.

These are the rules of the paper's public implementation (mit-han-lab/radial-attention at 72788d4,
``radial_attn/attn_mask.py``: ``get_window_width`` and ``get_diagonal_split_mask``). Text rows and columns
are dense. Two rules reduce the token-level definition to blocks (``block_rule``):

- ``"paper"`` (default) reproduces the public code's ``gen_log_mask_shrinked`` and ``shrinkMaskStrict``:
  each frame pair's ``S x S`` token mask is placed at its token offset modulo the block size into a padded
  grid of ``ceil(S / B)`` blocks a side (the tail of a frame that spills past those blocks is dropped for that
  pair), and a block survives iff more than 60% of its columns that have any kept row have more than ``B / 3``
  kept rows; the survivors of all pairs are OR-ed. The thinning threshold ``T`` is 128 whatever the block size
  (hard-coded there), while the minimum band width is the block size. A block holding the end of a sequence
  that is not a multiple of the block size is kept dense (the public code's block mask stops before it).
  It drops blocks that hold only a sliver of a kept band, so some token pairs the definition keeps are lost;
  this includes blocks straddling two frames between frame pairs the definition keeps dense (with a large
  ``dense_distance`` the mask is not full: 0.85 of the blocks at 5 x 9 x 7 tokens, block 16).
- ``"cover"`` is lossless: a block is kept iff any token pair in it is kept by the definition (with
  ``T = block_size``), so no kept pair is ever dropped, at the cost of about 1.1-1.3x the blocks of
  ``"paper"`` (21 frames, block 128: 1.23-1.34x at Wan 480p, 1.12-1.18x at 720p, for decay 1.0-0.2).

Frame ``f`` starts at token ``video_start + f * S`` (the public code has no text before the video). Beyond
the reduction, ``"paper"`` departs from the public code in two corners: a q block row the rule leaves empty
keeps its diagonal block (see :func:`_paper_blocks`), and frame pairs with ``d <= dense_distance`` are
dense even for frames of fewer than 128 tokens, where the public code thins ``d = 1`` pairs too.
"""

from __future__ import annotations

import torch

from ..layout import VideoLayout
from ..mask import BlockSparseMask
from ._segments import Segments, blocks_from_segment_rule, mask_from_blocks

BLOCK_RULES = ("paper", "cover")
_PAPER_THINNING = 128  # the public code's get_diagonal_split_mask hard-codes it, whatever the block size


def _frame_rules(
    layout: VideoLayout, block_size: int, decay_factor: float, thinning: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per temporal distance d in [0, F): (band width, whether frame pairs at d are kept).

    ``block_size`` is the minimum band width and ``thinning`` (default: ``block_size``) the threshold below
    which the undecayed width thins out the frame pairs.
    """
    thinning = block_size if thinning is None else thinning
    d = torch.arange(layout.frames)
    bitlen_s = layout.frame_tokens.bit_length()
    group = torch.tensor([int(x).bit_length() for x in d])
    undecayed = 2.0**bitlen_s / 2.0**group  # (F,)
    width = torch.clamp(undecayed * decay_factor, min=float(block_size))
    split = torch.where(undecayed >= thinning, torch.ones_like(d), (thinning / undecayed).floor().long())
    kept = (d % split.clamp(min=1)) == 0
    return width, kept


def _thinning(block_size: int, block_rule: str) -> int:
    return _PAPER_THINNING if block_rule == "paper" else block_size


def check_block_rule(block_rule: str) -> None:
    """A ValueError naming ``block_rule`` and its allowed values unless it is one of :data:`BLOCK_RULES`."""
    if not isinstance(block_rule, str) or block_rule not in BLOCK_RULES:
        raise ValueError(f"block_rule must be one of {BLOCK_RULES}, got {block_rule!r}")


def _check(layout: VideoLayout, decay_factor: float, sink_frames: int, dense_distance: int, block_rule: str) -> None:
    if not isinstance(layout, VideoLayout):
        raise ValueError(f"radial needs a VideoLayout, got {type(layout).__name__}")
    if not decay_factor > 0:
        raise ValueError(f"decay_factor must be positive, got {decay_factor!r}")
    if sink_frames < 0 or dense_distance < 0:
        raise ValueError(f"sink_frames and dense_distance must be >= 0, got {sink_frames}, {dense_distance}")
    check_block_rule(block_rule)


def radial_token_mask(
    layout: VideoLayout,
    *,
    block_size: int = 128,
    decay_factor: float = 1.0,
    sink_frames: int = 0,
    dense_distance: int = 1,
    block_rule: str = "paper",
) -> torch.Tensor:
    """The token-level definition: ``(N, N)`` bool, ``True`` where query token i attends key token j.

    Allocates N x N: for tests and small layouts. ``block_size`` enters the definition itself (the
    minimum band width, and for ``block_rule="cover"`` the frame-pair thinning threshold), as in the paper;
    ``block_rule="paper"`` thins at 128 tokens whatever the block size, as the public code does.
    """
    _check(layout, decay_factor, sink_frames, dense_distance, block_rule)
    n, s, v0 = layout.num_tokens, layout.frame_tokens, layout.video_start
    idx = torch.arange(n)
    is_video = (idx >= v0) & (idx < v0 + layout.video_tokens)
    frame, spatial = (idx - v0) // s, (idx - v0) % s
    width, kept = _frame_rules(layout, block_size, decay_factor, _thinning(block_size, block_rule))
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
    block_rule: str = "paper",
) -> float:
    """Density of :func:`radial_token_mask` (the token-level definition), exactly, without building it.

    Per frame pair the kept token pairs have a closed form (a band ``|a - b| <= w`` over ``S`` positions keeps
    ``S (2w + 1) - w (w + 1)`` pairs), so this costs O(F^2) for any size. Against the block mask's density it
    shows what the reduction to blocks adds (or, for ``block_rule="paper"``, also drops).
    """
    _check(layout, decay_factor, sink_frames, dense_distance, block_rule)
    s, f = layout.frame_tokens, layout.frames
    width, kept = _frame_rules(layout, block_size, decay_factor, _thinning(block_size, block_rule))
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


def _columns_above(t: int, row_lo, row_hi, col_lo, col_hi, w) -> torch.Tensor:
    """How many key positions ``k`` in ``[col_lo, col_hi)`` have more than ``t`` query positions ``q`` in
    ``[row_lo, row_hi)`` with ``|q - k| <= w`` (all arguments broadcast).

    ``min(row_hi, k + w + 1) - max(row_lo, k - w) > t`` holds iff ``row_hi - row_lo > t``, ``2w + 1 > t`` and
    ``row_lo - w + t <= k < row_hi + w - t``: an interval of ``k``, so the count is a length.
    """
    lo = torch.maximum(col_lo, row_lo - w + t)
    hi = torch.minimum(col_hi, row_hi + w - t)
    possible = (row_hi - row_lo > t) & (2 * w + 1 > t)
    return torch.where(possible, (hi - lo).clamp(min=0), torch.zeros_like(hi))


def _paper_blocks(
    layout: VideoLayout, block_size: int, decay_factor: float, sink_frames: int, dense_distance: int
) -> torch.Tensor:
    """Block map ``(nB, nB)`` of the public code's per-frame-pair shrinking rule (see the module docstring).

    Within a block of a frame pair's padded mask the kept rows of each column form an interval, so the
    columns with any kept row and those more than a third full are counted in closed form, one query frame
    at a time for all key frames and blocks: O(F^2 (S / B)^2) in all, nothing of size N x N or S x S is built.
    """
    s, f, v0, b = layout.frame_tokens, layout.frames, layout.video_start, block_size
    width, kept = _frame_rules(layout, block_size, decay_factor, _PAPER_THINNING)
    frames = torch.arange(f)
    d = (frames[:, None] - frames[None, :]).abs()  # (F, F)
    # Per frame pair: the band half-width |a - b| <= w in tokens; S for a dense pair, -1 for a dropped one.
    band = torch.where(kept[d], width[d].clamp(max=s).floor().long(), torch.full_like(d, -1))
    half = torch.where((d <= dense_distance) | (frames[None, :] < sink_frames), s, band)  # (F, F)

    per_side = -(-s // b)  # P: blocks a side of a pair's padded mask; what spills past them is dropped
    start = v0 + frames * s  # (F,) first token of each frame
    offset, first_block = start % b, start // b  # (F,), (F,)
    edges = torch.arange(per_side + 1) * b  # block edges of the padded mask
    lo = (edges[None, :-1] - offset[:, None]).clamp(0, s)  # (F, P) frame positions [lo, hi) in each block
    hi = (edges[None, 1:] - offset[:, None]).clamp(0, s)
    col_lo, col_hi = lo[:, None, :], hi[:, None, :]  # (F, 1, P): key frame j, block column q
    n_blocks = -(-layout.num_tokens // b)
    block_ids = first_block[:, None] + torch.arange(per_side)  # (F, P) final block of each padded block
    blocks = torch.zeros(n_blocks, n_blocks, dtype=torch.bool)
    for i in range(f):
        row_lo, row_hi = lo[i][None, :, None], hi[i][None, :, None]  # (1, P, 1): query frame i, block row p
        w = half[i][:, None, None]  # (F, 1, 1)
        nonzero = _columns_above(0, row_lo, row_hi, col_lo, col_hi, w)  # (F, P, P)
        dense = _columns_above(b // 3, row_lo, row_hi, col_lo, col_hi, w)  # column density > 1/3
        keep = 5 * dense > 3 * nonzero  # more than 60% of the non-empty columns are dense
        rows = block_ids[i][None, :, None].expand_as(keep)
        cols = block_ids[:, None, :].expand_as(keep)
        keep = keep & (rows < n_blocks) & (cols < n_blocks)
        blocks[rows[keep], cols[keep]] = True

    block_start = torch.arange(n_blocks) * b
    block_stop = (block_start + b).clamp(max=layout.num_tokens)
    has_text = (block_start < v0) | (block_stop > v0 + layout.video_tokens)
    if layout.num_tokens % b:
        has_text[-1] = True  # the partial last block, which the public code's block mask leaves out
    blocks[has_text] = True
    blocks[:, has_text] = True
    # A q block the rule leaves empty (only when a frame's dropped spill holds more than 2/3 of it, never at
    # Wan 480p or 720p) keeps its diagonal block, whose keys its own frame's tokens always attend to.
    empty = ~blocks.any(dim=-1)
    blocks[empty, empty.nonzero()[:, 0]] = True
    return blocks


def radial(
    layout: VideoLayout,
    *,
    num_heads: int = 1,
    block_size: int = 128,
    decay_factor: float = 1.0,
    sink_frames: int = 0,
    dense_distance: int = 1,
    block_rule: str = "paper",
) -> BlockSparseMask:
    """Radial attention block mask (the same for every head).

    Args:
        layout (`VideoLayout`): token grid of the attention call.
        num_heads (`int`, defaults to 1): heads of the returned mask (all equal).
        block_size (`int`, defaults to 128): q and kv block size.
        decay_factor (`float`, defaults to 1.0): scales the band width (larger keeps more).
        sink_frames (`int`, defaults to 0): leading frames every frame attends to densely (Wan: 1).
        dense_distance (`int`, defaults to 1): frame pairs this close are dense.
        block_rule (`str`, defaults to ``"paper"``): how token pairs become blocks. ``"paper"``: the public
            code's per-frame-pair shrinking (a block needs > 60% of its non-empty columns > 1/3 full; frame
            pairs thin out below 128 tokens, the band is at least ``block_size`` wide; the partial last block
            is dense). ``"cover"``: a block is kept iff any token pair in it is kept (lossless; about
            1.1-1.3x the blocks; frame pairs thin out below ``block_size``). At block 128 both use the same
            token-level definition.

    Example:
        >>> layout = VideoLayout(frames=32, height=16, width=16)
        >>> paper = radial(layout, block_size=64)
        >>> cover = radial(layout, block_size=64, block_rule="cover")
        >>> paper.density() < cover.density() < 0.5
        True
    """
    _check(layout, decay_factor, sink_frames, dense_distance, block_rule)
    if block_rule == "paper":
        blocks = _paper_blocks(layout, block_size, decay_factor, sink_frames, dense_distance)
    else:
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
        f"dense_d={dense_distance},rule={block_rule})"
    )
    return mask_from_blocks(blocks, layout, block_size, num_heads, name)
