"""Plans with Pyramid Sparse Attention level tables: the search's measure of them, files, and running them."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import WAN_CALL, call_kwargs, tiny_wan_pipeline

import dit_sparse as ds
from dit_sparse.calibration import HeadPattern, Provenance, SparsityPlan, StepBucket
from dit_sparse.calibration.search import HeadStatistics, default_candidates
from dit_sparse.heads import head_levels, head_table, table_density
from dit_sparse.integration.specs import SPECS
from dit_sparse.kernels.pyramid import reference_pyramid_attention
from dit_sparse.methods import AttentionCall, build_method
from dit_sparse.plan import head_costs

WAN = next(spec for spec in SPECS if spec.name == "wan")
LAYOUT = ds.VideoLayout(4, 6, 8)  # 192 tokens
BLOCK = 16
CALL = {k: WAN_CALL[k] for k in ("height", "width", "num_frames", "guidance_scale", "max_sequence_length")}


def test_the_search_measures_a_level_table_as_pyramid_attention_computes_it():
    """Recall (mass of the blocks read at any level), compute density and output error of a ``pyramid``
    template, against the token-level twin on the same inputs; binary candidates unchanged beside it."""
    g = torch.Generator().manual_seed(0)
    n = LAYOUT.num_tokens
    q, k, v = (torch.randn(2, 2, n, 16, generator=g) for _ in range(3))
    candidates = [HeadPattern("mask", {"pyramid": 0.3}), HeadPattern("mask", {"tau": 0.8})]
    stats = HeadStatistics(LAYOUT, 2, candidates, metric="rel_l2", block_size=BLOCK)
    stats.add(q[:1], k[:1], v[:1])
    stats.add(q[1:], k[1:], v[1:])  # two calls: errors accumulate
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for h, entries in enumerate(stats.measurements()):
        levels_entry, binary_entry = entries
        table = levels_entry.pattern.blocks
        assert levels_entry.pattern.is_level_table and set(torch.unique(table).tolist()) <= {-1, 0, 1, 3}
        mask = ds.LevelMask(table[None, None], BLOCK, (n, n), max_level=3)
        out, _ = reference_pyramid_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], mask, 0.25, False)
        expected = ((out - dense[:, h : h + 1]).norm() / dense[:, h : h + 1].norm()).item()
        assert levels_entry.rel_l2 == pytest.approx(expected, rel=1e-5)
        assert levels_entry.density == pytest.approx(mask.compute_density(), rel=1e-6)
        assert levels_entry.block_fraction == pytest.approx(mask.compute_density(), rel=1e-6)  # whole blocks here
        assert levels_entry.density == pytest.approx(0.3, abs=0.05)
        # the pooled blocks cost their share; a binary table of the same read blocks would cost all of them
        assert levels_entry.density < table_density(table != -1, n, BLOCK)
        binary = ds.BlockSparseMask.from_dense(binary_entry.pattern.blocks[None, None], BLOCK, (n, n))
        out = ds.block_sparse_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], binary, backend="reference")
        expected = ((out - dense[:, h : h + 1]).norm() / dense[:, h : h + 1].norm()).item()
        assert binary_entry.rel_l2 == pytest.approx(expected, rel=1e-5)


def test_pyramid_templates_are_validated_and_offered_on_request():
    assert not any("pyramid" in c.params for c in default_candidates(LAYOUT, BLOCK))
    offered = [c.params["pyramid"] for c in default_candidates(LAYOUT, BLOCK, levels=True) if "pyramid" in c.params]
    assert offered == [0.05, 0.1, 0.15, 0.25, 0.4]
    with pytest.raises(ValueError, match="'pyramid' must be a fraction in"):
        HeadPattern("mask", {"pyramid": 1.5})
    with pytest.raises(ValueError, match="mask takes one of 'tensor', 'tau' and 'pyramid'"):
        HeadPattern("mask", {"pyramid": 0.2, "tau": 0.9})
    with pytest.raises(ValueError, match="level table holds -1"):
        HeadPattern("mask", blocks=torch.full((2, 2), -2, dtype=torch.int8))
    with pytest.raises(ValueError, match="only a 'mask' head has a table"):
        HeadPattern("diagonal", blocks=torch.ones(2, 2, dtype=torch.bool))


def level_plan(deepest=3):
    n_blocks = -(-LAYOUT.num_tokens // BLOCK)
    table = torch.full((n_blocks, n_blocks), 3, dtype=torch.int8)
    table.fill_diagonal_(0)
    table[:, 0] = 1
    table[-1, -1] = deepest
    heads = [HeadPattern("mask", blocks=table), HeadPattern("skip"), HeadPattern("dense"), HeadPattern("diagonal")]
    provenance = Provenance("WanTransformer3DModel", 1, [4], LAYOUT, BLOCK, num_prompts=1)
    return SparsityPlan(provenance, [StepBucket(0, None, [heads])])


def test_level_tables_round_trip_through_plan_files_and_are_checked(tmp_path):
    path = tmp_path / "plan.json"
    plan = level_plan()
    plan.save(path)
    assert load_file(tmp_path / "plan.safetensors")["bucket0.layer0.head0"].dtype == torch.int8
    loaded = SparsityPlan.load(path)
    assert loaded == plan and loaded.buckets[0].layers[0][0].is_level_table
    table = plan.buckets[0].layers[0][0].blocks.double()  # pooled by 8 everywhere, by 2 in column 0, diagonal full
    expected = torch.where(table == 0, 1.0, torch.where(table == 1, 0.5, 0.125)).mean().item()
    assert head_costs(plan, 0, 0)[0] == pytest.approx(expected)  # priced by compute in the plan's summary
    with pytest.raises(ValueError, match=r"pools by 2\^5 tokens; blocks of 16 allow levels up to 4"):
        level_plan(deepest=5)


def test_a_layer_with_level_heads_runs_as_one_level_mask():
    plan = level_plan()
    method = build_method(ds.SparseAttentionConfig("sparse_vdit", plan=plan, block_size=BLOCK), WAN)
    q = torch.zeros(1, 4, LAYOUT.num_tokens, 8)
    result = method.plan_for(AttentionCall(0, 0, "cond", LAYOUT, q, q, q))
    assert isinstance(result.mask, ds.LevelMask) and result.skip_heads == (1,)
    heads = plan.buckets[0].layers[0]
    levels = result.mask.levels[0]
    assert torch.equal(levels[0], heads[0].blocks)
    assert (levels[1] == -1).all() and (levels[2] == 0).all()  # skipped head reads nothing, dense head all full
    assert torch.equal(levels[3], torch.where(head_table(heads[3], LAYOUT, BLOCK), 0, -1).to(torch.int8))
    assert torch.equal(head_levels(heads[3], LAYOUT, BLOCK), levels[3])


@pytest.fixture(scope="module")
def pipe():
    return tiny_wan_pipeline()


def test_calibrated_level_plans_store_the_tables_and_generate(pipe, tmp_path):
    """A search whose only candidate is a level table: every head gets its own, the plan file keeps them, and
    the generation runs them at the plan's compute."""
    plan = ds.calibrate(
        pipe, ["a red circle"], max_rel_l2=10.0, num_inference_steps=2, block_size=16,
        candidates=[HeadPattern("mask", {"pyramid": 0.3})], progress=False, **CALL,
    )  # fmt: skip
    heads = [h for bucket in plan.buckets for layer in bucket.layers for h in layer]
    assert heads and all(h.is_level_table for h in heads)
    assert len({h.blocks.numpy().tobytes() for h in heads}) > 1  # per head, from each head's own mass
    path = tmp_path / "levels.json"
    plan.save(path)
    ds.apply_sparse_attention(pipe, str(path))
    try:
        frames = pipe(**call_kwargs(WAN_CALL, "a red circle", num_inference_steps=2)).frames[0]
        summary = ds.summary(pipe)
    finally:
        ds.remove_sparse_attention(pipe)
    assert all(torch.isfinite(torch.as_tensor(f)).all() for f in frames)
    expected = sum(h.density for h in heads) / len(heads)
    assert summary["mean_density"] == pytest.approx(expected, rel=1e-6)
    assert 0.2 < expected < 0.45 and math.isfinite(expected)


