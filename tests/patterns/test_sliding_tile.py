from __future__ import annotations

import pytest
import torch
from _helpers import reduce_to_blocks

from dit_sparse import VideoLayout
from dit_sparse.layout import invert_permutation
from dit_sparse.patterns import sliding_tile, sliding_tile_token_mask

LAYOUTS = [
    VideoLayout(5, 6, 7),  # no tile size divides it: partial tiles on every far edge
    VideoLayout(4, 4, 8, text_len=5, text_position="prefix"),
    VideoLayout(6, 5, 5, text_len=3, text_position="suffix"),
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize(
    ("tile", "window", "block"), [((2, 2, 2), (1, 1, 1), 16), ((2, 4, 4), (3, 3, 3), 32), ((1, 2, 3), (2, 3, 1), 16)]
)
def test_block_mask_is_the_exact_reduction(layout, tile, window, block):
    mask = sliding_tile(layout, tile=tile, window=window, block_size=block)
    tokens = sliding_tile_token_mask(layout, tile=tile, window=window)
    assert torch.equal(mask.to_dense()[0, 0], reduce_to_blocks(tokens, block))


def test_tiles_are_contiguous_and_the_window_slides_inside_the_grid():
    layout = VideoLayout(4, 4, 4)  # 2 x 2 x 2 tiles of (2, 2, 2): 8 tokens each
    perm = layout.tile_permutation((2, 2, 2))
    assert torch.equal(perm[invert_permutation(perm)], torch.arange(64))
    assert perm[:8].tolist() == [0, 1, 4, 5, 16, 17, 20, 21]  # the first tile
    tokens = sliding_tile_token_mask(layout, tile=(2, 2, 2), window=(1, 1, 1))
    assert torch.equal(tokens, torch.block_diag(*[torch.ones(8, 8, dtype=torch.bool)] * 8))
    # window 2 along frames on a 2-tile axis: every query tile sees both frame tiles (shifted, not clipped)
    wide = sliding_tile_token_mask(layout, tile=(2, 2, 2), window=(2, 1, 1))
    assert wide[0, 32] and wide[32, 0] and not wide[0, 8]


def test_tile_aligned_with_blocks_gives_the_tile_density():
    layout = VideoLayout(8, 16, 16)  # 4 x 2 x 2 tiles of (2, 8, 8) = 128 tokens
    mask = sliding_tile(layout, tile=(2, 8, 8), window=(1, 1, 1), block_size=128)
    assert mask.density() == pytest.approx(1 / 16)


def test_per_head_windows_and_validation():
    layout = VideoLayout(4, 4, 4)
    mask = sliding_tile(layout, tile=(2, 2, 2), window=[(1, 1, 1), (2, 2, 2)], num_heads=2, block_size=16)
    assert mask.density_per_head()[0, 0] < mask.density_per_head()[0, 1]
    with pytest.raises(ValueError, match="window lists 2 heads, num_heads is 3"):
        sliding_tile(layout, tile=(2, 2, 2), window=[(1, 1, 1), (2, 2, 2)], num_heads=3, block_size=16)
    with pytest.raises(ValueError, match=r"tile must be three positive ints"):
        sliding_tile(layout, tile=(2, 0, 2))
