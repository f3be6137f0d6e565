"""Sparse attention through real (tiny, offline) pipeline calls: batch 2 with classifier-free guidance."""

from __future__ import annotations

import pytest
import torch
from diffusers import FirstBlockCacheConfig
from tiny_models import FAMILIES, call_kwargs

import dit_sparse as ds
from dit_sparse.pipelines import (
    SparseCogVideoXPipeline,
    SparseFluxPipeline,
    SparseHunyuanVideoPipeline,
    SparseMochiPipeline,
    SparseSkyReelsV2Pipeline,
    SparseWanPipeline,
    SparseWanVACEPipeline,
)

SPARSE_CLASSES = {
    "wan": SparseWanPipeline,
    "flux": SparseFluxPipeline,
    "cogvideox": SparseCogVideoXPipeline,
    "hunyuan": SparseHunyuanVideoPipeline,
    "skyreels_v2": SparseSkyReelsV2Pipeline,
    "wan_vace": SparseWanVACEPipeline,
    "mochi": SparseMochiPipeline,
}
# 25 frames -> 7 latent frames, so radial attention has frame pairs to drop.
LONGER = {family: {"num_frames": 25} for family in FAMILIES} | {"flux": {}}
RADIAL = ds.SparseAttentionConfig("radial", block_size=16, backend="reference")


def generate(pipe, family: str, **overrides) -> torch.Tensor:
    _, _, call = FAMILIES[family]
    kwargs = call_kwargs(call, **LONGER[family], output_type="latent", return_dict=False, **overrides)
    return pipe(**kwargs)[0]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_drop_in_pipeline_from_a_local_folder(family, tmp_path):
    _, make_pipeline, _ = FAMILIES[family]
    pipe = make_pipeline()
    dense = generate(pipe, family)
    pipe.save_pretrained(tmp_path)
    sparse_pipe = SPARSE_CLASSES[family].from_pretrained(tmp_path, sparse_attention=RADIAL)
    assert isinstance(sparse_pipe, type(pipe))
    sparse = generate(sparse_pipe, family)
    assert sparse.shape == dense.shape and torch.isfinite(sparse).all()
    assert (sparse - dense).abs().max() > 1e-5
    stats = ds.summary(sparse_pipe)
    assert stats["steps"] == 2 and stats["attention_calls"] > 0
    assert stats["total_seconds"] >= stats["transformer_seconds"] > stats["attention_seconds"] > 0
    assert 0 < stats["mean_density"] < 1
    # a second call is a new generation: the statistics start over
    generate(sparse_pipe, family)
    assert ds.summary(sparse_pipe)["attention_calls"] == stats["attention_calls"]
    ds.remove_sparse_attention(sparse_pipe)
    assert torch.equal(generate(sparse_pipe, family), dense)


@pytest.mark.parametrize("family", ["wan", "flux"])
def test_composes_with_first_block_cache(family):
    _, make_pipeline, _ = FAMILIES[family]
    cached = make_pipeline()
    cached.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    reference = generate(cached, family)
    ds.apply_sparse_attention(cached, ds.SparseAttentionConfig("dense", merge_padding_keys=False))
    assert torch.equal(generate(cached, family), reference)
    ds.apply_sparse_attention(cached, RADIAL)
    out = generate(cached, family)
    assert torch.isfinite(out).all() and ds.summary(cached)["mean_density"] < 1
    ds.remove_sparse_attention(cached)
    assert torch.equal(generate(cached, family), reference)


def test_two_pipelines_with_different_configs():
    _, make_pipeline, _ = FAMILIES["wan"]
    first, second = make_pipeline(), make_pipeline()
    vanilla = generate(first, "wan")
    ds.apply_sparse_attention(first, RADIAL)
    ds.apply_sparse_attention(second, ds.SparseAttentionConfig("dense", merge_padding_keys=False))
    sparse = generate(first, "wan")
    assert torch.equal(generate(second, "wan"), vanilla)
    assert not torch.equal(sparse, vanilla)
    assert ds.summary(first)["method"] == "radial" and ds.summary(second)["method"] == "dense"


def test_wan_2_2_two_transformers_share_the_step_count():
    from diffusers import WanPipeline
    from tiny_models import tiny_wan_pipeline, tiny_wan_transformer

    base = tiny_wan_pipeline()
    pipe = WanPipeline(**base.components | {"transformer_2": tiny_wan_transformer()}, boundary_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    config = ds.SparseAttentionConfig("radial", block_size=16, backend="reference", dense_steps=1)
    ds.apply_sparse_attention(pipe, config)
    generate(pipe, "wan")
    stats = ds.summary(pipe)
    high_noise, low_noise = stats["transformers"]["transformer"], stats["transformers"]["transformer_2"]
    # step 0 runs on the high-noise transformer (dense by dense_steps); step 1 on the low-noise one
    assert high_noise["mean_density"] == 1.0 and high_noise["steps"] == 1
    assert low_noise["mean_density"] < 1.0 and low_noise["steps"] == 2
    assert stats["attention_calls"] == high_noise["attention_calls"] + low_noise["attention_calls"]
