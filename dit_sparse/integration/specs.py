"""Per-model knowledge: which modules are self-attention, and how to read the token grid of a call.

Everything model-specific lives here, as small functions over the transformer's forward arguments;
no model code is copied.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..layout import VideoLayout


@dataclass(frozen=True)
class ModelSpec:
    """How dit-sparse drives one family of diffusers transformers.

    Attributes:
        name: short model name used in messages and plans.
        transformer_classes: diffusers class names this spec handles.
        self_attention: the self-attention modules in layer order.
        read_layout: the token grid of this forward call, from the transformer's bound arguments.
        bridge: ``"dispatcher"`` (the processor calls ``dispatch_attention_fn``) or ``"sdpa"`` (the
            processor calls ``F.scaled_dot_product_attention`` itself).
        sink_frames: radial attention's attention-sink frames for this model.
        context_parallel: whether diffusers' context-parallel plan hands its self-attention the whole sequence
            in the layout's order (video-only sequences); dit-sparse refuses context parallelism otherwise.
        per_sample_text: the processor attends sample by sample over the video and that sample's unpadded text
            (Mochi): ``read_layout`` gives the padded sequence (suffix text) and each call holds its video and
            fewer text tokens; the state fits the layout to each call and keys masks per sample.
    """

    name: str
    transformer_classes: tuple[str, ...]
    self_attention: Callable[[torch.nn.Module], list[torch.nn.Module]]
    read_layout: Callable[[torch.nn.Module, dict[str, Any]], VideoLayout]
    bridge: str = "dispatcher"
    sink_frames: int = 0
    context_parallel: bool = False
    per_sample_text: bool = False

    def bind(self, transformer: torch.nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
        """The forward call's arguments by name."""
        signature = inspect.signature(type(transformer).forward)
        bound = signature.bind(transformer, *args, **kwargs)
        return dict(bound.arguments)


