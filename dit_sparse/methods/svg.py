"""``method="svg"``: Sparse VideoGen's online choice between a spatial and a temporal pattern per head.

Xi et al., "Sparse VideoGen: Accelerating Video Diffusion Transformers with Spatial-Temporal Sparsity"
(2025), https://arxiv.org/abs/2502.01776; reference code github.com/svg-project/Sparse-VideoGen (5ce7b01).
Heads of video DiTs are either *spatial* (attend within their own frame and its neighbours) or *temporal*
(attend to the same place in every frame), and which one a head is changes with the input and the step, so
it is decided online: a few video query rows are sampled, their exact attention is computed, and each head
takes the pattern whose output on those rows is closer (mean squared error). Temporal heads are reordered
frame-innermost (order ``"HWF"``), which turns the scattered temporal pattern into a contiguous band; the
output is restored with the exact inverse.

Both patterns are the same mask in the head's own order (``"FHW"`` for spatial, ``"HWF"`` for temporal):
a diagonal band ``|i - j| <= width`` over video positions, plus, with ``sink``, the first frame's worth of
video positions (``H' * W'`` keys, the first ones in that order) kept for every query. Text rows and
columns are dense. The band's half-width follows the reference's ``sparsity_to_width``: for a kept fraction
``s`` of an ``n x n`` attention map (``n`` the whole sequence, text included) a band of half-width ``w``
keeps about ``1 - (1 - w / n)^2`` of it, so ``w = n (1 - sqrt(1 - s'))`` with ``s' = s - 2 * text / n``
(the text rows and columns are dense and paid for first). See :func:`svg_band_width`.

Defaults follow the reference's Wan 2.1 scripts (``scripts/wan/*_svg.sh``: ``sparsity=0.3`` at 480p and
720p, ``--num_sampled_rows 64``, first-frame sink as in ``svg/models/wan/utils.py``). Its HunyuanVideo
scripts use ``sparsity`` 0.25 (720p) or 0.2 (480p) and its HunyuanVideo mask has no sink (``sink=False``).
The reference's dense schedule (``first_times_fp``: the first 20% of steps for Wan T2V 720p and I2V 480p,
35% for I2V 720p, 10% for HunyuanVideo 720p; ``first_layers_fp`` 0.03 of the layers, floored) is not part
of this method's parameters: ``SparseAttentionConfig.recommended("svg", model=...)`` sets it through
``dense_steps`` and ``dense_layers``.
"""

from __future__ import annotations

import math

import torch

from ..layout import VideoLayout, invert_permutation
from ..mask import BlockSparseMask
from ..patterns import diagonal, vertical_stripe
from .base import AttentionCall, AttentionPlan, LayoutCache, Method


def svg_band_width(layout: VideoLayout, sparsity: float) -> int:
    """Half-width in video tokens of the band that keeps about ``sparsity`` of the attention map.

    The reference's rule (``sparsity_to_width`` in ``svg/models/*/utils.py``): with ``n`` the sequence length
    (text included) and ``c`` the text tokens, ``w = n (1 - sqrt(1 - (s - 2c / n)))``, rounded up to a whole
    token here (the reference's Wan mask rounds it up to its 128-token flex block, its HunyuanVideo mask down;
    the block mask then keeps every block the band touches). The same width serves spatial and temporal heads,
    each in its own token order.

    Args:
        layout (`VideoLayout`): the attention call's token layout.
        sparsity (`float`): kept fraction in ``(0, 1]``; 1 covers every pair.

    Example:
        >>> svg_band_width(VideoLayout(21, 30, 52), 0.3)  # Wan 2.1 at 480p: about 3.4 frames
        5352
    """
    n = layout.num_tokens
    video_fraction = min(sparsity - 2 * layout.text_len / n, 1.0)
    if video_fraction <= 0:  # the dense text rows and columns already cost more than the budget
        return 0
    return math.ceil(n * (1 - math.sqrt(1 - video_fraction)))


