"""Tiny randomly initialized NVIDIA Cosmos pipelines (CosmosTransformer3DModel), built offline.

Built from configs and seeded like tests/tiny_models.py, with its word-level tokenizer, tiny T5 encoder and tiny
Wan VAE. Every Cosmos pipeline needs a safety checker: given none, its constructor builds
``cosmos_guardrail.CosmosSafetyChecker`` (not installed here; several GB of guardrail models elsewhere), and
``__call__`` refuses to run without one. Every factory passes ``TinySafetyChecker``, an offline stand-in
component (no diffusers class is patched).

Token grids of the ``*_CALL`` defaults (patch (1, 2, 2) everywhere; none is a multiple of 16 tokens):

- Cosmos 1.0 (text2world, video2world): the tiny AutoencoderKLCosmos is 4x spatial and 4x temporal (the real
  CV8x8x8 is 8x / 8x): 9 frames of 48 x 80 px -> latents 3 x 12 x 20 -> tokens 3 x 6 x 10 = 180;
  17 frames -> 5 x 6 x 10 = 300.
- Predict2 video2world and Predict2.5 (text2world, video2world): the Wan 2.1 VAE (8x spatial, 4x temporal):
  9 frames of 144 x 112 px -> latents 3 x 18 x 14 -> tokens 3 x 9 x 7 = 189; 17 frames -> 5 x 9 x 7 = 315.
- Predict2 text2image: the same VAE and one frame (the pipeline fixes num_frames = 1): 304 x 240 px ->
  latents 1 x 38 x 30 -> tokens 1 x 19 x 15 = 285.

The self-attention sequence is the video tokens only, in (frame, row, column) order. Video2world conditions on
the first latent frame(s) of that same grid and marks them with a condition-mask channel (in_channels = latent
+ 1), so conditioning adds channels, not tokens. Every pipeline runs CFG as two transformer calls per step
(conditional, then negative), each of the prompt batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKLCosmos,
    Cosmos2_5_PredictBasePipeline,
    Cosmos2TextToImagePipeline,
    Cosmos2VideoToWorldPipeline,
    CosmosTextToWorldPipeline,
    CosmosTransformer3DModel,
    CosmosVideoToWorldPipeline,
    EDMEulerScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from tiny_models import (
    BOS_ID,
    EOS_ID,
    NEGATIVE_PROMPT,
    PAD_ID,
    PROMPTS,
    SEED,
    TEXT_DIM,
    TEXT_LEN,
    VOCAB,
    WAN_LATENT_CHANNELS,
    call_kwargs,
    t5_tokenizer,
    tiny_t5_encoder,
    tiny_wan_vae,
)
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

# Every published config has concat_padding_mask=True, whose forward resizes the padding mask with torchvision,
# which this environment cannot load (PyPI's wheel is CUDA-built, torch here is CPU-only). The pipelines pass an
# all-zero padding mask, a constant zero channel into a bias-free patch projection: without it the model is the
# same function of the other channels, on the same token sequence. Set True where torchvision is installed.
CONCAT_PADDING_MASK = False
LATENT_CHANNELS = 4  # the tiny Cosmos VAE; Predict2 / 2.5 use the tiny Wan VAE's, also 4
assert WAN_LATENT_CHANNELS == LATENT_CHANNELS


class TinySafetyChecker(torch.nn.Module):
    """Offline stand-in for ``cosmos_guardrail.CosmosSafetyChecker``: passes every prompt and video unchanged.

    The pipelines only move it (``to``, ``device``, ``dtype``) and call ``check_text_safety`` and
    ``check_video_safety``. ``save_pretrained`` skips it, so pass a new one to ``from_pretrained``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_device_tracker", torch.zeros(1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._device_tracker.device

    @property
    def dtype(self) -> torch.dtype:
        return self._device_tracker.dtype

    def check_text_safety(self, prompt: str) -> bool:
        return True

    def check_video_safety(self, frames: np.ndarray) -> np.ndarray:
        return frames


