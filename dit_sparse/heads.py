"""``HeadPattern``: one attention head's static pattern, and the block table and token order it stands for.

A head pattern is data (a kind, a JSON-able parameter dict, an optional token order), so that plans can be
saved, shared and loaded without running code. This module turns it into what a kernel needs: an
``(nQ, nK)`` boolean block table over the head's token order, and that order as a permutation.

Kinds, following Sparse-vDiT (Chen et al., 2025, https://arxiv.org/abs/2506.03065) and the static patterns
of the other methods:

- ``"dense"``: every block; ``"skip"``: no block, the head's output is uniform attention (the mean of V);
- ``"diagonal"`` (``width``), ``"multi_diagonal"`` (``width``, ``max_distance``), ``"vertical_stripe"``
  (``columns``: ``[[start, stop], ...]`` ranges of video-token indices; default the first frame),
  ``"radial"`` (``decay_factor``, ``sink_frames``, ``dense_distance``): the builders of
  :mod:`dit_sparse.patterns` with these keyword arguments;
- ``"tile"`` (``tile``, ``window``): sliding tile attention over the tile-major token order;
- ``"mask"``: an explicit table (``blocks``; a plan file stores it in its safetensors file): a bool block table,
  or an int8 level table of Pyramid Sparse Attention (``-1`` dropped, ``0`` full, ``j`` pooled by ``2^j``; see
  :class:`dit_sparse.LevelMask`), which a plan runs through :func:`dit_sparse.pyramid_attention`;
- unions ``"a+b"`` of diagonal, multi_diagonal, vertical_stripe and radial, with ``params`` keyed by part:
  ``HeadPattern("diagonal+vertical_stripe", {"diagonal": {"width": 64}, "vertical_stripe": {}})``.

``order`` (one of :data:`dit_sparse.ORDERS`) reorders the video tokens before attention (PAROAttention's
per-head orders, :meth:`VideoLayout.permutation`); the pattern is then built over the reordered grid, e.g.
``"diagonal"`` in order ``"HWF"`` is a band over the same pixel in neighbouring frames.

Search templates are candidates whose parameters are filled in from data per head (see
:func:`dit_sparse.calibration.search_heads`): ``"vertical_stripe"`` with ``{"top_blocks": k}`` (the ``k``
kv blocks holding the most attention mass), ``"mask"`` with ``{"tau": t}`` (per q-block row, the fewest
blocks holding a fraction ``t`` of the mass) and ``"mask"`` with ``{"pyramid": d}`` (a level table: PSA's ranked
quotas scaled to compute density ``d``, see :func:`dit_sparse.methods.pyramid.ratios_for_density`, over each
q-block row's kv blocks ranked by mass).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from .layout import ORDERS, VideoLayout
from .levels import LevelMask
from .patterns import diagonal, multi_diagonal, radial, sliding_tile, vertical_stripe

KINDS = ("dense", "skip", "diagonal", "multi_diagonal", "vertical_stripe", "radial", "tile", "mask")
UNION_PARTS = ("diagonal", "multi_diagonal", "vertical_stripe", "radial")
# Parameters each kind accepts (all optional: a missing one takes the builder's default for the layout).
KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "dense": (),
    "skip": (),
    "diagonal": ("width",),
    "multi_diagonal": ("width", "max_distance"),
    "vertical_stripe": ("columns", "top_blocks"),
    "radial": ("decay_factor", "sink_frames", "dense_distance"),
    "tile": ("tile", "window"),
    "mask": ("tensor", "tau", "pyramid"),
}
TEMPLATE_PARAMS = {"vertical_stripe": ("top_blocks",), "mask": ("tau", "pyramid")}
PATTERN_KEYS = ("kind", "params", "order", "density", "recall", "rel_l2")


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_param(where: str, kind: str, name: str, value: Any) -> None:
    """ValueError unless ``value`` is a valid ``name`` parameter of ``kind`` (layout-independent checks)."""
    bad = None
    if name in ("width", "sink_frames", "dense_distance") and not _is_int(value, 0):
        bad = "an int >= 0"
    elif name == "max_distance" and value is not None and not _is_int(value, 0):
        bad = "None or an int >= 0"
    elif name == "top_blocks" and not _is_int(value, 1):
        bad = "an int >= 1"
    elif name == "decay_factor" and not (_is_number(value) and value > 0):
        bad = "a positive number"
    elif name in ("tau", "pyramid") and not (_is_number(value) and 0 < value <= 1):
        bad = "a fraction in (0, 1]"
    elif name == "tensor" and not (isinstance(value, str) and value):
        bad = "a non-empty tensor name"
    elif name in ("tile", "window") and not (
        isinstance(value, (list, tuple)) and len(value) == 3 and all(_is_int(x, 1) for x in value)
    ):
        bad = "three positive ints (t, h, w)"
    elif name == "columns" and not (
        isinstance(value, (list, tuple))
        and value
        and all(
            isinstance(r, (list, tuple)) and len(r) == 2 and _is_int(r[0], 0) and _is_int(r[1], 1) and r[0] < r[1]
            for r in value
        )
    ):
        bad = "a non-empty list of [start, stop) video-token ranges with 0 <= start < stop"
    if bad is not None:
        raise ValueError(f"{where}: {kind} parameter {name!r} must be {bad}, got {value!r}")


@dataclass(eq=False)
class HeadPattern:
    """One head's pattern: what to compute, with the quality the search measured for it.

    Args:
        kind (`str`): one of ``KINDS`` or a union ``"a+b"`` of ``UNION_PARTS`` (see the module docstring).
        params (`dict`, defaults to ``{}``): the kind's parameters (for a union: one dict per part).
        order (`str`, optional): token order of the head (one of ``ORDERS``; ``None`` is the model's own).
        density (`float`, optional): fraction of token pairs computed (0 for ``"skip"``, 1 for ``"dense"``).
        recall (`float`, optional): attention mass kept, measured on the calibration inputs (for ``"skip"``,
            the overlap of the head's attention with uniform attention).
        rel_l2 (`float`, optional): relative L2 error of the head's output against dense, measured.
        blocks (`torch.Tensor` of shape ``(nQ, nK)``, optional): the table of a ``"mask"`` head: bool (kept
            blocks) or int8 (levels: -1 dropped, 0 full, ``j`` pooled by ``2^j``).

    Example:
        >>> HeadPattern("diagonal", {"width": 64}).label
        'diagonal(width=64)'
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    order: str | None = None
    density: float | None = None
    recall: float | None = None
    rel_l2: float | None = None
    blocks: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.params = dict(self.params)
        self.validate()

    # -- validation -----------------------------------------------------------------------------------
    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.kind.split("+")) if isinstance(self.kind, str) else ()

    def validate(self, where: str = "head pattern") -> None:
        """ValueError naming ``where`` and the problem for an unknown kind, parameter or bad value."""
        parts = self.parts
        if not parts or (len(parts) == 1 and parts[0] not in KINDS):
            raise ValueError(
                f"{where}: unknown pattern kind {self.kind!r}; expected one of {list(KINDS)} or a union "
                f"'a+b' of {list(UNION_PARTS)}"
            )
        if len(parts) > 1:
            bad = [p for p in parts if p not in UNION_PARTS]
            if bad or len(set(parts)) != len(parts):
                raise ValueError(
                    f"{where}: a union {self.kind!r} joins distinct kinds among {list(UNION_PARTS)}; "
                    f"{bad or 'repeated parts'} cannot be joined"
                )
            unknown = sorted(set(self.params) - set(parts))
            if unknown:
                raise ValueError(f"{where}: union {self.kind!r} has params for {unknown}; expected keys among {parts}")
            for part in parts:
                sub = self.params.get(part, {})
                if not isinstance(sub, dict):
                    raise ValueError(f"{where}: params[{part!r}] of {self.kind!r} must be a dict, got {sub!r}")
                self._check_params(where, part, sub)
        else:
            self._check_params(where, self.kind, self.params)
        if self.order is not None and self.order not in ORDERS:
            raise ValueError(f"{where}: order must be None or one of {list(ORDERS)}, got {self.order!r}")
        if self.order is not None and "tile" in parts:
            raise ValueError(f"{where}: a 'tile' head has its own (tile-major) token order; order must be None")
        if self.kind == "mask" and self.blocks is None and not ({"tensor", "tau", "pyramid"} & set(self.params)):
            raise ValueError(
                f"{where}: a 'mask' head needs its table (blocks=...), or a 'tau' or 'pyramid' to search it by"
            )
        if self.blocks is not None and (
            not isinstance(self.blocks, torch.Tensor)
            or self.blocks.dtype not in (torch.bool, torch.int8)
            or self.blocks.dim() != 2
        ):
            raise ValueError(f"{where}: blocks must be a 2-d bool (blocks) or int8 (levels) tensor (nQ, nK)")
        if self.is_level_table and int(self.blocks.min()) < -1:
            raise ValueError(f"{where}: a level table holds -1 (dropped), 0 (full) or j >= 1 (pooled by 2^j), "
                             f"got {int(self.blocks.min())}")  # fmt: skip
        if self.blocks is not None and self.kind != "mask":
            raise ValueError(f"{where}: only a 'mask' head has a table (blocks=...); this head is {self.kind!r}")
        for name in ("density", "recall", "rel_l2"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and value >= 0):
                raise ValueError(f"{where}: {name} must be None or a number >= 0, got {value!r}")

    @staticmethod
    def _check_params(where: str, kind: str, params: dict[str, Any]) -> None:
        if not isinstance(params, dict):
            raise ValueError(f"{where}: params must be a dict, got {type(params).__name__}")
        unknown = sorted(set(params) - set(KIND_PARAMS[kind]))
        if unknown:
            raise ValueError(
                f"{where}: unknown parameter(s) {unknown} for kind {kind!r}; "
                f"it takes {list(KIND_PARAMS[kind]) or 'none'}"
            )
        for name, value in params.items():
            _check_param(where, kind, name, value)
        if kind == "vertical_stripe" and {"columns", "top_blocks"} <= set(params):
            raise ValueError(f"{where}: vertical_stripe takes 'columns' or 'top_blocks', not both")
        if kind == "mask" and len({"tensor", "tau", "pyramid"} & set(params)) > 1:
            raise ValueError(f"{where}: mask takes one of 'tensor', 'tau' and 'pyramid', got {sorted(params)}")

    @property
    def is_level_table(self) -> bool:
        """Whether this is a ``"mask"`` head with a level table (int8) rather than a block table."""
        return self.blocks is not None and self.blocks.dtype == torch.int8

    @property
    def is_template(self) -> bool:
        """Whether some parameter is filled in from data by the search (``top_blocks``, ``tau``, ``pyramid``)."""
        return any(name in self.part_params(part) for part in self.parts for name in TEMPLATE_PARAMS.get(part, ()))

    def part_params(self, part: str) -> dict[str, Any]:
        """The parameters of one part (the pattern's own ``params`` when it is not a union)."""
        return self.params.get(part, {}) if len(self.parts) > 1 else self.params

    # -- views ----------------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """A short name with the parameters, e.g. ``diagonal(width=64)`` or ``radial(decay_factor=0.5)@HWF``."""

        def one(part: str, params: dict[str, Any]) -> str:
            shown = {k: v for k, v in params.items() if k != "tensor"}
            if "columns" in shown:
                shown["columns"] = sum(stop - start for start, stop in shown["columns"])
            inner = ",".join(f"{k}={_short(v)}" for k, v in sorted(shown.items()))
            return f"{part}({inner})" if inner else part

        text = "+".join(one(p, self.part_params(p)) for p in self.parts)
        return f"{text}@{self.order}" if self.order else text

    def key(self) -> tuple:
        """Hashable identity of the pattern (kind, parameters, order, and the table of a mask head)."""
        table = None if self.blocks is None else (tuple(self.blocks.shape), self.blocks.cpu().numpy().tobytes())
        return (self.kind, json.dumps(self.params, sort_keys=True), self.order, table)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HeadPattern):
            return NotImplemented
        same_blocks = (self.blocks is None and other.blocks is None) or (
            self.blocks is not None and other.blocks is not None and torch.equal(self.blocks, other.blocks)
        )
        return same_blocks and self.to_dict() == other.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (a ``"mask"`` head's table is not included; plans store it apart)."""
        data: dict[str, Any] = {"kind": self.kind, "params": _jsonable(self.params)}
        for name in ("order", "density", "recall", "rel_l2"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "head pattern") -> HeadPattern:
        """Pattern from :meth:`to_dict` output; unknown or missing keys raise ValueError naming ``where``."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: a head pattern must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(PATTERN_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; a head pattern has keys {list(PATTERN_KEYS)}")
        if "kind" not in data:
            raise ValueError(f"{where}: missing key 'kind'")
        pattern = cls.__new__(cls)
        pattern.kind = data["kind"]
        pattern.params = data.get("params", {})
        pattern.order = data.get("order")
        pattern.density = data.get("density")
        pattern.recall = data.get("recall")
        pattern.rel_l2 = data.get("rel_l2")
        pattern.blocks = None
        if not isinstance(pattern.params, dict):
            raise ValueError(f"{where}: params must be a JSON object, got {type(pattern.params).__name__}")
        pattern.params = dict(pattern.params)
        pattern.validate(where)
        return pattern

    def replace(self, **changes: Any) -> HeadPattern:
        return dataclasses.replace(self, **changes)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """Tuples as lists, recursively, so that a saved and reloaded pattern compares equal."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value

    return convert(params)


# ---------------------------------------------------------------------------------------------------------
# block tables and token orders
# ---------------------------------------------------------------------------------------------------------


def ordered_layout(layout: VideoLayout, order: str | None) -> VideoLayout:
    """The grid the reordered sequence forms: ``order``'s axes outermost first (text stays where it is)."""
    if order is None or order == "FHW":
        return layout
    sizes = {"F": layout.frames, "H": layout.height, "W": layout.width}
    return VideoLayout(*(sizes[axis] for axis in order), layout.text_len, layout.text_position)


def head_permutation(pattern: HeadPattern, layout: VideoLayout, device: torch.device | str | None = None):
    """The head's token permutation ``(N,)`` (``x[..., perm, :]`` reorders), or ``None`` for the model's order."""
    if "tile" in pattern.parts:
        return layout.tile_permutation(tuple(pattern.params.get("tile", (2, 8, 8))), device=device)
    if pattern.order is None or pattern.order == "FHW":
        return None
    return layout.permutation(pattern.order, device=device)


def columns_from_ranges(ranges: list[list[int]]) -> list[int]:
    return [c for start, stop in ranges for c in range(start, stop)]


def _part_table(part: str, params: dict[str, Any], layout: VideoLayout, block_size: int) -> torch.Tensor:
    if part == "diagonal":
        mask = diagonal(layout, width=params.get("width"), block_size=block_size)
    elif part == "multi_diagonal":
        mask = multi_diagonal(
            layout, width=params.get("width"), max_distance=params.get("max_distance"), block_size=block_size
        )
    elif part == "vertical_stripe":
        ranges = params.get("columns")
        columns = None if ranges is None else columns_from_ranges(ranges)
        mask = vertical_stripe(layout, columns=columns, block_size=block_size)
    elif part == "radial":
        mask = radial(
            layout,
            block_size=block_size,
            decay_factor=float(params.get("decay_factor", 1.0)),
            sink_frames=params.get("sink_frames", 0),
            dense_distance=params.get("dense_distance", 1),
        )
    else:
        mask = sliding_tile(
            layout,
            tile=tuple(params.get("tile", (2, 8, 8))),
            window=tuple(params.get("window", (3, 3, 3))),
            block_size=block_size,
        )
    return mask.to_dense()[0, 0]


def head_table(pattern: HeadPattern, layout: VideoLayout, block_size: int, cache: dict | None = None) -> torch.Tensor:
    """The head's ``(nQ, nK)`` bool block table over its own token order (CPU); for a level table, the blocks
    read at any level.

    Templates must be resolved first (the search does it). ``cache`` (any dict) shares tables between heads
    and calls: patterns are few, heads many.
    """
    n_blocks = -(-layout.num_tokens // block_size)
    if pattern.is_template:
        raise ValueError(f"{pattern.label} is a search template; resolve it against data before building its table")
    if pattern.kind == "mask":
        if pattern.blocks is None or tuple(pattern.blocks.shape) != (n_blocks, n_blocks):
            shape = None if pattern.blocks is None else tuple(pattern.blocks.shape)
            raise ValueError(
                f"mask head table has shape {shape}; this call's {layout.num_tokens} tokens in blocks of "
                f"{block_size} need ({n_blocks}, {n_blocks})"
            )
        return (pattern.blocks != -1).cpu() if pattern.is_level_table else pattern.blocks.cpu()
    if pattern.kind in ("dense", "skip"):
        return torch.full((n_blocks, n_blocks), pattern.kind == "dense", dtype=torch.bool)
    key = (pattern.key(), layout, block_size)
    if cache is not None and key in cache:
        return cache[key]
    grid = layout if "tile" in pattern.parts else ordered_layout(layout, pattern.order)
    table = None
    for part in pattern.parts:
        part_table = _part_table(part, pattern.part_params(part), grid, block_size)
        table = part_table if table is None else table | part_table
    assert table is not None
    if cache is not None:
        cache[key] = table
    return table


def head_levels(pattern: HeadPattern, layout: VideoLayout, block_size: int, cache: dict | None = None) -> torch.Tensor:
    """The head's ``(nQ, nK)`` int8 level table (CPU): a level table as it is, any other pattern's blocks as
    full (0) or dropped (-1)."""
    if pattern.is_level_table:
        head_table(pattern, layout, block_size, cache)  # checks the shape
        return pattern.blocks.cpu()
    table = head_table(pattern, layout, block_size, cache)
    return torch.where(table, 0, -1).to(torch.int8)


def table_density(table: torch.Tensor, num_tokens: int, block_size: int) -> float:
    """Fraction of token pairs a ``(nQ, nK)`` table computes (partial last blocks count their tokens); for an
    int8 level table, its compute as :meth:`dit_sparse.LevelMask.compute_density` counts it (a block pooled by
    ``2^j`` counts its pooled keys)."""
    if table.dtype == torch.int8:
        deepest = max(1, int(table.max()))
        levels = LevelMask(table[None, None].cpu(), block_size, (num_tokens, num_tokens), max_level=deepest,
                           allow_empty_rows=True)  # fmt: skip
        return levels.compute_density()
    sizes = torch.full((table.shape[-1],), float(block_size), dtype=torch.float64)
    sizes[-1] = num_tokens - (table.shape[-1] - 1) * block_size
    kept = torch.einsum("ij,i,j->", table.to(torch.float64).cpu(), sizes, sizes)
    return float(kept) / (num_tokens * num_tokens)


def table_cost(table: torch.Tensor) -> torch.Tensor:
    """Each block's cost in full blocks, float64: a bool table's kept blocks 1; an int8 level table's full
    blocks 1, pooled by ``2^j`` ``1 / 2^j``, dropped 0."""
    if table.dtype == torch.bool:
        return table.to(torch.float64)
    levels = table.to(torch.float64)
    return torch.where(levels < 0, 0.0, torch.exp2(-levels.clamp(min=0)))
