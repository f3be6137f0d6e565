"""HunyuanVideo 1.5 (text-to-video and image-to-video) through its real tiny pipelines: the family contract, the
token layout and joint padding mask dit-sparse reads, the dense token refiner, the drop-in class, and a
calibrated plan saved, loaded and applied."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import HunyuanVideo15Pipeline
from family_contract import KEEP_ALL, assert_family_contract
from tiny_hunyuan_video15 import (
    PIPELINES,
    PROMPTS,
    TEXT_TOKENS,
    TOKEN_GRID,
    shrink,
    t2v_call_kwargs,
    tiny_hunyuan_video15_pipeline,
    tiny_hunyuan_video15_transformer,
)
from tiny_models import NEGATIVE_PROMPT

import dit_sparse as ds
from dit_sparse.calibration import SparsityPlan
from dit_sparse.integration import state as state_module
from dit_sparse.integration.apply import sparse_state
from dit_sparse.integration.specs import spec_for
from dit_sparse.pipelines import SparseHunyuanVideo15Pipeline

# 17 frames -> (17 - 1) / 4 + 1 = 5 latent frames of 7 x 9 tokens: 315 video tokens, then the 41 image / byT5 /
# Qwen slots: 356 tokens per self-attention call (neither is a multiple of the 16-token blocks).
FRAMES = 17
LAYOUT = ds.VideoLayout(5, *TOKEN_GRID[1:], text_len=TEXT_TOKENS, text_position="suffix")
VIDEO = LAYOUT.frames * LAYOUT.height * LAYOUT.width
RADIAL = ds.SparseAttentionConfig("radial", block_size=16, backend="reference")


def run_kwargs(make_kwargs, steps: int = 3):
    """Fresh call kwargs per call: 5 latent frames, ``steps`` steps, latent output (the transformer's)."""
    defaults = {"output_type": "latent", "return_dict": False, "num_frames": FRAMES, "num_inference_steps": steps}
    return lambda **overrides: make_kwargs(**defaults | overrides)


def test_text_to_video_meets_the_contract_and_leaves_the_token_refiner_dense():
    """The contract on T2V with CFG (a cond and an uncond transformer call per step, no step index) at batch 2.
    The text token refiner's self-attention is text only and not in the spec: its outputs (which depend on the
    text and the timestep alone) are bit-identical in all 9 runs, whatever config dit-sparse runs."""
    pipe = tiny_hunyuan_video15_pipeline()
    layers = spec_for(pipe.transformer).self_attention(pipe.transformer)
    assert layers == [block.attn for block in pipe.transformer.transformer_blocks]
    refined = []
    handle = pipe.transformer.context_embedder.register_forward_hook(lambda m, args, out: refined.append(out))
    try:
        densities = assert_family_contract(pipe, run_kwargs(PIPELINES["t2v"][1]))
    finally:
        handle.remove()
    assert all(d < 0.9 for d in densities.values())
    per_run = 3 * 2  # steps x (cond, uncond)
    assert len(refined) == 9 * per_run
    assert all(torch.equal(out, refined[i % per_run]) for i, out in enumerate(refined))


@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_layout_and_padding_are_the_sequence_the_self_attention_sees(pipeline, monkeypatch):
    """Every self-attention call sees [315 video tokens, 41 conditioning slots], which is the layout dit-sparse
    reads, and the joint (B, 1, N, N) mask is read per sample as equal key and query prefix lengths: the video
    plus the valid Qwen tokens ("<prompt> . assistant :", 6 for the first prompt and for the negative, 11 for
    the second), the valid byT5 tokens (none, or 12 for the second prompt's 'Text "hi". ' + </s>), and in
    image-to-video the 9 SigLIP image tokens (text-to-video masks them all)."""
    make_pipeline, make_kwargs = PIPELINES[pipeline]
    pipe = make_pipeline()
    ds.apply_sparse_attention(pipe, RADIAL)
    seen, lengths = [], []
    sparse_state(pipe.transformer).observers.append(
        lambda state, layer, q, k, v: seen.append((layer, q.shape[2], k.shape[2], state.layout))
    )
    read = state_module.padding_lengths

    def padding_lengths(*args):  # the per-sample (key, query) prefix lengths dit-sparse reads from each mask
        lengths.append(read(*args))
        return lengths[-1]

    monkeypatch.setattr(state_module, "padding_lengths", padding_lengths)
    out = pipe(**run_kwargs(make_kwargs, steps=1)())[0]
    assert torch.isfinite(out).all()
    assert [(layer, n, nk) for layer, n, nk, _ in seen] == [(layer, 356, 356) for _ in range(2) for layer in (0, 1)]
    assert all(layout == LAYOUT for *_, layout in seen)
    image = 9 if pipeline == "i2v" else 0
    cond, uncond = [VIDEO + image + 6, VIDEO + image + 12 + 11], [VIDEO + image + 6] * 2
    assert lengths == [(cond, cond)] * 2 + [(uncond, uncond)] * 2  # layers 0 and 1 of the cond, then uncond call
    ds.remove_sparse_attention(pipe)


def test_image_to_video_is_sparse_and_removable():
    """I2V has T2V's sequence (its image tokens fill the same slots) and conditions latent frame 0 (the spec's
    sink frame): keep-everything equals vanilla, radial runs sparse for 3 steps, removal is exact."""
    make_pipeline, make_kwargs = PIPELINES["i2v"]
    pipe, kwargs = make_pipeline(), run_kwargs(make_kwargs)
    assert spec_for(pipe.transformer).sink_frames == 1
    vanilla = pipe(**kwargs())[0]
    ds.apply_sparse_attention(pipe, KEEP_ALL)
    torch.testing.assert_close(pipe(**kwargs())[0], vanilla, atol=1e-5, rtol=1e-5)
    ds.apply_sparse_attention(pipe, RADIAL)
    out = pipe(**kwargs())[0]
    stats = ds.summary(pipe)
    assert torch.isfinite(out).all() and not torch.equal(out, vanilla)
    assert stats["mean_density"] < 0.9 and stats["steps"] == 3
    ds.remove_sparse_attention(pipe)
    assert torch.equal(pipe(**kwargs())[0], vanilla)


def test_a_forward_without_its_conditioning_inputs_is_refused_clearly():
    """The layout counts the image, byT5 and Qwen slots; the pipelines always pass all three. A forward missing
    one fails in the model anyway (layer_norm of None); under dit-sparse it is refused first, by name."""
    transformer = tiny_hunyuan_video15_transformer()
    inputs = dict(
        hidden_states=torch.randn(1, 9, 5, 7, 9), timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 16, 32), encoder_attention_mask=torch.ones(1, 16),
        encoder_hidden_states_2=torch.randn(1, 16, 32), encoder_attention_mask_2=torch.ones(1, 16),
    )  # fmt: skip
    with pytest.raises(TypeError, match="NoneType"):
        transformer(**inputs)
    ds.apply_sparse_attention(transformer, RADIAL)
    with pytest.raises(ValueError, match="hunyuan_video15: the forward needs `image_embeds`"):
        transformer(**inputs)


