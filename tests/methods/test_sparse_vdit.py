from __future__ import annotations

import json

import pytest
import torch

import dit_sparse as ds
from dit_sparse.integration.specs import SPECS
from dit_sparse.methods import AttentionCall, build_method
from dit_sparse.patterns import diagonal, multi_diagonal, vertical_stripe

LAYOUT = ds.VideoLayout(6, 5, 7, text_len=5, text_position="prefix")
WAN = next(spec for spec in SPECS if spec.name == "wan")


def call(layer=0, heads=4, layout=LAYOUT):
    q = torch.zeros(1, heads, layout.num_tokens, 8)
    return AttentionCall(layer, 0, None, layout, q, q, q)


def test_default_assignment_alternates_local_and_temporal_heads():
    method = build_method(ds.SparseAttentionConfig("sparse_vdit", block_size=16), WAN)
    mask = method.mask_for(call())
    stripe = vertical_stripe(LAYOUT, block_size=16).to_dense()[0, 0]
    local = diagonal(LAYOUT, block_size=16).to_dense()[0, 0] | stripe
    temporal = multi_diagonal(LAYOUT, block_size=16).to_dense()[0, 0] | stripe
    for head in range(4):
        assert torch.equal(mask.to_dense()[0, head], local if head % 2 == 0 else temporal)
    assert method.mask_for(call()) is mask and (method.searches, method.reuses) == (1, 1)
    other = ds.VideoLayout(7, 5, 7, text_len=5, text_position="prefix")  # a new grid: a new mask, never a stale one
    assert method.mask_for(call(layout=other)).seq_len == (other.num_tokens, other.num_tokens)


def test_assignment_per_layer_and_json_round_trip():
    assignment = {1: ["dense", "diagonal", "multi_diagonal+vertical_stripe", "vertical_stripe"]}
    config = ds.SparseAttentionConfig("sparse_vdit", block_size=16, assignment=assignment, diagonal_width=3)
    again = ds.SparseAttentionConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    mask = build_method(again, WAN).mask_for(call(layer=1))
    assert mask.to_dense()[0, 0].all()
    assert torch.equal(mask.to_dense()[0, 1], diagonal(LAYOUT, width=3, block_size=16).to_dense()[0, 0])
    with pytest.raises(ValueError, match="has 4 heads, the layer has 2"):
        build_method(config, WAN).mask_for(call(layer=1, heads=2))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"assignment": {0: ["diagonal", "spiral"]}}, r"unknown Sparse-vDiT pattern\(s\) \['spiral'\]"),
        ({"assignment": [["diagonal"]]}, "assignment must be a dict"),
        ({"assignment": {0: []}}, "must be a non-empty list"),
        ({"diagonal_width": -3}, "diagonal_width must be an int >= 0"),
    ],
)
def test_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        ds.SparseAttentionConfig("sparse_vdit", **params)


def test_skipped_heads_run_no_blocks_and_output_uniform_attention():
    from dit_sparse.integration.state import SparseState

    config = ds.SparseAttentionConfig(
        "sparse_vdit", block_size=16, backend="reference", assignment={0: ["skip", "dense"]}
    )
    state = SparseState(WAN, config, original_backends=[None])
    state.layout = LAYOUT
    q, k, v = (torch.randn(2, 2, LAYOUT.num_tokens, 8) for _ in range(3))
    plan = state.method.plan_for(AttentionCall(0, 0, None, LAYOUT, q, k, v))
    assert plan.skip_heads == (0,) and not plan.mask.to_dense()[0, 0].any()  # no kernel work for head 0
    out = state.attend(0, q, k, v, attn_mask=None, scale=None, dense_fn=lambda: None)
    torch.testing.assert_close(out[:, 0], v[:, 0].mean(dim=1, keepdim=True).expand_as(out[:, 0]))
    torch.testing.assert_close(
        out[:, 1], torch.nn.functional.scaled_dot_product_attention(q, k, v)[:, 1], atol=1e-5, rtol=1e-5
    )
    # with text padding at the end (HunyuanVideo), the mean runs over the valid keys only
    n = LAYOUT.num_tokens
    key_mask = torch.ones(2, 1, 1, n, dtype=torch.bool)
    key_mask[1, ..., n - 3 :] = False
    padded = state.attend(0, q, k, v, attn_mask=key_mask, scale=None, dense_fn=lambda: None)
    torch.testing.assert_close(padded[1, 0, 0], v[1, 0, : n - 3].mean(dim=0))
    assert state.summary()["per_layer"][0] == pytest.approx(0.5)  # the skipped head computes nothing
    with pytest.raises(ValueError, match="'skip' cannot be combined"):
        ds.SparseAttentionConfig("sparse_vdit", assignment={0: ["skip+diagonal"]})
