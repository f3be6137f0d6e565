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
        bridge: ``"dispatcher"`` (the processor calls ``dispatch_attention_fn`` with its own backend),
            ``"global"`` (it calls ``dispatch_attention_fn`` without one: diffusers' active backend runs it) or
            ``"sdpa"`` (the processor calls ``F.scaled_dot_product_attention`` itself).
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


def _hunyuan_video15_layout(transformer: torch.nn.Module, call: dict[str, Any]) -> VideoLayout:
    # [video, then per sample the valid image (SigLIP; zeros in text-to-video), byT5 and Qwen tokens, then the
    # padding of all three]; the processor masks padded tokens as queries and keys (a joint padding mask).
    _, _, frames, height, width = call["hidden_states"].shape  # (B, C, F, H, W)
    p, p_t = transformer.config.patch_size, transformer.config.patch_size_t
    text_len = 0
    for name in ("image_embeds", "encoder_hidden_states_2", "encoder_hidden_states"):
        if call.get(name) is None:
            raise ValueError(f"hunyuan_video15: the forward needs `{name}` (its pipelines always pass it)")
        text_len += call[name].shape[1]
    return VideoLayout(frames // p_t, height // p, width // p, text_len=text_len, text_position="suffix")


def _ltx_grid_from_coords(video_coords: torch.Tensor) -> VideoLayout:
    """LTXConditionPipeline: prefix tokens (conditions at frame_index > 0), then the video grid, whose first
    token is the first with frame coordinate 0; ``video_coords`` is ``(B, 3, N)`` of (frame, y, x)."""
    coords = video_coords[0]
    if video_coords.shape[0] > 1 and not torch.equal(video_coords, coords.expand_as(video_coords)):
        raise ValueError("ltx_video: video_coords differ between batch rows; dit-sparse needs one layout per call")
    starts = (coords[0] == 0).nonzero()
    if starts.numel() == 0:
        raise ValueError("ltx_video: no token of video_coords has frame coordinate 0, so the video grid is unknown")
    prefix = int(starts[0])
    video = coords[:, prefix:]
    axes = [torch.unique(axis, return_inverse=True) for axis in video]
    frames, height, width = (len(values) for values, _ in axes)
    f, h, w = (index for _, index in axes)
    if frames * height * width != video.shape[1] or not torch.equal(
        (f * height + h) * width + w, torch.arange(video.shape[1], device=video.device)
    ):
        raise ValueError(
            f"ltx_video: the {video.shape[1]} tokens from the first at frame 0 (after {prefix} prefix tokens) are "
            "not one frame-major (frames, rows, columns) grid; dit-sparse supports LTXConditionPipeline "
            "(conditions at frame_index > 0 come first) but not sequences that append frames with repeated "
            "coordinates (LTXI2VLongMultiPromptPipeline); run those without dit-sparse"
        )
    return VideoLayout(frames, height, width, text_len=prefix, text_position="prefix" if prefix else "none")


def _ltx_video_layout(transformer: torch.nn.Module, call: dict[str, Any]) -> VideoLayout:
    # Packed (B, F * H * W, C) tokens, patch 1 (the RoPE has one coordinate per token of the num_frames x height
    # x width grid, so diffusers' LTX runs no other patch size); conditions before the video are dense.
    if call.get("video_coords") is not None:
        return _ltx_grid_from_coords(call["video_coords"])
    frames, height, width = call.get("num_frames"), call.get("height"), call.get("width")
    if frames is None or height is None or width is None:
        raise ValueError("ltx_video: the forward got neither video_coords nor num_frames, height and width")
    return VideoLayout(int(frames), int(height), int(width))


def _ltx2_grid_from_coords(video_coords: torch.Tensor) -> tuple[int, int, int]:
    """(F, H, W) of the leading video grid of LTX-2's ``video_coords`` ``(B, 3, N, 2)``: per token the
    ``[start, end)`` bounds of (time in s, pixel row, pixel column), read on sample 0.

    The grid is the first frame (runs of tokens at the first token's time, each run one pixel row lower at the
    first run's columns), then every next block of as many tokens at the same places, one later start time and
    the time extent of the grid's second frame (a causal first frame spans one pixel frame, the others the
    VAE's stride); a one-pixel-frame keyframe or slot appended after the grid (DFR pipelines) ends it.
    """
    bounds = video_coords[0].detach().float().cpu()  # (3, N, 2): one device sync per forward, coordinate calls only
    starts = bounds[..., 0]
    t, h = starts[0], starts[1]
    extent = bounds[0, :, 1] - bounds[0, :, 0]
    n = t.shape[0]
    off_row = torch.nonzero((t != t[0]) | (h != h[0]))
    width = int(off_row[0]) if len(off_row) else n
    columns = starts[2, :width]
    rows = 1
    while (rows + 1) * width <= n:
        row = slice(rows * width, (rows + 1) * width)
        if not (bool((t[row] == t[0]).all()) and bool((h[row] == h[row][0]).all()) and h[row][0] > h[row.start - 1]
                and torch.equal(starts[2, row], columns)):  # fmt: skip
            break
        rows += 1
    frame_tokens = rows * width
    first = starts[1:, :frame_tokens]
    frames = 1
    while (frames + 1) * frame_tokens <= n:
        block = slice(frames * frame_tokens, (frames + 1) * frame_tokens)
        grid_extent = extent[frame_tokens] if frames > 1 else extent[block][0]
        same_place = torch.equal(starts[1:, block], first)
        one_time = bool((t[block] == t[block][0]).all())
        same_extent = bool(torch.isclose(extent[block], grid_extent, rtol=1e-3, atol=1e-6).all())
        if not (same_place and one_time and same_extent and t[block][0] > t[(frames - 1) * frame_tokens]):
            break
        frames += 1
    return frames, rows, width


def _ltx2_layout(transformer: torch.nn.Module, call: dict[str, Any]) -> VideoLayout:
    # Video self-attention over packed (B, N, C) video tokens; tokens after the grid (keyframes, reference
    # videos, DFR slots) form a dense suffix block.
    if call.get("video_self_attention_mask") is not None:
        raise ValueError(
            "ltx2: this call passes video_self_attention_mask, a (B, N, N) additive mask on the video "
            "self-attention (LTX2InContextPipeline with conditioning_attention_strength < 1 or a "
            "conditioning_attention_mask), which dit-sparse's kernels do not take; call the pipeline with "
            "conditioning_attention_strength=1.0 and no conditioning_attention_mask, or without dit-sparse"
        )
    hidden_states = call["hidden_states"]
    if hidden_states.dim() != 3:
        raise ValueError(
            f"ltx2: expected packed video tokens (B, N, C), got hidden_states {tuple(hidden_states.shape)}"
        )
    n = hidden_states.shape[1]
    p, p_t = transformer.config.patch_size, transformer.config.patch_size_t
    num_frames, height, width = call.get("num_frames"), call.get("height"), call.get("width")
    if num_frames is not None and height is not None and width is not None:
        frames, rows, cols = num_frames // p_t, height // p, width // p
    elif call.get("video_coords") is not None:
        frames, rows, cols = _ltx2_grid_from_coords(call["video_coords"])
    else:
        raise ValueError("ltx2: the forward got neither num_frames, height and width nor video_coords")
    extra = n - frames * rows * cols
    if extra < 0:
        raise ValueError(
            f"ltx2: a {frames} x {rows} x {cols} token grid ({frames * rows * cols} tokens) but hidden_states "
            f"holds {n} tokens"
        )
    return VideoLayout(frames, rows, cols, text_len=extra, text_position="suffix" if extra else "none")


def _wan_animate_layout(transformer: torch.nn.Module, call: dict[str, Any]) -> VideoLayout:
    # [reference-image frame, the segment's frames]: pose latents are added to frames 1.., no extra tokens.
    pose = call.get("pose_hidden_states")
    frames = call["hidden_states"].shape[2]
    if pose is not None and pose.shape[2] + 1 != frames:
        raise ValueError(
            f"wan_animate: hidden_states has {frames} latent frames but pose_hidden_states {pose.shape[2]}; "
            "dit-sparse expects the reference frame followed by one frame per pose frame"
        )
    return _wan_layout(transformer, call)


def _cosmos_layout(transformer: torch.nn.Module, call: dict[str, Any]) -> VideoLayout:
    # Video tokens only; the condition and padding masks are input channels, not tokens.
    _, _, frames, height, width = call["hidden_states"].shape  # (B, C, F, H, W)
    p_t, p_h, p_w = transformer.config.patch_size
    if frames % p_t or height % p_h or width % p_w:
        raise ValueError(
            f"cosmos: latents of {frames} x {height} x {width} do not divide into patches {p_t} x {p_h} x {p_w}"
        )
    return VideoLayout(frames // p_t, height // p_h, width // p_w)


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


def _attn1_of_blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """``blocks[i].attn1``: the self-attention of Wan-style blocks."""
    return [block.attn1 for block in transformer.blocks]


def _attn1_of_transformer_blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """``transformer_blocks[i].attn1``: the self-attention of CogVideoX-, LTX-, Mochi- and Cosmos-style blocks."""
    return [block.attn1 for block in transformer.transformer_blocks]


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="wan",
        transformer_classes=("WanTransformer3DModel",),
        self_attention=_attn1_of_blocks,
        read_layout=_wan_layout,
        sink_frames=1,
        context_parallel=True,
    ),
    ModelSpec(
        # SkyReels-V2 (T2V, I2V, diffusion forcing): Wan's blocks; diffusion forcing gives per-frame timesteps.
        name="skyreels_v2",
        transformer_classes=("SkyReelsV2Transformer3DModel",),
        self_attention=_attn1_of_blocks,
        read_layout=_skyreels_v2_layout,
        sink_frames=1,
    ),
    ModelSpec(
        # Wan VACE: the control blocks (run first) self-attend over control tokens on the video's grid, with the
        # video's RoPE; their hints are added to the main blocks' hidden states and change no sequence.
        name="wan_vace",
        transformer_classes=("WanVACETransformer3DModel",),
        self_attention=lambda t: [block.attn1 for block in t.vace_blocks] + _attn1_of_blocks(t),
        read_layout=_wan_layout,
        sink_frames=1,
    ),
    ModelSpec(
        # Wan 2.2 Animate: Wan's blocks over [reference frame, video]; face motion enters through dense per-frame
        # face-adapter cross-attention.
        name="wan_animate",
        transformer_classes=("WanAnimateTransformer3DModel",),
        self_attention=_attn1_of_blocks,
        read_layout=_wan_animate_layout,
        sink_frames=1,  # the clean reference-image frame every frame conditions on
    ),
    ModelSpec(
        name="hunyuan_video",
        transformer_classes=("HunyuanVideoTransformer3DModel",),
        self_attention=lambda t: [b.attn for b in t.transformer_blocks] + [b.attn for b in t.single_transformer_blocks],
        read_layout=_hunyuan_layout,
    ),
    ModelSpec(
        # HunyuanVideo 1.5: dual-stream blocks only; the token refiner's text-only attention stays dense.
        name="hunyuan_video15",
        transformer_classes=("HunyuanVideo15Transformer3DModel",),
        self_attention=lambda t: [block.attn for block in t.transformer_blocks],
        read_layout=_hunyuan_video15_layout,
        sink_frames=1,  # image-to-video conditions latent frame 0 (image latent + mask channel), as Wan I2V
    ),
    ModelSpec(
        # LTX-Video 0.9.x: video-only self-attention attn1 (T5 text in cross-attention attn2).
        name="ltx_video",
        transformer_classes=("LTXVideoTransformer3DModel",),
        self_attention=_attn1_of_transformer_blocks,
        read_layout=_ltx_video_layout,
        sink_frames=1,  # latent frame 0 encodes pixel frame 0 alone: the clean image of image-to-video
        context_parallel=True,
    ),
    ModelSpec(
        # LTX-2: audio and video; only the video self-attention attn1 is sparse, audio self-attention, text and
        # audio-video cross-attention stay dense.
        name="ltx2",
        transformer_classes=("LTX2VideoTransformer3DModel",),
        self_attention=_attn1_of_transformer_blocks,
        read_layout=_ltx2_layout,
        sink_frames=1,
    ),
    ModelSpec(
        # Cosmos 1.0, Predict2 / 2.5, Transfer2.5: video-only attn1. Its processor calls dispatch_attention_fn
        # without its own backend: dit-sparse becomes diffusers' active backend while attn1 runs.
        name="cosmos",
        transformer_classes=("CosmosTransformer3DModel",),
        self_attention=_attn1_of_transformer_blocks,
        read_layout=_cosmos_layout,
        bridge="global",
        sink_frames=1,  # video-to-world's conditioning frames are the first latent frames of the grid
    ),
    ModelSpec(
        name="cogvideox",
        transformer_classes=("CogVideoXTransformer3DModel",),
        self_attention=_attn1_of_transformer_blocks,
        read_layout=_cogvideox_layout,
        bridge="sdpa",
    ),
    ModelSpec(
        # Mochi: joint [video, text] attention in every block (the last block's text output is dropped, its
        # attention still joint); MochiAttnProcessor2_0 calls SDPA itself, once per sample, without padding.
        name="mochi",
        transformer_classes=("MochiTransformer3DModel",),
        self_attention=_attn1_of_transformer_blocks,
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
