"""``SparseAttentionConfig``: which sparse-attention method to run, with which parameters and schedule."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

# Every method named in the architecture.
METHOD_NAMES = (
    "dense",
    "radial",
    "sparse_vdit",
    "sliding_tile",
    "svg",
    "draft",
    "xattention",
    "adaspa",
    "sparsed",
    "paro",
    "pyramid",
)
BACKEND_NAMES = ("auto", "reference", "gather", "flex", "flex-flash", "triton", "triton-tma")

# Parameters each method takes beyond the common ones, with their defaults.
METHOD_PARAMS: dict[str, dict[str, Any]] = {
    "dense": {},
    # Radial attention (Li et al., 2025): band width decays with temporal distance; see patterns/radial.py.
    "radial": {"decay_factor": 1.0, "sink_frames": None, "dense_distance": 1, "block_rule": "paper"},
    # Sparse-vDiT (Chen et al., 2025): per-(layer, head) static patterns; see methods/sparse_vdit.py.
    "sparse_vdit": {"assignment": None, "diagonal_width": None, "multi_diagonal_width": None, "max_distance": None},
    # Sliding tile attention (Zhang et al., 2025): tiles of (t, h, w) latent cells, a window of tiles.
    "sliding_tile": {"tile": (2, 8, 8), "window": (3, 3, 3), "head_windows": None},
    # Sparse VideoGen (Xi et al., 2025): per head, online, spatial or temporal by sampled error. Band half-width
    # from the kept fraction sparsity (the reference's Wan scripts: 0.3) unless spatial_width / temporal_width
    # are given; sink keeps the first frame's worth of keys in each head's order; see methods/svg.py.
    "svg": {
        "sparsity": 0.3,
        "spatial_width": None,
        "temporal_width": None,
        "sink": True,
        "num_samples": 64,
        "seed": 0,
    },
    # SparseD schedule: dense for dense_steps, then masks by block mass found once and reused.
    # row_stride > 1 (ours) measures the block mass on every row_stride-th query row only (1 = SparseD's exact mass).
    "sparsed": {
        "tau": 0.9,
        "fraction": None,
        "min_blocks_per_row": 1,
        "row_stride": 1,
        "kv_block_size": None,
        "share_contexts": False,
    },
    # AdaSpa (Xia et al., 2025): searches at search_steps (the paper's 10 and 30 of 50), reuse between.
    "adaspa": {"search_steps": (10, 30), "density": 0.2, "min_blocks_per_row": 1},
    # XAttention (Xu et al., 2025): antidiagonal scores with stride S, cumulative threshold tau; the reference's
    # video settings: stride 16, tau 0.9, 5 warm-up steps, key block 0 kept in every row.
    "xattention": {"stride": 16, "tau": 0.9, "warmup_steps": 5, "min_blocks_per_row": 1, "keep_first_block": True},
    # DraftAttention (Shen et al., 2025): pooling windows of (h, w) latent cells, top fraction of the draft map.
    "draft": {"window": (8, 16), "fraction": 0.25},
    # PAROAttention (Zhao et al., 2025): per-head token order and static mask at density; online unless a plan.
    "paro": {"density": 0.25, "quant_weight": 1.0},
    # Pyramid Sparse Attention (Li et al., 2025): kv blocks read full, pooled by 2^j or skipped, levels from the
    # exact block mass under a compute budget (density; PSA's default quotas cost 0.15): allocation "quota" (PSA's
    # ranked quotas, ratios: full, pooled by 2, 4, 8) or "mass" (ours: pooling factor ~ 1 / mass); searched at
    # search_steps and reused between, as adaspa; kv_block_size (None: block_size) sets kv blocks apart from q
    # blocks (PSA's defaults are 128 / 64); row_stride s measures the mass on every s-th query row (as sparsed).
    # See methods/pyramid.py.
    "pyramid": {
        "search_steps": (10, 30),
        "density": 0.15,
        "allocation": "quota",
        "ratios": (0.10, 0.05, 0.0, 0.20),
        "max_level": None,
        "min_blocks_per_row": 1,
        "kv_block_size": None,
        "row_stride": 1,
    },
}


# Model families SparseAttentionConfig.recommended knows.
RECOMMENDED_MODELS = ("wan2.1", "wan2.2", "hunyuanvideo", "cogvideox")


@dataclass(frozen=True)
class PublishedSetting:
    """A method's setting in its public code for one model family (what ``recommended`` returns).

    ``dense_steps`` is ``(count, of_steps)``, scaled to the generation's step count; ``step_params`` are method
    parameters counted in steps, ``(steps, of_steps)`` with ``steps`` an int or a tuple of step indices, scaled
    the same way; ``source`` says where each value comes from.
    """

    source: str
    dense_steps: tuple[int, int] = (0, 50)
    dense_layers: tuple[int, ...] = ()
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    step_params: dict[str, tuple[int | tuple[int, ...], int]] = dataclasses.field(default_factory=dict)


def flow_steps_above(timestep: float, shift: float, steps: int = 50) -> int:
    """How many of ``steps`` flow-matching steps have a timestep above ``timestep`` (of 1000) at ``shift``.

    Sigmas fall linearly from 1 and are shifted as ``shift * s / (1 + (shift - 1) * s)`` (Wan's and HunyuanVideo's
    schedulers); DraftAttention's reference runs dense while ``t > 925`` (Wan) or ``t > 945`` (HunyuanVideo).
    """
    count = 0
    for i in range(steps):
        s = 1.0 - i / steps
        count += 1000.0 * shift * s / (1.0 + (shift - 1.0) * s) > timestep
    return count


_RADIAL = "radial-attention 72788d4"
_DRAFT = "draft-attention f3c81d5"
# (method, model family) -> the published setting; a family a method has none for takes its "wan2.1" entry.
PUBLISHED_SETTINGS: dict[tuple[str, str], PublishedSetting] = {
    ("radial", "wan2.1"): PublishedSetting(
        f"{_RADIAL} scripts/wan_t2v_inference.sh: dense_layers=1, dense_timesteps=12, --decay_factor 0.2 (1.0 is only "
        "the argparse default); 50 steps (wan_t2v_inference.py:26)",
        dense_steps=(12, 50),
        dense_layers=(0,),
        params={"decay_factor": 0.2},
    ),
    ("radial", "wan2.2"): PublishedSetting(
        f"{_RADIAL} scripts/wan_22_t2v_inference.sh: dense_layers=1, dense_timesteps=11, decay_factor=0.8, "
        "--num_inference_steps 40",
        dense_steps=(11, 40),
        dense_layers=(0,),
        params={"decay_factor": 0.8},
    ),
    ("radial", "hunyuanvideo"): PublishedSetting(
        f"{_RADIAL} scripts/hunyuan_t2v_inference.sh: dense_layers=0, dense_timesteps=12, --decay_factor 0.95; 50 "
        "steps (hunyuan_t2v_inference.py:29)",
        dense_steps=(12, 50),
        params={"decay_factor": 0.95},
    ),
    ("draft", "wan2.1"): PublishedSetting(
        f"{_DRAFT} wan/wan/modules/attention.py:483 (dense while t > 925 and in block 0) and :510 (sparsity_ratio "
        "0.75); Wan's t2v shift 5.0 and 50 steps (wan/generate.py:55-58): t > 925 is the first 15 of 50 steps",
        dense_steps=(flow_steps_above(925, 5.0), 50),
        dense_layers=(0,),
        params={"fraction": 0.25},
    ),
    ("draft", "hunyuanvideo"): PublishedSetting(
        f"{_DRAFT} hunyuan/hyvideo/diffusion/pipelines/pipeline_hunyuan_video.py:1003 (dense while t > 945), "
        "hunyuan/hyvideo/modules/models.py:211 (blocks 0 and 1 dense), hunyuan/hyvideo/modules/attenion.py:485 "
        "(sparsity_ratio 0.9); flow shift 7.0 (hyvideo/config.py:195), 50 steps (run-single-sample_video.sh): "
        "t > 945 is the first 15 of 50 steps",
        dense_steps=(flow_steps_above(945, 7.0), 50),
        dense_layers=(0, 1),
        params={"fraction": 0.1},
    ),
    ("svg", "wan2.1"): PublishedSetting(
        "Sparse-VideoGen 5ce7b01 scripts/wan/wan_t2v_720p_svg.sh:4-7 (first_times_fp 0.2: the first 10 of 50 steps "
        "dense, floored as wan_t2v_inference.py:88-94; sparsity 0.3; first_layers_fp 0.03: floor(0.03 x 30) = 0 "
        "layers of Wan 1.3B dense, 1 of the 14B's 40), 64 sampled rows (:35), the first-frame sink "
        "(svg/models/wan/utils.py:37-38)",
        dense_steps=(10, 50),
        params={"sparsity": 0.3, "sink": True},
    ),
    ("svg", "hunyuanvideo"): PublishedSetting(
        "Sparse-VideoGen 5ce7b01 scripts/hyvideo/hyvideo_t2v_720p_svg.sh:4-7 (first_times_fp 0.1: 5 of 50 steps "
        "dense; sparsity 0.25; first_layers_fp 0.03: floor(0.03 x 60) = 1 layer), no sink (svg/models/hyvideo/"
        "utils.py:20-44)",
        dense_steps=(5, 50),
        dense_layers=(0,),
        params={"sparsity": 0.25, "sink": False},
    ),
    ("xattention", "wan2.1"): PublishedSetting(
        "x-attention e379887 video evaluation (as surveyed in issue 19): stride 16, threshold 0.9, 5 warm-up steps "
        "of 50, key block 0 kept in every row (the method's defaults)",
        step_params={"warmup_steps": (5, 50)},
    ),
    ("adaspa", "wan2.1"): PublishedSetting(
        "AdaSpa paper (arXiv 2502.21079): searches at steps 10 and 30 of 50 (the method's defaults)",
        step_params={"search_steps": ((10, 30), 50)},
    ),
}


def _int_key(key: Any) -> Any:
    return int(key) if isinstance(key, str) and key.isdigit() else key


def _as_tuple(name: str, value: Any) -> tuple:
    """A sequence (list from JSON, tuple, range) as a tuple; anything else is refused by name."""
    if not isinstance(value, (list, tuple, range)):
        raise ValueError(f"{name} must be a list or tuple of ints, got {value!r}")
    return tuple(value)


def _by_layer(name: str, value: Any) -> dict[int, Any]:
    """A dict keyed by layer number (ints, or digit strings from JSON), with int keys; else refused by name."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict keyed by layer number, got {value!r}")
    converted = {_int_key(k): v for k, v in value.items()}
    for key in converted:
        if isinstance(key, bool) or not isinstance(key, int):
            raise ValueError(f"{name} keys must be layer numbers (ints >= 0), got {key!r}")
    return converted