def test_levels_option_of_calibrate_needs_the_default_search(pipe):
    with pytest.raises(ValueError, match="levels=True adds level tables to the default candidates"):
        ds.calibrate(pipe, ["x"], max_rel_l2=0.1, levels=True, candidates=[HeadPattern("skip")], progress=False)
    with pytest.raises(ValueError, match="levels=True adds level tables"):
        ds.calibrate(pipe, ["x"], method="paro", levels=True, progress=False)
    with pytest.raises(ValueError, match="levels=True needs max_rel_l2"):
        ds.calibrate(pipe, ["x"], target_recall=0.9, levels=True, progress=False)
    with pytest.raises(ValueError, match=r"scored by their output error \(max_rel_l2\)"):
        HeadStatistics(LAYOUT, 2, [HeadPattern("mask", {"pyramid": 0.2})], metric="recall", block_size=BLOCK)


def test_levels_true_offers_level_tables_beside_the_default_candidates(pipe):
    plan = ds.calibrate(
        pipe, ["a red circle"], max_rel_l2=0.3, levels=True, num_inference_steps=2, block_size=16, progress=False,
        **CALL,
    )  # fmt: skip
    offered = [c.label for c in plan.provenance.search.candidates]
    assert "mask(pyramid=0.1)" in offered and "radial(decay_factor=1,dense_distance=1,sink_frames=1)" in offered
    heads = [h for bucket in plan.buckets for layer in bucket.layers for h in layer]
    assert all(h.rel_l2 is None or h.rel_l2 <= 0.3 for h in heads)
    assert any(h.is_level_table for h in heads)  # on this tiny model some heads are cheapest as level tables
