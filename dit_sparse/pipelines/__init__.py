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
    Cosmos2_5_PredictBasePipeline,
    Cosmos2_5_TransferPipeline,
    Cosmos2TextToImagePipeline,
    Cosmos2VideoToWorldPipeline,
    CosmosTextToWorldPipeline,
    CosmosVideoToWorldPipeline,
    FluxPipeline,
    HunyuanVideo15ImageToVideoPipeline,
    HunyuanVideo15Pipeline,
    HunyuanVideoPipeline,
    LTX2ConditionPipeline,
    LTX2DFRPipeline,
    LTX2DFRTemporalRefinePipeline,
    LTX2HDRPipeline,
    LTX2ImageToVideoPipeline,
    LTX2InContextPipeline,
    LTX2Pipeline,
    LTXConditionPipeline,
    LTXImageToVideoPipeline,
    LTXPipeline,
    MochiPipeline,
    SkyReelsV2DiffusionForcingImageToVideoPipeline,
    SkyReelsV2DiffusionForcingPipeline,
    SkyReelsV2DiffusionForcingVideoToVideoPipeline,
    SkyReelsV2ImageToVideoPipeline,
    SkyReelsV2Pipeline,
    WanAnimatePipeline,
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


class SparseWanAnimatePipeline(SparsePipelineMixin, WanAnimatePipeline):
    """``diffusers.WanAnimatePipeline`` (Wan 2.2 Animate) with sparse self-attention over the reference frame and the
    video; the face adapter's cross-attention stays dense. Each segment of a long video is a new generation."""


class SparseHunyuanVideo15Pipeline(SparsePipelineMixin, HunyuanVideo15Pipeline):
    """``diffusers.HunyuanVideo15Pipeline`` (HunyuanVideo 1.5 text-to-video) with sparse self-attention."""


class SparseHunyuanVideo15ImageToVideoPipeline(SparsePipelineMixin, HunyuanVideo15ImageToVideoPipeline):
    """``diffusers.HunyuanVideo15ImageToVideoPipeline`` with sparse self-attention."""


class SparseLTXPipeline(SparsePipelineMixin, LTXPipeline):
    """``diffusers.LTXPipeline`` (LTX-Video text-to-video) with sparse self-attention."""


class SparseLTXImageToVideoPipeline(SparsePipelineMixin, LTXImageToVideoPipeline):
    """``diffusers.LTXImageToVideoPipeline`` with sparse self-attention."""


class SparseLTXConditionPipeline(SparsePipelineMixin, LTXConditionPipeline):
    """``diffusers.LTXConditionPipeline`` with sparse self-attention; condition frames placed after frame 0, which
    the pipeline puts before the video, stay dense."""


class SparseLTX2Pipeline(SparsePipelineMixin, LTX2Pipeline):
    """``diffusers.LTX2Pipeline`` (LTX-2 text-to-audio-video) with sparse video self-attention; audio
    self-attention and every cross-attention stay dense."""


class SparseLTX2ImageToVideoPipeline(SparsePipelineMixin, LTX2ImageToVideoPipeline):
    """``diffusers.LTX2ImageToVideoPipeline`` with sparse video self-attention."""


class SparseLTX2ConditionPipeline(SparsePipelineMixin, LTX2ConditionPipeline):
    """``diffusers.LTX2ConditionPipeline`` with sparse video self-attention; appended keyframes stay dense."""


class SparseLTX2InContextPipeline(SparsePipelineMixin, LTX2InContextPipeline):
    """``diffusers.LTX2InContextPipeline`` (IC-LoRA) with sparse video self-attention; the appended reference
    video stays dense, and calls with ``conditioning_attention_strength`` < 1 are refused."""


class SparseLTX2HDRPipeline(SparsePipelineMixin, LTX2HDRPipeline):
    """``diffusers.LTX2HDRPipeline`` with sparse video self-attention; the appended reference video stays dense."""


