"""``ds.calibrate(..., method="paro")`` on the tiny Wan pipeline: orders and masks per bucket, plan file, run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import WAN_CALL, call_kwargs, tiny_wan_pipeline

import dit_sparse as ds
from dit_sparse.calibration import SparsityPlan
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
        pipe, PROMPTS, method="paro", density=0.25, quant="int8", num_inference_steps=STEPS, step_buckets=[0, 1],
        steps_per_bucket=1, block_size=16, negative_prompt=NEGATIVE, progress=False, **CALL,
    )  # fmt: skip


def test_the_plan_holds_an_order_and_a_mask_per_head(plan):
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


def test_the_hook_pools_what_the_selection_sees_call_by_call(pipe, plan):
    """Statistics gathered during calibration pick what choose_orders picks on the captured calls."""
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


def test_save_load_apply_and_generate_with_int8(pipe, plan, tmp_path):
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
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("paro", plan=path, block_size=16, quant="int8"))
    try:
        frames = pipe(**call_kwargs(WAN_CALL, PROMPTS[0], num_inference_steps=STEPS)).frames[0]
        stats = ds.summary(pipe)
    finally:
        ds.remove_sparse_attention(pipe)
    assert np.isfinite(frames).all() and frames.shape == dense.shape
    assert 0 < stats["mean_density"] < 0.4


def test_paro_arguments_and_method_mismatch(pipe, plan):
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
