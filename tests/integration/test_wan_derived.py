"""What is particular to SkyReels-V2 and Wan VACE (Wan-derived transformers); the contract every family meets is
in test_families.py."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, SKYREELS_CALL, call_kwargs, tiny_skyreels_diffusion_forcing_pipeline

import dit_sparse as ds
from dit_sparse.integration.specs import spec_for

FRAMES = 17  # 5 latent frames


def generate(pipe, call, **overrides) -> torch.Tensor:
    kwargs = call_kwargs(call, output_type="latent", return_dict=False, num_frames=FRAMES, num_inference_steps=3)
    return pipe(**kwargs | overrides)[0]


SPARSE_RADIAL = ds.SparseAttentionConfig("radial", block_size=16, backend="reference")


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
    config = ds.SparseAttentionConfig(
        "radial", block_size=16, backend="reference", dense_steps=7, merge_padding_keys=False
    )
    ds.apply_sparse_attention(pipe, config)
    assert torch.equal(generate(pipe, SKYREELS_CALL, ar_step=1), vanilla)  # dense through step 6, the last
    stats = ds.summary(pipe)
    assert stats["steps"] == 7 and stats["attention_calls"] == 7 * 2 * len(stats["per_layer"])
    ds.apply_sparse_attention(pipe, SPARSE_RADIAL)
    out = generate(pipe, SKYREELS_CALL, ar_step=1)
    assert torch.isfinite(out).all() and ds.summary(pipe)["mean_density"] < 0.9
    with pytest.raises(ValueError, match="causal_block_size=1"):
        generate(pipe, SKYREELS_CALL, ar_step=1, causal_block_size=5, num_frames=17)
    ds.remove_sparse_attention(pipe)
    pipe.transformer._set_ar_attention(1)
    assert torch.equal(generate(pipe, SKYREELS_CALL, ar_step=1), vanilla)
