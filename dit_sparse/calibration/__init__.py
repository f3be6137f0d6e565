"""Offline calibration: per (step bucket, layer, head) pattern search, and the plan files it writes.

``calibrate(pipe, prompts, ...)`` runs the dense model and returns a :class:`SparsityPlan`;
``search_heads(q, k, v, layout, ...)`` is the per-head search on captured tensors alone;
``apply_sparse_attention(pipe, plan_or_path)`` runs a plan. See Sparse-vDiT (Chen et al., 2025,
https://arxiv.org/abs/2506.03065) for the hardware-aware per-head search this follows.

The plan file format (:mod:`dit_sparse.plan`), the head patterns it holds (:mod:`dit_sparse.heads`) and the
cost model it records (:mod:`dit_sparse.cost`) are data that the integration reads, so they live below it;
they are handed on here beside the search that makes them.

Importing this package does not import diffusers: :func:`calibrate` loads the integration on first call.
"""

from __future__ import annotations

from ..cost import CostModel
from ..heads import KINDS, HeadPattern
from ..plan import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Provenance,
    SearchSettings,
    SparsityPlan,
    StepBucket,
    register_migration,
    summary_table,
)
from .calibrate import calibrate, step_bucket_ranges
from .cost import measure_cost_profile
from .report import render_plan
from .search import HeadStatistics, default_candidates, measure_heads, search_heads

__all__ = [
    "KINDS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "CostModel",
    "HeadPattern",
    "HeadStatistics",
    "Provenance",
    "SearchSettings",
    "SparsityPlan",
    "StepBucket",
    "calibrate",
    "default_candidates",
    "measure_cost_profile",
    "measure_heads",
    "register_migration",
    "render_plan",
    "search_heads",
    "step_bucket_ranges",
    "summary_table",
]
