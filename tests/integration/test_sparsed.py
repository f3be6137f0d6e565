"""Searched-then-reused masks (SparseD, AdaSpa): exact search and reuse counts through CFG pipelines."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, call_kwargs

import dit_sparse as ds


def generate(pipe, call, steps):
    return pipe(**call_kwargs(call, output_type="latent", num_inference_steps=steps, num_frames=25))[0]


@pytest.mark.parametrize(("family", "contexts"), [("wan", 2), ("cogvideox", 1)])  # CogVideoX batches cond+uncond
def test_sparsed_searches_once_then_reuses(family, contexts):
    _, make_pipeline, call = FAMILIES[family]
    pipe = make_pipeline()
    dense = generate(pipe, call, 4)
    config = ds.SparseAttentionConfig("sparsed", block_size=16, backend="reference", dense_steps=1, tau=0.5)
    ds.apply_sparse_attention(pipe, config)
    out = generate(pipe, call, 4)
    stats = ds.summary(pipe)
    layers = len(stats["per_layer"])
    assert stats["searches"] == layers * contexts  # at step 1, the first sparse step
    assert stats["reuses"] == layers * contexts * 2  # steps 2 and 3
    assert 0 < stats["mean_density"] < 1
    assert torch.isfinite(out).all() and not torch.equal(out, dense)


def test_sparsed_shares_one_mask_between_the_cfg_passes():
    """share_contexts: the cond pass (first in each step) searches, the uncond pass reuses its mask."""
    _, make_pipeline, call = FAMILIES["wan"]
    pipe = make_pipeline()
    config = ds.SparseAttentionConfig(
        "sparsed", block_size=16, backend="reference", dense_steps=1, fraction=0.3, share_contexts=True
    )
    ds.apply_sparse_attention(pipe, config)
    seen = []
    state = ds.integration.apply.sparse_state(pipe.transformer)
    original = state.method.mask_for

    def spy(attention_call):
        mask = original(attention_call)
        seen.append((attention_call.step, attention_call.context, attention_call.layer, mask))
        return mask

    state.method.mask_for = spy
    out = generate(pipe, call, 4)
    stats = ds.summary(pipe)
    layers = len(stats["per_layer"])
    assert stats["searches"] == layers  # once per layer, at step 1, on the cond pass
    assert stats["reuses"] == layers * (2 * 3 - 1)  # the uncond pass of step 1, both passes of steps 2 and 3
    masks = {(context, layer): mask for step, context, layer, mask in seen if step == 3}
    assert {context for context, _ in masks} == {"cond", "uncond"}
    assert all(masks[("cond", layer)] is masks[("uncond", layer)] for layer in range(layers))
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="share_contexts must be True or False"):
        ds.SparseAttentionConfig("sparsed", fraction=0.3, share_contexts="yes")


@pytest.mark.parametrize(("family", "contexts"), [("wan", 2), ("cogvideox", 1)])
def test_adaspa_searches_at_its_steps_and_reuses_in_between(family, contexts):
    _, make_pipeline, call = FAMILIES[family]
    pipe = make_pipeline()
    config = ds.SparseAttentionConfig("adaspa", block_size=16, backend="reference", search_steps=(3, 7), density=0.4)
    ds.apply_sparse_attention(pipe, config)
    out = generate(pipe, call, 10)
    stats = ds.summary(pipe)
    layers = len(stats["per_layer"])
    assert stats["searches"] == 2 * layers * contexts
    assert stats["reuses"] == 5 * layers * contexts  # steps 4, 5, 6, 8, 9
    assert torch.isfinite(out).all()
    # steps 0-3 are dense (3 is the first search, which outputs exact attention); 4-9 sparse
    assert 0.4 < stats["mean_density"] < 1
    generate(pipe, call, 10)  # a new generation searches again rather than reusing stale masks
    assert ds.summary(pipe)["searches"] == 2 * layers * contexts


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
@pytest.mark.parametrize(
    "config",
    [
        ds.SparseAttentionConfig("xattention", block_size=16, backend="reference", stride=4, tau=0.6, warmup_steps=1),
        ds.SparseAttentionConfig("draft", block_size=16, backend="reference", window=(2, 8), fraction=0.3),
    ],
    ids=lambda c: c.method,
)
def test_per_call_methods_through_cfg_pipelines(family, config):
    _, make_pipeline, call = FAMILIES[family]
    pipe = make_pipeline()
    dense = generate(pipe, call, 3)
    ds.apply_sparse_attention(pipe, config)
    out = generate(pipe, call, 3)
    stats = ds.summary(pipe)
    calls_per_step = stats["attention_calls"] // 3
    dense_steps = config.method_params()["warmup_steps"] if config.method == "xattention" else 0
    assert stats["searches"] == calls_per_step * (3 - dense_steps)  # a new mask every sparse call
    assert torch.isfinite(out).all() and not torch.equal(out, dense)
    ds.remove_sparse_attention(pipe)
    assert torch.equal(generate(pipe, call, 3), dense)


@pytest.mark.parametrize(("family", "contexts"), [("wan", 2), ("cogvideox", 1)])
def test_pyramid_levels_through_cfg_pipelines(family, contexts):
    """Level masks (full, pooled, dropped blocks) searched at step 1, reused at step 2, on the CPU path."""
    _, make_pipeline, call = FAMILIES[family]
    pipe = make_pipeline()
    dense = generate(pipe, call, 3)
    config = ds.SparseAttentionConfig("pyramid", block_size=16, search_steps=(1,), density=0.3, dense_heads={0: (0,)})
    ds.apply_sparse_attention(pipe, config)
    out = generate(pipe, call, 3)
    stats = ds.summary(pipe)
    layers = len(stats["per_layer"])
    assert stats["searches"] == layers * contexts and stats["reuses"] == layers * contexts
    assert torch.isfinite(out).all() and not torch.equal(out, dense)
    # steps 0 and 1 dense, step 2 at compute 0.3 (text blocks and the dense head read in full: more)
    assert 0.3 < stats["mean_density"] < 1
    ds.remove_sparse_attention(pipe)
    assert torch.equal(generate(pipe, call, 3), dense)
