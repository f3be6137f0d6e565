"""``method="paro"``: PAROAttention's pattern-aware token reordering with static block masks.

Zhao et al., "PAROAttention: Pattern-Aware ReOrdering for Efficient Sparse and Quantized Attention in Visual
Generation Models" (2025), https://arxiv.org/abs/2506.16054. A video DiT head attends along some axis of the
(F, H, W) token grid; laid out in the right one of the six orders of those axes (``layout.permutation``,
outermost first) its attention map becomes block-diagonal-like, so a static block mask at 20-30% density
keeps almost all of its mass, and its Q/K blocks hold similar values, so per-block quantization loses less.

Order selection, per (layer, head), from statistics gathered on calibration inputs (:class:`OrderStatistics`
accumulates them over prompts and steps; :func:`choose_orders` decides):

- sparsity term: the *recall* at the target density, i.e. the mean over query blocks of the attention mass
  held by the top ``ceil(density * nK)`` key blocks of that row, in the permuted order;
- quantization term: the relative error of per-block quantization (``quant_bits``, default 8) of Q and of
  the smoothed K in the permuted order, as :mod:`dit_sparse.kernels.quant` quantizes them;
- ``score = recall - quant_weight * quant_error``; the highest score wins, and its mask is the top blocks of
  the accumulated mass map in that order (every row keeps at least one block; text rows and columns dense).

The paper combines a block-sparsity metric and a quantization-incoherence metric; the exact formula and
weights here are ours (documented above), not the paper's.

Offline (the paper's way), ``calibrate(pipe, prompts, method="paro")`` pools the statistics per step
bucket and layer over calibration prompts and steps and stores each head's order and mask in a plan,
which runs with no selection cost. Online, ``SparseAttentionConfig("paro")`` measures each (layer,
context)'s statistics at its first sparse call, chooses, and reuses the choice for every later step (the
SparseD-style schedule), so ``paro`` runs on any model without an offline step, at the cost of one
selection per layer and context and of masks fitted to one step instead of pooled ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..kernels.quant import dequantize_per_block, quantize_per_block, smooth_keys
from ..layout import ORDERS, VideoLayout
from ..mask import BlockSparseMask
from ..scoring import block_attention_mass, select_blocks
from ..utils import padding_groups
from .base import AttentionCall, AttentionPlan, Method, mask_keeping_text


def _relative_quant_error(x: torch.Tensor, block: int, bits: int) -> torch.Tensor:
    """Per head ``||x - deq(q(x))|| / ||x||`` over batch, tokens and channels; x is (B, H, N, D); -> (H,)."""
    x_int, scales = quantize_per_block(x, block, bits)
    err = (dequantize_per_block(x_int, scales, block) - x.float()).pow(2).sum(dim=(0, 2, 3))
    return (err / x.float().pow(2).sum(dim=(0, 2, 3)).clamp_min(1e-30)).sqrt()


@dataclass
class OrderStatistics:
    """Block attention mass and quantization error per order, summed over calibration calls of one layer.

    ``mass[order]`` is ``(H, nQ, nK)`` (summed over calls and batch entries), ``quant_error[order]`` is ``(H,)``
    (summed over calls), ``count`` the number of (call, batch entry) pairs in ``mass``.
    """

    layout: VideoLayout
    block_size: int
    quant_bits: int = 8
    mass: dict[str, torch.Tensor] = field(default_factory=dict)
    quant_error: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0
    calls: int = 0

    def update(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        orders: tuple[str, ...] = ORDERS,
        *,
        key_lengths: Sequence[int] | None = None,
        query_lengths: Sequence[int] | None = None,
    ) -> None:
        """Add one call's statistics; ``q``, ``k`` are ``(B, H, N, D)`` in the model's native token order.

        ``key_lengths`` (per sample, the keys a padding mask keeps, which come first) leaves the padded keys out of
        every softmax, the key smoothing and the quantization error, as the model's attention leaves them out;
        ``query_lengths`` leaves padded queries out too (HunyuanVideo 1.5 masks them). Padded tokens are text at
        the end, which every order keeps in place.
        """
        if q.shape[-2] != self.layout.num_tokens or k.shape[-2] != self.layout.num_tokens:
            raise ValueError(
                f"q and k must have {self.layout.num_tokens} tokens for {self.layout}, got {q.shape[-2]} and "
                f"{k.shape[-2]}"
            )
        B, H, n = q.shape[0], q.shape[1], q.shape[2]
        groups = padding_groups(key_lengths, query_lengths, B, n)
        n_blocks = -(-n // self.block_size)
        for order in orders:
            perm = self.layout.permutation(order, device=q.device)
            mass = torch.zeros(H, n_blocks, n_blocks, dtype=torch.float32)
            error = torch.zeros(H, dtype=torch.float32)
            for n_keys, n_queries, rows in groups:
                tail = min(n_keys, n_queries)
                if tail < n and not torch.equal(perm[tail:].cpu(), torch.arange(tail, n)):
                    raise ValueError(f"padded tokens must keep their place under order {order} (text stays in place)")
                qp = q[rows][:, :, perm[:n_queries]]
                kp = k[rows][:, :, perm[:n_keys]]
                part = block_attention_mass(qp, kp, block_size=self.block_size).sum(0).cpu()  # (H, nQ', nK')
                mass[:, : part.shape[1], : part.shape[2]] += part
                quant = _relative_quant_error(qp, self.block_size, self.quant_bits) + _relative_quant_error(
                    smooth_keys(kp)[0], self.block_size, self.quant_bits
                )
                error += 0.5 * quant.cpu() * len(rows) / B  # a call's error: its samples' weighted mean
            self.mass[order] = self.mass[order] + mass if order in self.mass else mass
            self.quant_error[order] = self.quant_error[order] + error if order in self.quant_error else error
        self.count += q.shape[0]
        self.calls += 1


@dataclass(frozen=True)
class HeadOrder:
    """The choice for one head: ``order``, its ``(nQ, nK)`` block ``table`` in that order, and the terms."""

    order: str
    table: torch.Tensor
    recall: float
    quant_error: float
    score: float


def choose_orders(stats: OrderStatistics, *, density: float = 0.25, quant_weight: float = 1.0) -> list[HeadOrder]:
    """Per head, the order with the best ``recall - quant_weight * quant_error`` at ``density``.

    Args:
        stats (`OrderStatistics`): accumulated over at least one call.
        density (`float`, defaults to 0.25): fraction of key blocks kept per query block (the paper's 20-30%).
        quant_weight (`float`, defaults to 1.0): weight of the quantization term (0: sparsity only).
    """
    if not stats.mass:
        raise ValueError("no statistics: call OrderStatistics.update on calibration q/k first")
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    candidates = []
    for order, mass in stats.mass.items():
        mean_mass = mass / stats.count  # (H, nQ, nK), rows sum to 1
        table = select_blocks(mean_mass[None], fraction=density)[0]
        table = mask_keeping_text(table[None], stats.layout, stats.block_size, "paro").to_dense()[0]
        recall = (mean_mass * table).sum(-1).mean(-1)  # (H,)
        error = stats.quant_error[order] / stats.calls
        candidates.append((order, table, recall, error, recall - quant_weight * error))
    heads = []
    for h in range(next(iter(stats.mass.values())).shape[0]):
        order, table, recall, error, score = max(candidates, key=lambda c: c[4][h].item())
        heads.append(HeadOrder(order, table[h], recall[h].item(), error[h].item(), score[h].item()))
    return heads


def plan_from_orders(heads: list[HeadOrder], layout: VideoLayout, block_size: int, device) -> AttentionPlan:
    """One layer's AttentionPlan: per-head permutations ``(H, N)`` and the per-head mask in those orders."""
    perms = torch.stack([layout.permutation(h.order, device=device) for h in heads])  # (H, N)
    table = torch.stack([h.table for h in heads])[None].to(device)  # (1, H, nQ, nK)
    n = layout.num_tokens
    orders = "/".join(h.order for h in heads)
    mask = BlockSparseMask.from_dense(table, block_size, (n, n), name=f"paro({orders})")
    return AttentionPlan(mask, permutation=perms)


class ParoMethod(Method):
    """Per-head orders and static masks chosen online: at a (layer, context)'s first sparse call, then reused.

    The offline form is a plan: ``calibrate(pipe, prompts, method="paro")`` pools the statistics over
    prompts and sampled steps per step bucket and stores the orders and masks; ``apply_sparse_attention(pipe,
    plan)`` then runs them through :class:`~dit_sparse.methods.plan.PlanMethod` with no selection at run time.
    """

    name = "paro"

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self._plans: dict[tuple, AttentionPlan] = {}

    def reset(self) -> None:
        super().reset()
        self._plans.clear()

    def plan_for(self, call: AttentionCall) -> AttentionPlan:
        key = (call.layer, call.context, call.layout, call.q.device)
        plan = self._plans.get(key)
        if plan is not None:
            self.reuses += 1
            return plan
        params = self.config.method_params(call.layer)
        block = self.config.block_size
        stats = OrderStatistics(call.layout, block, quant_bits=4 if self.config.quant == "int4" else 8)
        stats.update(call.q, call.k)
        heads = choose_orders(stats, density=params["density"], quant_weight=params["quant_weight"])
        plan = plan_from_orders(heads, call.layout, block, call.q.device)
        self._plans[key] = plan
        self.searches += 1
        return plan
