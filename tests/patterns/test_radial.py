from __future__ import annotations

import pytest
import torch
from _helpers import reduce_to_blocks

from dit_sparse import VideoLayout
from dit_sparse.patterns import radial, radial_token_mask

LAYOUTS = [
    VideoLayout(6, 5, 7),
    VideoLayout(9, 4, 4, text_len=13, text_position="prefix"),
    VideoLayout(12, 3, 5, text_len=7, text_position="suffix"),
    VideoLayout(17, 8, 9),
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("block", [16, 32, 64])
@pytest.mark.parametrize(("sink", "decay", "dense_d"), [(0, 1.0, 1), (1, 0.5, 1), (0, 2.0, 0)])
def test_block_mask_is_the_exact_reduction_of_the_token_definition(layout, block, sink, decay, dense_d):
    kwargs = dict(block_size=block, decay_factor=decay, sink_frames=sink, dense_distance=dense_d)
    mask = radial(layout, num_heads=2, **kwargs)
    tokens = radial_token_mask(layout, **kwargs)
    assert torch.equal(mask.to_dense()[0, 0], reduce_to_blocks(tokens, block))
    assert torch.equal(mask.to_dense()[0, 1], mask.to_dense()[0, 0])
    assert mask.seq_len == (layout.num_tokens, layout.num_tokens)


def test_token_definition_follows_the_paper_rules():
    layout = VideoLayout(20, 8, 8)  # 64 tokens a frame: 2**bitlen(64) = 128
    keep = radial_token_mask(layout, block_size=16)
    s = layout.frame_tokens

    def pair(fq, sq, fk, sk):
        return bool(keep[fq * s + sq, fk * s + sk])

    assert pair(5, 0, 6, 63) and pair(5, 63, 5, 0)  # d <= 1: dense
    # d = 2 (bitlen 2): width 128 / 4 = 32
    assert pair(5, 0, 7, 32) and not pair(5, 0, 7, 33)
    # d = 4 (bitlen 3): width 16; d = 8 (bitlen 4): undecayed 8 < 16 -> width 16, only d % 2 == 0 kept
    assert pair(0, 10, 4, 26) and not pair(0, 10, 4, 27)
    assert pair(0, 0, 8, 16) and not pair(0, 0, 9, 0)
    # d = 16 (bitlen 5): undecayed 4 -> only d % 4 == 0 frame pairs
    assert pair(0, 0, 16, 0) and not pair(0, 0, 18, 0)
    # a sink frame is attended by all
    sink = radial_token_mask(layout, block_size=16, sink_frames=1)
    assert bool(sink[19 * s + 5, 63]) and not bool(keep[19 * s + 5, 63])


def test_text_rows_and_columns_are_dense():
    layout = VideoLayout(10, 4, 4, text_len=9, text_position="prefix")
    mask = radial(layout, block_size=16)
    tokens = radial_token_mask(layout, block_size=16)
    assert tokens[:9].all() and tokens[:, :9].all()
    assert mask.to_dense()[0, 0, 0].all() and mask.to_dense()[0, 0, :, 0].all()


def test_density_falls_with_frame_count():
    dens = [radial(VideoLayout(f, 16, 16), block_size=64).density() for f in (8, 16, 32)]
    assert dens[0] > dens[1] > dens[2]


def test_bad_parameters():
    with pytest.raises(ValueError, match="decay_factor must be positive"):
        radial(VideoLayout(2, 2, 2), decay_factor=0)
    with pytest.raises(ValueError, match="needs a VideoLayout"):
        radial((2, 2, 2))
