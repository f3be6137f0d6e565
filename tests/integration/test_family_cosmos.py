"""NVIDIA Cosmos (CosmosTransformer3DModel: Cosmos 1.0, Predict2, Predict2.5) through its tiny pipelines.

The family contract on Predict2.5 text2world and Cosmos 1.0 video2world; on every pipeline built, that the
layout dit-sparse reads is the sequence ``attn1`` attends over (video tokens only; video2world conditioning is
the grid's first latent frames, marked by a channel) and that one sparse method runs at every step; then what
is particular to Cosmos: one-frame text2image, the Cosmos 3 Omni transformer refused, a global diffusers
attention backend, and the drop-in class.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import CosmosTextToWorldPipeline
from diffusers.models.attention_dispatch import attention_backend
from diffusers.models.transformers.transformer_cosmos3 import Cosmos3OmniTransformer
from family_contract import assert_family_contract
from tiny_cosmos import FAMILIES, TinySafetyChecker, cosmos_kwargs

import dit_sparse as ds
from dit_sparse.integration.apply import sparse_state
from dit_sparse.integration.specs import spec_for
from dit_sparse.layout import VideoLayout
from dit_sparse.pipelines import SparseCosmosTextToWorldPipeline

# 17 frames -> 5 latent frames: Cosmos 1.0 5 x 6 x 10 = 300 tokens, Predict2 / 2.5 5 x 9 x 7 = 315 tokens.
FRAMES = 17
STEPS = 3
RADIAL = ds.SparseAttentionConfig("radial", block_size=16, backend="reference")

# name -> (token grid at FRAMES, batch, latent frames the condition mask marks). Predict2.5 with a video takes
# one prompt; text2image is one frame whatever num_frames says (the pipeline fixes it).
PIPELINES = {
    "cosmos1_text2world": ((5, 6, 10), 2, ()),
    "cosmos1_video2world": ((5, 6, 10), 2, (0,)),  # an image: latent frame 0
    "cosmos2_text2image": ((1, 19, 15), 2, ()),
    "cosmos2_video2world": ((5, 9, 7), 2, (0,)),
    "cosmos2_5_text2world": ((5, 9, 7), 2, ()),
    "cosmos2_5_video2world": ((5, 9, 7), 1, (0, 1)),  # 5 video frames: latent frames 0 and 1
}


def latent_kwargs(name: str, **overrides) -> dict:
    """A fresh ``STEPS``-step call of pipeline ``name`` with latent output, at ``FRAMES`` frames for video."""
    frames = {} if name == "cosmos2_text2image" else {"num_frames": FRAMES}
    kwargs = cosmos_kwargs(name, output_type="latent", return_dict=False, num_inference_steps=STEPS, **frames)
    return kwargs | overrides


def generate(pipe, name: str, **overrides) -> torch.Tensor:
    return pipe(**latent_kwargs(name, **overrides))[0]


@pytest.mark.parametrize("name", ["cosmos2_5_text2world", "cosmos1_video2world"])
def test_family_contract(name):
    """Predict2.5 text2world (Qwen2.5-VL text, UniPC, per-frame timesteps (B, 1, F, 1, 1)) and Cosmos 1.0
    video2world (EDM, c_noise timesteps that turn negative, an image as latent frame 0), batch 2 each: neither
    pipeline opens a cache context, so dit-sparse counts the 3 steps from the falling timestep."""
    pipe = FAMILIES[name][0]()
    assert_family_contract(pipe, lambda: latent_kwargs(name), steps=STEPS)


@pytest.mark.parametrize("name", list(PIPELINES))
def test_layout_is_the_self_attention_sequence_and_radial_runs_sparse(name):
    """Every ``attn1`` call sees (batch, heads, F' * H' * W') video tokens, the layout dit-sparse read from the
    latents (B, C, F, H, W) / patch (1, 2, 2), without text and without an attention mask; video2world marks its
    conditioning latents as the grid's leading frames in a channel. Only ``attn1`` reaches dit-sparse
    (the text cross-attention ``attn2`` stays dense): steps x CFG x layers calls, each step counted without a
    cache context. Dense equality and removal are the contract's."""
    grid, batch, conditioning = PIPELINES[name]
    pipe = FAMILIES[name][0]()
    transformer = pipe.transformer
    spec = spec_for(transformer)
    layers = spec.self_attention(transformer)
    assert spec.name == "cosmos" and layers == [block.attn1 for block in transformer.transformer_blocks]
    ds.apply_sparse_attention(pipe, RADIAL)
    seen, masks, marked = [], [], set()
    sparse_state(transformer).observers.append(
        lambda state, layer, q, k, v: seen.append((layer, tuple(q.shape), state.layout))
    )

    def on_transformer(module, args, kwargs):
        condition_mask = spec.bind(module, args, kwargs).get("condition_mask")  # (B, 1, F, H, W) or None
        if condition_mask is not None:
            marked.add(tuple(torch.nonzero(condition_mask[0, 0, :, 0, 0]).flatten().tolist()))

    hooks = [transformer.register_forward_pre_hook(on_transformer, with_kwargs=True)]
    hooks += [
        m.register_forward_pre_hook(lambda m, a, kw: masks.append(kw.get("attention_mask")), with_kwargs=True)
        for m in layers
    ]
    try:
        out = generate(pipe, name)
    finally:
        for hook in hooks:
            hook.remove()

    layout = VideoLayout(*grid)
    assert layout.num_tokens % 16  # the last 16-token block is partial
    heads, head_dim = transformer.config.num_attention_heads, transformer.config.attention_head_dim
    assert len(seen) == STEPS * 2 * len(layers)  # 3 steps x (conditional, negative) x attn1 layers
    assert {(shape, state_layout) for _, shape, state_layout in seen} == {
        ((batch, heads, layout.num_tokens, head_dim), layout)
    }
    assert masks == [None] * len(seen)
    assert marked == {conditioning} if conditioning else marked <= {()}  # text2world: no mask or an all-zero one
    stats = ds.summary(pipe)
    assert stats["steps"] == STEPS and stats["attention_calls"] == len(seen)
    assert all(d is not None for d in stats["per_layer"]) and stats["mean_density"] < 0.9
    assert torch.isfinite(out).all()


def test_text_to_image_is_one_frame_that_sparse_vdit_keeps_whole():
    """Predict2 text2image is one latent frame: sparse_vdit's patterns (a frame-local band plus the first frame)
    keep all of it, so it runs dense there, while radial treats the image's token rows as frames (above)."""
    name = "cosmos2_text2image"
    pipe = FAMILIES[name][0]()
    vanilla = generate(pipe, name)
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("sparse_vdit", block_size=16, backend="reference"))
    out = generate(pipe, name)
    stats = ds.summary(pipe)
    assert stats["layout"]["frames"] == 1 and stats["steps"] == STEPS
    assert stats["mean_density"] == 1.0
    torch.testing.assert_close(out, vanilla, atol=1e-5, rtol=1e-5)