class SparseLTX2DFRPipeline(SparsePipelineMixin, LTX2DFRPipeline):
    """``diffusers.LTX2DFRPipeline`` (dynamic frame rate) with sparse video self-attention; keyframes and slots
    after the grid stay dense."""


class SparseLTX2DFRTemporalRefinePipeline(SparsePipelineMixin, LTX2DFRTemporalRefinePipeline):
    """``diffusers.LTX2DFRTemporalRefinePipeline`` with sparse video self-attention (each temporal tile is a
    new generation)."""


class SparseCosmosTextToWorldPipeline(SparsePipelineMixin, CosmosTextToWorldPipeline):
    """``diffusers.CosmosTextToWorldPipeline`` (Cosmos 1.0) with sparse self-attention."""


class SparseCosmosVideoToWorldPipeline(SparsePipelineMixin, CosmosVideoToWorldPipeline):
    """``diffusers.CosmosVideoToWorldPipeline`` (Cosmos 1.0) with sparse self-attention."""


class SparseCosmos2TextToImagePipeline(SparsePipelineMixin, Cosmos2TextToImagePipeline):
    """``diffusers.Cosmos2TextToImagePipeline`` (Cosmos Predict2) with sparse self-attention."""


class SparseCosmos2VideoToWorldPipeline(SparsePipelineMixin, Cosmos2VideoToWorldPipeline):
    """``diffusers.Cosmos2VideoToWorldPipeline`` (Cosmos Predict2) with sparse self-attention."""


class SparseCosmos2_5_PredictBasePipeline(SparsePipelineMixin, Cosmos2_5_PredictBasePipeline):
    """``diffusers.Cosmos2_5_PredictBasePipeline`` (Cosmos Predict2.5) with sparse self-attention."""


class SparseCosmos2_5_TransferPipeline(SparsePipelineMixin, Cosmos2_5_TransferPipeline):
    """``diffusers.Cosmos2_5_TransferPipeline`` (Cosmos Transfer2.5) with sparse self-attention in the transformer;
    the ControlNet's blocks stay dense. Each chunk of a long video is a new generation."""


class SparseCogVideoXPipeline(SparsePipelineMixin, CogVideoXPipeline):
    """``diffusers.CogVideoXPipeline`` (CogVideoX 1.0 / 1.5) with sparse self-attention."""


class SparseFluxPipeline(SparsePipelineMixin, FluxPipeline):
    """``diffusers.FluxPipeline`` (image) with sparse self-attention."""


__all__ = [
    "SparseCogVideoXPipeline",
    "SparseCosmos2TextToImagePipeline",
    "SparseCosmos2VideoToWorldPipeline",
    "SparseCosmos2_5_PredictBasePipeline",
    "SparseCosmos2_5_TransferPipeline",
    "SparseCosmosTextToWorldPipeline",
    "SparseCosmosVideoToWorldPipeline",
    "SparseFluxPipeline",
    "SparseHunyuanVideo15ImageToVideoPipeline",
    "SparseHunyuanVideo15Pipeline",
    "SparseHunyuanVideoPipeline",
    "SparseLTX2ConditionPipeline",
    "SparseLTX2DFRPipeline",
    "SparseLTX2DFRTemporalRefinePipeline",
    "SparseLTX2HDRPipeline",
    "SparseLTX2ImageToVideoPipeline",
    "SparseLTX2InContextPipeline",
    "SparseLTX2Pipeline",
    "SparseLTXConditionPipeline",
    "SparseLTXImageToVideoPipeline",
    "SparseLTXPipeline",
    "SparseMochiPipeline",
    "SparsePipelineMixin",
    "SparseSkyReelsV2DiffusionForcingImageToVideoPipeline",
    "SparseSkyReelsV2DiffusionForcingPipeline",
    "SparseSkyReelsV2DiffusionForcingVideoToVideoPipeline",
    "SparseSkyReelsV2ImageToVideoPipeline",
    "SparseSkyReelsV2Pipeline",
    "SparseWanAnimatePipeline",
    "SparseWanImageToVideoPipeline",
    "SparseWanPipeline",
    "SparseWanVACEPipeline",
]
