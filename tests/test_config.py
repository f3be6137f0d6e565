from __future__ import annotations

import pytest

from dit_sparse import SparseAttentionConfig
from dit_sparse.config import flow_steps_above


def test_round_trip_and_defaults():
    cfg = SparseAttentionConfig(
        "radial", dense_steps=3, dense_layers=[0, 5], decay_factor=2.0, layer_overrides={1: {"method": "dense"}}
    )
    again = SparseAttentionConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert cfg.method_params() == {"decay_factor": 2.0, "sink_frames": None, "dense_distance": 1, "block_rule": "paper"}
    assert cfg.layer_is_dense(0) and cfg.layer_is_dense(1) and not cfg.layer_is_dense(2)
    assert SparseAttentionConfig("dense").layer_is_dense(7)


def test_layer_overrides_change_parameters():
    cfg = SparseAttentionConfig("radial", layer_overrides={2: {"decay_factor": 4.0}})
    assert cfg.method_params(2)["decay_factor"] == 4.0
    assert cfg.method_params(1)["decay_factor"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(method="magic"), "unknown method 'magic'"),
        (dict(method="paro", density=0), r"density must be in \(0, 1\]"),
        (dict(method="paro", quant_weight=-1), "quant_weight must be a number >= 0"),
        (dict(method="radial", windw=3), r"unknown parameter\(s\) \['windw'\] for method 'radial'"),
        (dict(method="dense", decay_factor=2.0), r"unknown parameter\(s\) \['decay_factor'\]"),
        (dict(method="radial", dense_steps=-1), "dense_steps must be an int >= 0"),
        (dict(method="radial", block_size=100), "block_size must be one of"),
        (dict(method="radial", backend="cuda"), "backend must be one of"),
        (dict(method="radial", decay_factor=0), "decay_factor must be a positive number"),
        (dict(method="radial", layer_overrides={0: {"speed": 1}}), r"layer_overrides\[0\] has unknown"),
        (dict(method="radial", layer_overrides={0: {"method": "paro"}}), "may switch a layer to 'dense' only"),
        (dict(method="radial", dense_heads={0: [-1]}), r"dense_heads\[0\] entries must be an int >= 0"),
        (dict(method="sliding_tile", tile=(2, 2)), r"tile must be three positive ints"),
        (dict(method="sparsed", tau=1.5), r"tau must be in \(0, 1\]"),
        (dict(method="adaspa", search_steps=[]), "search_steps must be a non-empty list"),
        (dict(method="adaspa", density=0), r"density must be in \(0, 1\]"),
        (dict(method="xattention", stride=3), "stride 3 must divide block_size 128"),
        (dict(method="draft", window=(8,)), r"window must be two positive ints"),
        (dict(method="svg", num_samples=0), "num_samples must be an int >= 1"),
        (dict(method="svg", sparsity=0), r"sparsity is the kept fraction of the attention map and must be in \(0, 1\]"),
        (dict(method="svg", sparsity=1.5), r"sparsity is the kept fraction .* got 1.5"),
        (dict(method="svg", sparsity=True), r"sparsity is the kept fraction .* got True"),
        (dict(method="svg", sink="yes"), "sink must be True or False, got 'yes'"),
        (dict(method="svg", spatial_width=0), "spatial_width must be an int >= 1, got 0"),
        (dict(method="sliding_tile", head_windows={0: [(1, 1, 0)]}), r"head_windows\[0\] entries must be three"),
        (dict(method="radial", quant="fp8"), "quant must be None, 'int8' or 'int4', got 'fp8'"),
        (dict(method="dense", quant="int8"), "method 'dense' runs the model's exact attention"),
        (dict(method="radial", quant="int4", backend="flex"), r"quant='int4' needs backend 'auto' or one of"),
    ],
)
def test_bad_configs_name_the_problem(kwargs, message):
    method = kwargs.pop("method")
    with pytest.raises(ValueError, match=message):
        SparseAttentionConfig(method, **kwargs)


def test_quant_combines_with_methods_and_survives_json():
    import json

    for method in ("radial", "sparsed", "draft"):
        cfg = SparseAttentionConfig(method, quant="int8", backend="triton")
        assert cfg.quant == "int8"
        assert SparseAttentionConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert SparseAttentionConfig("radial").quant is None


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['steps'\]"):
        SparseAttentionConfig.from_dict({"method": "radial", "steps": 3})
    with pytest.raises(ValueError, match="a config must be a dict"):
        SparseAttentionConfig.from_dict(["radial"])


