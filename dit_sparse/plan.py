"""``SparsityPlan``: the output of calibration, per (step bucket, layer, head) pattern, saved as data.

A plan is versioned JSON plus, when some heads carry explicit block tables (``"mask"`` heads), a
safetensors file next to it. Never a pickle: plans get shared, and loading one must not run code (JSON and
safetensors hold data only). The JSON holds:

- ``provenance``: the model it was made for (transformer class, a hash of its config, self-attention layer
  count, heads per layer), the token layout and block size, a hash of the prompts, the search settings
  (target, steps, candidates), the package version and the date;
- ``cost_profile``: the cost model the search ranked candidates by (analytic, or a measured kernel profile);
- ``buckets``: contiguous step ranges ``[start, stop)`` (the last open-ended), each with one list per layer
  of one :class:`~dit_sparse.HeadPattern` per head (kind, params, order, density, recall, rel_l2);
- ``masks_file``: the tensor file's name (same folder), or null.

Loading validates everything (unknown and missing keys at every level, kinds and parameters, bucket ranges,
layer and head counts, mask tensors); :func:`dit_sparse.apply_sparse_attention` checks it against the model it
is applied to. A file from a newer schema is refused; older schemas are upgraded by the functions registered
with :func:`register_migration`.

The plan is data that the integration reads; :mod:`dit_sparse.calibration` searches and writes it. This module
also writes a plan's :func:`summary_table` (the picture is :func:`dit_sparse.calibration.render_plan`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch

from ._version import __version__
from .cost import CostModel
from .heads import HeadPattern, head_levels, table_cost
from .layout import VideoLayout
from .mask import SUPPORTED_BLOCK_SIZES
from .utils import package_version

logger = logging.getLogger(__name__)

PLAN_FORMAT = "dit-sparse-plan"
SCHEMA_VERSION = 1
TOP_KEYS = ("format", "schema_version", "provenance", "cost_profile", "buckets", "masks_file")
PROVENANCE_KEYS = (
    "model_class",
    "config_hash",
    "num_layers",
    "heads_per_layer",
    "layout",
    "block_size",
    "prompts_hash",
    "num_prompts",
    "search",
    "package_version",
    "created",
)
LAYOUT_KEYS = ("frames", "height", "width", "text_len", "text_position")
SEARCH_KEYS = (
    "method",
    "target_recall",
    "max_rel_l2",
    "num_inference_steps",
    "calibration_steps",
    "candidates",
    "seed",
    "pipeline_kwargs",
    "density",
    "quant_weight",
)
SEARCH_METHODS = ("sparse_vdit", "paro")
BUCKET_KEYS = ("start", "stop", "layers")

# from_version -> function turning a plan dict of that version into one of version from_version + 1.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def register_migration(from_version: int) -> Callable:
    """Decorator registering the upgrade of plan dicts from schema ``from_version`` to ``from_version + 1``.

    Example:
        >>> @register_migration(0)  # doctest: +SKIP
        ... def _v0_to_v1(data):
        ...     return {**data, "schema_version": 1}
    """

    def register(function: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable:
        MIGRATIONS[from_version] = function
        return function

    return register


def _check_keys(data: Any, expected: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(expected))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected keys {list(expected)}")
    missing = [key for key in expected if key not in data]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}; expected keys {list(expected)}")
    return data


def _expect(condition: bool, where: str, what: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"{where} must be {what}, got {value!r}")


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _optional_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def config_hash(transformer: torch.nn.Module) -> str:
    """A hash of the transformer's diffusers config (its architecture; private ``_`` keys left out)."""
    config = getattr(transformer, "config", {}) or {}
    public = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
    text = json.dumps(public, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def prompts_hash(prompts: list[str]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()


@dataclass
class SearchSettings:
    """How the plan was searched (for the record; applying a plan reads only ``method``).

    ``method`` is the search that made the plan and the method that runs it: ``"sparse_vdit"`` (per-head
    patterns meeting ``target_recall`` or ``max_rel_l2``) or ``"paro"`` (per-head token orders and masks at
    ``density``, orders scored with ``quant_weight``).
    """

    method: str = "sparse_vdit"
    target_recall: float | None = None
    max_rel_l2: float | None = None
    num_inference_steps: int | None = None
    calibration_steps: list[int] | None = None
    candidates: list[HeadPattern] | None = None
    seed: int | None = None
    pipeline_kwargs: dict[str, Any] | None = None
    density: float | None = None
    quant_weight: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in SEARCH_KEYS}
        if self.candidates is not None:
            data["candidates"] = [c.to_dict() for c in self.candidates]
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SearchSettings:
        data = _check_keys(data, SEARCH_KEYS, where)
        _expect(data["method"] in SEARCH_METHODS, f"{where}.method", f"one of {list(SEARCH_METHODS)}", data["method"])
        for name in ("target_recall", "max_rel_l2", "density", "quant_weight"):
            _expect(_optional_number(data[name]), f"{where}.{name}", "null or a number", data[name])
        for name in ("num_inference_steps", "seed"):
            _expect(data[name] is None or _is_int(data[name], 0), f"{where}.{name}", "null or an int", data[name])
        steps = data["calibration_steps"]
        _expect(
            steps is None or (isinstance(steps, list) and all(_is_int(s, 0) for s in steps)),
            f"{where}.calibration_steps",
            "null or a list of step indices",
            steps,
        )
        kwargs = data["pipeline_kwargs"]
        _expect(kwargs is None or isinstance(kwargs, dict), f"{where}.pipeline_kwargs", "null or an object", kwargs)
        candidates = data["candidates"]
        _expect(candidates is None or isinstance(candidates, list), f"{where}.candidates", "null or a list", candidates)
        if candidates is not None:
            candidates = [HeadPattern.from_dict(c, f"{where}.candidates[{i}]") for i, c in enumerate(candidates)]
        return cls(**{**data, "candidates": candidates})


@dataclass
class Provenance:
    """What a plan was made for and how (see the module docstring)."""

    model_class: str
    num_layers: int
    heads_per_layer: list[int]
    layout: VideoLayout
    block_size: int
    config_hash: str | None = None
    prompts_hash: str | None = None
    num_prompts: int = 0
    search: SearchSettings = field(default_factory=SearchSettings)
    package_version: str | None = None
    created: str | None = None

    def __post_init__(self) -> None:
        if self.package_version is None:
            self.package_version = package_version("dit-sparse") or __version__
        if self.created is None:
            self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.heads_per_layer = list(self.heads_per_layer)
        self.validate("provenance")

    def validate(self, where: str) -> None:
        _expect(
            isinstance(self.model_class, str) and self.model_class,
            f"{where}.model_class",
            "a class name",
            self.model_class,
        )
        _expect(_is_int(self.num_layers, 1), f"{where}.num_layers", "an int >= 1", self.num_layers)
        _expect(
            isinstance(self.heads_per_layer, list)
            and len(self.heads_per_layer) == self.num_layers
            and all(_is_int(h, 1) for h in self.heads_per_layer),
            f"{where}.heads_per_layer",
            f"a list of {self.num_layers} positive ints (one per layer)",
            self.heads_per_layer,
        )
        _expect(isinstance(self.layout, VideoLayout), f"{where}.layout", "a VideoLayout", self.layout)
        _expect(
            self.block_size in SUPPORTED_BLOCK_SIZES,
            f"{where}.block_size",
            f"one of {SUPPORTED_BLOCK_SIZES}",
            self.block_size,
        )
        for name in ("config_hash", "prompts_hash", "package_version", "created"):
            value = getattr(self, name)
            _expect(value is None or isinstance(value, str), f"{where}.{name}", "null or a string", value)
        _expect(_is_int(self.num_prompts, 0), f"{where}.num_prompts", "an int >= 0", self.num_prompts)

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in PROVENANCE_KEYS}
        data["layout"] = {name: getattr(self.layout, name) for name in LAYOUT_KEYS}
        data["search"] = self.search.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "provenance") -> Provenance:
        data = dict(_check_keys(data, PROVENANCE_KEYS, where))
        layout = _check_keys(data["layout"], LAYOUT_KEYS, f"{where}.layout")
        try:
            data["layout"] = VideoLayout(**layout)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}.layout: {error}") from error
        data["search"] = SearchSettings.from_dict(data["search"], f"{where}.search")
        _expect(
            isinstance(data["heads_per_layer"], list), f"{where}.heads_per_layer", "a list", data["heads_per_layer"]
        )
        provenance = cls.__new__(cls)
        for name, value in data.items():
            setattr(provenance, name, value)
        provenance.validate(where)
        return provenance


