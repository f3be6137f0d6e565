"""``method="radial"`` builds the pattern's mask with the configured block rule and rejects unknown rules."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_wan_transformer

import dit_sparse as ds
from dit_sparse.integration.specs import spec_for
from dit_sparse.layout import VideoLayout
from dit_sparse.methods import build_method
from dit_sparse.methods.base import AttentionCall, Method
from dit_sparse.patterns import radial

LAYOUT = VideoLayout(frames=8, height=6, width=13)  # block 16: the two rules differ here


def mask_of(config: ds.SparseAttentionConfig) -> tuple[Method, torch.Tensor]:
    method = build_method(config, spec_for(tiny_wan_transformer()))
    q = torch.zeros(1, 2, LAYOUT.num_tokens, 8)
    return method, method.mask_for(AttentionCall(0, 0, None, LAYOUT, q, q, q)).to_dense()


def test_default_rule_is_paper_and_cover_is_passed_through():
    config = ds.SparseAttentionConfig("radial", block_size=16)
    method, paper = mask_of(config)
    sink = method.spec.sink_frames
    expected = {rule: radial(LAYOUT, num_heads=2, block_size=16, sink_frames=sink, block_rule=rule).to_dense()
                for rule in ("paper", "cover")}  # fmt: skip
    assert torch.equal(paper, expected["paper"]) and not torch.equal(paper, expected["cover"])
    _, cover = mask_of(ds.SparseAttentionConfig("radial", block_size=16, block_rule="cover"))
    assert torch.equal(cover, expected["cover"])


def test_unknown_rule_is_refused_by_name():
    with pytest.raises(ValueError, match=r"block_rule must be one of \('paper', 'cover'\), got 'any'"):
        ds.SparseAttentionConfig("radial", block_size=16, block_rule="any")
