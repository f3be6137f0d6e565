"""``method="pyramid"``: Pyramid Sparse Attention's level masks, searched and reused like AdaSpa's.

Li et al., "PSA: Pyramid Sparse Attention for Efficient Video Understanding and Generation" (2025),
https://arxiv.org/abs/2512.04025. Each query block ranks its kv blocks by importance and reads the top ones in
full, the next ones average-pooled by 2, 4, 8 tokens, and skips the rest (see :mod:`dit_sparse.levels` and
:mod:`dit_sparse.kernels.pyramid` for the attention over mixed levels).

Two allocations of levels under a compute budget ``density`` (full blocks count 1, pooled-by-``2^j`` blocks
``1/2^j``; default 0.15, the compute of PSA's default quotas):

- ``allocation="quota"`` (default; PSA's public code, ziplab/Pyramid-Sparse-Attention, ``PSAConfig`` defaults,
  ``mask_mode='topk'``): of each q block's kv blocks ranked by importance, the top 10% full, the next 5%
  pooled by 2, none by 4, the next 20% pooled by 8, the remaining 65% skipped (``ratios``), scaled to
  ``density`` (the identity at 0.15).
- ``allocation="mass"`` (ours): each block's pooling factor is proportional to ``1 / mass``, its cost
  proportional to its attention mass: level ``ceil(log2(t / mass))``, from full down to one pooled key per
  block (``max_level``, default ``log2(block_size)``), dropped below that; the threshold ``t`` is shared by
  every head and row of the call (head-adaptive, as adaspa's recall threshold) and set by bisection so the
  call's compute is ``density``; each row's heaviest block is always full.

Measured on the embedded model (``benchmarks/results/2026-12-01-pattern-quality-pyramid-embedded.md`` and
``2026-12-01-pyramid-frontier-embedded.md``): ``mass`` leaves the smaller attention-output error on captured
q/k/v (0.27 against 0.42 for ``quota`` and 0.57 for the best binary method at 10% compute), but end to end
``quota`` gives the better video (27.2 dB against 25.2 at 20% compute, 25.0 against 21.7 at 10%; binary
selection by the same masses: 27.1 and 22.9). So the default is PSA's. Text blocks are always full.

Where we differ from PSA besides, and why:

- **Importance.** PSA estimates block importance from a quarter of each block's tokens, sampled. We use the
  exact block attention mass (every row's softmax summed per kv block, through the row log-sum-exp, without
  an N x N map; :func:`dit_sparse.scoring.block_attention_mass`), the score adaspa already computes.
- **Rows.** ``row_stride`` s (ours, default 1) measures the mass on every s-th query row of each q block, at
  1/s of the search's cost, as sparsed's.
- **When.** PSA recomputes its estimate at every step. We search at ``search_steps`` and reuse the levels in
  between, as adaspa does (AdaSpa's 10 and 30 of 50 by default; dense before the first search).
- **Budget.** ``density`` (optional) scales PSA's quota shape so that the compute (full blocks count 1,
  pooled-by-``2^j`` blocks ``1/2^j``) is ``density`` of dense; quotas are filled in order and capped at all
  blocks. Boundaries between levels are rounded (PSA floors them), so small block counts land nearer the
  intended compute.
- **Blocks.** q blocks of the config's ``block_size``, kv blocks of ``kv_block_size`` (default the same); PSA's
  defaults are 128 / 64. Small q blocks are what lets the quotas follow the mass: on the embedded model at 10%
  compute, blocks of 32 gave 27.6 dB where blocks of 256 gave 25.0, q blocks of 256 with kv blocks of 32 24.5 and
  PSA's 128 / 64 25.8 (``benchmarks/results/2026-12-02-pyramid-blocks-embedded.md``). The default keeps one size:
  128 / 128 gave the same 25.8 dB there, and equal sizes are the CPU path's fast case.
"""

from __future__ import annotations

import math

import torch

from ..layout import VideoLayout
from ..levels import DROPPED, LevelMask
from .adaspa import MassSearchMethod
from .base import AttentionCall, fill_text_blocks

# PSA's default quotas (fraction of a q block's kv blocks) for full, pooled by 2, by 4, by 8.
PSA_RATIOS = (0.10, 0.05, 0.0, 0.20)


def ratios_for_density(density: float, ratios: tuple[float, ...] = PSA_RATIOS) -> tuple[float, ...]:
    """``ratios`` scaled so their compute ``sum(r_j / 2^j)`` is ``density``, filled in order up to all blocks.

    Where the scaled quotas would pass 100% of the blocks, the deepest levels get what is left and the
    remaining budget promotes pooled blocks to full, shallowest level first; ``density=1`` is all full.
    """
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    cost = sum(r / (1 << level) for level, r in enumerate(ratios))
    if cost <= 0 or ratios[0] <= 0:
        raise ValueError(f"ratios {ratios!r} must give the full level (the first) a positive share")
    scale = density / cost
    scaled, left, budget = [], 1.0, density
    for level, r in enumerate(ratios):
        share = min(r * scale, left, budget * (1 << level))
        scaled.append(share)
        left -= share
        budget -= share / (1 << level)
    for level in range(1, len(scaled)):  # budget left but every block read: promote pooled blocks to full
        if budget <= 1e-12:
            break
        move = min(scaled[level], budget / (1 - 1 / (1 << level)))
        scaled[level] -= move
        scaled[0] += move
        budget -= move * (1 - 1 / (1 << level))
    return tuple(scaled)