@dataclass
class StepBucket:
    """Denoising steps ``[start, stop)`` (``stop=None``: to the end) and their patterns ``layers[layer][head]``."""

    start: int
    stop: int | None
    layers: list[list[HeadPattern]]

    def contains(self, step: int) -> bool:
        return step >= self.start and (self.stop is None or step < self.stop)

    @property
    def label(self) -> str:
        """Its steps for people: ``"0-9"`` (last step included), or ``"10-end"`` for the open-ended bucket."""
        return f"{self.start}-end" if self.stop is None else f"{self.start}-{self.stop - 1}"


def _mask_name(bucket: int, layer: int, head: int) -> str:
    return f"bucket{bucket}.layer{layer}.head{head}"


class SparsityPlan:
    """Per (step bucket, layer, head) attention patterns for one model, with their provenance.

    Args:
        provenance (`Provenance`): the model, layout, block size and search it was made with.
        buckets (`list[StepBucket]`): contiguous step ranges from step 0, the last with ``stop=None``.
        cost_profile (`CostModel`, optional): the cost model used; default the analytic one.
        path (`str`, optional): the file it was loaded from or saved to.

    Example:
        >>> plan = SparsityPlan.load("plan.json")  # doctest: +SKIP
        >>> plan.heads(step=0, layer=3)[0].label  # doctest: +SKIP
        'diagonal(width=390)'
    """

    def __init__(
        self,
        provenance: Provenance,
        buckets: list[StepBucket],
        cost_profile: CostModel | None = None,
        path: str | os.PathLike | None = None,
    ) -> None:
        self.provenance = provenance
        self.buckets = list(buckets)
        self.cost_profile = CostModel.flops() if cost_profile is None else cost_profile
        # Absolute, so that a config naming the plan by its path (to_dict) still finds it from another folder.
        self.path = None if path is None else os.path.abspath(os.fspath(path))
        self.validate()

    # -- views ------------------------------------------------------------------------------------------
    @property
    def layout(self) -> VideoLayout:
        return self.provenance.layout

    @property
    def block_size(self) -> int:
        return self.provenance.block_size

    @property
    def num_layers(self) -> int:
        return self.provenance.num_layers

    @property
    def heads_per_layer(self) -> list[int]:
        return list(self.provenance.heads_per_layer)

    def bucket_index(self, step: int) -> int:
        """Index of the bucket holding denoising step ``step``."""
        for index, bucket in enumerate(self.buckets):
            if bucket.contains(step):
                return index
        raise ValueError(f"step {step} lies in no bucket of this plan (buckets start at step 0)")

    def heads(self, step: int, layer: int) -> list[HeadPattern]:
        """The patterns of ``layer``'s heads at denoising step ``step``."""
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} is not in this plan, which has {self.num_layers} layers")
        return self.buckets[self.bucket_index(step)].layers[layer]

    def __repr__(self) -> str:
        p = self.provenance
        return (
            f"SparsityPlan(model={p.model_class}, layers={p.num_layers}, buckets={len(self.buckets)}, "
            f"layout={p.layout}, block_size={p.block_size}, path={self.path!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparsityPlan):
            return NotImplemented
        if self.to_dict() != other.to_dict():
            return False
        return all(
            a == b
            for mine, theirs in zip(self.buckets, other.buckets, strict=True)
            for la, lb in zip(mine.layers, theirs.layers, strict=True)
            for a, b in zip(la, lb, strict=True)
        )

    def summary_table(self) -> str:
        """Per bucket and layer: patterns chosen, mean density, expected attention speedup (a Markdown table)."""
        return summary_table(self)

    # -- validation -------------------------------------------------------------------------------------
    def validate(self) -> None:
        """ValueError naming the first inconsistency between buckets, layers, heads, patterns and layout."""
        if not isinstance(self.provenance, Provenance):
            raise ValueError(f"provenance must be a Provenance, got {type(self.provenance).__name__}")
        if not isinstance(self.cost_profile, CostModel):
            raise ValueError(f"cost_profile must be a CostModel, got {type(self.cost_profile).__name__}")
        if not self.buckets:
            raise ValueError("buckets: a plan needs at least one step bucket")
        expected_start = 0
        for b, bucket in enumerate(self.buckets):
            where = f"buckets[{b}]"
            last = b == len(self.buckets) - 1
            if bucket.start != expected_start:
                raise ValueError(
                    f"{where}.start is {bucket.start!r}; buckets must cover the steps from 0 without gaps "
                    f"(expected {expected_start})"
                )
            if last and bucket.stop is not None:
                raise ValueError(f"{where}.stop must be null: the last bucket runs to the end, got {bucket.stop!r}")
            if not last and not (_is_int(bucket.stop, 0) and bucket.stop > bucket.start):
                raise ValueError(f"{where}.stop must be an int > start ({bucket.start}), got {bucket.stop!r}")
            expected_start = bucket.stop
            self._validate_layers(bucket.layers, where)

    def _validate_layers(self, layers: Any, where: str) -> None:
        if not isinstance(layers, list) or len(layers) != self.num_layers:
            count = len(layers) if isinstance(layers, list) else type(layers).__name__
            raise ValueError(f"{where}.layers has {count} layers; the plan's provenance says {self.num_layers}")
        n_blocks = -(-self.layout.num_tokens // self.block_size)
        for layer, heads in enumerate(layers):
            expected = self.provenance.heads_per_layer[layer]
            if not isinstance(heads, list) or len(heads) != expected:
                count = len(heads) if isinstance(heads, list) else type(heads).__name__
                raise ValueError(f"{where}.layers[{layer}] has {count} heads; the plan's provenance says {expected}")
            for head, pattern in enumerate(heads):
                here = f"{where}.layers[{layer}][{head}]"
                if not isinstance(pattern, HeadPattern):
                    raise ValueError(f"{here} must be a HeadPattern, got {type(pattern).__name__}")
                pattern.validate(here)
                if pattern.is_template:
                    raise ValueError(f"{here} is a search template ({pattern.label}); a plan holds resolved patterns")
                if (
                    pattern.kind == "mask"
                    and pattern.blocks is not None
                    and tuple(pattern.blocks.shape)
                    != (
                        n_blocks,
                        n_blocks,
                    )
                ):
                    raise ValueError(
                        f"{here}: its mask is {tuple(pattern.blocks.shape)} blocks; the plan's layout of "
                        f"{self.layout.num_tokens} tokens in blocks of {self.block_size} needs ({n_blocks}, {n_blocks})"
                    )
                if pattern.is_level_table:
                    deepest = int(math.log2(self.block_size))
                    if int(pattern.blocks.max()) > deepest:
                        raise ValueError(
                            f"{here}: its level table pools by 2^{int(pattern.blocks.max())} tokens; blocks of "
                            f"{self.block_size} allow levels up to {deepest}"
                        )
                for part in pattern.parts:
                    columns = pattern.part_params(part).get("columns") if part == "vertical_stripe" else None
                    if columns and max(stop for _, stop in columns) > self.layout.video_tokens:
                        raise ValueError(
                            f"{here}: vertical_stripe columns reach token {max(s for _, s in columns)}; the layout "
                            f"has {self.layout.video_tokens} video tokens"
                        )

    # -- against a call ---------------------------------------------------------------------------------
    def check_layout(self, layout: VideoLayout) -> None:
        """ValueError unless ``layout`` is the token grid the plan was calibrated on."""
        if layout != self.layout:
            raise ValueError(
                f"this plan was calibrated for the token grid {self.layout}, but the call's grid is {layout}; "
                "generate at the calibrated resolution and frame count, or calibrate for this one"
            )

    # -- files ------------------------------------------------------------------------------------------
    def to_dict(self, masks_file: str | None = None) -> dict[str, Any]:
        """The JSON form; ``"mask"`` heads name their tensor in ``masks_file`` (see :meth:`save`)."""
        buckets = []
        for b, bucket in enumerate(self.buckets):
            layers = []
            for layer, heads in enumerate(bucket.layers):
                entries = []
                for head, pattern in enumerate(heads):
                    entry = pattern.to_dict()
                    if pattern.kind == "mask":
                        entry["params"] = {"tensor": _mask_name(b, layer, head)}
                    entries.append(entry)
                layers.append(entries)
            buckets.append({"start": bucket.start, "stop": bucket.stop, "layers": layers})
        has_masks = any(p.kind == "mask" for bucket in self.buckets for heads in bucket.layers for p in heads)
        return {
            "format": PLAN_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "provenance": self.provenance.to_dict(),
            "cost_profile": self.cost_profile.to_dict(),
            "buckets": buckets,
            "masks_file": masks_file if has_masks else None,
        }

    def save(self, path: str | os.PathLike) -> str:
        """Write the plan as JSON at ``path`` (and its masks, if any, as ``<stem>.safetensors`` beside it).

        Returns:
            The JSON path.
        """
        from safetensors.torch import save_file

        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        masks_file = os.path.splitext(os.path.basename(path))[0] + ".safetensors"
        data = self.to_dict(masks_file)
        if data["masks_file"] is not None:
            tensors = {
                # own storage per tensor: heads may share one table, and safetensors refuses shared memory
                _mask_name(b, layer, head): pattern.blocks.cpu().clone()
                for b, bucket in enumerate(self.buckets)
                for layer, heads in enumerate(bucket.layers)
                for head, pattern in enumerate(heads)
                if pattern.kind == "mask"
            }
            save_file(tensors, os.path.join(folder, masks_file), metadata={"format": PLAN_FORMAT + "-masks"})
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")
        self.path = os.path.abspath(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SparsityPlan:
        """Read and validate a plan file (ValueError saying what is wrong with it)."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError as error:
            raise ValueError(f"no such plan file: {path}") from error
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read plan file {path}: {error}") from error
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
                "the file may be truncated or not a plan"
            ) from error
        return cls.from_dict(data, path=path)

    @classmethod
    def from_dict(cls, data: Any, *, path: str | os.PathLike | None = None) -> SparsityPlan:
        """A plan from its JSON form; ``path`` (the JSON file) locates the masks file when there is one."""
        source = "plan" if path is None else os.fspath(path)
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a plan must be a JSON object, got {type(data).__name__}")
        if not data:
            raise ValueError(f"{source}: the plan is an empty JSON object; expected keys {list(TOP_KEYS)}")
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"{source}: 'format' must be {PLAN_FORMAT!r}, got {data.get('format')!r}; not a plan file")
        version = data.get("schema_version")
        if not _is_int(version, 0):
            raise ValueError(f"{source}: 'schema_version' must be an int, got {version!r}")
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"{source} has plan schema version {version}, newer than this dit-sparse reads (up to "
                f"{SCHEMA_VERSION}); upgrade dit-sparse to load it"
            )
        while version < SCHEMA_VERSION:
            if version not in MIGRATIONS:
                raise ValueError(f"{source}: no migration from plan schema version {version} to {version + 1}")
            data = MIGRATIONS[version](dict(data))
            version += 1
            if data.get("schema_version") != version:
                raise ValueError(f"{source}: the migration to schema version {version} did not set schema_version")
        where = source
        _check_keys(data, TOP_KEYS, where)
        provenance = Provenance.from_dict(data["provenance"], f"{where}: provenance")
        cost = CostModel.from_dict(data["cost_profile"], f"{where}: cost_profile")
        buckets_data = data["buckets"]
        if not isinstance(buckets_data, list) or not buckets_data:
            raise ValueError(f"{where}: buckets must be a non-empty list, got {buckets_data!r}")
        buckets = []
        for b, entry in enumerate(buckets_data):
            here = f"{where}: buckets[{b}]"
            _check_keys(entry, BUCKET_KEYS, here)
            _expect(_is_int(entry["start"], 0), f"{here}.start", "an int >= 0", entry["start"])
            _expect(entry["stop"] is None or _is_int(entry["stop"], 1), f"{here}.stop", "null or an int", entry["stop"])
            layers = entry["layers"]
            if not isinstance(layers, list) or not all(isinstance(heads, list) for heads in layers):
                raise ValueError(f"{here}.layers must be a list (per layer) of lists (per head)")
            parsed = [
                [HeadPattern.from_dict(p, f"{here}.layers[{layer}][{head}]") for head, p in enumerate(heads)]
                for layer, heads in enumerate(layers)
            ]
            buckets.append(StepBucket(entry["start"], entry["stop"], parsed))
        _load_masks(buckets, data["masks_file"], provenance, path, where)
        try:
            return cls(provenance, buckets, cost, path=path)
        except ValueError as error:
            message = str(error)
            raise ValueError(message if message.startswith(where) else f"{where}: {message}") from error


def _load_masks(
    buckets: list[StepBucket], masks_file: Any, provenance: Provenance, path: str | os.PathLike | None, where: str
) -> None:
    """Attach the block tables of ``"mask"`` heads from the plan's safetensors file (data only, no code)."""
    wanted = {
        (b, layer, head): pattern.params.get("tensor")
        for b, bucket in enumerate(buckets)
        for layer, heads in enumerate(bucket.layers)
        for head, pattern in enumerate(heads)
        if pattern.kind == "mask"
    }
    if not wanted:
        if masks_file is not None:
            raise ValueError(f"{where}: masks_file is {masks_file!r}, but no head is a 'mask' head; set it to null")
        return
    if not isinstance(masks_file, str) or not masks_file or os.path.basename(masks_file) != masks_file:
        raise ValueError(
            f"{where}: masks_file must name a file in the plan's folder (a bare file name), got {masks_file!r}"
        )
    if path is None:
        raise ValueError(f"{where}: its mask heads are in {masks_file}; load the plan from its file to find it")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = os.path.join(os.path.dirname(os.path.abspath(os.fspath(path))), masks_file)
    if not os.path.isfile(file):
        raise ValueError(f"{where}: its mask file {masks_file} is missing (looked for {file})")
    try:
        tensors = load_file(file)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{where}: {masks_file} is not a readable safetensors file ({error})") from error
    n_blocks = -(-provenance.layout.num_tokens // provenance.block_size)
    for (b, layer, head), name in wanted.items():
        here = f"{where}: buckets[{b}].layers[{layer}][{head}]"
        if name not in tensors:
            raise ValueError(f"{here}: mask tensor {name!r} is not in {masks_file}")
        table = tensors[name]
        if table.dtype not in (torch.bool, torch.int8) or tuple(table.shape) != (n_blocks, n_blocks):
            raise ValueError(
                f"{here}: mask tensor {name!r} in {masks_file} is {str(table.dtype).removeprefix('torch.')} "
                f"{tuple(table.shape)}; the plan's layout of {provenance.layout.num_tokens} tokens in blocks of "
                f"{provenance.block_size} needs bool (blocks) or int8 (levels) ({n_blocks}, {n_blocks})"
            )
        pattern = buckets[b].layers[layer][head]
        pattern.blocks = table
        pattern.params = {}
    extra = sorted(set(tensors) - set(wanted.values()))
    if extra:
        raise ValueError(f"{where}: {masks_file} holds tensors no head uses: {extra[:5]}")


# ---------------------------------------------------------------------------------------------------------
# for people: what a plan chose
# ---------------------------------------------------------------------------------------------------------


def head_costs(plan: SparsityPlan, bucket: int, layer: int, cache: dict | None = None) -> list[float]:
    """Each head's cost relative to dense attention under the plan's cost model."""
    cost = plan.cost_profile
    n = plan.layout.num_tokens
    costs = []
    for pattern in plan.buckets[bucket].layers[layer]:
        if pattern.kind == "skip":
            costs.append(cost.skip_cost(n))
        elif pattern.kind == "dense":
            costs.append(1.0)
        else:
            # a level table costs its compute: a block pooled by 2^j is 1/2^j of a full one
            levels = head_levels(pattern, plan.layout, plan.block_size, cache)
            costs.append(cost.cost(float(table_cost(levels).mean())))
    return costs


def _kinds(patterns: list[HeadPattern]) -> str:
    counts = Counter(p.kind for p in patterns)
    return ", ".join(f"{kind} x{count}" for kind, count in sorted(counts.items(), key=lambda kc: (-kc[1], kc[0])))


def _mean_density(patterns: list[HeadPattern]) -> float | None:
    known = [p.density for p in patterns if p.density is not None]
    return sum(known) / len(known) if known else None


def summary_table(plan: SparsityPlan) -> str:
    """A Markdown table: per bucket and layer, the patterns chosen, mean density and expected speedup.

    Each bucket ends with an ``all`` row over its layers (speedup of the whole bucket's self-attention). The
    expected attention speedup of a layer is what the plan's own cost model predicts: the layer's heads cost
    ``sum_h cost(head)`` against ``H`` for dense attention (see :mod:`dit_sparse.cost`); a measured profile
    makes it a prediction for the device it was measured on, the analytic one a FLOP ratio.
    """
    lines = [
        f"cost model: {plan.cost_profile.kind}"
        + (
            f" ({plan.cost_profile.backend} on {plan.cost_profile.device})"
            if plan.cost_profile.kind == "measured"
            else ""
        ),
        "",
        "| steps | layer | patterns | mean density | expected attention speedup |",
        "|---|---|---|---|---|",
    ]
    cache: dict = {}
    for b, bucket in enumerate(plan.buckets):
        total_heads, total_cost, all_patterns = 0, 0.0, []
        for layer, patterns in enumerate(bucket.layers):
            costs = head_costs(plan, b, layer, cache)
            density = _mean_density(patterns)
            shown = "n/a" if density is None else f"{density:.3f}"
            lines.append(
                f"| {bucket.label} | {layer} | {_kinds(patterns)} | {shown} | {len(costs) / sum(costs):.2f}x |"
            )
            total_heads += len(costs)
            total_cost += sum(costs)
            all_patterns += patterns
        density = _mean_density(all_patterns)
        shown = "n/a" if density is None else f"{density:.3f}"
        lines.append(f"| {bucket.label} | all | {_kinds(all_patterns)} | {shown} | {total_heads / total_cost:.2f}x |")
    return "\n".join(lines)
