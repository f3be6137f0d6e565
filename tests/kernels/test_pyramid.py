"""Pyramid attention: the token-level twin's definition, and the CPU path equal to it."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dit_sparse as ds
from dit_sparse.kernels.pyramid import pool_keys_values, reference_pyramid_attention


def random_levels(batch, heads, n_q, n_k, max_level, g):
    levels = torch.randint(-1, max_level + 1, (batch, heads, n_q, n_k), generator=g, dtype=torch.int8)
    levels[..., 0] = torch.randint(0, max_level + 1, (batch, heads, n_q), generator=g, dtype=torch.int8)
    return levels


def test_a_pooled_block_of_equal_keys_is_exact_attention_over_its_tokens():
    """The log|g| term: a group of equal keys pooled into one key (value: the group's mean value) gets the
    weight its tokens had together, and each of them had the same weight: exact attention, for any values."""
    n = 128
    q, k, v = (torch.randn(1, 2, n, 16, dtype=torch.float64) for _ in range(3))
    k[..., 64:, :] = k[..., 64:65, :]  # kv block 1: one key repeated
    levels = torch.tensor([[[[0, 6], [0, 3]]]], dtype=torch.int8).expand(1, 2, 2, 2)  # one key, or 8 groups of 8
    mask = ds.LevelMask(levels, 64, (n, n))
    out, lse = ds.pyramid_attention(q, k, v, mask, backend="reference", return_lse=True)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(lse.double(), torch.logsumexp((q @ k.transpose(-2, -1)) / 4, -1))
    k2 = k.clone()
    k2[..., 64:72, :] += 1.0  # one group's keys differ from the rest: pooling is then an approximation
    assert not torch.allclose(ds.pyramid_attention(q, k2, v, mask, backend="reference"),
                              torch.nn.functional.scaled_dot_product_attention(q, k2, v))  # fmt: skip


def test_pooling_means_and_counts_in_a_partial_last_block():
    k = torch.arange(10.0).view(1, 1, 10, 1)
    k_pool, v_pool, counts = pool_keys_values(k, 2 * k, block_k=8, level=2)
    assert counts.tolist() == [4, 4, 2, 0]  # the last block holds tokens 8 and 9
    assert k_pool[0, 0, :, 0].tolist() == [1.5, 5.5, 8.5, 0.0] and v_pool[0, 0, :, 0].tolist() == [3, 11, 17, 0]


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(17, 330),
    block=st.sampled_from([(64, 64), (128, 64), (64, 128), (32, 32)]),
    max_level=st.integers(1, 3),
    batch=st.sampled_from([1, 2]),
    broadcast=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_cpu_path_equals_the_twin(n, block, max_level, batch, broadcast, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    bq, bk = block
    levels = random_levels(1 if broadcast else batch, 2, math.ceil(n / bq), math.ceil(n / bk), max_level, g)
    mask = ds.LevelMask(levels, block, (n, n), max_level=max_level, allow_empty_rows=True)
    q, k, v = (torch.randn(batch, 2, n, 32, generator=g).to(dtype) for _ in range(3))
    out, lse = ds.pyramid_attention(q, k, v, mask, backend="gather", return_lse=True)
    ref, ref_lse = reference_pyramid_attention(q, k, v, mask, 1 / math.sqrt(32), True)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(lse, ref_lse, atol=tol, rtol=tol)


@pytest.mark.parametrize(
    "rows",
    [
        [[2, -1, 3], [1, 4, -1]],  # no full block in the mask: the pooled part alone
        [[0, 6, -1], [-1, 0, 0]],  # a row with only full blocks, one with a block pooled to one key
        [[5, 5, 5], [0, 1, 6]],  # every level down to one key per block, the partial last group at each
    ],
)
def test_cpu_parts_full_blocks_and_pooled_keys_merge_exactly(rows):
    # blocks of 64, 150 tokens: the last block holds 22, a partial group at every level from 2 (22 = 5 * 4 + 2)
    levels = torch.tensor(rows, dtype=torch.int8)[None, None].expand(1, 2, 2, 3).clone()
    levels[0, 1] = levels[0, 1].flip(0)
    mask = ds.LevelMask(levels, 64, (128, 150), max_level=6)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 2, 128, 16, generator=g)
    k, v = (torch.randn(2, 2, 150, 16, generator=g) for _ in range(2))
    out, lse = ds.pyramid_attention(q, k, v, mask, backend="gather", return_lse=True)
    ref, ref_lse = reference_pyramid_attention(q, k, v, mask, 0.25, True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [512, 500])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_path_with_psa_quotas_equals_the_twin(n, dtype):
    """PSA's quotas give every row as many full and pooled blocks: each part runs as one fused call on q as it
    is (the fast path), merged exactly as the general one."""
    from dit_sparse.methods.pyramid import allocate_levels, ratios_for_density

    g = torch.Generator().manual_seed(11)
    levels = allocate_levels(torch.rand(1, 2, 16, 16, generator=g), ratios_for_density(0.3))
    assert set(torch.unique(levels).tolist()) == {-1, 0, 1, 3}
    mask = ds.LevelMask(levels, 32, (n, n), max_level=3)
    q, k, v = (torch.randn(2, 2, n, 16, generator=g).to(dtype) for _ in range(3))
    out, lse = ds.pyramid_attention(q, k, v, mask, backend="gather", return_lse=True)
    ref, ref_lse = reference_pyramid_attention(q, k, v, mask, 0.25, True)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(lse, ref_lse, atol=tol, rtol=tol)


def test_binary_level_masks_are_block_sparse_attention_exactly():
    blocks = torch.rand(1, 2, 4, 4) < 0.5
    blocks[..., 0] = True
    binary = ds.BlockSparseMask.from_dense(blocks, 64, (250, 250))
    q, k, v = (torch.randn(2, 2, 250, 32) for _ in range(3))
    for backend in ("gather", "reference"):
        out = ds.pyramid_attention(q, k, v, ds.LevelMask.from_block_mask(binary), backend=backend)
        assert torch.equal(out, ds.block_sparse_attention(q, k, v, binary, backend=backend))


def test_empty_rows_give_zeros_and_minus_inf_lse():
    levels = torch.tensor([[[[1, 0], [-1, -1]]]], dtype=torch.int8)
    mask = ds.LevelMask(levels, 64, (128, 128), allow_empty_rows=True)
    q, k, v = (torch.randn(1, 1, 128, 16) for _ in range(3))
    for backend in ("gather", "reference"):
        out, lse = ds.pyramid_attention(q, k, v, mask, backend=backend, return_lse=True)
        assert torch.equal(out[0, 0, 64:], torch.zeros(64, 16)) and torch.isneginf(lse[0, 0, 64:]).all()


def test_bad_calls_name_the_problem():
    q = torch.randn(1, 2, 128, 16)
    mask = ds.LevelMask(torch.tensor([[[[1, 0], [0, 2]]]], dtype=torch.int8).expand(1, 2, 2, 2), 64, (128, 128))
    with pytest.raises(ValueError, match="LevelMask"):
        ds.pyramid_attention(q, q, q, ds.BlockSparseMask.from_dense(torch.ones(1, 2, 2, 2, dtype=torch.bool), 64))
    with pytest.raises(ValueError, match="backend must be one of"):
        ds.pyramid_attention(q, q, q, mask, backend="flex")
    with pytest.raises(ValueError, match="mask was built for seq_len"):
        ds.pyramid_attention(q[:, :, :100], q[:, :, :100], q[:, :, :100], mask)
    with pytest.raises(ValueError, match="inference only"):
        ds.pyramid_attention(q.requires_grad_(), q, q, mask, backend="gather")
