from __future__ import annotations

import pytest
import torch
from _helpers import reduce_to_blocks

from dit_sparse import VideoLayout
from dit_sparse.patterns import (
    diagonal,
    diagonal_token_mask,
    multi_diagonal,
    multi_diagonal_token_mask,
    vertical_stripe,
    vertical_stripe_token_mask,
)

LAYOUTS = [
    VideoLayout(6, 5, 7),
    VideoLayout(5, 4, 6, text_len=13, text_position="prefix"),
    VideoLayout(7, 3, 5, text_len=9, text_position="suffix"),
]
CASES = [
    (diagonal, diagonal_token_mask, {"width": 0}),
    (diagonal, diagonal_token_mask, {"width": 17}),
    (multi_diagonal, multi_diagonal_token_mask, {"width": 2}),
    (multi_diagonal, multi_diagonal_token_mask, {"width": 5, "max_distance": 2}),
    (vertical_stripe, vertical_stripe_token_mask, {}),
    (vertical_stripe, vertical_stripe_token_mask, {"columns": [3, 50, 51, 77]}),
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("block", [16, 32])
@pytest.mark.parametrize(("builder", "definition", "params"), CASES, ids=lambda x: getattr(x, "__name__", str(x)))
def test_block_mask_is_the_exact_reduction(layout, block, builder, definition, params):
    mask = builder(layout, block_size=block, num_heads=2, **params)
    tokens = definition(layout, **params)
    assert tokens.shape == (layout.num_tokens, layout.num_tokens)
    assert torch.equal(mask.to_dense()[0, 0], reduce_to_blocks(tokens, block))
    assert mask.to_dense().any(dim=-1).all()  # every row keeps a block
    assert tokens[layout.text_slice].all() and tokens[:, layout.text_slice].all()


def test_definitions_on_small_grids():
    layout = VideoLayout(3, 2, 2)  # S = 4
    diag = diagonal_token_mask(layout, width=1)
    assert diag[5, 4] and diag[5, 6] and not diag[5, 7]
    multi = multi_diagonal_token_mask(layout, width=0)
    assert multi[1, 5] and multi[1, 9] and not multi[1, 6]  # same spatial place in other frames
    near = multi_diagonal_token_mask(layout, width=0, max_distance=1)
    assert near[1, 5] and not near[1, 9]
    stripe = vertical_stripe_token_mask(layout, columns=[2])
    assert stripe[:, 2].all() and stripe.sum() == layout.num_tokens


def test_parameters_are_validated():
    layout = VideoLayout(3, 2, 2)
    with pytest.raises(ValueError, match="width must be an int >= 0"):
        diagonal(layout, width=-1)
    with pytest.raises(ValueError, match="max_distance must be None or an int"):
        multi_diagonal(layout, max_distance=-2)
    with pytest.raises(ValueError, match=r"columns must be video-token indices in \[0, 12\)"):
        vertical_stripe(layout, columns=[12])
    with pytest.raises(ValueError, match="at least one"):
        vertical_stripe(layout, columns=[])


def test_defaults_are_sparse_at_wan_480p_frame_size():
    layout = VideoLayout(16, 30, 52)  # Wan 480p: 1,560 tokens a frame
    assert diagonal(layout).density() < 0.2
    assert multi_diagonal(layout).density() < 0.5
    assert vertical_stripe(layout).density() < 0.1
