"""``method="sparsed"``: dense early steps, then head-specific masks found once and reused to the end.

The schedule of SparseD (Wang et al., 2025, "SparseD: Sparse Attention for Diffusion Language Models",
https://arxiv.org/abs/2509.24014), as the architecture applies it to video DiTs: the early denoising steps
matter most and run dense (``dense_steps``); at the first sparse step each layer, context (cond / uncond)
and batch entry measures its exact block attention mass (:func:`dit_sparse.scoring.block_attention_mass`,
no N x N; with ``row_stride`` s > 1, ours, the mass averaged over every s-th query row of each q block, at
1/s of the search's cost), keeps per head the blocks that hold ``tau`` of each query block's mass (or the top
``fraction`` of blocks), and reuses that mask for every later step. Text rows and columns stay dense.
``kv_block_size`` (ours; default the q block size) selects finer kv blocks than q blocks.
``share_contexts`` (ours, default False): the passes of classifier-free guidance (cond / uncond cache contexts)
share one mask per layer, searched on whichever pass comes first (cond, in diffusers' pipelines), which halves
the searches; on the embedded demo it read 27.82 dB against 27.13 with a mask per pass
(``benchmarks/results/2026-12-02-frontier-embedded-49f-share-contexts.json``).
"""

from __future__ import annotations

import torch

from ..layout import VideoLayout
from ..mask import BlockSparseMask
from ..scoring import block_attention_mass, select_blocks
from .base import AttentionCall, Method, mask_keeping_text


def masks_from_mass(
    mass: torch.Tensor, layout: VideoLayout, block_size: int | tuple[int, int], params: dict
) -> BlockSparseMask:
    """Selection by ``tau`` or ``fraction`` with text rows and columns kept; ``mass`` is (B, H, nQ, nK)."""
    rule = {"fraction": params["fraction"]} if params["fraction"] is not None else {"tau": params["tau"]}
    table = select_blocks(mass, min_blocks_per_row=params["min_blocks_per_row"], **rule)
    return mask_keeping_text(table, layout, block_size, f"sparsed({rule})")


class SparseDMethod(Method):
    name = "sparsed"

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self._masks: dict[tuple, BlockSparseMask] = {}

    def reset(self) -> None:
        super().reset()
        self._masks.clear()  # a new generation searches again

    def mask_for(self, call: AttentionCall) -> BlockSparseMask:
        params = self.config.method_params(call.layer)
        context = None if params["share_contexts"] else call.context
        key = (call.layer, context, call.layout, tuple(call.q.shape), call.q.device)
        mask = self._masks.get(key)
        if mask is not None:
            self.reuses += 1
            return mask
        block, stride = self.config.block_size, params["row_stride"]
        kv_block = params["kv_block_size"] or block
        # every stride-th query row: the same q blocks, each of block / stride sampled rows
        mass = block_attention_mass(call.q[:, :, ::stride], call.k, block_size=(block // stride, kv_block))
        mask = masks_from_mass(mass, call.layout, (block, kv_block), params)
        self._masks[key] = mask
        self.searches += 1
        return mask