def _as_params(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict of method parameters, got {value!r}")
    return dict(value)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclass
class SparseAttentionConfig:
    """A validated sparse-attention configuration.

    Args:
        method (`str`, defaults to ``"radial"``): one of ``METHOD_NAMES``; today ``"dense"`` (the exact
            baseline through the same path) and ``"radial"``.
        dense_steps (`int`, defaults to 0): the first ``dense_steps`` denoising steps run dense attention.
        dense_layers (`tuple[int, ...]`, defaults to ``()``): self-attention layers (0-based, in model order)
            that always run dense.
        block_size (`int`, defaults to 128): q and kv block size of the masks (64 or 128 are the tuned ones).
        backend (`str`, defaults to ``"auto"``): kernel backend, see :func:`dit_sparse.block_sparse_attention`.
        quant (`str`, optional): ``"int8"`` or ``"int4"`` quantizes Q and K of the block-sparse attention calls
            (per-block scales, K smoothed; see :mod:`dit_sparse.kernels.quant`); dense steps and layers stay
            exact. Needs backend ``"auto"``, ``"reference"`` or ``"triton"``; not with method ``"dense"``.
        layer_overrides (`dict[int, dict]`, defaults to ``{}``): per-layer parameter overrides, e.g.
            ``{0: {"decay_factor": 2.0}}``; a layer may also set ``{"method": "dense"}``.
        dense_heads (`dict[int, tuple[int, ...]]`, defaults to ``{}``): per layer, heads that stay dense.
        params: method parameters (see ``METHOD_PARAMS``); unknown ones are rejected.
        plan (`SparsityPlan`, path or dict, optional): a calibrated plan (see :mod:`dit_sparse.calibration`)
            giving every (step bucket, layer, head) its pattern; runs with method ``"sparse_vdit"`` and the
            plan's block size, without method parameters. ``apply_sparse_attention(pipe, "plan.json")``
            builds this config.
        levels (`int`, optional): the kv blocks a binary-mask method (or a plan) drops are read instead as keys
            and values average-pooled by ``2^levels`` tokens (PSA's pooled levels, Sol-Attn's summary of what
            is not selected: see :func:`dit_sparse.pyramid_attention`), at ``1 / 2^levels`` of a block's cost
            each; ``None`` drops them. ``2^levels`` must divide the block size; not with ``quant`` or method
            ``"pyramid"`` (which allocates its own levels).
        merge_padding_keys (`bool`, defaults to True): cross-attention calls whose keys end in a run of
            identical rows (Wan-family pipelines pad the prompt with zero rows to 512 tokens, which all become
            the same key and value) attend to the run as one key with ``log(run length)`` added to its score:
            the same result up to rounding, at the cost of the prompt's own tokens (see
            :mod:`dit_sparse.integration.cross`). Applies to every method, ``"dense"`` included, so a dense
            baseline measured through dit-sparse gets it too. ``False`` leaves cross-attention untouched.

    Example:
        >>> cfg = SparseAttentionConfig(method="radial", dense_steps=2, decay_factor=1.0)
        >>> SparseAttentionConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    method: str = "radial"
    dense_steps: int = 0
    dense_layers: tuple[int, ...] = ()
    block_size: int = 128
    backend: str = "auto"
    quant: str | None = None
    layer_overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    dense_heads: dict[int, tuple[int, ...]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    plan: Any = None
    levels: int | None = None
    merge_padding_keys: bool = True

    def __init__(
        self,
        method: str = "radial",
        *,
        dense_steps: int = 0,
        dense_layers: tuple[int, ...] | list[int] = (),
        block_size: int = 128,
        backend: str = "auto",
        quant: str | None = None,
        layer_overrides: dict[int, dict[str, Any]] | None = None,
        dense_heads: dict[int, tuple[int, ...] | list[int]] | None = None,
        params: dict[str, Any] | None = None,
        plan: Any = None,
        levels: int | None = None,
        merge_padding_keys: bool = True,
        **method_params: Any,
    ) -> None:
        self.method = method
        self.levels = levels
        self.merge_padding_keys = merge_padding_keys
        self.dense_steps = dense_steps
        self.dense_layers = _as_tuple("dense_layers", dense_layers)
        self.block_size = block_size
        self.backend = backend
        self.quant = quant
        self.layer_overrides = {
            k: _as_params(f"layer_overrides[{k}]", v)
            for k, v in _by_layer("layer_overrides", {} if layer_overrides is None else layer_overrides).items()
        }
        self.dense_heads = {
            k: _as_tuple(f"dense_heads[{k}]", v)
            for k, v in _by_layer("dense_heads", {} if dense_heads is None else dense_heads).items()
        }
        merged = _as_params("params", {} if params is None else params)
        merged.update(method_params)
        # JSON turns int layer keys into strings and tuples into lists; normalize both.
        if isinstance(merged.get("assignment"), dict):
            merged["assignment"] = {_int_key(k): list(v) for k, v in merged["assignment"].items()}
        if isinstance(merged.get("head_windows"), dict):
            merged["head_windows"] = {
                _int_key(k): [tuple(w) if isinstance(w, list) else w for w in v]
                for k, v in merged["head_windows"].items()
            }
        for name in ("tile", "window", "search_steps"):
            if isinstance(merged.get(name), list):
                merged[name] = tuple(merged[name])
        self.params = merged
        self.plan = _as_plan(plan)
        self.validate()

    def validate(self) -> None:
        if self.method not in METHOD_NAMES:
            raise ValueError(f"unknown method {self.method!r}; choose one of {list(METHOD_NAMES)}")
        _check_int("dense_steps", self.dense_steps, 0)
        if not isinstance(self.merge_padding_keys, bool):
            raise ValueError(f"merge_padding_keys must be True or False, got {self.merge_padding_keys!r}")
        for layer in self.dense_layers:
            _check_int("dense_layers entries", layer, 0)
        if self.block_size not in (16, 32, 64, 128, 256):
            raise ValueError(f"block_size must be one of 16, 32, 64, 128, 256, got {self.block_size!r}")
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"backend must be one of {list(BACKEND_NAMES)}, got {self.backend!r}")
        _validate_quant(self.quant, self.method, self.backend)
        _validate_levels(self.levels, self.method, self.block_size, self.quant)
        allowed = METHOD_PARAMS[self.method]
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown} for method {self.method!r}; it takes {sorted(allowed) or 'none'}"
            )
        for layer, override in self.layer_overrides.items():
            _check_int("layer_overrides keys", layer, 0)
            bad = sorted(set(override) - set(allowed) - {"method"})
            if bad:
                raise ValueError(f"layer_overrides[{layer}] has unknown parameter(s) {bad}")
            if override.get("method", self.method) not in (self.method, "dense"):
                raise ValueError(f"layer_overrides[{layer}] may switch a layer to 'dense' only")
        for layer, heads in self.dense_heads.items():
            _check_int("dense_heads keys", layer, 0)
            for head in heads:
                _check_int(f"dense_heads[{layer}] entries", head, 0)
        validator = _METHOD_VALIDATORS.get(self.method)
        if validator is not None:
            for params in (self.params, *self.layer_overrides.values()):
                validator(params, self.block_size)
        if self.plan is not None:
            _validate_plan(self)

    def method_params(self, layer: int | None = None) -> dict[str, Any]:
        """The method's parameters with defaults filled in, and the layer's overrides applied."""
        merged = {**METHOD_PARAMS[self.method], **self.params}
        if layer is not None:
            merged.update({k: v for k, v in self.layer_overrides.get(layer, {}).items() if k != "method"})
        return merged

    def layer_is_dense(self, layer: int) -> bool:
        return (
            self.method == "dense"
            or layer in self.dense_layers
            or self.layer_overrides.get(layer, {}).get("method") == "dense"
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["dense_layers"] = list(self.dense_layers)
        data["dense_heads"] = {str(k): list(v) for k, v in self.dense_heads.items()}
        data["layer_overrides"] = {str(k): dict(v) for k, v in self.layer_overrides.items()}
        if self.plan is not None:  # JSON: the plan's file, or the plan itself when it has none
            data["plan"] = self.plan.path if self.plan.path is not None else self.plan.to_dict()
        return data

    @classmethod
    def recommended(
        cls, method: str, num_inference_steps: int = 50, model: str = "wan2.1", **overrides: Any
    ) -> SparseAttentionConfig:
        """The schedule and settings a method's public code uses for ``model``, scaled to ``num_inference_steps``;
        ``overrides`` win.

        Sources, per method and family (``PUBLISHED_SETTINGS`` holds each value with its file and line):

        - radial (radial-attention 72788d4): Wan 2.1 decay 0.2, first 12 of 50 steps and layer 0 dense; Wan 2.2
          decay 0.8, 11 of 40 steps and layer 0; HunyuanVideo decay 0.95, 12 of 50 steps, no dense layer.
        - draft (draft-attention f3c81d5): Wan fraction 0.25 (sparsity 0.75), dense while t > 925 (the first 15
          of 50 steps at Wan's shift 5) and in layer 0; HunyuanVideo fraction 0.1, dense while t > 945 (15 of 50
          at shift 7) and in layers 0 and 1.
        - svg (Sparse-VideoGen 5ce7b01): Wan sparsity 0.3 with the first-frame sink, the first 20% of steps
          dense (10 of 50), no dense layer (Wan 14B's script makes one: pass ``dense_layers=(0,)``);
          HunyuanVideo sparsity 0.25, no sink, 10% of steps (5 of 50) and layer 0 dense (its 720p script).
        - xattention, adaspa: their defaults are the published settings; warm-up and search steps scale.
        - sparse_vdit, sliding_tile, sparsed, paro, pyramid: no per-model setting is checked here; their
          plain defaults (see ``METHOD_PARAMS``) are returned.

        A family without its own published setting (CogVideoX for every method; Wan 2.2 for draft) takes the
        method's Wan 2.1 setting. Step counts scale with ``num_inference_steps`` (rounded).

        Args:
            method (`str`): a method name.
            num_inference_steps (`int`, defaults to 50): the generation's step count.
            model (`str`, defaults to ``"wan2.1"``): ``"wan2.1"``, ``"wan2.2"``, ``"hunyuanvideo"`` or
                ``"cogvideox"``.

        Example:
            >>> SparseAttentionConfig.recommended("radial", num_inference_steps=25).dense_steps
            6
            >>> SparseAttentionConfig.recommended("radial", model="hunyuanvideo").method_params()["decay_factor"]
            0.95
        """
        _check_int("num_inference_steps", num_inference_steps, 1)
        if model not in RECOMMENDED_MODELS:
            raise ValueError(f"model must be one of {list(RECOMMENDED_MODELS)}, got {model!r}")
        if method not in METHOD_NAMES:
            raise ValueError(f"unknown method {method!r}; choose one of {list(METHOD_NAMES)}")
        setting = PUBLISHED_SETTINGS.get((method, model)) or PUBLISHED_SETTINGS.get((method, "wan2.1"))
        if setting is None:
            return cls(method, **overrides)

        def scaled(count: int, of_steps: int) -> int:
            return round(count * num_inference_steps / of_steps)

        values: dict[str, Any] = {
            "dense_steps": scaled(*setting.dense_steps),
            "dense_layers": setting.dense_layers,
            **setting.params,
        }
        for name, (steps, of_steps) in setting.step_params.items():
            values[name] = (
                scaled(steps, of_steps) if isinstance(steps, int) else tuple(scaled(c, of_steps) for c in steps)
            )
        return cls(method, **{**values, **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SparseAttentionConfig:
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; expected some of {sorted(known)}")
        data = dict(data)
        return cls(data.pop("method", "radial"), **data)


def _validate_levels(levels: Any, method: str, block_size: int, quant: Any) -> None:
    if levels is None:
        return
    _check_int("levels", levels, 1)
    if block_size % (1 << levels):
        raise ValueError(f"levels={levels}: pooling by {1 << levels} tokens does not divide block_size {block_size}")
    if method in ("pyramid", "dense"):
        raise ValueError(f"levels applies to methods with binary masks; method {method!r} takes none")
    if quant is not None:
        raise ValueError("levels cannot be combined with quant (pooled levels run unquantized)")


def _validate_quant(quant: Any, method: str, backend: str) -> None:
    from .kernels import quantized_backends
    from .kernels.quant import check_quant

    if check_quant(quant) is None:
        return
    if method == "dense":
        raise ValueError(
            "quant applies to block-sparse attention calls, and method 'dense' runs the model's exact attention; "
            "use quant with a sparse method"
        )
    if method == "pyramid":
        raise ValueError("quant is not available with method 'pyramid' (its pooled levels run unquantized)")
    if backend not in ("auto", *quantized_backends()):
        raise ValueError(f"quant={quant!r} needs backend 'auto' or one of {quantized_backends()}, got {backend!r}")


def _validate_radial(params: dict[str, Any], block_size: int) -> None:
    if "block_rule" in params:
        from .patterns.radial import check_block_rule

        check_block_rule(params["block_rule"])
    if "decay_factor" in params:
        value = params["decay_factor"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"decay_factor must be a positive number, got {value!r}")
    if params.get("sink_frames") is not None:
        _check_int("sink_frames", params["sink_frames"], 0)
    if "dense_distance" in params:
        _check_int("dense_distance", params["dense_distance"], 0)


def _validate_sparse_vdit(params: dict[str, Any], block_size: int) -> None:
    from .methods.sparse_vdit import check_pattern

    for name in ("diagonal_width", "multi_diagonal_width", "max_distance"):
        if params.get(name) is not None:
            _check_int(name, params[name], 0)
    _check_per_layer_lists("assignment", params.get("assignment"), "pattern", lambda name, entry: check_pattern(entry))


def _check_per_layer_lists(name: str, value: Any, what: str, check_entry) -> None:
    """``{layer: [one entry per head]}`` (or None), each entry passed to ``check_entry(label, entry)``."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict {{layer: [{what} per head]}}, got {type(value).__name__}")
    for layer, entries in value.items():
        _check_int(f"{name} keys", layer, 0)
        if not isinstance(entries, (list, tuple)) or not entries:
            raise ValueError(f"{name}[{layer}] must be a non-empty list, one {what} per head")
        for entry in entries:
            check_entry(f"{name}[{layer}] entries", entry)


def _validate_sliding_tile(params: dict[str, Any], block_size: int) -> None:
    from .patterns.sliding_tile import _check_triple

    for name in ("tile", "window"):
        if name in params:
            _check_triple(name, params[name])
    _check_per_layer_lists("head_windows", params.get("head_windows"), "window", _check_triple)


def _check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")


def _validate_svg(params: dict[str, Any], block_size: int) -> None:
    value = params.get("sparsity", 1)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        # the reference's name; it is the fraction of the attention map kept, not the fraction dropped
        raise ValueError(f"sparsity is the kept fraction of the attention map and must be in (0, 1], got {value!r}")
    for name in ("spatial_width", "temporal_width"):
        if params.get(name) is not None:
            _check_int(name, params[name], 1)
    if not isinstance(params.get("sink", True), bool):
        raise ValueError(f"sink must be True or False, got {params['sink']!r}")
    if "num_samples" in params:
        _check_int("num_samples", params["num_samples"], 1)
    if "seed" in params:
        _check_int("seed", params["seed"], 0)


def _validate_sparsed(params: dict[str, Any], block_size: int) -> None:
    for name in ("tau", "fraction"):
        if params.get(name) is not None:
            _check_fraction(name, params[name])
    if "min_blocks_per_row" in params:
        _check_int("min_blocks_per_row", params["min_blocks_per_row"], 1)
    _check_row_stride(params, block_size)
    _check_kv_block_size(params.get("kv_block_size"))
    if not isinstance(params.get("share_contexts", False), bool):
        raise ValueError(f"share_contexts must be True or False, got {params['share_contexts']!r}")


def _check_row_stride(params: dict[str, Any], block_size: int) -> None:
    if "row_stride" in params:
        _check_int("row_stride", params["row_stride"], 1)
        if block_size % params["row_stride"]:
            raise ValueError(f"row_stride must divide the block size {block_size}, got {params['row_stride']}")


def _check_kv_block_size(kv_block: Any) -> None:
    if kv_block is not None and kv_block not in (16, 32, 64, 128, 256):
        raise ValueError(f"kv_block_size must be None (block_size) or one of 16, 32, 64, 128, 256, got {kv_block!r}")


def _validate_adaspa(params: dict[str, Any], block_size: int) -> None:
    steps = params.get("search_steps", (0,))
    if not isinstance(steps, (tuple, list)) or not steps:
        raise ValueError(f"search_steps must be a non-empty list of step indices, got {steps!r}")
    for step in steps:
        _check_int("search_steps entries", step, 0)
    if "density" in params:
        _check_fraction("density", params["density"])
    if "min_blocks_per_row" in params:
        _check_int("min_blocks_per_row", params["min_blocks_per_row"], 1)


def _validate_xattention(params: dict[str, Any], block_size: int) -> None:
    if "stride" in params:
        _check_int("stride", params["stride"], 1)
        if block_size % params["stride"]:
            raise ValueError(f"stride {params['stride']} must divide block_size {block_size}")
    if "tau" in params:
        _check_fraction("tau", params["tau"])
    for name, minimum in (("warmup_steps", 0), ("min_blocks_per_row", 1)):
        if name in params:
            _check_int(name, params[name], minimum)
    if not isinstance(params.get("keep_first_block", True), bool):
        raise ValueError(f"keep_first_block must be True or False, got {params['keep_first_block']!r}")


def _validate_draft(params: dict[str, Any], block_size: int) -> None:
    window = params.get("window", (1, 1))
    if (
        not isinstance(window, (tuple, list))
        or len(window) != 2
        or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in window)
    ):
        raise ValueError(f"window must be two positive ints (h, w), got {window!r}")
    if "fraction" in params:
        _check_fraction("fraction", params["fraction"])