def condition_image(height: int, width: int, seed: int = SEED) -> PIL.Image.Image:
    """A seeded RGB noise image: the conditioning frame of the video2world calls."""
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def cosmos_transformer(in_channels: int, **extra: Any) -> CosmosTransformer3DModel:
    """A seeded CosmosTransformer3DModel: 2 layers, 2 heads of 16, patch (1, 2, 2).

    ``in_channels`` is the latent channels (+ 1 condition-mask channel for video2world); ``extra`` is the
    generation-specific config (positional embedding, RoPE scale, text projection).
    """
    torch.manual_seed(SEED)
    model = CosmosTransformer3DModel(
        in_channels=in_channels, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=16,
        num_layers=2, mlp_ratio=2.0, text_embed_dim=TEXT_DIM, adaln_lora_dim=4, max_size=(16, 64, 64),
        patch_size=(1, 2, 2), concat_padding_mask=CONCAT_PADDING_MASK, **extra,
    )  # fmt: skip
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# Cosmos 1.0: learnable positional embedding + AutoencoderKLCosmos + T5 + EDM Euler
# ---------------------------------------------------------------------------------------------------------

COSMOS1_CALL: dict[str, Any] = {
    "height": 48,  # 48 / 4 (VAE) / 2 (patch) = 6 token rows
    "width": 80,  # 80 / 4 / 2 = 10 token columns
    "num_frames": 9,  # (9 - 1) / 4 + 1 = 3 latent frames -> 3 x 6 x 10 = 180 tokens
    "num_inference_steps": 2,
    "guidance_scale": 3.0,
    "fps": 30,
    "max_sequence_length": TEXT_LEN,
    "output_type": "np",
}
# Video2World on an image: latent frame 0 (a video of N frames would give (N - 1) / 4 + 1 latent frames).
COSMOS1_V2W_CALL: dict[str, Any] = COSMOS1_CALL | {"image": condition_image(48, 80)}


def _cosmos1_transformer(in_channels: int) -> CosmosTransformer3DModel:
    return cosmos_transformer(in_channels, rope_scale=(2.0, 1.0, 1.0), extra_pos_embed_type="learnable")


def tiny_cosmos1_vae() -> AutoencoderKLCosmos:
    # A 4 x 4 x 4 Haar patch and no downsampling block: 4x spatial and 4x temporal.
    torch.manual_seed(SEED)
    vae = AutoencoderKLCosmos(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, encoder_block_out_channels=(8, 8),
        decode_block_out_channels=(8, 8), attention_resolutions=(), resolution=64, num_layers=1,
        patch_size=4, patch_type="haar", scaling_factor=1.0, spatial_compression_ratio=4,
        temporal_compression_ratio=4, latents_mean=None, latents_std=None,
    )  # fmt: skip
    return vae.eval()


