"""``method="xattention"``: XAttention's antidiagonal block scoring with a cumulative-mass threshold.

Xu et al., "XAttention: Block Sparse Attention with Antidiagonal Scoring" (2025),
https://arxiv.org/abs/2503.16661. Every call scores blocks from strided antidiagonal sums
(:func:`dit_sparse.scoring.antidiagonal_block_scores`) and keeps, per query block, the fewest blocks
whose normalized score reaches ``tau``. For video the paper runs the first ``warmup_steps`` dense (5 on
HunyuanVideo). Text rows and columns stay dense.
"""

from __future__ import annotations

from ..mask import BlockSparseMask
from ..scoring import antidiagonal_block_scores, select_blocks
from .base import AttentionCall, AttentionPlan, Method
from .sparsed import text_blocks


class XAttentionMethod(Method):
    name = "xattention"

    def plan_for(self, call: AttentionCall) -> AttentionPlan:
        params = self.config.method_params(call.layer)
        if call.step < params["warmup_steps"]:
            return AttentionPlan(None, dense=True)
        block = self.config.block_size
        scores = antidiagonal_block_scores(call.q, call.k, block_size=block, stride=params["stride"])
        table = select_blocks(scores, tau=params["tau"], min_blocks_per_row=params["min_blocks_per_row"])
        text = text_blocks(call.layout, block).to(table.device)
        table[..., text, :] = True
        table[..., :, text] = True
        n = call.layout.num_tokens
        self.searches += 1
        return AttentionPlan(BlockSparseMask.from_dense(table, block, (n, n), name=f"xattention(tau={params['tau']})"))

    def mask_for(self, call: AttentionCall) -> BlockSparseMask | None:
        return self.plan_for(call).mask
