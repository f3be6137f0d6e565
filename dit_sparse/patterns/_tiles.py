"""Tile bookkeeping shared by tile-major methods (sliding tile attention, DraftAttention).

A tile is a box of (t, h, w) latent cells; :meth:`VideoLayout.tile_permutation` makes each tile
contiguous. Here: the tile grid, the tile of every position of the reordered sequence, and the exact
reduction of a tile-level keep matrix to blocks of the reordered sequence (a block pair is kept iff any
tile pair it touches is kept; text is kept).
"""

from __future__ import annotations

import torch

from ..layout import VideoLayout

Triple = tuple[int, int, int]


def tile_grid(layout: VideoLayout, tile: Triple) -> Triple:
    """Tiles along (F, H, W); partial tiles at the far edges count."""
    return tuple(-(-n // t) for n, t in zip((layout.frames, layout.height, layout.width), tile, strict=True))


def tile_of_position(layout: VideoLayout, tile: Triple) -> torch.Tensor:
    """Tile id of each position of the tile-major sequence; -1 for text."""
    grid = tile_grid(layout, tile)
    coords = layout.video_coordinates() // torch.tensor(tile)
    tile_id = (coords[:, 0] * grid[1] + coords[:, 1]) * grid[2] + coords[:, 2]  # native video order
    perm = layout.tile_permutation(tile)
    out = torch.full((layout.num_tokens,), -1, dtype=torch.long)
    is_video = (perm >= layout.video_start) & (perm < layout.video_start + layout.video_tokens)
    out[is_video] = tile_id[perm[is_video] - layout.video_start]
    return out


def tile_incidence(layout: VideoLayout, tile: Triple, block_size: int) -> torch.Tensor:
    """(nB, T + 1) float: 1 where a block of the reordered sequence holds a token of tile t (last: text)."""
    tile_of = tile_of_position(layout, tile)
    n_tiles = int(torch.tensor(tile_grid(layout, tile)).prod())
    incidence = torch.zeros(-(-layout.num_tokens // block_size), n_tiles + 1)
    column = torch.where(tile_of >= 0, tile_of, torch.full_like(tile_of, n_tiles))
    incidence[torch.arange(layout.num_tokens) // block_size, column] = 1.0
    return incidence


def blocks_from_tile_keep(incidence: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Block table from a tile keep matrix ``(..., T, T)``; text rows and columns kept. Returns ``(..., nB, nB)``."""
    n_tiles = keep.shape[-1]
    full = torch.ones(*keep.shape[:-2], n_tiles + 1, n_tiles + 1, dtype=torch.float32, device=keep.device)
    full[..., :n_tiles, :n_tiles] = keep.float()
    incidence = incidence.to(keep.device)
    return (incidence @ full @ incidence.T) > 0
