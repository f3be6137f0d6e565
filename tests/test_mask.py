from __future__ import annotations

import math

import pytest
import torch
from _helpers import random_blocks
from hypothesis import given, settings
from hypothesis import strategies as st

from dit_sparse import BlockSparseMask


def token_level_density(mask: BlockSparseMask) -> float:
    return mask.token_mask().double().mean().item()


@settings(max_examples=30, deadline=None)
@given(
    nq=st.integers(1, 300),
    nk=st.integers(1, 300),
    bq=st.sampled_from([16, 64, 128]),
    bk=st.sampled_from([16, 64, 128]),
    density=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**16),
)
def test_density_counts_token_pairs_of_partial_blocks(nq, nk, bq, bk, density, seed):
    g = torch.Generator().manual_seed(seed)
    blocks = random_blocks(2, 3, math.ceil(nq / bq), math.ceil(nk / bk), density, g)
    mask = BlockSparseMask.from_dense(blocks, (bq, bk), (nq, nk))
    assert mask.density() == pytest.approx(token_level_density(mask), abs=1e-12)
    tm = mask.token_mask()
    assert tm.shape == (2, 3, nq, nk)
    # token (i, j) is kept iff its block is kept
    i, j = torch.randint(0, nq, (50,), generator=g), torch.randint(0, nk, (50,), generator=g)
    assert torch.equal(tm[..., i, j], blocks[..., i // bq, j // bk])


def test_compressed_form_lists_kept_blocks_in_order():
    blocks = torch.tensor([[[[True, False, True, True], [False, True, False, False]]]])
    mask = BlockSparseMask.from_dense(blocks, 64, (128, 256))
    assert mask.kv_num_blocks.tolist() == [[[3, 1]]]
    assert mask.kv_indices[0, 0, 0, :3].tolist() == [0, 2, 3]
    assert mask.kv_indices[0, 0, 1, :1].tolist() == [1]
    assert mask.kv_indices.dtype == torch.int32


def test_from_indices_round_trip():
    blocks = random_blocks(2, 2, 5, 7, 0.4)
    mask = BlockSparseMask.from_dense(blocks, (64, 128), (300, 800))
    again = BlockSparseMask.from_indices(mask.kv_indices, mask.kv_num_blocks, (64, 128), (300, 800))
    assert torch.equal(again.to_dense(), blocks)


@pytest.mark.parametrize(("bq", "bk", "nq", "nk"), [(128, 128, 300, 300), (64, 128, 200, 513), (128, 64, 129, 64)])
def test_refine_keeps_the_token_mask(bq, bk, nq, nk):
    blocks = random_blocks(1, 2, math.ceil(nq / bq), math.ceil(nk / bk), 0.5)
    mask = BlockSparseMask.from_dense(blocks, (bq, bk), (nq, nk))
    fine = mask.refine((32, 16))
    assert fine.block_size == (32, 16)
    assert torch.equal(fine.token_mask(), mask.token_mask())
    with pytest.raises(ValueError, match="divide"):
        mask.refine((48, 16))


def test_flex_round_trip_and_tails():
    blocks = random_blocks(2, 3, 3, 4, 0.5)
    mask = BlockSparseMask.from_dense(blocks, (128, 64), (300, 250))
    block_mask = mask.to_flex()
    assert block_mask.BLOCK_SIZE == (128, 64)
    assert tuple(block_mask.seq_lengths) == (300, 250)
    back = BlockSparseMask.from_flex(block_mask)
    assert torch.equal(back.to_dense(), blocks) and back.seq_len == (300, 250)
    # the mask_mod reads the same table, token by token
    q_idx, kv_idx = torch.arange(300)[:, None], torch.arange(250)[None, :]
    for b in range(2):
        for h in range(3):
            got = block_mask.mask_mod(torch.tensor(b), torch.tensor(h), q_idx, kv_idx)
            assert torch.equal(got, mask.token_mask()[b, h])


def test_from_flex_of_a_create_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    def causal(b, h, q, kv):
        return q >= kv

    block_mask = create_block_mask(causal, 1, 1, 256, 256, device="cpu", BLOCK_SIZE=64)
    mask = BlockSparseMask.from_flex(block_mask)
    # partial (diagonal) and full (below) blocks are both kept: lower-triangular block map
    assert torch.equal(mask.to_dense()[0, 0], torch.ones(4, 4, dtype=torch.bool).tril())


def test_broadcast_batch_and_repr():
    mask = BlockSparseMask.from_dense(torch.ones(1, 4, 2, 2, dtype=torch.bool), 64, name="dense")
    assert (mask.batch, mask.num_heads, mask.num_blocks) == (1, 4, (2, 2))
    assert mask.density() == 1.0
    assert "name='dense'" in repr(mask) and "density=1.0000" in repr(mask)


@pytest.mark.parametrize(
    ("blocks", "kwargs", "message"),
    [
        ([[True]], {}, "must be a torch.Tensor"),
        (torch.ones(1, 1, 2, 2, dtype=torch.int64), {}, "must be a bool tensor"),
        (torch.ones(1, 2, 2, dtype=torch.bool), {}, r"shape \(B or 1, H, nQ, nK\)"),
        (torch.ones(1, 1, 2, 2, dtype=torch.bool), {"block_size": 100}, "block sizes must be in"),
        (torch.ones(1, 1, 2, 2, dtype=torch.bool), {"block_size": (64,)}, "pair of ints"),
        (torch.ones(1, 1, 2, 2, dtype=torch.bool), {"block_size": 64, "seq_len": (300, 128)}, "needs 5 x 2"),
        (torch.ones(1, 1, 2, 2, dtype=torch.bool), {"seq_len": (0, 128)}, "positive"),
        (torch.tensor([[[[True, False], [False, False]]]]), {}, "1 q-block rows attend to no kv block"),
    ],
)
def test_bad_masks_are_rejected(blocks, kwargs, message):
    with pytest.raises(ValueError, match=message):
        BlockSparseMask.from_dense(blocks, **kwargs)


def test_empty_rows_when_allowed():
    blocks = torch.tensor([[[[True, False], [False, False]]]])
    mask = BlockSparseMask.from_dense(blocks, 64, allow_empty_rows=True)
    assert mask.kv_num_blocks.tolist() == [[[1, 0]]]


def test_out_of_range_indices_are_rejected():
    indices = torch.tensor([[[[0, 5]]]], dtype=torch.int32)
    counts = torch.tensor([[[2]]], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"kv_indices out of range: found 0..5.*blocks 0..3"):
        BlockSparseMask.from_indices(indices, counts, 64, (64, 256))
    with pytest.raises(ValueError, match="kv_num_blocks must lie in"):
        BlockSparseMask.from_indices(indices, counts + 1, 64, (64, 256))
