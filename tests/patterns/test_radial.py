from __future__ import annotations

import math

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
    kwargs = dict(block_size=block, decay_factor=decay, sink_frames=sink, dense_distance=dense_d, block_rule="cover")
    mask = radial(layout, num_heads=2, **kwargs)
    tokens = radial_token_mask(layout, **kwargs)
    assert torch.equal(mask.to_dense()[0, 0], reduce_to_blocks(tokens, block))
    assert torch.equal(mask.to_dense()[0, 1], mask.to_dense()[0, 0])
    assert mask.seq_len == (layout.num_tokens, layout.num_tokens)


def test_token_definition_follows_the_paper_rules():
    layout = VideoLayout(20, 8, 8)  # 64 tokens a frame: 2**bitlen(64) = 128
    keep = radial_token_mask(layout, block_size=16, block_rule="cover")  # thinning threshold = block size
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
    sink = radial_token_mask(layout, block_size=16, sink_frames=1, block_rule="cover")
    assert bool(sink[19 * s + 5, 63]) and not bool(keep[19 * s + 5, 63])
    # block_rule="paper" thins below 128 tokens whatever the block: d = 2 (undecayed 32) keeps d % 4 == 0 only,
    # d = 16 (undecayed 4) d % 32 == 0 only
    paper = radial_token_mask(layout, block_size=16)
    assert pair(5, 0, 7, 32) and not bool(paper[5 * s, 7 * s + 32])
    assert pair(0, 0, 16, 0) and not bool(paper[0, 16 * s])
    assert bool(paper[5 * s, 6 * s + 63])  # d = 1 stays dense


def test_block_rules_agree_on_the_definition_at_block_128():
    layout = VideoLayout(40, 8, 8)  # undecayed width 128 / 2**bitlen(d) falls below 128 from d = 1
    assert torch.equal(radial_token_mask(layout), radial_token_mask(layout, block_rule="cover"))
    assert not torch.equal(radial_token_mask(layout, block_size=64), radial_token_mask(layout, block_size=64,
                                                                                      block_rule="cover"))  # fmt: skip


@pytest.mark.parametrize("rule", ["paper", "cover"])
def test_text_rows_and_columns_are_dense(rule):
    layout = VideoLayout(10, 4, 4, text_len=9, text_position="prefix")
    mask = radial(layout, block_size=16, block_rule=rule)
    tokens = radial_token_mask(layout, block_size=16, block_rule=rule)
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
    with pytest.raises(ValueError, match=r"block_rule must be one of \('paper', 'cover'\), got 'exact'"):
        radial(VideoLayout(2, 2, 2), block_rule="exact")
    with pytest.raises(ValueError, match="block_rule must be one of"):
        radial_token_mask(VideoLayout(2, 2, 2), block_rule=None)


# --- block_rule="paper": the public code's per-frame-pair shrinking, restated token by token ---------------


def paper_blocks_by_definition(layout, block, decay, sink, dense_d, *, fill_empty_rows=True):
    """The "paper" block map, literally: each frame pair's S x S token mask in a padded grid, shrunk, OR-ed.

    Written from the rule's description (mit-han-lab/radial-attention 72788d4, gen_log_mask_shrinked and
    shrinkMaskStrict): thinning threshold 128, minimum band width = block size, float densities as there.
    """
    s, f, v0, n = layout.frame_tokens, layout.frames, layout.video_start, layout.num_tokens
    nb = math.ceil(n / block)
    out = torch.zeros(nb, nb, dtype=torch.bool)
    pos = torch.arange(s)
    for i in range(f):
        for j in range(f):
            d = abs(i - j)
            if d <= dense_d or j < sink:
                pair = torch.ones(s, s, dtype=torch.bool)
            else:
                undecayed = 2 ** s.bit_length() / 2 ** d.bit_length()
                width = max(undecayed * decay, block)
                split = 1 if undecayed >= 128 else int(128 / undecayed)
                pair = ((pos[:, None] - pos[None, :]).abs() <= width) & (d % split == 0)
            r, c = (v0 + i * s) % block, (v0 + j * s) % block
            side = math.ceil(s / block) * block
            padded = torch.zeros(r + side, c + side, dtype=torch.bool)
            padded[r : r + s, c : c + s] = pair
            rows, cols = padded.shape[0] // block, padded.shape[1] // block  # whole blocks only
            grid = padded[: rows * block, : cols * block].view(rows, block, cols, block)
            column_density = grid.sum(dim=1) / block  # (rows, cols, block)
            frac = (column_density > 1 / 3).sum(-1) / ((column_density > 0).sum(-1) + 1e-9)
            first_row, first_col = (v0 + i * s) // block, (v0 + j * s) // block
            kept = (frac > 0.6)[: nb - first_row, : nb - first_col]  # what lies past the last block is cut
            out[first_row : first_row + rows, first_col : first_col + cols] |= kept
    for k in range(nb):  # blocks holding text, and a partial last block, are dense
        lo, hi = k * block, min((k + 1) * block, n)
        if lo < v0 or hi > v0 + layout.video_tokens or hi - lo < block:
            out[k, :] = True
            out[:, k] = True
    if fill_empty_rows:
        for k in range(nb):
            if not out[k].any():
                out[k, k] = True
    return out


