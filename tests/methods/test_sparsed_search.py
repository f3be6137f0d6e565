"""SparseD's search: the exact block mass, or (row_stride) the mass of every s-th query row of each q block."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_wan_transformer

import dit_sparse as ds
from dit_sparse.integration.specs import spec_for
from dit_sparse.methods import AttentionCall, build_method
from dit_sparse.methods.sparsed import masks_from_mass
from dit_sparse.scoring import block_attention_mass

LAYOUT = ds.VideoLayout(5, 6, 7)  # 210 tokens: a partial last block of 16


def mask_of(**params) -> torch.Tensor:
    config = ds.SparseAttentionConfig("sparsed", block_size=16, fraction=0.3, **params)
    method = build_method(config, spec_for(tiny_wan_transformer()))
    q, k = (torch.randn(1, 2, LAYOUT.num_tokens, 8, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    return method.mask_for(AttentionCall(0, 0, None, LAYOUT, q, k, k)).blocks, q, k


@pytest.mark.parametrize("stride", [1, 4, 16])
def test_row_stride_selects_from_the_mass_of_the_sampled_rows(stride):
    blocks, q, k = mask_of(row_stride=stride)
    params = {"fraction": 0.3, "tau": 0.9, "min_blocks_per_row": 1}
    # by hand: row r of q block i is sampled when r % stride == 0; each block's mass is its sampled rows' mean
    rows = torch.arange(0, LAYOUT.num_tokens, stride)
    probs = torch.softmax(q[:, :, rows] @ k.transpose(-1, -2) / 8**0.5, dim=-1)  # (1, 2, R, N)
    block_of_key = torch.arange(LAYOUT.num_tokens) // 16
    per_key_block = torch.zeros(1, 2, len(rows), 14).index_add_(-1, block_of_key, probs)
    mass = torch.zeros(1, 2, 14, 14).index_add_(2, rows // 16, per_key_block)
    mass /= torch.bincount(rows // 16, minlength=14).view(1, 1, 14, 1)
    expected = masks_from_mass(mass, LAYOUT, 16, params).blocks
    assert torch.equal(blocks, expected)
    if stride == 1:
        exact = block_attention_mass(q, k, block_size=16)
        assert torch.allclose(mass, exact, atol=1e-5)


def test_row_stride_must_divide_the_block():
    with pytest.raises(ValueError, match="row_stride must divide the block size 16, got 3"):
        ds.SparseAttentionConfig("sparsed", block_size=16, row_stride=3)
    with pytest.raises(ValueError, match="row_stride must be an int >= 1"):
        ds.SparseAttentionConfig("sparsed", block_size=16, row_stride=0)