def _pattern_in_order(layout: VideoLayout, order: str, width: int, sink: bool, block_size: int) -> BlockSparseMask:
    """The band (and sink) over the sequence reordered by ``order``: in ``"HWF"`` the frames are innermost,
    which for the pattern builders is a video of ``H' * W'`` one-row "frames" of ``F'`` tokens."""
    reordered = layout
    if order == "HWF":
        reordered = VideoLayout(layout.frame_tokens, 1, layout.frames, layout.text_len, layout.text_position)
    band = diagonal(reordered, width=width, block_size=block_size)
    if not sink:
        return band
    first = vertical_stripe(reordered, columns=range(layout.frame_tokens), block_size=block_size)
    n = layout.num_tokens
    name = f"svg_{order}(width={width},sink,block={block_size})"
    return BlockSparseMask.from_dense(band.blocks | first.blocks, block_size, (n, n), name=name)


class SVGMethod(Method):
    """Per head and call, the spatial or the temporal pattern, whichever is closer on sampled query rows.

    Parameters (``SparseAttentionConfig("svg", ...)``):
        sparsity (`float`, defaults to 0.3): kept fraction that sets the band's half-width through
            :func:`svg_band_width`; 0.3 is the reference's Wan 2.1 setting at 480p and 720p.
        spatial_width, temporal_width (`int`, optional): explicit half-widths in video tokens for the spatial
            band (model order) and the temporal band (``"HWF"`` order); each one given overrides ``sparsity``.
        sink (`bool`, defaults to True): every query keeps the first ``H' * W'`` video positions of its head's
            order (the first frame for spatial heads), as the reference's Wan masks do.
        num_samples (`int`, defaults to 64): video query rows sampled to choose each head's pattern.
        seed (`int`, defaults to 0): seeds the row sampling, together with the layer and step.

    Example:
        >>> import dit_sparse as ds
        >>> ds.SparseAttentionConfig("svg").method_params()["sparsity"]
        0.3
    """

    name = "svg"
    ORDERS = ("FHW", "HWF")  # spatial, temporal

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self._candidates = LayoutCache()
        self.last_choice: dict[int, list[str]] = {}

    @staticmethod
    def widths(layout: VideoLayout, params: dict) -> tuple[int, int]:
        """Spatial and temporal half-widths: the explicit ones where given, else from ``sparsity``."""
        from_sparsity = svg_band_width(layout, params["sparsity"])
        spatial, temporal = params["spatial_width"], params["temporal_width"]
        return (from_sparsity if spatial is None else spatial, from_sparsity if temporal is None else temporal)

    def _candidate_masks(self, call: AttentionCall, params: dict) -> list[tuple[BlockSparseMask, torch.Tensor]]:
        layout, device = call.layout, call.q.device
        spatial, temporal = self.widths(layout, params)
        key = (layout, spatial, temporal, params["sink"], self.config.block_size, device)
        if key not in self._candidates:
            self._candidates[key] = [
                (
                    _pattern_in_order(layout, order, width, params["sink"], self.config.block_size).to(device),
                    layout.permutation(order, device=device),
                )
                for order, width in zip(self.ORDERS, (spatial, temporal), strict=True)
            ]
        return self._candidates[key]

    @staticmethod
    def sampled_rows(layout: VideoLayout, num_samples: int, seed: int) -> torch.Tensor:
        """``min(num_samples, video tokens)`` distinct video rows (model order), drawn uniformly.

        Text rows are dense in both patterns, so their error cannot tell the patterns apart; the reference
        too samples video rows only (64 of the first 10,000 rows, with replacement, which are video rows in
        its Wan and HunyuanVideo layouts; the cap only bounds the memory of its precomputed masks).
        """
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return torch.randperm(layout.video_tokens, generator=generator)[:num_samples] + layout.video_start

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
        seed = params["seed"] + 7919 * call.layer + call.step
        rows = self.sampled_rows(call.layout, params["num_samples"], seed).to(q.device)
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
