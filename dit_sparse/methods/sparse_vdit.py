"""``method="sparse_vdit"``: a static pattern per (layer, head), Sparse-vDiT style.

Chen et al., "Sparse-vDiT" (2025), https://arxiv.org/abs/2506.03065, finds three recurring head patterns
in video DiTs (diagonal, multi-diagonal, vertical stripe) and assigns one per layer and head offline.
Here each head's pattern is a name, or several joined by ``+`` (their union): ``"diagonal"``,
``"multi_diagonal"``, ``"vertical_stripe"``, ``"dense"``. All heads of a layer form one per-head block
table, so heads with different patterns still run in one kernel launch.

Assignments come from ``assignment={layer: [pattern per head, ...]}`` (a calibration plan fills this in).
Without one, the documented default (not from the paper, chosen to keep both local and temporal context
without a search) gives even heads ``"diagonal+vertical_stripe"`` (frame-local band plus the first
frame) and odd heads ``"multi_diagonal+vertical_stripe"`` (the same place in other frames plus the first
frame).

``"skip"`` heads (the paper finds 3-6% of heads can be skipped) run no kernel work at all: their rows of
the block table are empty. What the paper puts in a skipped head's place is not published; here its output
is that of uniform attention over the keys, the mean of V (over the valid keys when text is padded), which
is what a head whose attention is spread evenly produces and costs O(N * D).
"""

from __future__ import annotations

import torch

from ..layout import VideoLayout
from ..mask import BlockSparseMask
from ..patterns import diagonal, multi_diagonal, vertical_stripe
from .base import AttentionCall, AttentionPlan, LayoutCache, Method

PATTERNS = ("diagonal", "multi_diagonal", "vertical_stripe", "dense", "skip")
DEFAULT_PATTERNS = ("diagonal+vertical_stripe", "multi_diagonal+vertical_stripe")


def check_pattern(name: str) -> None:
    parts = name.split("+") if isinstance(name, str) else [name]
    unknown = [p for p in parts if p not in PATTERNS]
    if unknown:
        raise ValueError(f"unknown Sparse-vDiT pattern(s) {unknown} in {name!r}; patterns are {list(PATTERNS)}")
    if "skip" in parts and len(parts) > 1:
        raise ValueError(f"'skip' cannot be combined with other patterns, got {name!r}")


class SparseVDiTMethod(Method):
    """Per-head static patterns; one mask per (layout, layer assignment), built once and reused."""

    name = "sparse_vdit"

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self._cache = LayoutCache()

    def head_patterns(self, layer: int, num_heads: int) -> tuple[str, ...]:
        assignment = self.config.method_params(layer)["assignment"]
        if assignment is not None and layer in assignment:
            patterns = tuple(assignment[layer])
            if len(patterns) != num_heads:
                raise ValueError(
                    f"sparse_vdit assignment for layer {layer} has {len(patterns)} heads, the layer has {num_heads}"
                )
            return patterns
        return tuple(DEFAULT_PATTERNS[h % len(DEFAULT_PATTERNS)] for h in range(num_heads))

    def plan_for(self, call: AttentionCall) -> AttentionPlan:
        patterns = self.head_patterns(call.layer, call.num_heads)
        skip = tuple(h for h, pattern in enumerate(patterns) if pattern == "skip")
        return AttentionPlan(self.mask_for(call), skip_heads=skip)

    def mask_for(self, call: AttentionCall) -> BlockSparseMask:
        params = self.config.method_params(call.layer)
        patterns = self.head_patterns(call.layer, call.num_heads)
        widths = (params["diagonal_width"], params["multi_diagonal_width"], params["max_distance"])
        key = (call.layout, patterns, widths, self.config.block_size, call.q.device)
        mask = self._cache.get(key)
        if mask is not None:
            self.reuses += 1
            return mask
        blocks_by_name: dict[str, torch.Tensor] = {}
        heads = []
        for pattern in patterns:
            head = None
            for part in pattern.split("+"):
                if part not in blocks_by_name:
                    blocks_by_name[part] = self._pattern_blocks(part, call.layout, params)
                head = blocks_by_name[part] if head is None else head | blocks_by_name[part]
            heads.append(head)
        table = torch.stack(heads)[None]  # (1, H, nQ, nK)
        n = call.layout.num_tokens
        name = f"sparse_vdit(layer={call.layer},{'/'.join(patterns)})"
        mask = BlockSparseMask.from_dense(
            table, self.config.block_size, (n, n), allow_empty_rows="skip" in patterns, name=name
        ).to(call.q.device)
        self._cache[key] = mask
        self.searches += 1
        return mask

    def _pattern_blocks(self, part: str, layout: VideoLayout, params: dict) -> torch.Tensor:
        block = self.config.block_size
        if part in ("dense", "skip"):
            n_blocks = -(-layout.num_tokens // block)
            return torch.full((n_blocks, n_blocks), part == "dense", dtype=torch.bool)
        if part == "diagonal":
            mask = diagonal(layout, width=params["diagonal_width"], block_size=block)
        elif part == "multi_diagonal":
            mask = multi_diagonal(
                layout, width=params["multi_diagonal_width"], max_distance=params["max_distance"], block_size=block
            )
        else:
            mask = vertical_stripe(layout, block_size=block)
        return mask.to_dense()[0, 0]
