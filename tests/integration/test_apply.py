"""apply / remove / summary on the tiny transformers of all four model families."""

from __future__ import annotations

import pytest
import torch
from transformer_cases import CASES, run

import dit_sparse as ds

RADIAL = ds.SparseAttentionConfig("radial", block_size=16, backend="reference")


@pytest.fixture(params=list(CASES))
def case(request):
    model, inputs = CASES[request.param]()
    return request.param, model, inputs


def test_dense_equals_vanilla_radial_differs_and_removal_restores(case):
    name, model, inputs = case
    vanilla = run(model, inputs)
    ds.apply_sparse_attention(model, ds.SparseAttentionConfig("dense"))
    torch.testing.assert_close(run(model, inputs), vanilla, atol=1e-6, rtol=0)
    ds.apply_sparse_attention(model, RADIAL)  # applying again replaces the dense config
    sparse = run(model, inputs)
    stats = ds.summary(model)
    assert torch.isfinite(sparse).all()
    assert (sparse - vanilla).abs().max() > 1e-4, f"{name}: radial changed nothing"
    assert stats["method"] == "radial" and 0 < stats["mean_density"] < 1
    assert len(stats["per_layer"]) == len(ds.integration.specs.spec_for(model).self_attention(model))
    ds.remove_sparse_attention(model)
    assert torch.equal(run(model, inputs), vanilla)
    assert not hasattr(model, "_dit_sparse_state")


def test_a_mask_keeping_everything_matches_vanilla(case):
    """The whole sparse path (layout, transposes, text placement, text padding) with nothing dropped."""
    _, model, inputs = case
    vanilla = run(model, inputs)
    ds.apply_sparse_attention(
        model, ds.SparseAttentionConfig("radial", block_size=16, backend="reference", dense_distance=99)
    )
    torch.testing.assert_close(run(model, inputs), vanilla, atol=1e-5, rtol=1e-5)
    assert ds.summary(model)["mean_density"] == 1.0


def test_dense_steps_layers_and_heads(case):
    _, model, inputs = case
    vanilla = run(model, inputs)
    later = run(model, inputs, timestep=inputs["timestep"] * 0.5)
    ds.apply_sparse_attention(
        model, ds.SparseAttentionConfig("radial", block_size=16, backend="reference", dense_steps=1)
    )
    assert torch.equal(run(model, inputs), vanilla)  # step 0: dense
    assert not torch.allclose(run(model, inputs, timestep=inputs["timestep"] * 0.5), later, atol=1e-4)  # step 1
    assert ds.summary(model)["steps"] == 2
    n_layers = len(ds.summary(model)["per_layer"])
    ds.apply_sparse_attention(
        model,
        ds.SparseAttentionConfig("radial", block_size=16, backend="reference", dense_layers=range(n_layers)),
    )
    assert torch.equal(run(model, inputs), vanilla)
    heads = {layer: (0, 1) for layer in range(n_layers)}
    ds.apply_sparse_attention(
        model, ds.SparseAttentionConfig("radial", block_size=16, backend="reference", dense_heads=heads)
    )
    torch.testing.assert_close(run(model, inputs), vanilla, atol=1e-5, rtol=1e-5)
    ds.remove_sparse_attention(model)


def test_two_models_hold_different_configs():
    model_a, inputs = CASES["wan"]()
    model_b, _ = CASES["wan"]()
    vanilla = run(model_a, inputs)
    ds.apply_sparse_attention(model_a, RADIAL)
    ds.apply_sparse_attention(model_b, ds.SparseAttentionConfig("dense"))
    sparse = run(model_a, inputs)
    assert torch.equal(run(model_b, inputs), vanilla)
    assert torch.equal(run(model_a, inputs), sparse)
    assert ds.summary(model_a)["method"] == "radial" and ds.summary(model_b)["method"] == "dense"


def test_summary_counts_a_generation():
    model, inputs = CASES["wan"]()
    ds.apply_sparse_attention(model, RADIAL)
    for t in (900.0, 900.0, 600.0, 600.0):  # two steps, cond + uncond each
        run(model, inputs, timestep=torch.tensor([t] * 2))
    stats = ds.summary(model)
    assert stats["steps"] == 2 and stats["attention_calls"] == 8
    assert stats["searches"] == 1 and stats["reuses"] == 7  # one radial mask serves every layer and step
    assert stats["transformer_seconds"] >= stats["attention_seconds"] > 0
    assert stats["total_seconds"] is None  # only the dit_sparse pipeline classes time whole calls
    run(model, inputs, timestep=torch.tensor([900.0] * 2))  # the timestep rises: a new generation
    assert ds.summary(model)["attention_calls"] == 2


def test_full_masks_run_the_dense_path_under_auto_and_overhead_is_reported():
    model, inputs = CASES["wan"]()
    ds.apply_sparse_attention(model, ds.SparseAttentionConfig("dense"))
    dense = run(model, inputs)
    ds.apply_sparse_attention(model, ds.SparseAttentionConfig("radial", block_size=16, dense_distance=99))
    assert torch.equal(run(model, inputs), dense)  # the model's own dense attention, not a kernel's
    stats = ds.summary(model)
    assert stats["full_mask_calls"] == stats["attention_calls"] > 0 and stats["mean_density"] == 1.0
    ds.apply_sparse_attention(model, RADIAL)
    run(model, inputs)
    stats = ds.summary(model)
    assert stats["full_mask_calls"] == 0
    assert stats["overhead_seconds"] >= 0 and stats["overhead_fraction"] >= 0
    assert stats["search_seconds"] > 0  # radial built its mask once (a search), then looked it up
    ds.remove_sparse_attention(model)


def test_unsupported_models_and_bad_targets():
    with pytest.raises(ValueError, match=r"Linear is not supported; dit-sparse supports \['WanTransformer3DModel'"):
        ds.apply_sparse_attention(torch.nn.Linear(2, 2), RADIAL)
    with pytest.raises(ValueError, match="expected a diffusers pipeline"):
        ds.apply_sparse_attention(object(), RADIAL)
    with pytest.raises(ValueError, match="not applied"):
        ds.summary(CASES["wan"]()[0])
    with pytest.raises(ValueError, match="expected a SparseAttentionConfig"):
        ds.apply_sparse_attention(CASES["wan"]()[0], 3)


def test_config_from_dict_and_json_file(tmp_path):
    model, inputs = CASES["wan"]()
    ds.apply_sparse_attention(model, RADIAL)
    expected = run(model, inputs)
    ds.apply_sparse_attention(model, RADIAL.to_dict())
    assert torch.equal(run(model, inputs), expected)
    path = tmp_path / "config.json"
    path.write_text(__import__("json").dumps(RADIAL.to_dict()))
    ds.apply_sparse_attention(model, str(path))
    assert torch.equal(run(model, inputs), expected)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        ds.apply_sparse_attention(model, path)
    with pytest.raises(ValueError, match="no such config file"):
        ds.apply_sparse_attention(model, tmp_path / "missing.json")


@pytest.mark.slow
def test_torch_compile_smoke_with_flex():
    model, inputs = CASES["wan"]()
    ds.apply_sparse_attention(model, ds.SparseAttentionConfig("radial", block_size=64, backend="reference"))
    expected = run(model, inputs)
    ds.apply_sparse_attention(model, ds.SparseAttentionConfig("radial", block_size=64, backend="flex"))
    compiled = torch.compile(model)
    torch.testing.assert_close(run(compiled, inputs), expected, atol=1e-5, rtol=1e-5)
    assert ds.summary(model)["mean_density"] < 1
