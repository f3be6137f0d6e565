"""Tiny randomly initialized LTX-Video pipelines, built offline (no hub ids, no downloads).

``LTXVideoTransformer3DModel`` + ``AutoencoderKLLTXVideo`` + tiny_models' T5 and word tokenizer +
``FlowMatchEulerDiscreteScheduler``, for the three pipelines of ``diffusers/pipelines/ltx/``: ``LTXPipeline``
(text to video), ``LTXImageToVideoPipeline`` (first frame given) and ``LTXConditionPipeline`` (images or videos
at any frame; LTX-Video 0.9.5+).

How pixels become tokens (the tiny VAE keeps the real compression, /32 in space and /8 in time):

- 17 frames of 288 x 224 px -> latents (17 - 1) / 8 + 1 = 3 frames of 9 x 7 (VAE patch 4, then three 2 x 2 x 2
  down-blocks) -> the pipeline packs them to (B, F * H * W, C) tokens with patch 1 x 1 x 1, as in every released
  model (the transformer itself never patchifies) -> 3 x 9 x 7 = 189 tokens (``TOKEN_GRID``).
- ``num_frames=33`` -> 5 latent frames -> 5 x 9 x 7 = 315 tokens. Neither count is a multiple of 16.
- ``LTX_CONDITION_CALL`` (batch 1): a condition image at pixel frame 16 (``frame_index > 0``) is encoded to one
  latent frame of 9 x 7 = 63 tokens that the pipeline PREPENDS to the video tokens (63 + 189, or 63 + 315).
- ``LTX_CONDITION_FIRST_FRAME_CALL`` (batch 2): a condition at frame 0 replaces latent frame 0 and adds no token.

The 16 T5 text tokens go to cross-attention only; the self-attention sequence holds video (and prefix) tokens.
Build the call arguments with tiny_models' ``call_kwargs``, e.g. ``pipe(**call_kwargs(LTX_I2V_CALL, seed=0))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    FlowMatchEulerDiscreteScheduler,
    LTXConditionPipeline,
    LTXImageToVideoPipeline,
    LTXPipeline,
    LTXVideoTransformer3DModel,
)
from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition
from tiny_models import NEGATIVE_PROMPT, PROMPTS, SEED, TEXT_DIM, TEXT_LEN, t5_tokenizer, tiny_t5_encoder

LTX_LATENT_CHANNELS = 8  # the real VAE has 128
HEIGHT, WIDTH = 288, 224  # / 32 (VAE) / 1 (patch) -> 9 x 7 tokens per latent frame
TOKEN_GRID = (3, 9, 7)  # (latent frames, token rows, token columns) of the default 17-frame calls
CONDITION_FRAME_INDEX = 16  # pixel frame of LTX_CONDITION_CALL's image (> 0: its tokens are a prefix)


def condition_image(seed: int = SEED) -> PIL.Image.Image:
    """A seeded random RGB image at the calls' resolution."""
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))


_COMMON: dict[str, Any] = {
    "height": HEIGHT,
    "width": WIDTH,
    "num_frames": 17,  # (17 - 1) / 8 + 1 = 3 latent frames
    "frame_rate": 25,
    "num_inference_steps": 2,
    "guidance_scale": 3.0,  # CFG on: uncond and cond run as one transformer call of batch 2 x B
    "max_sequence_length": TEXT_LEN,
    "output_type": "np",
}

# LTXPipeline: batch 2 (the two prompts call_kwargs adds).
LTX_CALL: dict[str, Any] = dict(_COMMON)

# LTXImageToVideoPipeline: batch 2, one first-frame image per prompt; its tokens get timestep 0.
LTX_I2V_CALL: dict[str, Any] = _COMMON | {"image": [condition_image(0), condition_image(1)]}

# LTXConditionPipeline with a condition at frame_index > 0: ONE prompt (diffusers encodes the condition at batch 1
# and concatenates it to batch-B latents, which fails for B > 1), so the call fixes its prompts.
LTX_CONDITION_CALL: dict[str, Any] = _COMMON | {
    "prompt": PROMPTS[0],
    "negative_prompt": NEGATIVE_PROMPT,
    "conditions": [LTXVideoCondition(image=condition_image(2), frame_index=CONDITION_FRAME_INDEX)],
    "image_cond_noise_scale": 0.15,
}

# LTXConditionPipeline, batch 2, a condition at frame_index 0 (I2V-like): the layout is read from video_coords.
LTX_CONDITION_FIRST_FRAME_CALL: dict[str, Any] = _COMMON | {
    "conditions": [LTXVideoCondition(image=condition_image(2), frame_index=0)],
    "image_cond_noise_scale": 0.15,
}


def tiny_ltx_transformer() -> LTXVideoTransformer3DModel:
    # 2 layers, 2 heads of 16 (inner 32); cross_attention_dim must equal the inner dim.
    torch.manual_seed(SEED)
    model = LTXVideoTransformer3DModel(
        in_channels=LTX_LATENT_CHANNELS, out_channels=LTX_LATENT_CHANNELS, patch_size=1, patch_size_t=1,
        num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32, num_layers=2, caption_channels=TEXT_DIM,
    )  # fmt: skip
    return model.eval()


def tiny_ltx_vae() -> AutoencoderKLLTXVideo:
    # Patch 4 and three spatio-temporal down-blocks: x32 in space, x8 in time (causal), as the real VAE.
    torch.manual_seed(SEED)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=LTX_LATENT_CHANNELS, block_out_channels=(4, 4, 4, 4),
        decoder_block_out_channels=(4, 4, 4, 4), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False,
        patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )  # fmt: skip
    return vae.eval()


def ltx_scheduler() -> FlowMatchEulerDiscreteScheduler:
    # As Lightricks/LTX-Video's scheduler config: a resolution-dependent shift and terminal sigma 0.1.
    return FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
        max_image_seq_len=4096, shift_terminal=0.1,
    )  # fmt: skip


def _ltx_family_pipeline(pipeline_class, scheduler: FlowMatchEulerDiscreteScheduler):
    pipe = pipeline_class(
        scheduler=scheduler,
        vae=tiny_ltx_vae(),
        text_encoder=tiny_t5_encoder(),
        tokenizer=t5_tokenizer(),
        transformer=tiny_ltx_transformer(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_ltx_pipeline() -> LTXPipeline:
    return _ltx_family_pipeline(LTXPipeline, ltx_scheduler())


def tiny_ltx_i2v_pipeline() -> LTXImageToVideoPipeline:
    return _ltx_family_pipeline(LTXImageToVideoPipeline, ltx_scheduler())


def tiny_ltx_condition_pipeline() -> LTXConditionPipeline:
    # The condition pipeline passes explicit timesteps and no `mu`, which a dynamic-shifting scheduler refuses.
    return _ltx_family_pipeline(LTXConditionPipeline, FlowMatchEulerDiscreteScheduler(shift_terminal=0.1))


# name -> (pipeline factory, call defaults)
LTX_PIPELINES: dict[str, tuple[Any, dict[str, Any]]] = {
    "ltx": (tiny_ltx_pipeline, LTX_CALL),
    "ltx_i2v": (tiny_ltx_i2v_pipeline, LTX_I2V_CALL),
    "ltx_condition": (tiny_ltx_condition_pipeline, LTX_CONDITION_CALL),
    "ltx_condition_first_frame": (tiny_ltx_condition_pipeline, LTX_CONDITION_FIRST_FRAME_CALL),
}