def test_drop_in_class_loads_sparse_and_removes_to_vanilla(tmp_path):
    """SparseHunyuanVideo15Pipeline.from_pretrained on the saved tiny T2V pipeline (all components save and load
    offline) is a HunyuanVideo15Pipeline that runs sparse; removing dit-sparse gives the vanilla output."""
    pipe = tiny_hunyuan_video15_pipeline()
    kwargs = run_kwargs(PIPELINES["t2v"][1])
    vanilla = pipe(**kwargs())[0]
    pipe.save_pretrained(tmp_path)
    # The text lengths and image-token count are instance attributes that __init__ sets: set them again.
    loaded = shrink(SparseHunyuanVideo15Pipeline.from_pretrained(tmp_path, sparse_attention=RADIAL))
    assert isinstance(loaded, HunyuanVideo15Pipeline)
    out = loaded(**kwargs())[0]
    assert torch.isfinite(out).all() and ds.summary(loaded)["mean_density"] < 1
    ds.remove_sparse_attention(loaded)
    assert torch.equal(loaded(**kwargs())[0], vanilla)


def test_calibrated_plan_saved_loaded_and_applied(tmp_path):
    """ds.calibrate on T2V (one prompt per call, batch 1; padded slots included in the layout), the plan saved
    and loaded unchanged, then applied as a plan config at batch 2: each layer's density is the plan's (step 0
    from bucket 0, steps 1 and 2 from bucket 1), runs are deterministic, and another grid is refused."""
    pipe = tiny_hunyuan_video15_pipeline()
    plan = ds.calibrate(
        pipe, PROMPTS, target_recall=0.75, num_inference_steps=3, step_buckets=[0, 1], steps_per_bucket=1,
        block_size=16, cost="flops", negative_prompt=NEGATIVE_PROMPT, progress=False, height=28, width=36,
        num_frames=FRAMES,
    )  # fmt: skip
    p = plan.provenance
    assert (p.model_class, p.heads_per_layer, p.layout) == ("HunyuanVideo15Transformer3DModel", [2, 2], LAYOUT)
    assert [(b.start, b.stop) for b in plan.buckets] == [(0, 1), (1, None)]
    path = plan.save(tmp_path / "plan.json")
    loaded = SparsityPlan.load(path)
    assert loaded.to_dict() == plan.to_dict()

    ds.apply_sparse_attention(
        pipe, ds.SparseAttentionConfig("sparse_vdit", plan=path, block_size=16, backend="reference")
    )
    kwargs = run_kwargs(t2v_call_kwargs)
    out = pipe(**kwargs())[0]
    stats = ds.summary(pipe)
    head_density = [[np.mean([h.density for h in heads]) for heads in b.layers] for b in loaded.buckets]
    expected = [(head_density[0][layer] + 2 * head_density[1][layer]) / 3 for layer in range(2)]
    assert stats["per_layer"] == pytest.approx(expected, abs=1e-9) and stats["steps"] == 3
    assert 0 < stats["mean_density"] < 0.9
    assert torch.isfinite(out).all() and torch.equal(pipe(**kwargs())[0], out)
    with pytest.raises(ValueError, match="calibrated for the token grid"):
        pipe(**kwargs(num_frames=9))
    ds.remove_sparse_attention(pipe)
