"""The offline tiny pipelines of tiny_models.py: they run with CFG, are deterministic, and stay tiny."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import (
    FAMILIES,
    HUNYUAN_PROMPT_TEMPLATE,
    PROMPTS,
    TEXT_LEN,
    TOKEN_GRIDS,
    call_kwargs,
    llama_tokenizer,
)

# Every factory's transformer: the config values the tiny size depends on.
SMALL_CONFIGS = {
    "wan": dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, ffn_dim=64, text_dim=32),
    "flux": dict(num_layers=1, num_single_layers=1, num_attention_heads=2, attention_head_dim=16),
    "cogvideox": dict(
        num_layers=2, num_attention_heads=2, attention_head_dim=16, use_rotary_positional_embeddings=True
    ),
    "hunyuan": dict(num_layers=1, num_single_layers=1, num_refiner_layers=1, num_attention_heads=2),
    "skyreels_v2": dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, ffn_dim=64, text_dim=32),
    "wan_vace": dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, vace_layers=[0]),
    "mochi": dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, pooled_projection_dim=16),
}
MAX_PARAMS = 200_000  # per model; the largest (the Mochi VAE: 32 channels at least, for its 32-group norms) 163k


def _output(result) -> np.ndarray:
    return result.images if hasattr(result, "images") else result.frames


def _batch(call: dict) -> int:
    return 1 if "prompt" in call else len(PROMPTS)  # a call that fixes its one prompt (Wan VACE)


def _expected_shape(call: dict) -> tuple[int, ...]:
    frames = (call["num_frames"],) if "num_frames" in call else ()
    return (_batch(call), *frames, call["height"], call["width"], 3)


def _token_grid(name: str, inputs: dict) -> tuple[int, int, int]:
    """(frames, rows, columns) of the transformer's video/image tokens, from its forward inputs."""
    hidden = inputs["hidden_states"]
    if name == "flux":  # packed (B, tokens, C); positions in img_ids (token, [0, row, column])
        ids = inputs["img_ids"]
        assert hidden.shape[1] == ids.shape[0]
        return 1, int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1
    if name == "cogvideox":  # (B, F, C, H, W)
        frames, height, width = hidden.shape[1], hidden.shape[3], hidden.shape[4]
    else:  # (B, C, F, H, W)
        frames, height, width = hidden.shape[2:]
    return frames, height // 2, width // 2  # patches are 2 x 2 spatially and 1 frame temporally


@pytest.fixture(params=list(FAMILIES))
def family(request):
    return request.param, *FAMILIES[request.param]


def test_pipeline_runs_batch_of_two_with_cfg(family):
    name, _, make_pipeline, call = family
    pipe = make_pipeline()
    seen = []

    def record(module, args, kwargs):
        seen.append(kwargs)

    pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    out = _output(pipe(**call_kwargs(call)))

    assert isinstance(out, np.ndarray) and out.shape == _expected_shape(call)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert _batch(call) == 1 or not np.array_equal(out[0], out[1])
    # CFG: 2 prompts x (cond + uncond) rows per step, as two calls (Wan, Flux, Hunyuan) or one of batch 4.
    rows = sum(inputs["hidden_states"].shape[0] for inputs in seen)
    assert rows == call["num_inference_steps"] * 2 * _batch(call)
    grid = _token_grid(name, seen[0])
    assert grid == TOKEN_GRIDS[name] and math.prod(grid) % 64 != 0
    assert all(inputs["encoder_hidden_states"].shape[1] == TEXT_LEN for inputs in seen)


def test_same_seed_same_output_and_identical_factories(family):
    _, _, make_pipeline, call = family
    pipe = make_pipeline()
    first = _output(pipe(**call_kwargs(call, seed=1)))
    again = _output(pipe(**call_kwargs(call, seed=1)))
    rebuilt = _output(make_pipeline()(**call_kwargs(call, seed=1)))
    other_seed = _output(pipe(**call_kwargs(call, seed=2)))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, rebuilt)
    assert not np.array_equal(first, other_seed)


def test_transformer_factory_stays_tiny_and_deterministic(family):
    name, make_transformer, make_pipeline, _ = family
    model = make_transformer()
    for key, value in SMALL_CONFIGS[name].items():
        assert model.config[key] == value, f"{name}: {key} = {model.config[key]}, expected {value}"
    assert sum(p.numel() for p in model.parameters()) < MAX_PARAMS
    assert not model.training
    again = make_transformer().state_dict()
    assert all(torch.equal(tensor, again[key]) for key, tensor in model.state_dict().items())
    pipe = make_pipeline()
    for component in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, component, None)
        if module is not None:
            assert sum(p.numel() for p in module.parameters()) < MAX_PARAMS, f"{name}.{component}"


def test_hunyuan_template_crop_is_the_template_prefix():
    tokenizer = llama_tokenizer()
    prefix = HUNYUAN_PROMPT_TEMPLATE["template"].split("{}")[0]
    assert len(tokenizer(prefix).input_ids) == HUNYUAN_PROMPT_TEMPLATE["crop_start"]
    ids = tokenizer(HUNYUAN_PROMPT_TEMPLATE["template"].format(PROMPTS[0])).input_ids
    cropped = ids[HUNYUAN_PROMPT_TEMPLATE["crop_start"] :]
    assert tokenizer.convert_ids_to_tokens(cropped) == PROMPTS[0].split()