def _validate_paro(params: dict[str, Any], block_size: int) -> None:
    if "density" in params:
        _check_fraction("density", params["density"])
    weight = params.get("quant_weight", 0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise ValueError(f"quant_weight must be a number >= 0, got {weight!r}")


def _validate_pyramid(params: dict[str, Any], block_size: int) -> None:
    _validate_adaspa(params, block_size)
    kv_block = params.get("kv_block_size")
    _check_kv_block_size(kv_block)
    _check_row_stride(params, block_size)
    block_size = block_size if kv_block is None else kv_block  # levels pool inside kv blocks
    if params.get("allocation", "quota") not in ("mass", "quota"):
        raise ValueError(f"allocation must be 'mass' or 'quota', got {params['allocation']!r}")
    if params.get("max_level") is not None:
        _check_int("max_level", params["max_level"], 1)
        if block_size % (1 << params["max_level"]):
            raise ValueError(f"max_level {params['max_level']} pools by {1 << params['max_level']} tokens, which "
                             f"must divide block_size {block_size}")  # fmt: skip
    ratios = params.get("ratios", (1.0,))
    if (
        not isinstance(ratios, (tuple, list))
        or not 1 <= len(ratios) <= 9
        or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1 for r in ratios)
        or not ratios[0] > 0
        or sum(ratios) > 1 + 1e-9
    ):
        raise ValueError(
            "ratios must be 1 to 9 fractions of a q block's kv blocks (full, pooled by 2, by 4, ...), each in "
            f"[0, 1], the first positive, summing to at most 1; got {ratios!r}"
        )
    if block_size % (1 << (len(ratios) - 1)):
        raise ValueError(f"{len(ratios) - 1} pooling levels pool by {1 << (len(ratios) - 1)} tokens, which must "
                         f"divide block_size {block_size}")  # fmt: skip


