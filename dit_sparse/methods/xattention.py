"""``method="xattention"``: XAttention's antidiagonal block scoring with a cumulative-mass threshold.

Xu et al., "XAttention: Block Sparse Attention with Antidiagonal Scoring" (2025),
https://arxiv.org/abs/2503.16661. Every call scores blocks from strided antidiagonal sums
(:func:`dit_sparse.scoring.antidiagonal_block_scores`) and keeps, per query block, the fewest blocks
whose normalized score reaches ``tau``. For video the paper runs the first ``warmup_steps`` dense (5 on
HunyuanVideo). Defaults are the reference's video settings (x-attention e379887): stride 16, ``tau`` 0.9,
and key block 0 kept in every row (``keep_first_block``: a sink that roughly doubles the density of very
local heads). Text rows and columns stay dense.
"""

from __future__ import annotations

from ..scoring import antidiagonal_block_scores, select_blocks
from .base import AttentionCall, AttentionPlan, Method, mask_keeping_text


class XAttentionMethod(Method):
    name = "xattention"

    def plan_for(self, call: AttentionCall) -> AttentionPlan:
        params = self.config.method_params(call.layer)
        if call.step < params["warmup_steps"]:
            return AttentionPlan(None, dense=True)
        block = self.config.block_size
        scores = antidiagonal_block_scores(call.q, call.k, block_size=block, stride=params["stride"])
        table = select_blocks(scores, tau=params["tau"], min_blocks_per_row=params["min_blocks_per_row"])
        if params["keep_first_block"]:
            table[..., 0] = True
        self.searches += 1
        return AttentionPlan(mask_keeping_text(table, call.layout, block, f"xattention(tau={params['tau']})"))