PAPER_LAYOUTS = [
    *LAYOUTS,
    VideoLayout(5, 30, 52),  # Wan 480p frames
    VideoLayout(7, 9, 11, text_len=20, text_position="suffix"),
    VideoLayout(8, 6, 13),  # at block 16 a frame's dropped spill leaves a q block row empty
    VideoLayout(40, 8, 8),  # thinning from d = 1
    VideoLayout(21, 12, 13),  # Wan's 21 frames; 156 tokens a frame, thinned from d = 8
]


@pytest.mark.parametrize("layout", PAPER_LAYOUTS, ids=str)
@pytest.mark.parametrize("block", [16, 32, 64, 128])
@pytest.mark.parametrize(("sink", "decay", "dense_d"), [(0, 1.0, 1), (1, 0.5, 1), (0, 2.0, 0), (0, 0.2, 1)])
def test_paper_rule_equals_its_token_level_statement(layout, block, sink, decay, dense_d):
    mask = radial(layout, num_heads=2, block_size=block, decay_factor=decay, sink_frames=sink, dense_distance=dense_d)
    expected = paper_blocks_by_definition(layout, block, decay, sink, dense_d)
    assert torch.equal(mask.to_dense()[0, 0], expected)
    assert torch.equal(mask.to_dense()[0, 1], expected)
    assert mask.seq_len == (layout.num_tokens, layout.num_tokens) and "rule=paper" in mask.name


def test_paper_rule_keeps_a_block_in_every_row():
    # 78 tokens a frame: frame 1 spans [78, 156), its padded grid of 5 blocks ends at 144, so 144-155 spill
    layout = VideoLayout(8, 6, 13)
    bare = paper_blocks_by_definition(layout, 16, 1.0, 0, 1, fill_empty_rows=False)
    empty = (~bare.any(dim=-1)).nonzero()[:, 0].tolist()
    assert empty == [9]  # tokens 144-159: 12 of frame 1 (dropped) and 4 of frame 2 (< 1/3 of a block)
    blocks = radial(layout, block_size=16).to_dense()[0, 0]
    assert blocks[9].nonzero()[:, 0].tolist() == [9]


def test_paper_rule_keeps_fewer_blocks_than_cover_at_wan_480p():
    layout = VideoLayout(21, 30, 52)  # Wan 2.1 480p: 1560 tokens a frame, 32760 in all (not a multiple of 128)
    paper = radial(layout, decay_factor=0.2)
    cover = radial(layout, decay_factor=0.2, block_rule="cover")
    ratio = cover.density() / paper.density()
    print(f"480p decay 0.2: paper density {paper.density():.4f}, cover {cover.density():.4f}, x{ratio:.3f}")
    assert 1.2 <= ratio <= 1.35
    assert paper.density() == pytest.approx(0.3056, abs=5e-5)
    # outside the dense partial last block, "paper" keeps a subset of "cover" (the same definition at block 128)
    p, c = paper.to_dense()[0, 0, :-1, :-1], cover.to_dense()[0, 0, :-1, :-1]
    assert not (p & ~c).any()


@pytest.mark.parametrize(("height", "width"), [(16, 16), (30, 52)])
def test_paper_density_falls_by_a_quarter_from_16_to_32_frames(height, width):
    dens = [radial(VideoLayout(frames, height, width)).density() for frames in (16, 32)]
    print(f"{height}x{width}: paper density {dens[0]:.4f} at 16 frames, {dens[1]:.4f} at 32")
    assert dens[1] <= 0.75 * dens[0]