def test_sliding_tile_config_survives_json():
    import json

    cfg = SparseAttentionConfig("sliding_tile", tile=(2, 4, 4), head_windows={3: [(1, 2, 2), (3, 3, 3)]})
    assert SparseAttentionConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_recommended_schedules_follow_the_papers():
    radial = SparseAttentionConfig.recommended("radial", model="wan2.1")
    assert (radial.dense_steps, radial.dense_layers, radial.method_params()["decay_factor"]) == (12, (0,), 0.2)
    assert SparseAttentionConfig.recommended("radial") == radial  # Wan 2.1 unless told
    decays = {m: SparseAttentionConfig.recommended("radial", model=m).method_params()["decay_factor"]
              for m in ("wan2.2", "hunyuanvideo")}  # fmt: skip
    assert decays == {"wan2.2": 0.8, "hunyuanvideo": 0.95}
    with pytest.raises(ValueError, match="model must be one of"):
        SparseAttentionConfig.recommended("radial", model="sora")
    xattention = SparseAttentionConfig("xattention").method_params()
    assert (xattention["stride"], xattention["tau"], xattention["keep_first_block"]) == (16, 0.9, True)
    assert SparseAttentionConfig.recommended("radial", num_inference_steps=10).dense_steps == 2
    assert SparseAttentionConfig.recommended("radial", dense_steps=0).dense_steps == 0  # overrides win
    assert SparseAttentionConfig.recommended("sparsed") == SparseAttentionConfig("sparsed")
    with pytest.raises(ValueError, match="num_inference_steps must be an int >= 1"):
        SparseAttentionConfig.recommended("radial", num_inference_steps=0)
    with pytest.raises(ValueError, match="unknown method 'radiall'"):
        SparseAttentionConfig.recommended("radiall")


def schedule(method: str, model: str, steps: int = 50) -> tuple:
    config = SparseAttentionConfig.recommended(method, num_inference_steps=steps, model=model)
    return config.dense_steps, config.dense_layers, config.params


@pytest.mark.parametrize(
    ("method", "model", "steps", "expected"),
    [
        ("radial", "wan2.2", 40, (11, (0,), {"decay_factor": 0.8})),  # its script: 11 of 40 steps, 1 layer
        ("radial", "hunyuanvideo", 50, (12, (), {"decay_factor": 0.95})),  # dense_layers=0 in its script
        ("radial", "cogvideox", 50, (12, (0,), {"decay_factor": 0.2})),  # no published setting: Wan 2.1's
        ("draft", "wan2.1", 50, (15, (0,), {"fraction": 0.25})),  # t > 925 at shift 5
        ("draft", "hunyuanvideo", 50, (15, (0, 1), {"fraction": 0.1})),  # t > 945 at shift 7
        ("draft", "wan2.1", 20, (6, (0,), {"fraction": 0.25})),
        ("svg", "wan2.1", 50, (10, (), {"sparsity": 0.3, "sink": True})),
        ("svg", "hunyuanvideo", 50, (5, (0,), {"sparsity": 0.25, "sink": False})),
        ("xattention", "wan2.1", 20, (0, (), {"warmup_steps": 2})),
        ("adaspa", "hunyuanvideo", 20, (0, (), {"search_steps": (4, 12)})),
        ("sliding_tile", "wan2.1", 50, (0, (), {})),  # no checked public setting: plain defaults
    ],
)
def test_recommended_follows_each_published_script(method, model, steps, expected):
    assert schedule(method, model, steps) == expected


def test_flow_steps_above_counts_the_dense_timesteps():
    # sigma_i = shift s / (1 + (shift - 1) s), s = 1 - i / steps; t = 1000 sigma
    for shift, threshold, steps in [(5.0, 925, 50), (7.0, 945, 50), (3.0, 900, 30), (1.0, 500, 10)]:
        sigmas = [shift * (1 - i / steps) / (1 + (shift - 1) * (1 - i / steps)) for i in range(steps)]
        assert flow_steps_above(threshold, shift, steps) == sum(1000 * s > threshold for s in sigmas)
    assert flow_steps_above(925, 5.0) == 15 and flow_steps_above(500, 1.0, 10) == 5


def test_every_kernel_backend_can_be_configured():
    from dit_sparse.config import BACKEND_NAMES
    from dit_sparse.kernels import BACKENDS

    assert set(BACKEND_NAMES) == {"auto", *BACKENDS}
    assert SparseAttentionConfig("radial", backend="gather").backend == "gather"


def test_parse_method_point():
    from dit_sparse.config import parse_method_point

    assert parse_method_point("radial") == ("radial", {})
    point = parse_method_point("adaspa:search_steps=[0],density=0.2")
    assert point == ("adaspa", {"search_steps": [0], "density": 0.2})
    assert parse_method_point("draft:window=[2,8]") == ("draft", {"window": [2, 8]})
    for text, message in [
        ("", "expected METHOD or METHOD:NAME=VALUE"),
        ("radial:", "expected METHOD or METHOD:NAME=VALUE"),
        ("radial:decay", "must be NAME=VALUE, got 'decay'"),
        ("radial:decay_factor=fast", "value of decay_factor is not JSON: 'fast'"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_method_point(text)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(allocation="topk"), "allocation must be 'mass' or 'quota'"),
        (dict(max_level=7), "max_level 7 pools by 128 tokens, which must divide block_size 64"),
        (dict(ratios=(0.0, 0.5)), "the first positive"),
        (dict(ratios=(0.6, 0.6)), "summing to at most 1"),
        (dict(density=0.0), r"density must be in \(0, 1\]"),
        (dict(quant="int8"), "not available with method 'pyramid'"),
    ],
)
def test_pyramid_config_errors_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparseAttentionConfig("pyramid", block_size=64, **kwargs)
