"""``CostModel``: what a head's pattern costs relative to dense attention, as the per-head search ranks it.

Sparse-vDiT (Chen et al., 2025, https://arxiv.org/abs/2506.03065) picks each head's pattern by a
hardware-aware cost: the kernel time at the pattern's density on the target device, not its FLOPs alone,
because a block-sparse kernel's time is not proportional to the blocks it computes (launch overhead, the
per-row loop, memory traffic). Two kinds of model:

- ``CostModel.flops()``: the analytic model, cost = fraction of (q block, kv block) pairs computed; a skipped
  head (the mean of V, ``N * D`` work against ``4 * N^2 * D`` for dense attention) costs ``1 / (4 N)``.
  The default where there is no GPU to measure on.
- a ``"measured"`` profile (:func:`dit_sparse.calibration.measure_cost_profile` times the kernel): the cost
  of a pattern is the measured time at its block density, interpolated, relative to the full mask. The
  profile is stored in the plan (:mod:`dit_sparse.plan`), so a plan says which hardware its choices were
  made for.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

COST_KEYS = {
    "flops": ("kind",),
    "measured": (
        "kind",
        "device",
        "backend",
        "dtype",
        "num_tokens",
        "head_dim",
        "num_heads",
        "block_size",
        "block_fractions",
        "relative_times",
        "skip_relative_time",
        "dense_ms",
    ),
}


@dataclass(frozen=True)
class CostModel:
    """Relative cost (dense = 1) of a head's pattern from the fraction of blocks it computes.

    Args:
        kind (`str`): ``"flops"`` (analytic) or ``"measured"`` (a kernel-time profile).
        block_fractions (`tuple[float, ...]`): measured points: fraction of blocks computed, ascending.
        relative_times (`tuple[float, ...]`): kernel time at each point divided by the time at fraction 1.
        skip_relative_time (`float`): time of a skipped head's mean of V, relative to the full mask.
        device, backend, dtype (`str`): where and how the profile was measured.
        num_tokens, head_dim, num_heads, block_size (`int`): the shape it was measured at.
        dense_ms (`float`): the full mask's time in milliseconds.

    Example:
        >>> CostModel.flops().cost(0.25)
        0.25
    """

    kind: str = "flops"
    block_fractions: tuple[float, ...] = ()
    relative_times: tuple[float, ...] = ()
    skip_relative_time: float | None = None
    device: str | None = None
    backend: str | None = None
    dtype: str | None = None
    num_tokens: int | None = None
    head_dim: int | None = None
    num_heads: int | None = None
    block_size: int | None = None
    dense_ms: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in COST_KEYS:
            raise ValueError(f"cost model kind must be one of {list(COST_KEYS)}, got {self.kind!r}")
        if self.kind == "measured":
            points = list(zip(self.block_fractions, self.relative_times, strict=False))
            if (
                len(self.block_fractions) != len(self.relative_times)
                or len(points) < 2
                or any(not (0 < f <= 1 and t > 0 and math.isfinite(t)) for f, t in points)
                or list(self.block_fractions) != sorted(set(self.block_fractions))
                or self.block_fractions[-1] != 1.0
            ):
                raise ValueError(
                    "a measured cost profile needs at least two points: ascending block fractions in (0, 1] ending "
                    f"at 1 with positive finite relative times; got {self.block_fractions} and {self.relative_times}"
                )
            if not (isinstance(self.skip_relative_time, (int, float)) and self.skip_relative_time >= 0):
                raise ValueError(f"skip_relative_time must be a number >= 0, got {self.skip_relative_time!r}")

    @classmethod
    def flops(cls) -> CostModel:
        return cls("flops")

    def cost(self, block_fraction: float) -> float:
        """Relative cost of a head computing ``block_fraction`` of the blocks (linear between measured points)."""
        if self.kind == "flops":
            return float(block_fraction)
        return float(np.interp(block_fraction, self.block_fractions, self.relative_times))

    def skip_cost(self, num_tokens: int) -> float:
        """Relative cost of a skipped head (uniform attention: the mean of V)."""
        if self.kind == "flops":
            return 1.0 / (4.0 * num_tokens)
        return float(self.skip_relative_time)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["block_fractions"] = list(self.block_fractions)
        data["relative_times"] = list(self.relative_times)
        return {k: data[k] for k in COST_KEYS[self.kind]}

    @classmethod
    def from_dict(cls, data: Any, where: str = "cost_profile") -> CostModel:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: must be a JSON object, got {type(data).__name__}")
        kind = data.get("kind")
        if kind not in COST_KEYS:
            raise ValueError(f"{where}: 'kind' must be one of {list(COST_KEYS)}, got {kind!r}")
        expected = COST_KEYS[kind]
        unknown = sorted(set(data) - set(expected))
        missing = sorted(set(expected) - set(data))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; a {kind!r} profile has keys {list(expected)}")
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}; a {kind!r} profile has keys {list(expected)}")
        values = dict(data)
        for name in ("block_fractions", "relative_times"):
            if name in values:
                if not isinstance(values[name], list) or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in values[name]
                ):
                    raise ValueError(f"{where}: {name} must be a list of numbers, got {values[name]!r}")
                values[name] = tuple(float(x) for x in values[name])
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error
