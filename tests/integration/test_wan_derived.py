"""SkyReels-V2 and Wan VACE (Wan-derived transformers) through their real tiny pipelines, CFG on."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, SKYREELS_CALL, call_kwargs, tiny_skyreels_diffusion_forcing_pipeline

import dit_sparse as ds
from dit_sparse.integration.specs import spec_for

# 17 frames -> 5 latent frames of 9 x 7 tokens: 315 tokens, not a multiple of the 16-token blocks.
FRAMES = 17
# "cover" keeps a block iff the definition keeps a pair in it: with every frame pair dense, every block.
KEEP_ALL = ds.SparseAttentionConfig(
    "radial", block_size=16, backend="reference", dense_distance=1000, block_rule="cover"
)
SPARSE = {
    "radial": ds.SparseAttentionConfig("radial", block_size=16, backend="reference"),
    "sparse_vdit": ds.SparseAttentionConfig("sparse_vdit", block_size=16, backend="reference"),
    "adaspa": ds.SparseAttentionConfig("adaspa", block_size=16, backend="reference", search_steps=(1,), density=0.2),
    "draft": ds.SparseAttentionConfig("draft", block_size=16, backend="reference", window=(2, 8), fraction=0.2),
}


def generate(pipe, call, **overrides) -> torch.Tensor:
    kwargs = call_kwargs(call, output_type="latent", return_dict=False, num_frames=FRAMES, num_inference_steps=3)
    return pipe(**kwargs | overrides)[0]


@pytest.mark.parametrize("family", ["skyreels_v2", "wan_vace"])
def test_exact_when_dense_sparse_otherwise_and_removable(family):
    _, make_pipeline, call = FAMILIES[family]
    pipe = make_pipeline()
    vanilla = generate(pipe, call)
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("dense"))
    assert torch.equal(generate(pipe, call), vanilla)
    ds.apply_sparse_attention(pipe, KEEP_ALL)
    torch.testing.assert_close(generate(pipe, call), vanilla, atol=1e-5, rtol=1e-5)
    assert ds.summary(pipe)["mean_density"] == 1.0
    layers = len(spec_for(pipe.transformer).self_attention(pipe.transformer))
    for method, config in SPARSE.items():
        ds.apply_sparse_attention(pipe, config)
        out = generate(pipe, call)
        stats = ds.summary(pipe)
        assert torch.isfinite(out).all() and not torch.equal(out, vanilla), method
        assert stats["mean_density"] < 0.9, (method, stats["mean_density"])
        assert stats["steps"] == 3 and len(stats["per_layer"]) == layers, method
    ds.remove_sparse_attention(pipe)
    assert torch.equal(generate(pipe, call), vanilla)


def test_wan_vace_control_blocks_are_sparse_too():
    transformer = FAMILIES["wan_vace"][0]()
    layers = spec_for(transformer).self_attention(transformer)
    assert layers[: len(transformer.vace_blocks)] == [block.attn1 for block in transformer.vace_blocks]
    assert len(layers) == len(transformer.vace_blocks) + len(transformer.blocks)


def test_skyreels_diffusion_forcing_counts_every_step_of_an_asynchronous_schedule():
    """ar_step=1 starts the 5 latent frames one step apart: 3 steps per frame take 3 + 4 = 7 pipeline steps,
    while the largest timestep stays at the first one for the first 5."""
    pipe = tiny_skyreels_diffusion_forcing_pipeline()
    vanilla = generate(pipe, SKYREELS_CALL, ar_step=1)
    config = ds.SparseAttentionConfig("radial", block_size=16, backend="reference", dense_steps=7)
    ds.apply_sparse_attention(pipe, config)
    assert torch.equal(generate(pipe, SKYREELS_CALL, ar_step=1), vanilla)  # dense through step 6, the last
    stats = ds.summary(pipe)
    assert stats["steps"] == 7 and stats["attention_calls"] == 7 * 2 * len(stats["per_layer"])
    ds.apply_sparse_attention(pipe, SPARSE["radial"])
    out = generate(pipe, SKYREELS_CALL, ar_step=1)
    assert torch.isfinite(out).all() and ds.summary(pipe)["mean_density"] < 0.9
    with pytest.raises(ValueError, match="causal_block_size=1"):
        generate(pipe, SKYREELS_CALL, ar_step=1, causal_block_size=5, num_frames=17)
    ds.remove_sparse_attention(pipe)
    pipe.transformer._set_ar_attention(1)
    assert torch.equal(generate(pipe, SKYREELS_CALL, ar_step=1), vanilla)
