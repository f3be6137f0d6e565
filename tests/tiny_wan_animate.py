"""A tiny randomly initialized Wan 2.2 Animate pipeline (``WanAnimatePipeline``), built offline.

Everything is built from configs (no hub ids, no downloads); each factory seeds torch itself. The Wan VAE, the
UMT5 encoder and the word-level tokenizer are those of ``tiny_models``; the CLIP vision encoder and its image
processor are made here in memory.

How pixels become tokens (``WAN_ANIMATE_CALL``, one window of 9 frames):

- reference (character) image 144 x 112 px -> VAE (x8) -> 1 latent frame of 18 x 14;
- pose video, 9 frames of 144 x 112 px -> VAE (x4 in time) -> (9 - 1) / 4 + 1 = 3 latent frames of 18 x 14;
- the noisy latents have 3 + 1 frames; the pipeline concatenates along channels the reference image latent
  (frame 0) and the previous-window conditioning latents (frames 1..3), each with a 4-channel mask, so the
  transformer's hidden_states is (B, 4 + 4 + 4 = 12, 4, 18, 14);
- patch (1, 2, 2) -> 4 x 9 x 7 = 252 self-attention tokens, frame-major, the reference frame first; the pose
  latents are added to the tokens of frames 1..3 after their own patch embedding (no extra tokens);
- face video, 9 frames of 16 x 16 px (motion_encoder_size) -> motion and face encoders -> per-frame face tokens
  that only the face adapters cross-attend to (dense).

``WanAnimatePipeline`` has no ``num_frames``: the video is ``len(pose_video)`` frames long, generated in windows of
``segment_frame_length`` frames. :func:`call_kwargs` turns ``num_frames=N`` into N-frame pose and face videos and,
unless ``segment_frame_length`` is given, one window of N frames: ``num_frames=17`` gives 5 latent frames + the
reference frame = 6 x 9 x 7 = 378 tokens (:func:`token_grid`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import UniPCMultistepScheduler, WanAnimatePipeline, WanAnimateTransformer3DModel
from tiny_models import (
    CLIP_DIM,
    NEGATIVE_PROMPT,
    PROMPTS,
    SEED,
    TEXT_DIM,
    TEXT_LEN,
    WAN_LATENT_CHANNELS,
    t5_tokenizer,
    tiny_clip_image_processor,
    tiny_clip_vision_encoder,
    tiny_umt5_encoder,
    tiny_wan_vae,
)

HEIGHT, WIDTH = 144, 112  # 144 / 8 (VAE) / 2 (patch) = 9 token rows; 112 / 8 / 2 = 7 token columns
FACE_SIZE = 16  # motion_encoder_size: face frames are resized to 16 x 16 (the real model: 512)

WAN_ANIMATE_CALL: dict[str, Any] = {
    "height": HEIGHT,
    "width": WIDTH,
    "num_frames": 9,  # pose/face video length (call_kwargs): 3 latent frames + the reference frame
    "num_inference_steps": 2,
    "guidance_scale": 3.0,  # CFG on (the pipeline's default 1.0 turns it off)
    "max_sequence_length": TEXT_LEN,
    "mode": "animate",
    "output_type": "np",
}

# (frames in the self-attention sequence, token rows, token columns) for WAN_ANIMATE_CALL: the reference image
# frame + 3 video latent frames = 252 tokens, not a multiple of 16.
TOKEN_GRID = (4, 9, 7)


def token_grid(num_frames: int, height: int = HEIGHT, width: int = WIDTH) -> tuple[int, int, int]:
    """The self-attention grid of one window of ``num_frames`` frames: its latent frames + the reference frame."""
    return ((num_frames - 1) // 4 + 1 + 1, height // 16, width // 16)


def tiny_wan_animate_transformer() -> WanAnimateTransformer3DModel:
    """2 Wan blocks of 2 heads x 16 and a face adapter after each (``inject_face_latents_blocks=1``: with the
    real model's 5 and only 2 blocks there would be no adapter, and block 0 would still look one up).

    Cross-attention has no separate image key/value projections (``added_kv_proj_dim=None``): the real model's
    5120 makes its processor take the last 512 context tokens as text, hard-coded, which needs
    ``max_sequence_length=512``. Self-attention is the same either way.
    """
    torch.manual_seed(SEED)
    model = WanAnimateTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, latent_channels=WAN_LATENT_CHANNELS,
        in_channels=2 * WAN_LATENT_CHANNELS + 4, out_channels=WAN_LATENT_CHANNELS, text_dim=TEXT_DIM, freq_dim=32,
        ffn_dim=64, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", image_dim=CLIP_DIM,
        rope_max_seq_len=64,
        # motion encoder: 16 x 16 face -> conv 1x1 -> residual downsamples 16 -> 8 -> 4 -> conv 4x4 -> 1 x 1
        motion_encoder_channel_sizes={"4": 8, "8": 8, "16": 8}, motion_encoder_size=FACE_SIZE,
        motion_style_dim=16, motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16,
        face_encoder_num_heads=2, inject_face_latents_blocks=1, motion_encoder_batch_size=8,
    )  # fmt: skip
    return model.eval()


def tiny_wan_animate_pipeline() -> WanAnimatePipeline:
    # UniPC on shifted flow-matching sigmas: the pipeline's scheduler class (shift 5 as Wan 14B at 720p).
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipe = WanAnimatePipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=tiny_umt5_encoder(),
        vae=tiny_wan_vae(),
        scheduler=scheduler,
        image_processor=tiny_clip_image_processor(),
        image_encoder=tiny_clip_vision_encoder(),
        transformer=tiny_wan_animate_transformer(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def frames(n: int, height: int = HEIGHT, width: int = WIDTH, *, seed: int) -> list[PIL.Image.Image]:
    """``n`` random RGB frames, the same for the same seed (a video, or with ``n=1`` an image)."""
    rng = np.random.default_rng(seed)
    return [PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(n)]


def call_kwargs(
    call: dict[str, Any] = WAN_ANIMATE_CALL,
    prompt: str | list[str] = PROMPTS,
    *,
    seed: int = SEED,
    negative_prompt: str | list[str] | None = NEGATIVE_PROMPT,
    **overrides: Any,
) -> dict[str, Any]:
    """Pipeline keyword arguments: ``call`` + prompts + reference image, pose and face videos + a fresh generator.

    ``num_frames`` (from ``call`` or ``overrides``) is not a pipeline argument: it is the length of the pose and
    face videos and, unless ``segment_frame_length`` is given, of the one window. A string ``negative_prompt`` is
    repeated once per prompt (the pipeline needs the same type as ``prompt``). ``overrides`` win.
    """
    kwargs = dict(call) | overrides
    num_frames = kwargs.pop("num_frames")
    kwargs.setdefault("segment_frame_length", num_frames)
    height, width = kwargs["height"], kwargs["width"]
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if isinstance(negative_prompt, str):
        negative_prompt = [negative_prompt] * len(prompts)
    kwargs.setdefault("prompt", prompts)
    kwargs.setdefault("negative_prompt", negative_prompt)
    kwargs.setdefault("image", frames(1, height, width, seed=1)[0])
    kwargs.setdefault("pose_video", frames(num_frames, height, width, seed=2))
    kwargs.setdefault("face_video", frames(num_frames, FACE_SIZE, FACE_SIZE, seed=3))
    kwargs["generator"] = torch.Generator("cpu").manual_seed(seed)
    return kwargs
