"""``ds.calibrate`` end to end on the tiny Wan pipeline: search, plan, apply, generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import WAN_CALL, call_kwargs, tiny_wan_pipeline

import dit_sparse as ds
from dit_sparse.calibration import KINDS, search_heads
from dit_sparse.integration.capture import capture_attention_inputs

PROMPTS = ["a red circle", "a blue square"]
NEGATIVE = "blurry low quality"
CALL = {k: WAN_CALL[k] for k in ("height", "width", "num_frames", "guidance_scale", "max_sequence_length")}
STEPS = 3


@pytest.fixture(scope="module")
def pipe():
    return tiny_wan_pipeline()


@pytest.fixture(scope="module")
def plan(pipe):
    return ds.calibrate(
        pipe, PROMPTS, target_recall=0.9, num_inference_steps=STEPS, step_buckets=[0, 1], steps_per_bucket=1,
        block_size=16, negative_prompt=NEGATIVE, progress=False, **CALL,
    )  # fmt: skip


def test_the_plan_records_the_model_and_the_search(plan):
    p = plan.provenance
    assert (p.model_class, p.num_layers, p.heads_per_layer, p.block_size) == ("WanTransformer3DModel", 2, [2, 2], 16)
    assert p.layout == ds.VideoLayout(3, 9, 7) and p.num_prompts == 2 and p.config_hash.startswith("sha256:")
    assert p.search.target_recall == 0.9 and p.search.num_inference_steps == STEPS
    assert p.search.calibration_steps == [0, 1] and p.search.pipeline_kwargs["height"] == 144
    assert [(b.start, b.stop) for b in plan.buckets] == [(0, 1), (1, None)]
    assert plan.cost_profile.kind == "flops"
    for bucket in plan.buckets:
        for heads in bucket.layers:
            for head in heads:
                assert head.kind.split("+")[0] in KINDS and head.recall >= 0.9 and 0 <= head.density <= 1


def test_the_hook_measures_what_the_search_measures_on_captured_inputs(pipe, plan):
    """Statistics gathered call by call during the run pick what search_heads picks on the stacked calls."""
    with capture_attention_inputs(pipe, layers=[1], steps=[0]) as calls:
        for index, prompt in enumerate(PROMPTS):
            generator = torch.Generator().manual_seed(index)
            pipe(
                prompt,
                negative_prompt=NEGATIVE,
                num_inference_steps=STEPS,
                generator=generator,
                output_type="latent",
                **CALL,
            )
    q, k, v = (torch.cat([getattr(c, name) for c in calls]) for name in ("q", "k", "v"))  # (4, H, N, D)
    candidates = plan.provenance.search.candidates
    chosen = search_heads(q, k, v, plan.layout, candidates, target_recall=0.9, block_size=16)
    planned = plan.buckets[0].layers[1]
    assert [c.label for c in chosen] == [p.label for p in planned]
    assert [c.recall for c in chosen] == pytest.approx([p.recall for p in planned], abs=1e-5)


def test_apply_the_plan_and_generate(pipe, plan, tmp_path):
    path = plan.save(tmp_path / "plan.json")
    dense = pipe(**call_kwargs(WAN_CALL, PROMPTS[0], num_inference_steps=STEPS)).frames[0]
    config = ds.SparseAttentionConfig("sparse_vdit", plan=path, block_size=16, backend="reference")
    ds.apply_sparse_attention(pipe, config)
    try:
        frames = pipe(**call_kwargs(WAN_CALL, PROMPTS[0], num_inference_steps=STEPS)).frames[0]
        stats = ds.summary(pipe)
    finally:
        ds.remove_sparse_attention(pipe)
    assert np.isfinite(frames).all() and frames.shape == dense.shape
    mean_head_density = [[np.mean([h.density for h in heads]) for heads in b.layers] for b in plan.buckets]
    expected = [(mean_head_density[0][layer] + 2 * mean_head_density[1][layer]) / 3 for layer in range(2)]
    assert stats["per_layer"] == pytest.approx(expected, abs=1e-9)  # step 0: bucket 0; steps 1 and 2: bucket 1
    ds.apply_sparse_attention(pipe, plan)  # a plan object gives a config at the plan's block size
    assert ds.integration.apply.sparse_state(pipe.transformer).config.block_size == 16
    ds.remove_sparse_attention(pipe)


def test_summary_table_and_picture(plan, tmp_path):
    table = plan.summary_table()
    assert "| steps | layer | patterns | mean density | expected attention speedup |" in table
    rows = [line for line in table.splitlines() if line.startswith("| 0-0 |") or line.startswith("| 1-end |")]
    assert len(rows) == 6  # two layers and the "all" row per bucket
    assert all(float(row.split("|")[5].strip().rstrip("x")) >= 1.0 for row in rows)
    plan.render(tmp_path / "plan.png")
    image = Image.open(tmp_path / "plan.png")
    assert image.format == "PNG" and image.width > 100 and image.height > 50


def test_progress_bar_and_bad_arguments(pipe, capsys):
    ds.calibrate(pipe, "a red circle", target_recall=0.5, num_inference_steps=1, block_size=16, **CALL)
    err = capsys.readouterr().err
    assert "calibrating" in err and "1/1" in err
    assert pipe._progress_bar_config == {"disable": True}  # the pipeline's own setting is back
    for kwargs, message in [
        ({}, "give exactly one target"),
        ({"target_recall": 0.9, "prompts": []}, "prompts must be a non-empty list of non-empty strings"),
        ({"target_recall": 0.9, "step_buckets": [1]}, "increasing start steps from 0 below 3"),
        ({"target_recall": 0.9, "step_buckets": 4}, "step_buckets must be between 1 and the 3 steps, got 4"),
        ({"target_recall": 0.9, "cost": "guess"}, "cost must be 'auto', 'flops', 'measured' or a CostModel"),
        ({"target_recall": 0.9, "block_size": 48}, "block_size must be one of (16, 32, 64, 128, 256), got 48"),
    ]:
        arguments = {"prompts": PROMPTS, "num_inference_steps": STEPS, **kwargs}
        with pytest.raises(ValueError) as info:
            ds.calibrate(pipe, arguments.pop("prompts"), **arguments)
        assert message in str(info.value)
