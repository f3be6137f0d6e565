"""Drop-in diffusers pipeline classes with sparse attention.

Each class is a subclass of the diffusers pipeline of the same name without ``Sparse``; it takes one more
argument in ``from_pretrained`` (``sparse_attention=``: a :class:`~dit_sparse.SparseAttentionConfig`, a
dict or a path to a JSON config) and returns what its parent returns. Calls also record their total
wall time for :func:`dit_sparse.summary`.

Example:
    >>> from dit_sparse.pipelines import SparseWanPipeline  # doctest: +SKIP
    >>> pipe = SparseWanPipeline.from_pretrained(  # doctest: +SKIP
    ...     "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", sparse_attention={"method": "radial", "dense_steps": 12}
    ... )
"""

from __future__ import annotations

import time
from typing import Any

import torch
from diffusers import (
    CogVideoXPipeline,
    FluxPipeline,
    HunyuanVideoPipeline,
    MochiPipeline,
    SkyReelsV2DiffusionForcingImageToVideoPipeline,
    SkyReelsV2DiffusionForcingPipeline,
    SkyReelsV2DiffusionForcingVideoToVideoPipeline,
    SkyReelsV2ImageToVideoPipeline,
    SkyReelsV2Pipeline,
    WanImageToVideoPipeline,
    WanPipeline,
    WanVACEPipeline,
)

from ..integration.apply import _transformers, apply_sparse_attention, sparse_state


class SparsePipelineMixin:
    """Adds ``sparse_attention=`` to ``from_pretrained`` and per-call bookkeeping to ``__call__``."""

    @classmethod
    def from_pretrained(cls, *args: Any, sparse_attention: Any = None, **kwargs: Any):
        pipe = super().from_pretrained(*args, **kwargs)
        if sparse_attention is not None:
            apply_sparse_attention(pipe, sparse_attention)
        return pipe

    def __call__(self, *args: Any, **kwargs: Any):
        states = [state for _, module in _transformers(self) if (state := sparse_state(module)) is not None]
        for state in states:
            state.new_call()
        start = time.perf_counter()
        output = super().__call__(*args, **kwargs)
        if torch.cuda.is_available() and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        for state in states:
            state.total_seconds = elapsed
        return output


class SparseWanPipeline(SparsePipelineMixin, WanPipeline):
    """``diffusers.WanPipeline`` (Wan 2.1 / 2.2 text-to-video) with sparse self-attention."""


class SparseWanImageToVideoPipeline(SparsePipelineMixin, WanImageToVideoPipeline):
    """``diffusers.WanImageToVideoPipeline`` (Wan 2.1 / 2.2 image-to-video) with sparse self-attention."""


class SparseWanVACEPipeline(SparsePipelineMixin, WanVACEPipeline):
    """``diffusers.WanVACEPipeline`` (Wan VACE video editing and control) with sparse self-attention, in the
    control blocks too."""


class SparseSkyReelsV2Pipeline(SparsePipelineMixin, SkyReelsV2Pipeline):
    """``diffusers.SkyReelsV2Pipeline`` (text-to-video) with sparse self-attention."""


class SparseSkyReelsV2ImageToVideoPipeline(SparsePipelineMixin, SkyReelsV2ImageToVideoPipeline):
    """``diffusers.SkyReelsV2ImageToVideoPipeline`` with sparse self-attention."""


class SparseSkyReelsV2DiffusionForcingPipeline(SparsePipelineMixin, SkyReelsV2DiffusionForcingPipeline):
    """``diffusers.SkyReelsV2DiffusionForcingPipeline`` with sparse self-attention (``causal_block_size=1``:
    block-causal self-attention is not supported)."""


class SparseSkyReelsV2DiffusionForcingImageToVideoPipeline(
    SparsePipelineMixin, SkyReelsV2DiffusionForcingImageToVideoPipeline
):
    """``diffusers.SkyReelsV2DiffusionForcingImageToVideoPipeline`` with sparse self-attention
    (``causal_block_size=1``)."""


class SparseSkyReelsV2DiffusionForcingVideoToVideoPipeline(
    SparsePipelineMixin, SkyReelsV2DiffusionForcingVideoToVideoPipeline
):
    """``diffusers.SkyReelsV2DiffusionForcingVideoToVideoPipeline`` with sparse self-attention
    (``causal_block_size=1``)."""


class SparseHunyuanVideoPipeline(SparsePipelineMixin, HunyuanVideoPipeline):
    """``diffusers.HunyuanVideoPipeline`` with sparse self-attention."""


class SparseMochiPipeline(SparsePipelineMixin, MochiPipeline):
    """``diffusers.MochiPipeline`` (Mochi 1) with sparse joint self-attention (video and each prompt's text)."""


class SparseCogVideoXPipeline(SparsePipelineMixin, CogVideoXPipeline):
    """``diffusers.CogVideoXPipeline`` (CogVideoX 1.0 / 1.5) with sparse self-attention."""


class SparseFluxPipeline(SparsePipelineMixin, FluxPipeline):
    """``diffusers.FluxPipeline`` (image) with sparse self-attention."""


__all__ = [
    "SparseCogVideoXPipeline",
    "SparseFluxPipeline",
    "SparseHunyuanVideoPipeline",
    "SparseMochiPipeline",
    "SparsePipelineMixin",
    "SparseSkyReelsV2DiffusionForcingImageToVideoPipeline",
    "SparseSkyReelsV2DiffusionForcingPipeline",
    "SparseSkyReelsV2DiffusionForcingVideoToVideoPipeline",
    "SparseSkyReelsV2ImageToVideoPipeline",
    "SparseSkyReelsV2Pipeline",
    "SparseWanImageToVideoPipeline",
    "SparseWanPipeline",
    "SparseWanVACEPipeline",
]
