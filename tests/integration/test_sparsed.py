"""The SparseD schedule: one search per layer and context at the first sparse step, reuse afterwards."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, call_kwargs

import dit_sparse as ds


@pytest.mark.parametrize(("family", "contexts"), [("wan", 2), ("cogvideox", 1)])  # CogVideoX batches cond+uncond
def test_searches_once_then_reuses(family, contexts):
    _, make_pipeline, call = FAMILIES[family]
    pipe = make_pipeline()
    dense = pipe(**call_kwargs(call, output_type="latent", num_inference_steps=4, num_frames=25))[0]
    config = ds.SparseAttentionConfig("sparsed", block_size=16, backend="reference", dense_steps=1, tau=0.5)
    ds.apply_sparse_attention(pipe, config)
    out = pipe(**call_kwargs(call, output_type="latent", num_inference_steps=4, num_frames=25))[0]
    stats = ds.summary(pipe)
    layers = len(stats["per_layer"])
    assert stats["searches"] == layers * contexts  # at step 1, the first sparse step
    assert stats["reuses"] == layers * contexts * 2  # steps 2 and 3
    assert 0 < stats["mean_density"] < 1
    assert torch.isfinite(out).all() and not torch.equal(out, dense)