def test_cosmos3_omni_transformer_is_refused():
    """Cosmos 3 Omni is a different transformer: one packed sequence of text and generation tokens, a causal
    call for the text and a non-square call for the generation tokens, which ``VideoLayout`` cannot describe.
    dit-sparse refuses it by name and hooks nothing."""
    torch.manual_seed(0)
    transformer = Cosmos3OmniTransformer(
        head_dim=8, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=1,
        num_key_value_heads=2, latent_channel=4, patch_latent_dim=16, vocab_size=64, rope_axes_dim=[2, 1, 1],
    )  # fmt: skip
    with pytest.raises(ValueError, match="Cosmos3OmniTransformer is not supported"):
        ds.apply_sparse_attention(transformer, RADIAL)
    assert sparse_state(transformer) is None


# CosmosAttnProcessor2_0 calls dispatch_attention_fn without backend=, so attn1 runs diffusers' globally active
# backend: the "global" bridge makes dit-sparse that backend while attn1 runs, and the one it replaced (here
# _native_math or flex) runs the dense steps and the "dense" config.
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("backend", ["_native_math", "flex"])
def test_cosmos_is_sparse_under_any_global_attention_backend(backend):
    name = "cosmos1_text2world"
    pipe = FAMILIES[name][0]()
    layers = len(spec_for(pipe.transformer).self_attention(pipe.transformer))
    with attention_backend(backend):
        vanilla = generate(pipe, name, num_inference_steps=2)  # flex runs unfused (slow) outside torch.compile
        ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("dense"))
        assert torch.equal(generate(pipe, name, num_inference_steps=2), vanilla)  # the replaced backend ran
        ds.apply_sparse_attention(pipe, RADIAL)
        out = generate(pipe, name, num_inference_steps=2)
    stats = ds.summary(pipe)
    # 2 steps (at 1, this EDM schedule's output does not depend on the model) x CFG x layers
    assert stats["attention_calls"] == 2 * 2 * layers, stats["attention_calls"]
    assert stats["mean_density"] < 0.9 and torch.isfinite(out).all() and not torch.equal(out, vanilla)
    ds.remove_sparse_attention(pipe)
    with attention_backend(backend):
        assert torch.equal(generate(pipe, name, num_inference_steps=2), vanilla)


def test_drop_in_pipeline_from_a_local_folder(tmp_path):
    """``SparseCosmosTextToWorldPipeline.from_pretrained`` loads a saved tiny Cosmos 1.0 pipeline and runs it
    sparse. save_pretrained leaves out the safety checker (not a diffusers or transformers class), and the
    pipeline would build the real guardrail in its place, so the stand-in is passed again."""
    name = "cosmos1_text2world"
    pipe = FAMILIES[name][0]()
    vanilla = generate(pipe, name)
    pipe.save_pretrained(tmp_path)
    sparse_pipe = SparseCosmosTextToWorldPipeline.from_pretrained(
        tmp_path, sparse_attention=RADIAL, safety_checker=TinySafetyChecker()
    )
    sparse_pipe.set_progress_bar_config(disable=True)
    assert isinstance(sparse_pipe, CosmosTextToWorldPipeline)
    out = generate(sparse_pipe, name)
    stats = ds.summary(sparse_pipe)
    assert torch.isfinite(out).all() and not torch.equal(out, vanilla)
    assert stats["steps"] == STEPS and 0 < stats["mean_density"] < 1
    assert stats["total_seconds"] >= stats["transformer_seconds"] > 0
    ds.remove_sparse_attention(sparse_pipe)
    assert torch.equal(generate(sparse_pipe, name), vanilla)
