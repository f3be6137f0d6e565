"""SparsityPlan files (dit_sparse/plan.py): round trip, every load error with its file, checks against the model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformer_cases import CASES, run

import dit_sparse as ds
from dit_sparse.calibration import MIGRATIONS, HeadPattern, Provenance, SparsityPlan, StepBucket
from dit_sparse.heads import head_table
from dit_sparse.integration.specs import SPECS
from dit_sparse.methods import AttentionCall, build_method

WAN_LAYOUT = ds.VideoLayout(7, 6, 7)  # the tiny Wan case: 294 tokens
BLOCK = 16
N_BLOCKS = -(-WAN_LAYOUT.num_tokens // BLOCK)
WAN = next(spec for spec in SPECS if spec.name == "wan")
CREATED = "2025-06-01T12:00:00+00:00"  # fixed, so that plans made a second apart compare equal


def make_plan(layers=2, heads=2, model_class="WanTransformer3DModel", layout=WAN_LAYOUT, with_mask=True):
    """A two-bucket plan: bucket 0 mixes kinds (a stored mask too), bucket 1 a band and a skipped head."""
    table = torch.eye(N_BLOCKS, dtype=torch.bool) | torch.eye(N_BLOCKS, dtype=torch.bool).roll(1, dims=1)
    first = [
        HeadPattern("diagonal", {"width": 20}, order="HWF", density=0.2, recall=0.95),
        HeadPattern("mask", blocks=table, density=0.13) if with_mask else HeadPattern("dense", density=1.0),
        HeadPattern("tile", {"tile": [1, 2, 7], "window": [3, 1, 1]}, density=0.4, recall=0.9),
        HeadPattern("diagonal+vertical_stripe", {"diagonal": {"width": 8}, "vertical_stripe": {"columns": [[0, 10]]}}),
    ]
    second = [
        HeadPattern("diagonal", {"width": 42}, density=0.3, recall=0.99, rel_l2=0.05),
        HeadPattern("skip", density=0.0),
    ]
    provenance = Provenance(model_class, layers, [heads] * layers, layout, BLOCK, num_prompts=2, created=CREATED)
    buckets = [
        StepBucket(0, 1, [[first[(layer + h) % 4] for h in range(heads)] for layer in range(layers)]),
        StepBucket(1, None, [[second[h % 2] for h in range(heads)] for layer in range(layers)]),
    ]
    return SparsityPlan(provenance, buckets)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "plan.json"
    make_plan().save(path)
    return path


def test_round_trip_json_and_safetensors(saved):
    plan = SparsityPlan.load(saved)
    assert plan == make_plan()
    data = json.loads(saved.read_text())
    assert data["schema_version"] == 1 and data["masks_file"] == "plan.safetensors"
    assert data["buckets"][0]["layers"][0][1] == {
        "kind": "mask",
        "params": {"tensor": "bucket0.layer0.head1"},
        "density": 0.13,
    }
    tensors = load_file(saved.parent / "plan.safetensors")
    assert sorted(tensors) == ["bucket0.layer0.head1", "bucket0.layer1.head0"]
    assert torch.equal(plan.buckets[0].layers[0][1].blocks, tensors["bucket0.layer0.head1"])
    provenance = data["provenance"]
    assert provenance["layout"] == {"frames": 7, "height": 6, "width": 7, "text_len": 0, "text_position": "none"}
    assert provenance["package_version"] and provenance["created"]
    assert plan.heads(step=5, layer=1)[1].kind == "skip" and plan.bucket_index(0) == 0


def test_a_plan_without_masks_writes_no_tensor_file(tmp_path):
    path = make_plan(with_mask=False).save(tmp_path / "p.json")
    assert json.loads(open(path).read())["masks_file"] is None
    assert not (tmp_path / "p.safetensors").exists()
    assert SparsityPlan.load(path) == make_plan(with_mask=False)


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(data):
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("extra", 1), "unknown key(s) ['extra']; expected keys ['format', 'schema_version'"),
        (_set("buckets", 0, "layers", 0, 0, "widht", 3), "buckets[0].layers[0][0]: unknown key(s) ['widht']"),
        (_set("provenance", "search", "budget", 1), "provenance.search: unknown key(s) ['budget']"),
        (lambda d: d["provenance"].pop("layout"), "provenance: missing key(s) ['layout']"),
        (_set("schema_version", 2), "has plan schema version 2, newer than this dit-sparse reads (up to 1)"),
        (_set("schema_version", 0), "no migration from plan schema version 0 to 1"),
        (_set("format", "something-else"), "'format' must be 'dit-sparse-plan'"),
        (_set("buckets", 1, "layers", 0, 0, "kind", "band"), "buckets[1].layers[0][0]: unknown pattern kind 'band'"),
        (_set("buckets", 1, "start", 2), "buckets[1].start is 2; buckets must cover the steps from 0 without gaps"),
        (
            lambda d: d["buckets"][1]["layers"][0].pop(),
            "buckets[1].layers[0] has 1 heads; the plan's provenance says 2",
        ),
        (lambda d: d["buckets"][1]["layers"].pop(), "buckets[1].layers has 1 layers; the plan's provenance says 2"),
        (_set("buckets", 1, "layers", 0, 0, "params", "width", 1.5), "'width' must be an int >= 0, got 1.5"),
        (
            lambda d: d["buckets"][1]["layers"][0][0].update(kind="vertical_stripe", params={"top_blocks": 2}),
            "buckets[1].layers[0][0] is a search template (vertical_stripe(top_blocks=2))",
        ),
        (_set("cost_profile", "kind", "guess"), "cost_profile: 'kind' must be one of ['flops', 'measured']"),
        (_set("masks_file", "../elsewhere.safetensors"), "masks_file must name a file in the plan's folder"),
    ],
)
def test_bad_plan_files_name_what_is_wrong(saved, change, message):
    _edit(saved, change)
    with pytest.raises(ValueError) as info:
        SparsityPlan.load(saved)
    assert message in str(info.value) and str(saved) in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "is not valid JSON ("),  # truncated: the first half of a good file
        ("{}", "the plan is an empty JSON object; expected keys ['format'"),
        ("[1, 2]", "a plan must be a JSON object, got list"),
    ],
)
def test_truncated_empty_and_non_object_files(saved, text, message):
    saved.write_text(saved.read_text()[: len(saved.read_text()) // 2] if text is None else text)
    with pytest.raises(ValueError) as info:
        SparsityPlan.load(saved)
    assert message in str(info.value)
    with pytest.raises(ValueError, match="no such plan file"):
        SparsityPlan.load(saved.parent / "missing.json")


def test_mask_file_missing_or_of_the_wrong_shape(saved):
    masks = saved.parent / "plan.safetensors"
    tensors = load_file(masks)
    masks.unlink()
    with pytest.raises(ValueError, match=r"its mask file plan.safetensors is missing"):
        SparsityPlan.load(saved)
    save_file({**tensors, "bucket0.layer0.head1": torch.ones(3, 3, dtype=torch.bool)}, masks)
    with pytest.raises(ValueError, match=r"is bool \(3, 3\); the plan's layout of 294 tokens in blocks of 16 needs"):
        SparsityPlan.load(saved)
    save_file({**tensors, "stray": torch.ones(1, dtype=torch.bool)}, masks)
    with pytest.raises(ValueError, match=r"holds tensors no head uses: \['stray'\]"):
        SparsityPlan.load(saved)
    masks.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        SparsityPlan.load(saved)


def test_older_schemas_are_migrated_by_registered_functions(saved, monkeypatch):
    def from_v0(data):  # a (hypothetical) version 0 that called the buckets "steps"
        data["buckets"] = data.pop("steps")
        return {**data, "schema_version": 1}

    _edit(saved, lambda d: d.update(schema_version=0, steps=d.pop("buckets")))
    monkeypatch.setitem(MIGRATIONS, 0, from_v0)
    assert SparsityPlan.load(saved) == make_plan()


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (
            make_plan(model_class="CogVideoXTransformer3DModel"),
            "calibrated for a CogVideoXTransformer3DModel, but the model is a WanTransformer3DModel",
        ),
        (make_plan(layers=3), "this plan has 3 self-attention layers, but the WanTransformer3DModel has 2"),
        (
            make_plan(heads=4),
            "this plan has 4 heads in layer 0, but the WanTransformer3DModel has 2 there (2 layer(s) differ)",
        ),
    ],
)
def test_a_plan_for_another_model_is_refused_at_apply_time(plan, message, tmp_path):
    model, _ = CASES["wan"]()
    path = plan.save(tmp_path / "other.json")
    with pytest.raises(ValueError) as info:
        ds.apply_sparse_attention(model, path)
    assert message in str(info.value)
    assert not hasattr(model, "_dit_sparse_state")  # refused before anything changed


def test_a_plan_for_another_resolution_is_refused_at_the_first_call():
    model, inputs = CASES["wan"]()
    plan = make_plan(layout=ds.VideoLayout(3, 9, 7), with_mask=False)
    ds.apply_sparse_attention(
        model, ds.SparseAttentionConfig("sparse_vdit", plan=plan, block_size=BLOCK, backend="reference")
    )
    with pytest.raises(ValueError, match=r"calibrated for the token grid VideoLayout\(frames=3, height=9, width=7"):
        run(model, inputs)


def test_plan_method_builds_per_head_tables_orders_and_skips():
    plan = make_plan()
    method = build_method(ds.SparseAttentionConfig("sparse_vdit", plan=plan, block_size=BLOCK), WAN)
    q = torch.zeros(1, 2, WAN_LAYOUT.num_tokens, 8)
    first = method.plan_for(AttentionCall(0, 0, "cond", WAN_LAYOUT, q, q, q))
    heads = plan.buckets[0].layers[0]  # HWF-ordered band, stored mask
    for h in range(2):
        assert torch.equal(first.mask.to_dense()[0, h], head_table(heads[h], WAN_LAYOUT, BLOCK))
    assert torch.equal(first.permutation[0], WAN_LAYOUT.permutation("HWF"))
    assert torch.equal(first.permutation[1], torch.arange(WAN_LAYOUT.num_tokens)) and first.skip_heads == ()
    tiled = method.plan_for(AttentionCall(1, 0, "cond", WAN_LAYOUT, q, q, q)).permutation  # stored mask, tile
    assert torch.equal(tiled[1], WAN_LAYOUT.tile_permutation((1, 2, 7)))
    later = method.plan_for(AttentionCall(0, 7, "uncond", WAN_LAYOUT, q, q, q))
    assert later.skip_heads == (1,) and later.permutation is None and not later.mask.to_dense()[0, 1].any()
    assert method.plan_for(AttentionCall(0, 0, "uncond", WAN_LAYOUT, q, q, q)) is first
    assert (method.searches, method.reuses) == (3, 1)


def test_plans_that_keep_every_block_reproduce_the_dense_model(tmp_path):
    """Token orders (HWF, tile-major) and their inverses, and dense layers, through the whole model."""
    model, inputs = CASES["wan"]()
    vanilla = run(model, inputs)
    everything = [
        HeadPattern("diagonal", {"width": 10_000}, order="HWF"),
        HeadPattern("tile", {"tile": [1, 2, 7], "window": [7, 3, 1]}),
    ]
    provenance = Provenance("WanTransformer3DModel", 2, [2, 2], WAN_LAYOUT, BLOCK)
    plan = SparsityPlan(provenance, [StepBucket(0, None, [everything, [HeadPattern("dense")] * 2])])
    path = plan.save(tmp_path / "full.json")
    config = {"method": "sparse_vdit", "plan": path, "block_size": BLOCK, "backend": "reference"}
    ds.apply_sparse_attention(model, config)
    torch.testing.assert_close(run(model, inputs), vanilla, atol=1e-5, rtol=1e-5)
    assert ds.summary(model)["per_layer"] == [1.0, 1.0]
    again = ds.SparseAttentionConfig.from_dict(json.loads(json.dumps(ds.SparseAttentionConfig(**config).to_dict())))
    assert again.plan == plan and again.plan.path == path


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"method": "radial"},
            "the plan was made by the 'sparse_vdit' search and runs with method 'sparse_vdit', got method 'radial'",
        ),
        ({"block_size": 64}, "the plan was calibrated with block_size 16, but the config has 64; set block_size=16"),
        ({"diagonal_width": 3}, "method parameter(s) ['diagonal_width'] do not apply with a plan"),
    ],
)
def test_configs_with_plans_reject_what_does_not_apply(kwargs, message):
    kwargs = {"method": "sparse_vdit", "block_size": BLOCK, **kwargs}
    with pytest.raises(ValueError) as info:
        ds.SparseAttentionConfig(kwargs.pop("method"), plan=make_plan(with_mask=False), **kwargs)
    assert message in str(info.value)
    with pytest.raises(ValueError, match="plan must be a SparsityPlan, a path to a plan file or a plan dict"):
        ds.SparseAttentionConfig("sparse_vdit", plan=3)


# -- fuzzing: mutated valid plans ---------------------------------------------------------------------------
def _paths(node, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _paths(child, (*prefix, key))


ODD_JSON = [None, True, -1, 0, 2**63, 1.5, float("nan"), float("inf"), "", "x", [], {}, [1, "a"], {"a": 1}]


def test_mutated_plans_load_valid_or_name_the_problem(tmp_path, record_property):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    good = tmp_path / "good.json"
    make_plan().save(good)
    text = good.read_text()
    tensors = (tmp_path / "good.safetensors").read_bytes()
    paths = [p for p, _ in _paths(json.loads(text)) if p]
    tried, refused = [0], [0]

    @settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.sampled_from(["value", "delete", "truncate", "flip", "tensor_bytes", "tensor_truncate"]),
        st.integers(0, 10**6),
        st.sampled_from(ODD_JSON),
        st.integers(0, 255),
    )
    def run(kind, where, value, byte):
        tried[0] += 1
        plan_path, tensor_path = tmp_path / "plan.json", tmp_path / "plan.safetensors"
        data, blob = json.loads(text), tensors
        if kind in ("value", "delete"):
            path = paths[where % len(paths)]
            parent = data
            for key in path[:-1]:
                parent = parent[key]
            if kind == "value":
                parent[path[-1]] = value
            else:
                del parent[path[-1]]
            content = json.dumps(data).replace('"good.safetensors"', '"plan.safetensors"')
        else:
            content = text.replace('"good.safetensors"', '"plan.safetensors"')
        if kind == "truncate":
            content = content[: where % len(content)]
        elif kind == "flip":
            i = where % len(content)
            content = content[:i] + chr(byte % 94 + 33) + content[i + 1 :]
        elif kind == "tensor_bytes":
            i = where % len(blob)
            blob = blob[:i] + bytes([byte]) + blob[i + 1 :]
        elif kind == "tensor_truncate":
            blob = blob[: where % len(blob)]
        plan_path.write_text(content)
        tensor_path.write_bytes(blob)
        try:
            plan = SparsityPlan.load(plan_path)
        except ValueError as error:
            refused[0] += 1
            message = str(error)
            assert message.strip() and ("plan" in message or str(plan_path) in message), message
            return
        # accepted: a valid plan that saves and loads back to itself
        again = tmp_path / "again.json"
        plan.save(again)
        assert SparsityPlan.load(again) == plan

    run()
    record_property("fuzz_inputs", tried[0])
    assert refused[0] > tried[0] // 4  # most mutations are errors, and each was named
