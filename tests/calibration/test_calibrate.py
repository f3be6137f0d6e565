"""``ds.calibrate`` end to end on the tiny Wan pipeline: search (Sparse-vDiT and PARO), plan, apply, generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import WAN_CALL, call_kwargs, tiny_wan_pipeline

import dit_sparse as ds
from dit_sparse.calibration import KINDS, SparsityPlan, render_plan, search_heads
from dit_sparse.integration.capture import capture_attention_inputs
from dit_sparse.layout import ORDERS
from dit_sparse.methods.paro import OrderStatistics, choose_orders

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


def generate_with(pipe, config):
    """Frames of the first prompt with ``config`` applied, and the run's summary; the pipeline is left dense."""
    ds.apply_sparse_attention(pipe, config)
    try:
        frames = pipe(**call_kwargs(WAN_CALL, PROMPTS[0], num_inference_steps=STEPS)).frames[0]
        return frames, ds.summary(pipe)
    finally:
        ds.remove_sparse_attention(pipe)


def test_apply_the_plan_and_generate(pipe, plan, tmp_path):
    path = plan.save(tmp_path / "plan.json")
    dense = pipe(**call_kwargs(WAN_CALL, PROMPTS[0], num_inference_steps=STEPS)).frames[0]
    frames, stats = generate_with(
        pipe, ds.SparseAttentionConfig("sparse_vdit", plan=path, block_size=16, backend="reference")
    )
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
    render_plan(plan, tmp_path / "plan.png")
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


@pytest.fixture(scope="module")
def paro_plan(pipe):
    return ds.calibrate(
        pipe, PROMPTS, method="paro", density=0.25, quant="int8", num_inference_steps=STEPS, step_buckets=[0, 1],
        steps_per_bucket=1, block_size=16, negative_prompt=NEGATIVE, progress=False, **CALL,
    )  # fmt: skip


def test_the_paro_plan_holds_an_order_and_a_mask_per_head(paro_plan):
    plan = paro_plan
    search = plan.provenance.search
    assert (search.method, search.density, search.quant_weight, search.target_recall) == ("paro", 0.25, 1.0, None)
    assert [(b.start, b.stop) for b in plan.buckets] == [(0, 1), (1, None)]
    n_blocks = -(-plan.layout.num_tokens // 16)
    for bucket in plan.buckets:
        for heads in bucket.layers:
            for head in heads:
                assert head.kind == "mask" and head.order in ORDERS
                assert tuple(head.blocks.shape) == (n_blocks, n_blocks)
                assert (head.blocks.sum(-1) == -(-n_blocks // 4)).all()  # 25% of the key blocks of every row
                assert 0 < head.density < 0.4 and 0 < head.recall <= 1 + 1e-6


def test_the_paro_hook_pools_what_the_selection_sees_call_by_call(pipe, paro_plan):
    """Statistics gathered during calibration pick what choose_orders picks on the captured calls."""
    plan = paro_plan
    with capture_attention_inputs(pipe, layers=[1], steps=[0]) as calls:
        for index, prompt in enumerate(PROMPTS):
            generator = torch.Generator().manual_seed(index)
            pipe(prompt, negative_prompt=NEGATIVE, num_inference_steps=STEPS, generator=generator,
                 output_type="latent", **CALL)  # fmt: skip
    assert len(calls) == 4  # two prompts, cond and uncond
    stats = OrderStatistics(plan.layout, 16, quant_bits=8)
    for call in calls:
        stats.update(call.q, call.k)
    chosen = choose_orders(stats, density=0.25, quant_weight=1.0)
    planned = plan.buckets[0].layers[1]
    assert [c.order for c in chosen] == [p.order for p in planned]
    assert all(torch.equal(c.table, p.blocks) for c, p in zip(chosen, planned, strict=True))


def test_paro_plan_save_load_apply_and_generate_with_int8(pipe, paro_plan, tmp_path):
    plan = paro_plan
    path = plan.save(tmp_path / "paro.json")
    loaded = SparsityPlan.load(path)
    assert loaded.provenance.search.method == "paro"
    assert all(
        p.order == q.order and torch.equal(p.blocks, q.blocks)
        for b, c in zip(plan.buckets, loaded.buckets, strict=True)
        for heads, others in zip(b.layers, c.layers, strict=True)
        for p, q in zip(heads, others, strict=True)
    )
    dense = pipe(**call_kwargs(WAN_CALL, PROMPTS[0], num_inference_steps=STEPS)).frames[0]
    ds.apply_sparse_attention(pipe, path)  # a plan file runs with the method that made it
    state = ds.integration.apply.sparse_state(pipe.transformer)
    assert state.config.method == "paro" and state.config.block_size == 16
    frames, stats = generate_with(pipe, ds.SparseAttentionConfig("paro", plan=path, block_size=16, quant="int8"))
    assert np.isfinite(frames).all() and frames.shape == dense.shape
    assert 0 < stats["mean_density"] < 0.4


def test_paro_arguments_and_method_mismatch(pipe, paro_plan):
    plan = paro_plan
    for kwargs, message in [
        ({"target_recall": 0.9}, "['target_recall'] do not apply"),
        ({"density": 0}, "density must be in (0, 1]"),
        ({"quant_weight": -1}, "quant_weight must be a number >= 0"),
        ({"quant": "int2"}, "int2"),
    ]:
        with pytest.raises(ValueError) as info:
            ds.calibrate(pipe, PROMPTS, method="paro", num_inference_steps=1, block_size=16, **kwargs, **CALL)
        assert message in str(info.value)
    with pytest.raises(ValueError, match="method must be one of"):
        ds.calibrate(pipe, PROMPTS, method="magic", target_recall=0.9, **CALL)
    with pytest.raises(ValueError, match="the plan was made by the 'paro' search and runs with method 'paro'"):
        ds.SparseAttentionConfig("sparse_vdit", plan=plan, block_size=16)
