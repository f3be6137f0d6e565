"""``sparsed`` with kv blocks finer than its q blocks (``kv_block_size``)."""

from __future__ import annotations

import pytest
import torch

import dit_sparse as ds
from dit_sparse.integration.specs import SPECS
from dit_sparse.methods import AttentionCall, build_method
from dit_sparse.scoring import block_attention_mass, select_blocks


@pytest.mark.parametrize("row_stride", [1, 4])
def test_masses_over_finer_kv_blocks_and_text_kept_at_both_sizes(row_stride):
    spec = next(s for s in SPECS if s.name == "cogvideox")
    layout = ds.VideoLayout(3, 6, 8, text_len=20, text_position="prefix")  # 164 tokens, text first
    config = ds.SparseAttentionConfig(
        "sparsed", block_size=32, kv_block_size=16, fraction=0.3, row_stride=row_stride, dense_steps=0
    )
    method = build_method(config, spec)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, layout.num_tokens, 16, generator=g) for _ in range(3))
    mask = method.mask_for(AttentionCall(0, 0, "cond", layout, q, k, v))
    assert mask.block_size == (32, 16) and mask.num_blocks == (6, 11)
    blocks = mask.blocks[0]
    assert blocks[:, 0].all() and blocks[:, :, :2].all()  # text: q block 0, kv blocks 0 and 1
    mass = block_attention_mass(q[:, :, ::row_stride], k, block_size=(32 // row_stride, 16))
    expected = select_blocks(mass, fraction=0.3)[0]
    assert torch.equal(blocks[:, 1:, 2:], expected[:, 1:, 2:])
    out = ds.block_sparse_attention(q, k, v, mask)
    ref = ds.block_sparse_attention(q, k, v, mask, backend="reference")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="kv_block_size must be None"):
        ds.SparseAttentionConfig("sparsed", kv_block_size=24)
