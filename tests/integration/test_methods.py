"""Each implemented method end to end on the tiny Wan and HunyuanVideo transformers."""

from __future__ import annotations

import pytest
import torch
from transformer_cases import CASES, run

import dit_sparse as ds

METHODS = {
    "radial": ds.SparseAttentionConfig("radial", block_size=16, backend="reference"),
    "sparse_vdit": ds.SparseAttentionConfig("sparse_vdit", block_size=16, backend="reference"),
    "sliding_tile": ds.SparseAttentionConfig(
        "sliding_tile", block_size=16, backend="reference", tile=(1, 4, 4), window=(3, 1, 1)
    ),
    "svg": ds.SparseAttentionConfig("svg", block_size=16, backend="reference"),
    "xattention": ds.SparseAttentionConfig(
        "xattention", block_size=16, backend="reference", stride=4, tau=0.6, warmup_steps=0
    ),
    "sparsed": ds.SparseAttentionConfig("sparsed", block_size=16, backend="reference", tau=0.6),
    "draft": ds.SparseAttentionConfig("draft", block_size=16, backend="reference", window=(2, 8), fraction=0.2),
    "paro": ds.SparseAttentionConfig("paro", block_size=16, backend="reference", density=0.3),
}


@pytest.mark.parametrize("model_name", ["wan", "hunyuan"])
@pytest.mark.parametrize("method", list(METHODS))
def test_method_end_to_end(model_name, method):
    model, inputs = CASES[model_name]()
    vanilla = run(model, inputs)
    ds.apply_sparse_attention(model, METHODS[method])
    out = run(model, inputs)
    stats = ds.summary(model)
    assert torch.isfinite(out).all()
    assert (out - vanilla).abs().max() > 1e-5
    assert 0 < stats["mean_density"] < 1 and stats["method"] == method
    ds.remove_sparse_attention(model)
    assert torch.equal(run(model, inputs), vanilla)


@pytest.mark.parametrize("model_name", list(CASES))
def test_sliding_tile_reorders_and_restores_tokens_exactly(model_name):
    """A window covering every tile is dense attention on the reordered sequence: the reordering and its
    inverse must then reproduce the model, text placement and HunyuanVideo's text padding included."""
    model, inputs = CASES[model_name]()
    vanilla = run(model, inputs)
    config = ds.SparseAttentionConfig(
        "sliding_tile", block_size=16, backend="reference", tile=(1, 4, 4), window=(99, 99, 99)
    )
    ds.apply_sparse_attention(model, config)
    torch.testing.assert_close(run(model, inputs), vanilla, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_name", list(CASES))
def test_draft_keeping_every_window_pair_is_dense(model_name):
    model, inputs = CASES[model_name]()
    vanilla = run(model, inputs)
    config = ds.SparseAttentionConfig("draft", block_size=16, backend="reference", window=(2, 8), fraction=1.0)
    ds.apply_sparse_attention(model, config)
    torch.testing.assert_close(run(model, inputs), vanilla, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_name", list(CASES))
def test_paro_keeping_every_block_is_dense(model_name):
    """Density 1 keeps every block: each head's own order and its inverse must reproduce the model exactly."""
    model, inputs = CASES[model_name]()
    vanilla = run(model, inputs)
    ds.apply_sparse_attention(model, ds.SparseAttentionConfig("paro", block_size=16, backend="reference", density=1.0))
    torch.testing.assert_close(run(model, inputs), vanilla, atol=1e-5, rtol=1e-5)
