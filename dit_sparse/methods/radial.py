"""``method="radial"``: the static radial-attention mask (see :mod:`dit_sparse.patterns.radial`)."""

from __future__ import annotations

from ..layout import VideoLayout
from ..mask import BlockSparseMask
from ..patterns.radial import radial
from .base import AttentionCall, LayoutCache, Method


class RadialMethod(Method):
    """Radial attention; one mask per (layout, heads, device, layer parameters), built once and reused.

    ``sink_frames`` defaults to the model's (1 for Wan, as in the paper's Wan setting; 0 otherwise).
    ``block_rule`` (default ``"paper"``, the public code's block shrinking; ``"cover"`` keeps every block that
    holds a kept token pair) is passed to :func:`~dit_sparse.patterns.radial`.

    Images (one frame, e.g. Flux) are an extension beyond the paper, which treats video only: the image's
    token rows take the place of frames, so attention decays with row distance the way it decays with
    temporal distance in video. The token order is unchanged (row-major), so no reordering is needed.
    """

    name = "radial"

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self._cache = LayoutCache()

    def mask_for(self, call: AttentionCall) -> BlockSparseMask:
        params = self.config.method_params(call.layer)
        layout = call.layout
        if layout.frames == 1:
            layout = VideoLayout(layout.height, 1, layout.width, layout.text_len, layout.text_position)
        sink = params["sink_frames"] if params["sink_frames"] is not None else self.spec.sink_frames
        block_rule = params["block_rule"]  # checked by the config
        key = (
            layout,
            call.num_heads,
            call.q.device,
            self.config.block_size,
            float(params["decay_factor"]),
            sink,
            params["dense_distance"],
            block_rule,
        )
        mask = self._cache.get(key)
        if mask is None:
            mask = radial(
                layout,
                num_heads=call.num_heads,
                block_size=self.config.block_size,
                decay_factor=float(params["decay_factor"]),
                sink_frames=sink,
                dense_distance=params["dense_distance"],
                block_rule=block_rule,
            ).to(call.q.device)
            self._cache[key] = mask
            self.searches += 1
        else:
            self.reuses += 1
        return mask
