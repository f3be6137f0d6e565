"""``method="sliding_tile"``: sliding tile attention (see :mod:`dit_sparse.patterns.sliding_tile`).

Tokens are reordered tile-major, attention runs on the sliding-tile block mask, and the output is put
back in the model's order. ``window`` is one (wt, wh, ww) for every head, or ``{layer: [(wt, wh, ww) per
head]}`` entries in ``head_windows`` (as a per-head search would produce); the paper searches windows per
head offline, which arrives with calibration.
"""

from __future__ import annotations

from ..patterns.sliding_tile import sliding_tile
from .base import AttentionCall, AttentionPlan, LayoutCache, Method


class SlidingTileMethod(Method):
    name = "sliding_tile"

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self._cache = LayoutCache()

    def plan_for(self, call: AttentionCall) -> AttentionPlan:
        params = self.config.method_params(call.layer)
        tile = tuple(params["tile"])
        head_windows = (params["head_windows"] or {}).get(call.layer)
        window = tuple(tuple(w) for w in head_windows) if head_windows else tuple(params["window"])
        key = (call.layout, call.num_heads, tile, window, self.config.block_size, call.q.device)
        plan = self._cache.get(key)
        if plan is not None:
            self.reuses += 1
            return plan
        if head_windows and len(head_windows) != call.num_heads:
            raise ValueError(
                f"head_windows[{call.layer}] lists {len(head_windows)} heads, the layer has {call.num_heads}"
            )
        mask = sliding_tile(
            call.layout, tile=tile, window=window, num_heads=call.num_heads, block_size=self.config.block_size
        ).to(call.q.device)
        plan = AttentionPlan(mask, call.layout.tile_permutation(tile, device=call.q.device))
        self._cache[key] = plan
        self.searches += 1
        return plan