def allocate_levels(scores: torch.Tensor, ratios: tuple[float, ...], min_full: int = 1) -> torch.Tensor:
    """Levels per (q block, kv block) from block scores: the top ``ratios[0]`` of each row full, the next
    ``ratios[1]`` pooled by 2, ..., the rest dropped.

    Args:
        scores (`torch.Tensor` of shape ``(B, H, nQ, nK)``): block importance (higher first).
        ratios (`tuple[float, ...]`): fraction of each row's kv blocks per level, level 0 (full) first.
        min_full (`int`, defaults to 1): at least this many full blocks per row.

    Returns:
        int8 levels ``(B, H, nQ, nK)``: 0 full, ``j`` pooled by ``2^j``, -1 dropped. Level boundaries in a row
        of ``nK`` blocks are ``round(nK * cumulative ratio)``.
    """
    n_kv = scores.shape[-1]
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    rank_level = torch.full((n_kv,), DROPPED, dtype=torch.int8, device=scores.device)
    start = 0
    cumulative = 0.0
    for level, ratio in enumerate(ratios):
        cumulative += ratio
        end = min(n_kv, math.floor(n_kv * cumulative + 0.5))
        if level == 0:
            end = max(end, min(min_full, n_kv))
        if end > start:
            rank_level[start:end] = level
            start = end
    levels = torch.empty(scores.shape, dtype=torch.int8, device=scores.device)
    levels.scatter_(-1, order, rank_level.expand(scores.shape).contiguous())
    return levels


def allocate_levels_by_mass(
    mass: torch.Tensor, density: float, max_level: int, min_full: int = 1, iterations: int = 40
) -> torch.Tensor:
    """Levels with each block's pooling factor proportional to ``1 / mass``, at mean compute ``density``.

    Args:
        mass (`torch.Tensor` of shape ``(B, H, nQ, nK)``): block attention mass (or any nonnegative score).
        density (`float`): target compute, mean over every (batch, head, q block) row; full blocks cost 1,
            level ``j`` ``1/2^j``.
        max_level (`int`): deepest pooling level; blocks that would go deeper are dropped.
        min_full (`int`, defaults to 1): each row's ``min_full`` heaviest blocks are full whatever they cost.

    Returns:
        int8 levels ``(B, H, nQ, nK)``: block ``b`` gets ``clamp(ceil(log2(t / mass_b)), 0)``, dropped past
        ``max_level``, with one threshold ``t`` for the whole call, the largest whose compute reaches
        ``density`` (bisection on ``log2 t``).
    """
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    log_mass = torch.log2(mass.float().clamp(min=1e-30))
    forced = torch.zeros(mass.shape, dtype=torch.bool, device=mass.device)
    if min_full > 0:
        top = torch.topk(mass, min(min_full, mass.shape[-1]), dim=-1).indices
        forced.scatter_(-1, top, True)

    def levels_at(log_t: float) -> tuple[torch.Tensor, float]:
        level = torch.ceil(log_t - log_mass).clamp(min=0)
        level = torch.where(forced, 0.0, level)
        dropped = level > max_level
        cost = torch.where(dropped, 0.0, torch.exp2(-level))
        return torch.where(dropped, float(DROPPED), level), float(cost.mean())

    # Compute falls as log t grows: every block full at the lightest block's log mass, only the forced blocks
    # past the heaviest one's plus max_level + 1.
    low, high = float(log_mass.min()), float(log_mass.max()) + max_level + 1
    for _ in range(iterations):
        mid = (low + high) / 2
        if levels_at(mid)[1] >= density:
            low = mid
        else:
            high = mid
    return levels_at(low)[0].to(torch.int8)


def levels_keeping_text(
    levels: torch.Tensor, layout: VideoLayout, block_size: int | tuple[int, int], max_level: int, name: str
) -> LevelMask:
    """A level mask with every block that holds text full (rows and columns), as binary methods keep text."""
    fill_text_blocks(levels, layout, block_size, 0)
    n = layout.num_tokens
    return LevelMask(levels, block_size, (n, n), max_level=max_level, name=name)


class PyramidMethod(MassSearchMethod):
    name = "pyramid"

    def mass_block_size(self, params: dict) -> tuple[int, int]:
        return (self.config.block_size, params["kv_block_size"] or self.config.block_size)

    def mask_from_mass(self, mass: torch.Tensor, call: AttentionCall, params: dict) -> LevelMask:
        block_size = self.mass_block_size(params)
        if params["allocation"] == "mass":
            max_level = params["max_level"] or int(math.log2(block_size[1]))
            levels = allocate_levels_by_mass(mass, params["density"], max_level, params["min_blocks_per_row"])
        else:
            ratios = ratios_for_density(params["density"], tuple(params["ratios"]))
            max_level = len(ratios) - 1
            levels = allocate_levels(mass, ratios, params["min_blocks_per_row"])
        return levels_keeping_text(levels, call.layout, block_size, max(1, max_level),
                                   f"pyramid({params['allocation']}, step={call.step})")  # fmt: skip
