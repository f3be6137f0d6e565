"""``method="adaspa"``: AdaSpa's searched-then-reused masks with head-adaptive sparsity.

Xia et al., "Training-free and Adaptive Sparse Attention for Efficient Long Video Generation" (AdaSpa,
2025), https://arxiv.org/abs/2502.21079. Attention patterns of video DiTs are sparse and stay similar
across denoising steps, so masks are searched at a few steps (``search_steps``, the paper's 10 and 30
of 50) and reused in between:

- before the first search step the layer runs dense;
- at the first search step it computes the exact row log-sum-exp (LSE) and, in a second pass that never
  builds the N x N map, the exact block attention mass; the step's output is the exact dense attention;
- at later search steps the cached LSE stands in for the new one, so the search is a single pass, and
  the step runs on the new mask;
- block selection is head-adaptive: one recall threshold is shared by all heads of a layer and chosen
  (bisection) so that the layer's average density meets ``density``; heads with concentrated attention
  end up sparser, diffuse heads denser.

Masks are kept per (layer, context, token grid) and forgotten at the start of each generation.
"""

from __future__ import annotations

import torch

from ..levels import LevelMask
from ..mask import BlockSparseMask
from ..scoring import block_attention_mass, select_blocks
from .base import AttentionCall, AttentionPlan, Method, mask_keeping_text


def select_head_adaptive(mass: torch.Tensor, density: float, min_blocks_per_row: int = 1) -> torch.Tensor:
    """Blocks reaching a common recall ``tau`` in every head, with ``tau`` set so the mean density is ``density``."""
    low, high = 1e-6, 1.0
    best = select_blocks(mass, tau=high, min_blocks_per_row=min_blocks_per_row)
    for _ in range(30):
        tau = (low + high) / 2
        kept = select_blocks(mass, tau=tau, min_blocks_per_row=min_blocks_per_row)
        if kept.float().mean() > density:
            high = tau
        else:
            low, best = tau, kept
    return best


class MassSearchMethod(Method):
    """AdaSpa's schedule for methods that choose blocks from the exact block attention mass.

    At each of ``search_steps`` (once per layer, context, token grid): the first search computes the row LSE
    and the block masses (on a CPU in one fused pass) and outputs exact dense attention, since it has paid for
    it; later searches normalize by the cached LSE, as AdaSpa does, and run on their new mask. Between searches
    the last mask is reused; before the first one the call runs dense. Subclasses turn the masses into a mask
    in :meth:`mask_from_mass`.
    """

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self._masks: dict[tuple, BlockSparseMask | LevelMask] = {}
        self._lse: dict[tuple, torch.Tensor] = {}
        self._searched_at: dict[tuple, int] = {}

    def reset(self) -> None:
        super().reset()
        self._masks.clear()
        self._lse.clear()
        self._searched_at.clear()

    def mask_from_mass(self, mass: torch.Tensor, call: AttentionCall, params: dict) -> BlockSparseMask | LevelMask:
        raise NotImplementedError(f"{type(self).__name__} must implement mask_from_mass")

    def mass_block_size(self, params: dict) -> tuple[int, int]:
        """The (q, kv) blocks the masses are measured over and the mask is made of."""
        return (self.config.block_size, self.config.block_size)

    def plan_for(self, call: AttentionCall) -> AttentionPlan:
        params = self.config.method_params(call.layer)
        key = (call.layer, call.context, call.layout, tuple(call.q.shape), call.q.device)
        if call.step in params["search_steps"] and self._searched_at.get(key) != call.step:
            first = key not in self._lse
            # with row_stride s (pyramid's, ours), the mass over every s-th query row of each q block
            stride = params.get("row_stride", 1)
            bq, bk = self.mass_block_size(params)
            mass, lse = block_attention_mass(
                call.q[:, :, ::stride], call.k, block_size=(bq // stride, bk), lse=self._lse.get(key), return_lse=True
            )
            self._masks[key] = mask = self.mask_from_mass(mass, call, params)
            self._searched_at[key] = call.step
            if first:
                self._lse[key] = lse
            self.searches += 1
            return AttentionPlan(mask, dense=first)  # the first search already paid for exact attention
        mask = self._masks.get(key)
        if mask is None:
            return AttentionPlan(None, dense=True)  # before the first search
        self.reuses += 1
        return AttentionPlan(mask)


class AdaSpaMethod(MassSearchMethod):
    name = "adaspa"

    def mask_from_mass(self, mass: torch.Tensor, call: AttentionCall, params: dict) -> BlockSparseMask:
        table = select_head_adaptive(mass, params["density"], params["min_blocks_per_row"])
        return mask_keeping_text(table, call.layout, self.config.block_size, f"adaspa(step={call.step})")