_METHOD_VALIDATORS = {
    "radial": _validate_radial,
    "sparse_vdit": _validate_sparse_vdit,
    "sliding_tile": _validate_sliding_tile,
    "svg": _validate_svg,
    "sparsed": _validate_sparsed,
    "adaspa": _validate_adaspa,
    "xattention": _validate_xattention,
    "draft": _validate_draft,
    "paro": _validate_paro,
    "pyramid": _validate_pyramid,
}


def _as_plan(plan: Any) -> Any:
    """A ``SparsityPlan`` from a plan, a path to a plan file, or a plan's JSON dict (``None`` stays ``None``)."""
    if plan is None:
        return None
    import os

    from .plan import SparsityPlan

    if isinstance(plan, SparsityPlan):
        return plan
    if isinstance(plan, (str, os.PathLike)):
        return SparsityPlan.load(plan)
    if isinstance(plan, dict):
        return SparsityPlan.from_dict(plan)
    raise ValueError(f"plan must be a SparsityPlan, a path to a plan file or a plan dict, got {type(plan).__name__}")


def _validate_plan(config: SparseAttentionConfig) -> None:
    made_by = config.plan.provenance.search.method
    if config.method != made_by:
        raise ValueError(
            f"the plan was made by the {made_by!r} search and runs with method {made_by!r}, got method "
            f"{config.method!r}"
        )
    if config.block_size != config.plan.block_size:
        raise ValueError(
            f"the plan was calibrated with block_size {config.plan.block_size}, but the config has "
            f"{config.block_size}; set block_size={config.plan.block_size}"
        )
    overridden = sorted({k for o in config.layer_overrides.values() for k in o if k != "method"})
    if config.params or overridden:
        raise ValueError(
            f"a plan sets every head's pattern; method parameter(s) {sorted(config.params) or overridden} "
            "do not apply with a plan"
        )


def parse_method_point(text: str) -> tuple[str, dict[str, Any]]:
    """``"adaspa:density=0.2,search_steps=[0]"`` -> ``("adaspa", {"density": 0.2, "search_steps": [0]})``.

    Values are JSON. Commas separate parameters only where a ``NAME=`` follows, so list values such as
    ``window=[2,8]`` stay whole. A bare ``"radial"`` (no colon) is that method with no parameters.
    """
    method, sep, rest = text.partition(":")
    if not method or (sep and not rest):
        raise ValueError(f"expected METHOD or METHOD:NAME=VALUE[,NAME=VALUE], got {text!r}")
    params: dict[str, Any] = {}
    for item in filter(None, re.split(r",(?=[A-Za-z_]\w*=)", rest)):
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"method parameter must be NAME=VALUE, got {item!r} in {text!r}")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"value of {name} is not JSON: {value!r} (in {text!r})") from error
    return method, params
