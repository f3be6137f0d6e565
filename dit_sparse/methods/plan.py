"""Run a calibrated :class:`~dit_sparse.SparsityPlan`: each head's searched pattern, per step bucket and layer.

The plan comes from the offline per-head search of Sparse-vDiT (Chen et al., 2025,
https://arxiv.org/abs/2506.03065), see :mod:`dit_sparse.calibration`. A config carries it as
``SparseAttentionConfig("sparse_vdit", plan=...)`` (``apply_sparse_attention(pipe, "plan.json")`` builds
that config); this method then answers every call of a layer with one per-head block table, so heads with
different patterns still run in one fused kernel launch:

- ``"skip"`` heads get empty rows and are listed in ``AttentionPlan.skip_heads`` (their output is uniform
  attention, the mean of V);
- heads with an ``order`` (PAROAttention-style) or a ``"tile"`` pattern get their own token permutation,
  one row of an ``(H, N)`` ``AttentionPlan.permutation``; the other rows are the identity;
- a layer whose heads are all ``"dense"`` runs the dense path;
- ``"mask"`` heads with a level table (int8: Pyramid Sparse Attention's full, pooled by ``2^j`` and dropped
  blocks) make their layer one :class:`~dit_sparse.LevelMask`, the other heads' blocks full or dropped in it,
  run by :func:`dit_sparse.pyramid_attention`.

Masks are built once per (layout, bucket, layer, device) and reused for every later call.
"""

from __future__ import annotations

import logging

import torch

from ..heads import head_levels, head_permutation, head_table
from ..levels import LevelMask
from ..mask import BlockSparseMask
from .base import AttentionCall, AttentionPlan, Method

logger = logging.getLogger(__name__)


class PlanMethod(Method):
    """Per-head patterns read from ``config.plan``, by the call's step bucket and layer."""

    name = "plan"

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self.plan = config.plan
        self._cache: dict[tuple, AttentionPlan] = {}
        self._tables: dict = {}

    def plan_for(self, call: AttentionCall) -> AttentionPlan:
        bucket = self.plan.bucket_index(call.step)
        key = (call.layout, bucket, call.layer, call.q.device)
        cached = self._cache.get(key)
        if cached is not None:
            self.reuses += 1
            return cached
        self.plan.check_layout(call.layout)
        heads = self.plan.buckets[bucket].layers[call.layer] if call.layer < self.plan.num_layers else None
        if heads is None or len(heads) != call.num_heads:
            count = "no entry" if heads is None else f"{len(heads)} heads"
            raise ValueError(
                f"the plan has {count} for layer {call.layer}; the model's layer has {call.num_heads} heads"
            )
        if all(p.kind == "dense" for p in heads):
            plan = AttentionPlan(None, dense=True)
        else:
            layout, block = call.layout, self.plan.block_size
            perms = [head_permutation(p, layout) for p in heads]
            permutation = None
            if any(p is not None for p in perms):
                identity = torch.arange(layout.num_tokens)
                permutation = torch.stack([identity if p is None else p for p in perms]).to(call.q.device)  # (H, N)
            skip = tuple(h for h, p in enumerate(heads) if p.kind == "skip")
            n = layout.num_tokens
            name = f"plan(bucket={bucket},layer={call.layer},{'/'.join(p.kind for p in heads)})"
            if any(p.is_level_table for p in heads):  # pooled levels: the layer runs as one level mask
                levels = torch.stack([head_levels(p, layout, block, self._tables) for p in heads])  # (H, nQ, nK)
                mask = LevelMask(levels[None], block, (n, n), allow_empty_rows=bool(skip), name=name)
            else:
                tables = torch.stack([head_table(p, layout, block, self._tables) for p in heads])  # (H, nQ, nK)
                mask = BlockSparseMask.from_dense(tables[None], block, (n, n), allow_empty_rows=bool(skip), name=name)
            mask = mask.to(call.q.device)
            plan = AttentionPlan(mask, permutation, skip_heads=skip)
        self._cache[key] = plan
        self.searches += 1
        return plan
