from __future__ import annotations

import math

import torch
from _helpers import reduce_to_blocks

import dit_sparse as ds
from dit_sparse.integration.specs import SPECS
from dit_sparse.methods import AttentionCall, build_method
from dit_sparse.methods.draft import draft_keep, pool_windows
from dit_sparse.patterns._tiles import tile_of_position

WAN = next(spec for spec in SPECS if spec.name == "wan")
LAYOUT = ds.VideoLayout(3, 5, 6, text_len=4, text_position="prefix")  # windows of 2 x 4: partial at the edges


def test_pooling_averages_each_window():
    tile_of = tile_of_position(LAYOUT, (1, 2, 4))
    x = torch.randn(1, 2, LAYOUT.num_tokens, 8)
    pooled = pool_windows(x, tile_of, int(tile_of.max()) + 1)
    for window in (0, 5, int(tile_of.max())):
        torch.testing.assert_close(pooled[:, :, window], x[:, :, tile_of == window].mean(dim=2))


def test_draft_keep_takes_the_top_fraction_and_every_row_maximum():
    q, k = torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 8)
    keep = draft_keep(q, k, fraction=0.1)
    probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    assert keep.any(-1).all()
    assert (keep.flatten(-2).sum(-1) >= math.ceil(0.1 * 81)).all()
    rows_max = probs.argmax(-1, keepdim=True)
    assert keep.gather(-1, rows_max).all()


def test_block_mask_is_the_exact_reduction_of_the_window_selection():
    config = ds.SparseAttentionConfig("draft", block_size=16, window=(2, 4), fraction=0.3)
    method = build_method(config, WAN)
    q, k = (torch.randn(1, 2, LAYOUT.num_tokens, 8) for _ in range(2))
    plan = method.plan_for(AttentionCall(0, 0, None, LAYOUT, q, k, k))
    tile_of = tile_of_position(LAYOUT, (1, 2, 4))
    n_tiles = int(tile_of.max()) + 1
    keep = draft_keep(
        pool_windows(q[:, :, plan.permutation], tile_of, n_tiles),
        pool_windows(k[:, :, plan.permutation], tile_of, n_tiles),
        0.3,
    )
    for head in range(2):
        text = tile_of < 0
        tokens = keep[0, head][tile_of.clamp(min=0)][:, tile_of.clamp(min=0)] | text[:, None] | text[None, :]
        assert torch.equal(plan.mask.to_dense()[0, head], reduce_to_blocks(tokens, 16))
    assert torch.equal(plan.permutation, LAYOUT.tile_permutation((1, 2, 4)))


def test_triton_window_pooling_matches_its_twin():
    from conftest import HAS_CUDA

    device = "cuda" if HAS_CUDA else "cpu"
    for layout in (LAYOUT, ds.VideoLayout(2, 4, 8, text_len=3, text_position="suffix"), ds.VideoLayout(2, 9, 9)):
        tile_of = tile_of_position(layout, (1, 2, 4))
        n_tiles = int(tile_of.max()) + 1
        x = torch.randn(2, 3, layout.num_tokens, 20, device=device)
        twin = pool_windows(x, tile_of, n_tiles, backend="torch")
        kernel = pool_windows(x, tile_of, n_tiles, backend="triton")
        assert kernel.shape == (2, 3, n_tiles, 20)
        torch.testing.assert_close(kernel, twin, atol=1e-5, rtol=1e-5)
