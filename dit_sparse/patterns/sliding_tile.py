"""Sliding tile attention: each query tile attends to a window of tiles around it.

Zhang et al., "Fast Video Generation with Sliding Tile Attention" (2025), https://arxiv.org/abs/2502.04507.
Video tokens are grouped into tiles of ``tile = (t, h, w)`` latent cells and reordered so each tile is
contiguous (:meth:`VideoLayout.tile_permutation`); a query tile keeps the ``window = (wt, wh, ww)`` tiles
around it. As in the paper, the window slides with the query tile but stays inside the grid, so tiles at
the border see a window shifted inwards rather than a clipped one. Grids that do not divide into tiles
leave partial tiles at the far edges. Text rows and columns are dense.

The masks here are over the *reordered* sequence: apply ``layout.tile_permutation(tile)`` to q, k, v
before attention and its inverse after (``method="sliding_tile"`` does this).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..layout import VideoLayout
from ..mask import BlockSparseMask
from ._tiles import Triple, blocks_from_tile_keep, tile_grid, tile_incidence, tile_of_position


def _check_triple(name: str, value: Sequence[int]) -> Triple:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 3
        or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in value)
    ):
        raise ValueError(f"{name} must be three positive ints (t, h, w), got {value!r}")
    return tuple(value)


def _tile_keep(layout: VideoLayout, tile: Triple, window: Triple) -> torch.Tensor:
    """(T, T) bool over tiles: query tile i keeps kv tile j."""
    grid = tile_grid(layout, tile)
    coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij"), -1).reshape(-1, 3)
    keep = torch.ones(len(coords), len(coords), dtype=torch.bool)
    for axis in range(3):
        n, w = grid[axis], window[axis]
        start = (coords[:, axis] - (w - 1) // 2).clamp(min=0, max=max(n - w, 0))  # window start per query tile
        c_k = coords[:, axis][None, :]
        keep &= (c_k >= start[:, None]) & (c_k < start[:, None] + w)
    return keep


def sliding_tile_token_mask(layout: VideoLayout, *, tile: Sequence[int], window: Sequence[int]) -> torch.Tensor:
    """Token-level definition ``(N, N)`` over the tile-major sequence; text rows and columns dense."""
    tile, window = _check_triple("tile", tile), _check_triple("window", window)
    tile_of = tile_of_position(layout, tile)
    keep = _tile_keep(layout, tile, window)
    text = tile_of < 0
    video_keep = keep[tile_of.clamp(min=0)][:, tile_of.clamp(min=0)]
    return video_keep | text[:, None] | text[None, :]


def sliding_tile(
    layout: VideoLayout,
    *,
    tile: Sequence[int] = (2, 8, 8),
    window: Sequence[int] | Sequence[Sequence[int]] = (3, 3, 3),
    num_heads: int = 1,
    block_size: int = 128,
) -> BlockSparseMask:
    """Sliding-tile block mask over the tile-major sequence (exact reduction of the token definition).

    Args:
        tile: (t, h, w) latent cells per tile; ``t * h * w == block_size`` aligns tiles with blocks.
        window: (wt, wh, ww) tiles each query tile sees, or one such triple per head.
    """
    tile = _check_triple("tile", tile)
    per_head = isinstance(window[0], (tuple, list))
    windows = (
        [_check_triple("window", w) for w in window] if per_head else [_check_triple("window", window)] * num_heads
    )
    if len(windows) != num_heads:
        raise ValueError(f"window lists {len(windows)} heads, num_heads is {num_heads}")
    incidence = tile_incidence(layout, tile, block_size)
    heads = []
    cache: dict[Triple, torch.Tensor] = {}
    for w in windows:
        if w not in cache:
            cache[w] = blocks_from_tile_keep(incidence, _tile_keep(layout, tile, w))
        heads.append(cache[w])
    n = layout.num_tokens
    name = f"sliding_tile(tile={tile},window={windows[0] if not per_head else 'per-head'},block={block_size})"
    return BlockSparseMask.from_dense(torch.stack(heads)[None], block_size, (n, n), name=name)