def _cosmos1_pipeline(pipeline_class, transformer):
    # The scheduler of the Cosmos 1.0 checkpoints (scripts/convert_cosmos_to_diffusers.py).
    scheduler = EDMEulerScheduler(
        sigma_min=0.002, sigma_max=80, sigma_data=0.5, sigma_schedule="karras", num_train_timesteps=1000,
        prediction_type="epsilon", rho=7.0, final_sigmas_type="sigma_min",
    )  # fmt: skip
    pipe = pipeline_class(
        text_encoder=tiny_t5_encoder(),
        tokenizer=t5_tokenizer(),
        transformer=transformer,
        vae=tiny_cosmos1_vae(),
        scheduler=scheduler,
        safety_checker=TinySafetyChecker(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_cosmos1_t2w_pipeline() -> CosmosTextToWorldPipeline:
    return _cosmos1_pipeline(CosmosTextToWorldPipeline, _cosmos1_transformer(LATENT_CHANNELS))


def tiny_cosmos1_v2w_pipeline() -> CosmosVideoToWorldPipeline:
    return _cosmos1_pipeline(CosmosVideoToWorldPipeline, _cosmos1_transformer(LATENT_CHANNELS + 1))


# ---------------------------------------------------------------------------------------------------------
# Cosmos Predict2: no learnable positional embedding + the Wan VAE + T5 + flow-matching Euler
# ---------------------------------------------------------------------------------------------------------

COSMOS2_CALL: dict[str, Any] = {
    "height": 144,  # 144 / 8 (VAE) / 2 (patch) = 9 token rows
    "width": 112,  # 112 / 8 / 2 = 7 token columns
    "num_inference_steps": 2,
    "guidance_scale": 3.0,
    "max_sequence_length": TEXT_LEN,
    "output_type": "np",
}
# Text2Image: one latent frame, larger so that it holds enough 16-token blocks: 1 x 19 x 15 = 285 tokens.
COSMOS2_T2I_CALL: dict[str, Any] = COSMOS2_CALL | {"height": 304, "width": 240}
# Video2World on an image: 9 frames -> 3 x 9 x 7 = 189 tokens; the image is latent frame 0.
COSMOS2_V2W_CALL: dict[str, Any] = COSMOS2_CALL | {"num_frames": 9, "fps": 16, "image": condition_image(144, 112)}


def _cosmos2_pipeline(pipeline_class, in_channels: int, rope_scale: tuple[float, float, float]):
    pipe = pipeline_class(
        text_encoder=tiny_t5_encoder(),
        tokenizer=t5_tokenizer(),
        transformer=cosmos_transformer(in_channels, rope_scale=rope_scale, extra_pos_embed_type=None),
        vae=tiny_wan_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True),  # as the Predict2 checkpoints
        safety_checker=TinySafetyChecker(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_cosmos2_t2i_pipeline() -> Cosmos2TextToImagePipeline:
    return _cosmos2_pipeline(Cosmos2TextToImagePipeline, LATENT_CHANNELS, (1.0, 4.0, 4.0))


def tiny_cosmos2_v2w_pipeline() -> Cosmos2VideoToWorldPipeline:
    return _cosmos2_pipeline(Cosmos2VideoToWorldPipeline, LATENT_CHANNELS + 1, (1.0, 3.0, 3.0))


# ---------------------------------------------------------------------------------------------------------
# Cosmos Predict2.5: text projection + the Wan VAE + Qwen2.5-VL + UniPC flow
# ---------------------------------------------------------------------------------------------------------

# The pipeline encodes a chat with the tokenizer's chat template and concatenates the normalized hidden states of
# every Qwen2.5-VL layer (2 x 32 = 64 channels here; Cosmos-Reason1-7B: 28 x 3584), which the transformer's
# crossattn_proj maps to text_embed_dim.
COSMOS25_QWEN_LAYERS = 2
# The tiny template keeps the user text only, so that a prompt fits in 16 tokens (Qwen's also writes the system
# turn and role markers).
COSMOS25_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}{% endfor %}"
)
# Text2World (no image or video): 9 frames -> 3 x 9 x 7 = 189 tokens.
COSMOS25_CALL: dict[str, Any] = COSMOS2_CALL | {"num_frames": 9}
# Video2World: the pipeline takes the video's last 4 * (2 - 1) + 1 = 5 frames (2 latent frames), pads them with
# the last one to num_frames and conditions on latent frames 0 and 1. It takes batch 1 only: one fixed prompt.
# (Image2World calls torchvision and is not built.)
COSMOS25_V2W_CALL: dict[str, Any] = COSMOS25_CALL | {
    "prompt": PROMPTS[0],
    "negative_prompt": NEGATIVE_PROMPT,
    "video": [condition_image(144, 112, seed) for seed in range(5)],
    "num_latent_conditional_frames": 2,
}


def qwen_chat_tokenizer():
    """The word-level tokenizer of tests/tiny_models.py with a chat template (it pads with <pad>, as Qwen)."""
    tokenizer = t5_tokenizer()
    tokenizer.chat_template = COSMOS25_CHAT_TEMPLATE
    return tokenizer


def tiny_qwen25_vl_encoder() -> Qwen2_5_VLForConditionalGeneration:
    torch.manual_seed(SEED)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(VOCAB), hidden_size=TEXT_DIM, intermediate_size=64,
            num_hidden_layers=COSMOS25_QWEN_LAYERS, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
            # multimodal RoPE: sections (temporal, height, width) of the 8 / 2 = 4 rotary pairs per head
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
        ),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=TEXT_DIM,
                           fullatt_block_indexes=[0]),
        image_token_id=len(VOCAB) - 1, video_token_id=len(VOCAB) - 2, vision_start_token_id=len(VOCAB) - 3,
    )  # fmt: skip
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def tiny_cosmos25_pipeline() -> Cosmos2_5_PredictBasePipeline:
    """Predict2.5: one pipeline for text2world (no image or video), image2world and video2world."""
    transformer = cosmos_transformer(
        LATENT_CHANNELS + 1, rope_scale=(1.0, 3.0, 3.0), extra_pos_embed_type=None, use_crossattn_projection=True,
        crossattn_proj_in_channels=COSMOS25_QWEN_LAYERS * TEXT_DIM, encoder_hidden_states_channels=TEXT_DIM,
    )  # fmt: skip
    scheduler = UniPCMultistepScheduler(  # as the Predict2.5 checkpoints
        use_karras_sigmas=True, use_flow_sigmas=True, prediction_type="flow_prediction", sigma_max=200.0,
        sigma_min=0.01,
    )  # fmt: skip
    pipe = Cosmos2_5_PredictBasePipeline(
        text_encoder=tiny_qwen25_vl_encoder(),
        tokenizer=qwen_chat_tokenizer(),
        transformer=transformer,
        vae=tiny_wan_vae(),
        scheduler=scheduler,
        safety_checker=TinySafetyChecker(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------

# name -> (pipeline factory, call defaults); Predict2.5 text2world and video2world are one pipeline class.
FAMILIES: dict[str, tuple[Any, dict[str, Any]]] = {
    "cosmos1_text2world": (tiny_cosmos1_t2w_pipeline, COSMOS1_CALL),
    "cosmos1_video2world": (tiny_cosmos1_v2w_pipeline, COSMOS1_V2W_CALL),
    "cosmos2_text2image": (tiny_cosmos2_t2i_pipeline, COSMOS2_T2I_CALL),
    "cosmos2_video2world": (tiny_cosmos2_v2w_pipeline, COSMOS2_V2W_CALL),
    "cosmos2_5_text2world": (tiny_cosmos25_pipeline, COSMOS25_CALL),
    "cosmos2_5_video2world": (tiny_cosmos25_pipeline, COSMOS25_V2W_CALL),
}

# (latent frames, token rows, token columns) of each default call.
TOKEN_GRIDS: dict[str, tuple[int, int, int]] = {
    "cosmos1_text2world": (3, 6, 10),
    "cosmos1_video2world": (3, 6, 10),
    "cosmos2_text2image": (1, 19, 15),
    "cosmos2_video2world": (3, 9, 7),
    "cosmos2_5_text2world": (3, 9, 7),
    "cosmos2_5_video2world": (3, 9, 7),
}

# The family's default: Cosmos 1.0 text2world.
COSMOS_CALL: dict[str, Any] = COSMOS1_CALL
TOKEN_GRID: tuple[int, int, int] = TOKEN_GRIDS["cosmos1_text2world"]


def cosmos_kwargs(name: str, *, seed: int = SEED, **overrides: Any) -> dict[str, Any]:
    """Call arguments of pipeline ``name``: its defaults (with its conditioning image or video), the two prompts
    and the negative prompt where it takes a batch, a fresh seeded generator, then ``overrides``."""
    return call_kwargs(FAMILIES[name][1], seed=seed, **overrides)
