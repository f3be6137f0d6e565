"""LevelMask: validation, conversion, compute density against a token-level count, per-level tables."""

from __future__ import annotations

import math

import pytest
import torch

import dit_sparse as ds
from dit_sparse.levels import DROPPED


def test_compute_density_counts_pooled_keys_token_by_token():
    n, bk, H = 300, 64, 2  # the last kv block holds 44 tokens: pooled by 8 it has ceil(44 / 8) = 6 keys
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(-1, 4, (1, H, 5, 5), generator=g, dtype=torch.int8)
    levels[..., 0] = 0
    mask = ds.LevelMask(levels, bk, (n, n), max_level=3)
    # token-level definition: each q row reads, per kv block, its tokens (full) or its pooled groups
    expected = torch.zeros(H)
    for h in range(H):
        for row in range(n):
            for j in range(5):
                level = int(levels[0, h, row // bk, j])
                tokens = min(bk, n - j * bk)
                expected[h] += 0 if level == DROPPED else math.ceil(tokens / (1 << level))
    expected /= n * n
    torch.testing.assert_close(mask.compute_density_per_head()[0].float(), expected, atol=1e-6, rtol=0)
    assert mask.density() == mask.compute_density()


def test_binary_masks_round_trip():
    blocks = torch.rand(2, 3, 4, 4) < 0.5
    blocks[..., 0] = True
    binary = ds.BlockSparseMask.from_dense(blocks, 64, (250, 250))
    levels = ds.LevelMask.from_block_mask(binary)
    assert levels.is_binary() and not levels.is_full()
    assert torch.equal(levels.to_block_mask().blocks, blocks)
    assert levels.compute_density() == pytest.approx(binary.density())
    pooled = ds.LevelMask(torch.where(blocks, 0, 1).to(torch.int8), 64, (250, 250))
    assert not pooled.is_binary()
    with pytest.raises(ValueError, match="pooled blocks"):
        pooled.to_block_mask()
    assert torch.equal(pooled.read_blocks().blocks, torch.ones_like(blocks))
    assert ds.LevelMask(torch.zeros(1, 1, 2, 2, dtype=torch.int8), 64).is_full()


def test_level_tables_list_each_levels_blocks_in_ascending_order():
    levels = torch.tensor([[[[0, 1, -1, 0], [2, 0, 1, 1]]]], dtype=torch.int8)
    num, idx = ds.LevelMask(levels, 64).level_tables()
    assert num.shape == (3, 1, 1, 2) and idx.shape == (3, 1, 1, 2, 4)
    assert num[:, 0, 0].tolist() == [[2, 1], [1, 2], [0, 1]]
    assert idx[0, 0, 0, 0, :2].tolist() == [0, 3] and idx[1, 0, 0, 1, :2].tolist() == [2, 3]
    assert idx[2, 0, 0, 1, :1].tolist() == [0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(levels=torch.zeros(1, 1, 2, 2)), "integer tensor"),
        (dict(levels=torch.zeros(1, 2, 2, dtype=torch.int8)), r"shape \(B or 1, H, nQ, nK\)"),
        (dict(levels=torch.full((1, 1, 2, 2), 5, dtype=torch.int8), max_level=3), r"lie in \[-1, 3\]"),
        (dict(levels=torch.full((1, 1, 2, 2), -2, dtype=torch.int8)), r"lie in \[-1, 1\]"),
        (dict(levels=torch.zeros(1, 1, 2, 2, dtype=torch.int8), max_level=7), r"does not divide the kv block size 64"),
        (dict(levels=torch.full((1, 1, 2, 2), -1, dtype=torch.int8)), "read no kv block"),
        (dict(levels=torch.zeros(1, 1, 2, 2, dtype=torch.int8), seq_len=(300, 100)), "needs 5 x 2"),
        (dict(levels=torch.zeros(1, 1, 2, 2, dtype=torch.int8), block_size=48), "block sizes must be in"),
    ],
)
def test_bad_level_masks_name_the_problem(kwargs, message):
    kwargs = {"block_size": 64, **kwargs}
    with pytest.raises(ValueError, match=message):
        ds.LevelMask(**kwargs)
