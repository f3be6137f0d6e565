"""``method="svg"``: Sparse VideoGen's online choice between a spatial and a temporal pattern per head.

Xi et al., "Sparse VideoGen: Accelerating Video Diffusion Transformers with Spatial-Temporal Sparsity"
(2025), https://arxiv.org/abs/2502.01776. Heads of video DiTs are either *spatial* (attend within their
own frame and its neighbours) or *temporal* (attend to the same place in every frame), and which one a
head is changes with the input and the step, so it is decided online: a few query rows are sampled,
their exact attention is computed, and each head takes the pattern whose output on those rows is closer
(mean squared error). Temporal heads are reordered frame-innermost (order ``"HWF"``), which turns the
scattered temporal pattern into a contiguous band; the output is restored with the exact inverse.

Patterns: spatial = a band of ``spatial_width`` video tokens in the model's order (default one frame);
temporal = a band of ``temporal_width`` tokens in ``"HWF"`` order (default ``F' * 3``: the same place and
its row neighbours in every frame). Text rows and columns are dense in both.
"""

from __future__ import annotations

import torch

from ..layout import VideoLayout, invert_permutation
from ..mask import BlockSparseMask
from ..patterns import diagonal
from .base import AttentionCall, AttentionPlan, Method


def _band_in_order(layout: VideoLayout, order: str, width: int, block_size: int) -> BlockSparseMask:
    """A diagonal band over the sequence reordered by ``order``: in ``"HWF"`` the frames are innermost,
    which for the band builder is a video of ``H' * W'`` one-row "frames" of ``F'`` tokens."""
    if order == "FHW":
        return diagonal(layout, width=width, block_size=block_size)
    transposed = VideoLayout(layout.frame_tokens, 1, layout.frames, layout.text_len, layout.text_position)
    return diagonal(transposed, width=width, block_size=block_size)


class SVGMethod(Method):
    name = "svg"
    ORDERS = ("FHW", "HWF")  # spatial, temporal

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self._candidates: dict[tuple, list[tuple[BlockSparseMask, torch.Tensor]]] = {}
        self.last_choice: dict[int, list[str]] = {}

    def _candidate_masks(self, call: AttentionCall, params: dict) -> list[tuple[BlockSparseMask, torch.Tensor]]:
        layout, device = call.layout, call.q.device
        spatial = params["spatial_width"] or layout.frame_tokens
        temporal = params["temporal_width"] or 3 * layout.frames
        key = (layout, spatial, temporal, self.config.block_size, device)
        if key not in self._candidates:
            self._candidates[key] = [
                (
                    _band_in_order(layout, order, width, self.config.block_size).to(device),
                    layout.permutation(order, device=device),
                )
                for order, width in zip(self.ORDERS, (spatial, temporal), strict=True)
            ]
        return self._candidates[key]

    @staticmethod
    def _row_masks(mask: BlockSparseMask, perm: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Token mask ``(R, N)`` in the model's order for the sampled rows ``rows`` (model order)."""
        bq, bk = mask.block_size
        n = mask.seq_len[1]
        position = invert_permutation(perm)[rows]  # where each sampled row sits in the reordered sequence
        block_rows = mask.blocks[0, 0, position // bq]  # (R, nK) over reordered kv blocks
        kept_reordered = block_rows.repeat_interleave(bk, dim=-1)[:, :n]  # (R, N), reordered columns
        kept = torch.empty_like(kept_reordered)
        kept[:, perm] = kept_reordered  # back to model order
        return kept

    def plan_for(self, call: AttentionCall) -> AttentionPlan:
        params = self.config.method_params(call.layer)
        candidates = self._candidate_masks(call, params)
        q, k, v = call.q, call.k, call.v  # (B, H, N, D)
        n = q.shape[2]
        generator = torch.Generator(device="cpu").manual_seed(params["seed"] + 7919 * call.layer + call.step)
        rows = torch.randperm(n, generator=generator)[: min(params["num_samples"], n)].to(q.device)
        q_rows = q[:, :, rows]  # (B, H, R, D)
        exact = torch.nn.functional.scaled_dot_product_attention(q_rows, k, v)
        errors = []
        for mask, perm in candidates:
            row_mask = self._row_masks(mask, perm, rows)  # (R, N)
            approx = torch.nn.functional.scaled_dot_product_attention(q_rows, k, v, attn_mask=row_mask)
            errors.append(((approx - exact) ** 2).float().mean(dim=(0, 2, 3)))  # (H,)
        choice = torch.stack(errors).argmin(dim=0)  # (H,) 0 = spatial, 1 = temporal
        self.searches += 1
        self.last_choice[call.layer] = [("spatial", "temporal")[int(c)] for c in choice]
        table = torch.stack([candidates[int(c)][0].blocks[0, 0] for c in choice])[None]  # (1, H, nQ, nK)
        perms = torch.stack([candidates[int(c)][1] for c in choice])  # (H, N)
        mask = BlockSparseMask.from_dense(table, self.config.block_size, (n, n), name=f"svg(layer={call.layer})")
        return AttentionPlan(mask, perms)
