"""XAttention's reference settings: key block 0 kept in every row unless keep_first_block is off."""

from __future__ import annotations

import torch

import dit_sparse as ds
from dit_sparse.integration.specs import SPECS
from dit_sparse.methods import AttentionCall, build_method


def _plan(**params):
    torch.manual_seed(0)
    layout = ds.VideoLayout(frames=4, height=8, width=8)
    q, k, v = (torch.randn(1, 2, layout.num_tokens, 16) for _ in range(3))
    k[..., 64:, :] *= 4.0  # scores concentrate away from block 0
    config = ds.SparseAttentionConfig("xattention", block_size=32, warmup_steps=0, tau=0.3, **params)
    spec = next(s for s in SPECS if s.name == "wan")
    return build_method(config, spec).plan_for(AttentionCall(0, 0, None, layout, q, k, v))


def test_first_key_block_is_kept_in_every_row_by_default():
    assert _plan().mask.blocks[..., 0].all()
    without = _plan(keep_first_block=False).mask.blocks
    assert not without[..., 0].all()
    assert torch.equal(_plan().mask.blocks[..., 1:], without[..., 1:])  # nothing else changes
