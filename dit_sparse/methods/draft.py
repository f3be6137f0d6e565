"""``method="draft"``: DraftAttention's low-resolution draft map, window-major reordering, block-sparse attention.

Shen et al., "DraftAttention: Fast Video Diffusion via Low-Resolution Attention Guidance" (2025),
https://arxiv.org/abs/2505.14708. Queries and keys are average-pooled inside each frame in windows of
``window = (h, w)`` latent cells (the paper's 8 x 16), giving one draft token per window; the draft map
``softmax(q~ k~^T / sqrt(D))`` is cheap, and per head its top ``fraction`` of entries (and every row's
largest) say which window pairs to compute. Tokens are reordered window-major so each window is
contiguous (a block when ``h * w`` equals the block size), attention runs on the resulting block mask,
and the output is put back in order. Windows at grid edges that do not divide are partial; a block that
touches a kept window pair is kept. Text rows and columns are dense. A new draft is made every call.
"""

from __future__ import annotations

import math

import torch

from ..mask import BlockSparseMask
from ..patterns._tiles import blocks_from_tile_keep, tile_grid, tile_incidence, tile_of_position
from .base import AttentionCall, AttentionPlan, Method


def pool_windows(x: torch.Tensor, tile_of: torch.Tensor, n_tiles: int) -> torch.Tensor:
    """Mean of ``x`` ``(B, H, N, D)`` (tile-major order) over each tile -> ``(B, H, T, D)``; text ignored."""
    video = tile_of >= 0
    index = tile_of[video].to(x.device)
    sums = torch.zeros(*x.shape[:2], n_tiles, x.shape[-1], dtype=torch.float32, device=x.device)
    sums.index_add_(2, index, x[:, :, video.to(x.device)].float())
    counts = torch.bincount(index, minlength=n_tiles).clamp(min=1).to(x.device)
    return sums / counts[:, None]


def draft_keep(q_draft: torch.Tensor, k_draft: torch.Tensor, fraction: float) -> torch.Tensor:
    """Per (batch, head): the top ``fraction`` of draft-map entries, plus each row's largest. ``(B, H, T, T)``."""
    probs = torch.softmax(q_draft @ k_draft.transpose(-2, -1) / math.sqrt(q_draft.shape[-1]), dim=-1)
    flat = probs.flatten(-2)  # (B, H, T*T)
    count = max(1, math.ceil(fraction * flat.shape[-1]))
    threshold = flat.topk(count, dim=-1).values[..., -1:]  # (B, H, 1)
    keep = probs >= threshold[..., None]
    return keep | (probs == probs.amax(dim=-1, keepdim=True))


class DraftMethod(Method):
    name = "draft"

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self._layouts: dict[tuple, tuple] = {}

    def _tiles(self, call: AttentionCall, window: tuple[int, int]):
        key = (call.layout, window, self.config.block_size, call.q.device)
        if key not in self._layouts:
            tile = (1, *window)
            n_tiles = math.prod(tile_grid(call.layout, tile))
            self._layouts[key] = (
                call.layout.tile_permutation(tile, device=call.q.device),
                tile_of_position(call.layout, tile),
                tile_incidence(call.layout, tile, self.config.block_size),
                n_tiles,
            )
        return self._layouts[key]

    def plan_for(self, call: AttentionCall) -> AttentionPlan:
        params = self.config.method_params(call.layer)
        perm, tile_of, incidence, n_tiles = self._tiles(call, tuple(params["window"]))
        q = call.q[:, :, perm]  # (B, H, N, D), window-major
        k = call.k[:, :, perm]
        keep = draft_keep(pool_windows(q, tile_of, n_tiles), pool_windows(k, tile_of, n_tiles), params["fraction"])
        table = blocks_from_tile_keep(incidence, keep)  # (B, H, nB, nB)
        n = call.layout.num_tokens
        self.searches += 1
        mask = BlockSparseMask.from_dense(table, self.config.block_size, (n, n), name=f"draft({params['fraction']})")
        return AttentionPlan(mask, perm)

    def mask_for(self, call: AttentionCall) -> BlockSparseMask:
        return self.plan_for(call).mask
