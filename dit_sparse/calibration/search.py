"""Per-head pattern search on captured attention inputs: the cheapest pattern that meets a quality target.

Sparse-vDiT (Chen et al., 2025, https://arxiv.org/abs/2506.03065) assigns each (layer, head) of a video
DiT one of a few static patterns offline, choosing by a hardware-aware cost among those that keep the
head's output close to dense. Here, for every head and every candidate :class:`HeadPattern`, one of two
qualities is measured on the calibration inputs, never materializing an ``N x N`` attention map:

- ``target_recall``: the attention mass the pattern keeps, averaged over query rows. It is linear in the
  per-block masses that :func:`dit_sparse.scoring.block_attention_mass` computes (through the row LSE, in
  ``N x block`` pieces), so every candidate is scored from one ``(H, nQ, nK)`` accumulator. A skipped head
  is scored by the overlap ``sum_j min(p_ij, 1/N)`` of its attention with the uniform attention that
  replaces it (1 for a uniform head), computed in row chunks.
- ``max_rel_l2``: the relative L2 error ``||out - dense|| / ||dense||`` of the head's output. Per row chunk,
  the probabilities are summed per kv block, both alone (mass) and against V (partial outputs,
  ``(rows, nK, D)``); a candidate's output is the ratio of the sums over its kept blocks, so all candidates
  cost ``rows x nK x D`` each on top of one dense pass.

Among the candidates that meet the target the cheapest by a :class:`CostModel` wins (ties: the better
quality, then the earlier candidate); a head that nothing fits stays ``"dense"``. Statistics accumulate
over calls (prompts, steps, cond/uncond), so :class:`HeadStatistics` serves calibration runs that never
hold more than one call's q, k, v.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..cost import CostModel
from ..heads import HeadPattern, head_levels, head_permutation, ordered_layout, table_cost, table_density
from ..kernels.pyramid import pool_keys_values
from ..layout import VideoLayout
from ..methods.base import fill_text_blocks
from ..methods.pyramid import allocate_levels, ratios_for_density
from ..patterns._tiles import tile_grid
from ..scoring import block_attention_mass, row_logsumexp, select_blocks
from ..utils import padding_groups

MEMORY_BUDGET_BYTES = 1 << 28  # per row chunk of the streaming passes; bounds their temporaries


def _default_tile(layout: VideoLayout, block_size: int) -> tuple[int, int, int] | None:
    """The most cube-like (t, h, w) of powers of two with ``t * h * w == block_size`` that fits the grid."""
    best = None
    for log_t in range(block_size.bit_length()):
        for log_h in range(block_size.bit_length() - log_t):
            t, h = 1 << log_t, 1 << log_h
            w = block_size // (t * h)
            if t * h * w != block_size or t > layout.frames or h > layout.height or w > layout.width:
                continue
            spread = max(t, h, w) / min(t, h, w)
            if best is None or spread < best[0]:
                best = (spread, (t, h, w))
    return None if best is None else best[1]


# Compute densities of the level-table candidates that ``levels=True`` adds (PSA's default quotas cost 0.15).
PYRAMID_CANDIDATE_DENSITIES = (0.05, 0.1, 0.15, 0.25, 0.4)


def default_candidates(
    layout: VideoLayout, block_size: int = 128, *, sink_frames: int = 0, levels: bool = False
) -> list[HeadPattern]:
    """The search's candidates for ``layout``: skip, Sparse-vDiT patterns at a few widths, radial, tiles.

    Widths are fractions and multiples of a frame (``S = H' * W'`` tokens): diagonal ``S/4, S/2, S, 2S``;
    multi-diagonal ``S/16, S/8, S/4`` (video with more than one frame); vertical stripes on the 1, 2, 4, 8 kv
    blocks with the most mass (found per head); diagonal ``S/4, S/2`` joined with a 2-block stripe; radial
    with decay 0.5 and 1; sliding tiles of one block each with windows of 1x3x3, 3x3x3 and 3x5x5 tiles.

    Args:
        layout (`VideoLayout`): the token grid of the calls.
        block_size (`int`, defaults to 128): the mask block size.
        sink_frames (`int`, defaults to 0): the radial candidates' attention-sink frames (Wan: 1).
        levels (`bool`, defaults to False): also Pyramid Sparse Attention level tables, ``"mask"`` templates
            ``{"pyramid": d}`` at the compute densities ``PYRAMID_CANDIDATE_DENSITIES`` (each q-block row's kv
            blocks ranked by mass, PSA's quotas scaled to ``d``: full, pooled by 2, by 8, dropped).
    """
    s, video = layout.frame_tokens, layout.video_tokens
    n_video_blocks = -(-video // block_size)
    candidates = [HeadPattern("skip")]
    widths = sorted({w for w in (s // 4, s // 2, s, 2 * s) if 1 <= w < video})
    candidates += [HeadPattern("diagonal", {"width": w}) for w in widths]
    if layout.frames > 1:
        temporal = sorted({max(1, s // 16), max(1, s // 8), max(1, s // 4)})
        candidates += [HeadPattern("multi_diagonal", {"width": w}) for w in temporal]
    stripes = [n for n in (1, 2, 4, 8) if n < n_video_blocks]
    candidates += [HeadPattern("vertical_stripe", {"top_blocks": n}) for n in stripes]
    if stripes:
        candidates += [
            HeadPattern(
                "diagonal+vertical_stripe",
                {"diagonal": {"width": w}, "vertical_stripe": {"top_blocks": min(2, stripes[-1])}},
            )
            for w in widths[:2]
        ]
    if layout.frames > 1:
        candidates += [
            HeadPattern("radial", {"decay_factor": d, "sink_frames": sink_frames, "dense_distance": 1})
            for d in (0.5, 1.0)
        ]
    tile = _default_tile(layout, block_size)
    if tile is not None:
        grid = tile_grid(layout, tile)
        windows = []
        for window in ((1, 3, 3), (3, 3, 3), (3, 5, 5)):
            clamped = tuple(min(w, n) for w, n in zip(window, grid, strict=True))
            if clamped != tuple(grid) and clamped not in windows:
                windows.append(clamped)
        candidates += [HeadPattern("tile", {"tile": list(tile), "window": list(w)}) for w in windows]
    if levels:
        candidates += [HeadPattern("mask", {"pyramid": d}) for d in PYRAMID_CANDIDATE_DENSITIES]
    return candidates


@dataclass
class _Group:
    """Candidates that share a token order: their statistics come from one reordered q, k, v."""

    permutation: torch.Tensor | None  # (N,), None for the model's order
    grid: VideoLayout  # the grid the builders see
    indices: list[int]  # candidate indices
    mass: torch.Tensor | None = None  # (H, nQ, nK) float64: attention mass per block, summed over rows
    levels: torch.Tensor | None = None  # (C_g, H, nQ, nK) int8 (-1 dropped, 0 full, j pooled by 2^j), once resolved
    resolved: list[list[HeadPattern]] | None = None  # [candidate][head]
    squared_error: torch.Tensor | None = None  # (C_g, H) float64, rel-L2 mode


@dataclass(frozen=True)
class Measurement:
    """One candidate on one head: the resolved pattern, its table's block fraction and token density, quality."""

    candidate: int
    pattern: HeadPattern
    block_fraction: float
    density: float
    recall: float | None
    rel_l2: float | None


class HeadStatistics:
    """Accumulates, over calls, what the search needs to score every candidate on every head of one layer.

    Args:
        layout (`VideoLayout`): the calls' token grid.
        num_heads (`int`): heads per call.
        candidates (`list[HeadPattern]`, optional): default :func:`default_candidates`.
        metric (`str`, defaults to ``"recall"``): ``"recall"`` or ``"rel_l2"`` (also measures recall).
        block_size (`int`, defaults to 128): mask block size.
        scale (`float`, optional): softmax scale, default ``1 / sqrt(D)``.
        backend (`str`, defaults to ``"auto"``): block-mass backend (see :func:`block_attention_mass`).
        sink_frames (`int`, defaults to 0): for the default candidates.

    Template candidates (stripe ``top_blocks``, mask ``tau``) are resolved per head from the accumulated mass
    when scoring by recall; when scoring by output error they are resolved from the first call's mass, since
    errors of a table can only be measured once the table is fixed.
    """

    def __init__(
        self,
        layout: VideoLayout,
        num_heads: int,
        candidates: Sequence[HeadPattern] | None = None,
        *,
        metric: str = "recall",
        block_size: int = 128,
        scale: float | None = None,
        backend: str = "auto",
        sink_frames: int = 0,
    ) -> None:
        if metric not in ("recall", "rel_l2"):
            raise ValueError(f"metric must be 'recall' or 'rel_l2', got {metric!r}")
        if candidates is None:
            candidates = default_candidates(layout, block_size, sink_frames=sink_frames)
        candidates = list(candidates)
        bad = [c for c in candidates if not isinstance(c, HeadPattern)]
        if bad or not candidates:
            raise ValueError(f"candidates must be a non-empty list of HeadPattern, got {candidates!r}")
        levels = [c.label for c in candidates if "pyramid" in c.params or c.is_level_table]
        if levels and metric == "recall":
            raise ValueError(
                f"level-table candidates {levels[:3]} are scored by their output error (max_rel_l2): the attention "
                "mass of a pooled block is only approximated, so recall would count it as kept"
            )
        self.layout, self.num_heads, self.metric = layout, num_heads, metric
        self.block_size, self.scale, self.backend = block_size, scale, backend
        self.n_blocks = -(-layout.num_tokens // block_size)
        self.candidates = candidates
        self.skip = [i for i, c in enumerate(candidates) if c.kind == "skip"]
        self.groups: dict[tuple, _Group] = {}
        for index, candidate in enumerate(candidates):
            if candidate.kind == "skip":
                continue
            if "tile" in candidate.parts:
                key = ("tile", tuple(candidate.params.get("tile", (2, 8, 8))))
            else:
                key = ("order", candidate.order or "FHW")
            if key not in self.groups:
                perm = head_permutation(candidate, layout)
                grid = layout if key[0] == "tile" else ordered_layout(layout, candidate.order)
                self.groups[key] = _Group(perm, grid, [])
            self.groups[key].indices.append(index)
        self.rows = 0  # query rows seen, summed over calls and batch entries
        self.overlap = torch.zeros(num_heads, dtype=torch.float64)  # (H,) sum over rows of sum_j min(p_ij, 1/N)
        self.reference = torch.zeros(num_heads, dtype=torch.float64)  # (H,) ||dense out||^2
        self.skip_error = torch.zeros(num_heads, dtype=torch.float64)  # (H,) ||mean(V) - dense out||^2
        self._table_cache: dict = {}

    # -- accumulation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def add(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        key_lengths: Sequence[int] | None = None,
        query_lengths: Sequence[int] | None = None,
    ) -> None:
        """Add one call's ``(B, H, N, D)`` q, k, v.

        ``key_lengths`` (per sample, the keys a padding mask keeps, which come first) leaves the padded keys
        out of every softmax, as the model's attention does; ``query_lengths`` leaves padded queries out of
        the statistics (HunyuanVideo 1.5 masks them too).
        """
        if q.dim() != 4 or q.shape != k.shape or k.shape != v.shape:
            raise ValueError(f"q, k, v must be (B, H, N, D) of one shape, got {tuple(q.shape)}, {tuple(k.shape)}")
        if q.shape[1] != self.num_heads or q.shape[2] != self.layout.num_tokens:
            raise ValueError(
                f"q has {q.shape[1]} heads and {q.shape[2]} tokens; these statistics are for {self.num_heads} heads "
                f"and the layout's {self.layout.num_tokens} tokens ({self.layout})"
            )
        B = q.shape[0]
        for n_keys, n_queries, rows in padding_groups(key_lengths, query_lengths, B, q.shape[2]):
            sub = (q, k, v) if len(rows) == B else (q[rows], k[rows], v[rows])
            self._add(*sub, n_keys, n_queries)

    def _add(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_keys: int, n_queries: int) -> None:
        """Samples whose first ``n_keys`` keys and ``n_queries`` queries are kept (the rest is padding)."""
        device = q.device
        scale = 1.0 / math.sqrt(q.shape[-1]) if self.scale is None else self.scale
        n = q.shape[2]
        tail = min(n_keys, n_queries)  # tokens from here on are padding in some role: they stay in place
        for tensor_name in ("overlap", "reference", "skip_error"):
            setattr(self, tensor_name, getattr(self, tensor_name).to(device))
        first = self.rows == 0
        self.rows += q.shape[0] * n_queries
        full_lse = None
        if self.skip and self.metric == "recall":
            full_lse = row_logsumexp(q[:, :, :n_queries], k[:, :, :n_keys], scale=scale)
            self._overlap_pass(q[:, :, :n_queries], k[:, :, :n_keys], full_lse, scale)
        for number, group in enumerate(self.groups.values()):
            perm = None if group.permutation is None else group.permutation.to(device)
            if perm is not None and tail < n and not torch.equal(perm[tail:], torch.arange(tail, n, device=device)):
                raise ValueError(
                    "padded tokens must keep their place under every candidate's token order (text stays in place)"
                )
            gq, gk, gv = (q, k, v) if perm is None else (q[:, :, perm], k[:, :, perm], v[:, :, perm])
            gq, gk, gv = gq[:, :, :n_queries], gk[:, :, :n_keys], gv[:, :, :n_keys]
            # the row LSE does not depend on the key order, only on which keys: computed once
            if full_lse is None:
                full_lse = row_logsumexp(q[:, :, :n_queries], k[:, :, :n_keys], scale=scale)
            glse = full_lse if perm is None else full_lse[:, :, perm[:n_queries]]
            if group.mass is None:
                group.mass = torch.zeros(
                    self.num_heads, self.n_blocks, self.n_blocks, dtype=torch.float64, device=device
                )
            if self.metric == "recall":
                group.mass += self._weighted_mass(gq, gk, glse, scale, n_queries)
                group.levels = group.resolved = None  # templates follow the accumulated mass
                continue
            if first:
                first_mass = torch.zeros_like(group.mass)
                if any(self.candidates[i].is_template for i in group.indices):
                    first_mass = self._weighted_mass(gq, gk, glse, scale, n_queries)
                self._resolve(group, first_mass)
                group.squared_error = torch.zeros(
                    len(group.indices), self.num_heads, dtype=torch.float64, device=device
                )
            self._error_pass(group, gq, gk, gv, glse, scale, primary=number == 0)
        if self.metric == "rel_l2" and not self.groups:  # skip only: still need the dense output
            lse = row_logsumexp(q[:, :, :n_queries], k[:, :, :n_keys], scale=scale)
            self._error_pass(None, q[:, :, :n_queries], k[:, :, :n_keys], v[:, :, :n_keys], lse, scale, primary=True)

    def _weighted_mass(self, q, k, lse, scale: float, n_queries: int) -> torch.Tensor:
        """``(H, nB, nB)`` block masses summed over the ``n_queries`` kept rows (zero for padded blocks)."""
        mass = block_attention_mass(q, k, block_size=self.block_size, lse=lse, scale=scale, backend=self.backend)
        mass = torch.nn.functional.pad(mass, (0, self.n_blocks - mass.shape[-1], 0, self.n_blocks - mass.shape[-2]))
        return (mass.double() * self._rows_per_block(q.device, n_queries)[:, None]).sum(0)

    def _rows_per_block(self, device: torch.device, n_rows: int | None = None) -> torch.Tensor:
        """Query rows in each q block (of the first ``n_rows``; default all the layout's)."""
        n_rows = self.layout.num_tokens if n_rows is None else n_rows
        start = torch.arange(self.n_blocks, device=device, dtype=torch.float64) * self.block_size
        return (n_rows - start).clamp(0, self.block_size)

    def _chunk_rows(self, q: torch.Tensor) -> int:
        B, H, N, D = q.shape
        n_candidates = len(self.candidates)
        # probabilities (N), per-block partial outputs (nK * D), candidate outputs and tables, fp32; a pooled
        # level (level tables: PSA's quotas use two) as much again
        pooled = 2 if any("pyramid" in c.params or c.is_level_table for c in self.candidates) else 0
        per_row = B * H * ((1 + pooled) * (N + self.n_blocks * D) + n_candidates * (D + self.n_blocks)) * 4
        return max(self.block_size, (MEMORY_BUDGET_BYTES // per_row) // self.block_size * self.block_size)

    def _overlap_pass(self, q, k, lse, scale) -> None:
        n_keys = k.shape[2]
        chunk = self._chunk_rows(q)
        for start in range(0, q.shape[2], chunk):
            scores = torch.matmul(q[:, :, start : start + chunk].float(), k.float().transpose(-2, -1)) * scale
            probs = torch.exp(scores - lse[:, :, start : start + chunk, None])  # (B, H, r, Nk)
            self.overlap += probs.clamp(max=1.0 / n_keys).sum(dim=(0, 2, 3)).double()

    def _error_pass(self, group: _Group | None, q, k, v, lse, scale, *, primary: bool) -> None:
        """One streaming pass: block masses, dense output, every candidate's output error (and skip's)."""
        B, H, n, D = q.shape  # n queries; keys may be fewer (padding cut off)
        n_keys = k.shape[2]
        b, nb = self.block_size, self.n_blocks
        pad = nb * b - n_keys
        v_blocks = torch.nn.functional.pad(v.float(), (0, 0, 0, pad)).view(B, H, nb, b, D)
        v_mean = v.float().mean(dim=2, keepdim=True)  # (B, H, 1, D): a skipped head's output
        pooled = {}  # level -> K, V pooled inside blocks (V as (B, H, nK, groups, D)) and log |g| (-inf: none)
        used = set() if group is None else set(torch.unique(group.levels).tolist()) - {-1, 0}
        for level in sorted(used):
            k_pool, v_pool, counts = pool_keys_values(k.float(), v.float(), b, level)
            missing = nb * (b >> level) - k_pool.shape[2]  # whole blocks of padded keys cut off: no groups
            k_pool, v_pool = (torch.nn.functional.pad(x, (0, 0, 0, missing)) for x in (k_pool, v_pool))
            counts = torch.nn.functional.pad(counts, (0, missing))
            log_counts = torch.where(counts > 0, torch.log(counts.clamp(min=1)), -math.inf)
            pooled[level] = (k_pool, v_pool.view(B, H, nb, b >> level, D), log_counts)
        chunk = self._chunk_rows(q)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            scores = torch.matmul(q[:, :, start:stop].float(), k.float().transpose(-2, -1)) * scale
            probs = torch.exp(scores - lse[:, :, start:stop, None])  # (B, H, r, Nk)
            if primary and self.skip:
                self.overlap += probs.clamp(max=1.0 / n_keys).sum(dim=(0, 2, 3)).double()
            probs = torch.nn.functional.pad(probs, (0, pad)).view(B, H, stop - start, nb, b)
            block_mass = probs.sum(-1)  # (B, H, r, nK)
            partial = torch.einsum("bhrjt,bhjtd->bhrjd", probs, v_blocks)  # (B, H, r, nK, D)
            dense = partial.sum(3)  # (B, H, r, D)
            if primary:
                self.reference += dense.double().pow(2).sum(dim=(0, 2, 3))
                self.skip_error += (v_mean - dense).double().pow(2).sum(dim=(0, 2, 3))
            if group is None:
                continue
            q_block = torch.arange(start, stop, device=q.device) // b
            group.mass.index_add_(1, q_block, block_mass.sum(0).double())
            levels = group.levels[:, :, q_block]  # (C, H, r, nK)
            tables = (levels == 0).float()  # full blocks
            numerator = torch.einsum("bhrjd,chrj->cbhrd", partial, tables)
            denominator = torch.einsum("bhrj,chrj->cbhr", block_mass, tables)
            for level, (k_pool, v_pool, log_counts) in pooled.items():
                # each pooled key stands for its |g| tokens: score + log|g| (PSA; dit_sparse.pyramid_attention)
                scores = torch.matmul(q[:, :, start:stop].float(), k_pool.transpose(-2, -1)) * scale + log_counts
                probs = torch.exp(scores - lse[:, :, start:stop, None]).view(B, H, stop - start, nb, b >> level)
                at_level = (levels == level).float()
                partial_pooled = torch.einsum("bhrjt,bhjtd->bhrjd", probs, v_pool)  # (B, H, r, nK, D)
                numerator += torch.einsum("bhrjd,chrj->cbhrd", partial_pooled, at_level)
                denominator += torch.einsum("bhrj,chrj->cbhr", probs.sum(-1), at_level)
            outputs = numerator / denominator.clamp_min(torch.finfo(torch.float32).tiny)[..., None]
            group.squared_error += (outputs - dense).double().pow(2).sum(dim=(1, 3, 4))

    # -- templates ------------------------------------------------------------------------------------------
    def _stripe_columns(self, column_mass: torch.Tensor, count: int, grid: VideoLayout) -> list[list[int]]:
        """Video-token ranges of the ``count`` kv blocks (holding video) with the most mass."""
        b, start, stop = self.block_size, grid.video_start, grid.video_start + grid.video_tokens
        blocks = torch.arange(self.n_blocks)
        has_video = (blocks * b < stop) & ((blocks + 1) * b > start)
        ranked = [int(j) for j in torch.argsort(column_mass.cpu(), descending=True, stable=True) if has_video[j]]
        ranges = sorted([max(j * b, start) - start, min((j + 1) * b, stop) - start] for j in ranked[:count])
        merged: list[list[int]] = []
        for low, high in ranges:
            if merged and merged[-1][1] == low:
                merged[-1][1] = high
            else:
                merged.append([low, high])
        return merged

    def _resolve_one(self, candidate: HeadPattern, head_mass: torch.Tensor, grid: VideoLayout) -> HeadPattern:
        if not candidate.is_template:
            return candidate
        if candidate.kind == "mask":
            rows = self._rows_per_block(head_mass.device)[:, None]
            row_mass = (head_mass / rows)[None, None].float()
            if "pyramid" in candidate.params:  # PSA's quotas over each row's blocks ranked by mass
                table = allocate_levels(row_mass, ratios_for_density(candidate.params["pyramid"]))[0, 0].cpu()
            else:
                table = select_blocks(row_mass, tau=candidate.params["tau"])[0, 0].cpu()
            fill_text_blocks(table, self.layout, self.block_size, True if table.dtype == torch.bool else 0)
            return HeadPattern("mask", {}, order=candidate.order, blocks=table)
        params = {}
        for part in candidate.parts:
            sub = dict(candidate.part_params(part))
            if "top_blocks" in sub:
                sub = {"columns": self._stripe_columns(head_mass.sum(0), sub.pop("top_blocks"), grid)}
            params[part] = sub
        params = params if len(candidate.parts) > 1 else params[candidate.kind]
        return HeadPattern(candidate.kind, params, order=candidate.order)

    def _resolve(self, group: _Group, mass: torch.Tensor) -> None:
        resolved = [
            [self._resolve_one(self.candidates[i], mass[h], group.grid) for h in range(self.num_heads)]
            for i in group.indices
        ]
        levels = [
            torch.stack([head_levels(p, self.layout, self.block_size, self._table_cache) for p in heads])
            for heads in resolved
        ]
        group.resolved = resolved
        group.levels = torch.stack(levels).to(mass.device)  # (C_g, H, nQ, nK)

    # -- results -------------------------------------------------------------------------------------------
    def measurements(self) -> list[list[Measurement]]:
        """Per head, every candidate's resolved pattern and measured quality."""
        if self.rows == 0:
            raise ValueError("no attention call was added to these statistics; call add(q, k, v) first")
        per_head: list[list[Measurement]] = [[] for _ in range(self.num_heads)]
        n = self.layout.num_tokens
        reference = self.reference.clamp_min(torch.finfo(torch.float64).tiny)
        for index in self.skip:
            rel = (self.skip_error / reference).sqrt() if self.metric == "rel_l2" else None
            for h in range(self.num_heads):
                recall = float(self.overlap[h]) / self.rows
                pattern = self.candidates[index]
                per_head[h].append(
                    Measurement(index, pattern, 0.0, 0.0, recall, None if rel is None else float(rel[h]))
                )
        for group in self.groups.values():
            if group.levels is None:
                self._resolve(group, group.mass)
            read = (group.levels != -1).double()  # blocks read at any level
            recall = torch.einsum("hij,chij->ch", group.mass, read) / self.rows  # (C_g, H)
            rel = None if group.squared_error is None else (group.squared_error / reference).sqrt()
            fractions = table_cost(group.levels).mean(dim=(2, 3))  # (C_g, H): compute, in full blocks
            for c, index in enumerate(group.indices):
                for h in range(self.num_heads):
                    table = group.levels[c, h]
                    per_head[h].append(
                        Measurement(
                            index,
                            group.resolved[c][h],
                            float(fractions[c, h]),
                            table_density(table, n, self.block_size),
                            float(recall[c, h]),
                            None if rel is None else float(rel[c, h]),
                        )
                    )
        for entries in per_head:
            entries.sort(key=lambda m: m.candidate)
        return per_head

    def choose(
        self, *, target_recall: float | None = None, max_rel_l2: float | None = None, cost: CostModel | None = None
    ) -> list[HeadPattern]:
        """Per head, the cheapest measured candidate meeting the target (``"dense"`` when none does)."""
        metric = check_target(target_recall, max_rel_l2)
        if metric != self.metric:
            raise ValueError(f"these statistics measure {self.metric!r}; a {metric!r} target cannot be checked")
        cost = CostModel.flops() if cost is None else cost
        n = self.layout.num_tokens
        chosen = []
        for entries in self.measurements():
            best, best_key = None, None
            for m in entries:
                quality = m.recall if metric == "recall" else m.rel_l2
                meets = quality >= target_recall if metric == "recall" else quality <= max_rel_l2
                if not meets:
                    continue
                price = cost.skip_cost(n) if m.pattern.kind == "skip" else cost.cost(m.block_fraction)
                key = (price, -quality if metric == "recall" else quality, m.candidate)
                if best_key is None or key < best_key:
                    best, best_key = m, key
            if best is None:
                chosen.append(HeadPattern("dense", density=1.0, recall=1.0, rel_l2=0.0 if metric == "rel_l2" else None))
            else:
                chosen.append(best.pattern.replace(density=best.density, recall=best.recall, rel_l2=best.rel_l2))
        return chosen


def check_target(target_recall: float | None, max_rel_l2: float | None) -> str:
    if (target_recall is None) == (max_rel_l2 is None):
        raise ValueError("give exactly one target: target_recall (kept attention mass) or max_rel_l2 (output error)")
    value = target_recall if target_recall is not None else max_rel_l2
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"the target must be a number, got {value!r}")
    if target_recall is not None and not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
    if max_rel_l2 is not None and not max_rel_l2 >= 0:
        raise ValueError(f"max_rel_l2 must be >= 0, got {max_rel_l2!r}")
    return "recall" if target_recall is not None else "rel_l2"


def search_heads(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: VideoLayout,
    candidates: Sequence[HeadPattern] | None = None,
    *,
    target_recall: float | None = None,
    max_rel_l2: float | None = None,
    block_size: int = 128,
    cost: CostModel | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> list[HeadPattern]:
    """One :class:`HeadPattern` per head: the cheapest candidate whose quality on these inputs meets the target.

    Args:
        q, k, v (`torch.Tensor` of shape ``(B, H, N, D)``): captured self-attention inputs of one layer
            (the batch may stack several calls: prompts, steps, cond/uncond).
        layout (`VideoLayout`): their token grid (``layout.num_tokens == N``).
        candidates (`list[HeadPattern]`, optional): default :func:`default_candidates`.
        target_recall (`float`, optional): keep at least this fraction of the attention mass.
        max_rel_l2 (`float`, optional): or: keep the output's relative L2 error at most this.
        block_size (`int`, defaults to 128): mask block size.
        cost (`CostModel`, optional): default the analytic :meth:`CostModel.flops`.
        scale (`float`, optional): softmax scale, default ``1 / sqrt(D)``.
        backend (`str`, defaults to ``"auto"``): block-mass backend.

    Returns:
        `list[HeadPattern]`, one per head, with ``density``, ``recall`` (and ``rel_l2``) measured.

    Example:
        >>> layout = VideoLayout(4, 8, 8)
        >>> q = k = v = torch.randn(1, 2, layout.num_tokens, 32) * 0.01
        >>> [p.kind for p in search_heads(q, k, v, layout, target_recall=0.9, block_size=16)]
        ['skip', 'skip']
    """
    metric = check_target(target_recall, max_rel_l2)
    if q.dim() != 4:
        raise ValueError(f"q must be (B, H, N, D), got {tuple(q.shape)}")
    stats = HeadStatistics(
        layout, q.shape[1], candidates, metric=metric, block_size=block_size, scale=scale, backend=backend
    )
    stats.add(q, k, v)
    return stats.choose(target_recall=target_recall, max_rel_l2=max_rel_l2, cost=cost)


def measure_heads(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: VideoLayout,
    patterns: Sequence[HeadPattern],
    *,
    block_size: int = 128,
    scale: float | None = None,
) -> list[dict[str, float]]:
    """Recall and output rel-L2 error of each head's given pattern on these inputs (e.g. held-out prompts).

    Args:
        q, k, v (`torch.Tensor` of shape ``(B, H, N, D)``): attention inputs.
        layout (`VideoLayout`): their token grid.
        patterns (`list[HeadPattern]`): one resolved pattern per head (as :func:`search_heads` returns).
        block_size (`int`, defaults to 128): mask block size.
        scale (`float`, optional): softmax scale.

    Returns:
        Per head ``{"recall": ..., "rel_l2": ..., "density": ...}``.
    """
    if len(patterns) != q.shape[1]:
        raise ValueError(f"give one pattern per head: {len(patterns)} patterns for {q.shape[1]} heads")
    unique: dict[tuple, int] = {}
    for pattern in patterns:
        if pattern.is_template:
            raise ValueError(f"{pattern.label} is a search template; measure resolved patterns")
        unique.setdefault(pattern.key(), len(unique))
    candidates = [None] * len(unique)
    for pattern in patterns:
        candidates[unique[pattern.key()]] = pattern.replace(density=None, recall=None, rel_l2=None)
    stats = HeadStatistics(layout, q.shape[1], candidates, metric="rel_l2", block_size=block_size, scale=scale)
    stats.add(q, k, v)
    results = []
    for head, entries in enumerate(stats.measurements()):
        m = next(e for e in entries if e.candidate == unique[patterns[head].key()])
        results.append({"recall": m.recall, "rel_l2": m.rel_l2, "density": m.density})
    return results


__all__ = [
    "HeadPattern",
    "HeadStatistics",
    "Measurement",
    "default_candidates",
    "measure_heads",
    "search_heads",
]