def _triple(value: Any) -> tuple[int, int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (1, value, value)


def _wan_layout(transformer: torch.nn.Module, call: dict[str, Any]) -> VideoLayout:
    _, _, frames, height, width = call["hidden_states"].shape  # (B, C, F, H, W)
    p_t, p_h, p_w = _triple(transformer.config.patch_size)
    return VideoLayout(frames // p_t, height // p_h, width // p_w)


def _skyreels_v2_layout(transformer: torch.nn.Module, call: dict[str, Any]) -> VideoLayout:
    # With num_frame_per_block > 1 (diffusion forcing's causal_block_size) the forward passes a frame-block
    # causal (N, N) mask to every self-attention; block-sparse kernels take key-padding masks only.
    causal_block = transformer.config.num_frame_per_block
    if causal_block > 1:
        raise ValueError(
            f"skyreels_v2: the transformer runs block-causal self-attention (num_frame_per_block={causal_block}, "
            "set by causal_block_size in SkyReelsV2DiffusionForcingPipeline), which dit-sparse does not support; "
            "call the pipeline with causal_block_size=1 (asynchronous ar_step > 0 works with it)"
        )
    return _wan_layout(transformer, call)


def _cogvideox_layout(transformer: torch.nn.Module, call: dict[str, Any]) -> VideoLayout:
    _, frames, _, height, width = call["hidden_states"].shape  # (B, F, C, H, W)
    p = transformer.config.patch_size
    p_t = transformer.config.patch_size_t or 1
    text_len = call["encoder_hidden_states"].shape[1]
    return VideoLayout(-(-frames // p_t), height // p, width // p, text_len=text_len, text_position="prefix")


def _hunyuan_layout(transformer: torch.nn.Module, call: dict[str, Any]) -> VideoLayout:
    _, _, frames, height, width = call["hidden_states"].shape  # (B, C, F, H, W)
    p, p_t = transformer.config.patch_size, transformer.config.patch_size_t
    text_len = call["encoder_hidden_states"].shape[1]
    return VideoLayout(frames // p_t, height // p, width // p, text_len=text_len, text_position="suffix")


def _mochi_layout(transformer: torch.nn.Module, call: dict[str, Any]) -> VideoLayout:
    # The processor attends sample by sample over [video, that sample's unpadded text]; this is the padded
    # sequence, and the state cuts the suffix text to each call's length (``per_sample_text``).
    _, _, frames, height, width = call["hidden_states"].shape  # (B, C, F, H, W); no temporal patch
    p = transformer.config.patch_size
    text_len = call["encoder_hidden_states"].shape[1]
    return VideoLayout(frames, height // p, width // p, text_len=text_len, text_position="suffix")


def _flux_layout(transformer: torch.nn.Module, call: dict[str, Any]) -> VideoLayout:
    img_ids = call["img_ids"]
    img_ids = img_ids[0] if img_ids.dim() == 3 else img_ids  # (N, 3): (0, row, column)
    rows = int(img_ids[:, 1].max()) + 1
    cols = int(img_ids[:, 2].max()) + 1
    n_image = call["hidden_states"].shape[1]
    if rows * cols != n_image:
        raise ValueError(
            f"Flux img_ids describe a {rows} x {cols} grid but hidden_states has {n_image} image tokens; "
            "only single images on a full grid are supported"
        )
    text_len = call["encoder_hidden_states"].shape[1]
    return VideoLayout(1, rows, cols, text_len=text_len, text_position="prefix")


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="wan",
        transformer_classes=("WanTransformer3DModel",),
        self_attention=lambda t: [block.attn1 for block in t.blocks],
        read_layout=_wan_layout,
        sink_frames=1,
        context_parallel=True,
    ),
    ModelSpec(
        # SkyReels-V2 (T2V, I2V, diffusion forcing): Wan's blocks; diffusion forcing gives per-frame timesteps.
        name="skyreels_v2",
        transformer_classes=("SkyReelsV2Transformer3DModel",),
        self_attention=lambda t: [block.attn1 for block in t.blocks],
        read_layout=_skyreels_v2_layout,
        sink_frames=1,
    ),
    ModelSpec(
        # Wan VACE: the control blocks (run first) self-attend over control tokens on the video's grid, with the
        # video's RoPE; their hints are added to the main blocks' hidden states and change no sequence.
        name="wan_vace",
        transformer_classes=("WanVACETransformer3DModel",),
        self_attention=lambda t: [block.attn1 for block in t.vace_blocks] + [block.attn1 for block in t.blocks],
        read_layout=_wan_layout,
        sink_frames=1,
    ),
    ModelSpec(
        name="hunyuan_video",
        transformer_classes=("HunyuanVideoTransformer3DModel",),
        self_attention=lambda t: [b.attn for b in t.transformer_blocks] + [b.attn for b in t.single_transformer_blocks],
        read_layout=_hunyuan_layout,
    ),
    ModelSpec(
        name="cogvideox",
        transformer_classes=("CogVideoXTransformer3DModel",),
        self_attention=lambda t: [block.attn1 for block in t.transformer_blocks],
        read_layout=_cogvideox_layout,
        bridge="sdpa",
    ),
    ModelSpec(
        # Mochi: joint [video, text] attention in every block (the last block's text output is dropped, its
        # attention still joint); MochiAttnProcessor2_0 calls SDPA itself, once per sample, without padding.
        name="mochi",
        transformer_classes=("MochiTransformer3DModel",),
        self_attention=lambda t: [block.attn1 for block in t.transformer_blocks],
        read_layout=_mochi_layout,
        bridge="sdpa",
        per_sample_text=True,
    ),
    ModelSpec(
        name="flux",
        transformer_classes=("FluxTransformer2DModel",),
        self_attention=lambda t: [b.attn for b in t.transformer_blocks] + [b.attn for b in t.single_transformer_blocks],
        read_layout=_flux_layout,
    ),
)


def supported_transformers() -> list[str]:
    return [name for spec in SPECS for name in spec.transformer_classes]


def spec_for(transformer: torch.nn.Module) -> ModelSpec:
    """The spec of ``transformer``'s class, or ValueError naming the supported ones."""
    for cls in type(transformer).__mro__:
        for spec in SPECS:
            if cls.__name__ in spec.transformer_classes:
                return spec
    raise ValueError(f"{type(transformer).__name__} is not supported; dit-sparse supports {supported_transformers()}")
