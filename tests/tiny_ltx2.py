"""Tiny randomly initialized LTX-2 pipelines (audio + video), built offline from configs.

Every component is built from a config (no hub ids): the LTX2VideoTransformer3DModel, the LTX-2 video VAE, the
audio VAE and vocoder, the text connectors and a tiny Gemma-3 text encoder (Gemma3ForConditionalGeneration with a
one-layer SigLIP vision tower that no call uses), with the word-level tokenizer of tiny_models. Each factory
seeds torch itself, so every call builds identical weights.

Pixels -> latents -> tokens, for ``LTX2_CALL``:

- video: 9 frames of 288 x 224 px -> VAE (x32 spatial, x4 temporal, causal: pixel frame 0 alone is latent
  frame 0) -> latents 3 x 9 x 7 -> transformer patch (1, 1, 1) -> 3 x 9 x 7 = 189 video tokens, packed to
  (B, 189, C) in (F, H, W) order; ``num_frames=17`` gives 5 latent frames (315 tokens). The real LTX-2 VAE is
  x8 in time; x4 makes 5 latent frames from few pixel frames. It must be x32 spatial: the pipelines take
  heights and widths divisible by 32, and a smaller factor would make every frame a multiple of 16 tokens.
- audio: num_frames / frame_rate seconds at 16 kHz, hop 160, x4 -> 25 audio latents per second (9 for
  ``LTX2_CALL``), in their own self-attention (audio_attn1), which dit-sparse leaves dense.
- text: 16 Gemma tokens (left padded) -> connectors -> 16 tokens for the video and the audio cross-attention.

Two transformer configs: ``"2.3"`` (default; LTX-2.3's gated attention, prompt cross-attention modulation,
per-modality connectors and perturbed attention for STG) and ``"2.0"`` (caption projection, no gates). The calls
keep the pipelines' LTX-2.3 defaults (STG, modality guidance), so each step makes 3 transformer calls: cond and
uncond batched, then STG and modality isolation on the positive batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2ConditionPipeline,
    LTX2DFRPipeline,
    LTX2DFRTemporalRefinePipeline,
    LTX2HDRPipeline,
    LTX2ImageToVideoPipeline,
    LTX2InContextPipeline,
    LTX2Pipeline,
    LTX2VideoTransformer3DModel,
    LTXEulerAncestralRFScheduler,
)
from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel, LTX2TextConnectors, LTX2Vocoder
from tiny_models import NEGATIVE_PROMPT, PROMPTS, SEED, VOCAB_SIZE, llama_tokenizer
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

TEXT_LEN = 16  # Gemma tokens (max_sequence_length)
TEXT_DIM = 32  # Gemma hidden size
TEXT_LAYERS = 2  # -> 3 hidden states (embeddings + 2 layers) stacked for the connectors
LATENT_CHANNELS = 4  # video VAE latent channels = transformer in_channels (patch 1)
HEADS, HEAD_DIM = 2, 16  # video: inner dim 32
AUDIO_HEADS, AUDIO_HEAD_DIM = 2, 8  # audio: inner dim 16
AUDIO_LATENT_CHANNELS, AUDIO_MEL_BINS = 2, 8  # latent mel bins 8 / 4 = 2 -> 2 x 2 = 4 audio features per token

LTX2_CALL: dict[str, Any] = {
    "height": 288,  # 288 / 32 (VAE) / 1 (patch) = 9 token rows
    "width": 224,  # 224 / 32 / 1 = 7 token columns
    "num_frames": 9,  # (9 - 1) / 4 + 1 = 3 latent frames -> 3 x 9 x 7 = 189 tokens
    "frame_rate": 24.0,
    "num_inference_steps": 2,
    "guidance_scale": 3.0,  # CFG: negative and positive prompts batched together
    "spatio_temporal_guidance_blocks": [1],  # the default perturbs block 28 of LTX-2.3's 48; tiny has 2
    "max_sequence_length": TEXT_LEN,
    "output_type": "np",
}
# (latent frames, token rows, token columns) of LTX2_CALL: 189 tokens, not a multiple of 16.
TOKEN_GRID = (3, 9, 7)

# DFR (LTX-2.5's distilled "dynamic frame rate" pipelines): no CFG (one transformer call per step on the distilled
# sigmas), keyframe slots appended after the canvas, and only video_coords (no num_frames/height/width) in the
# transformer call. 9 frames -> 3 latent frames, padded to 4, + 1 slot frame = 5 x 63 tokens.
DFR_CALL: dict[str, Any] = {
    "height": 288,
    "width": 224,
    "num_frames": 9,
    "frame_rate": 24.0,
    "sigmas": [1.0, 0.5],  # 2 steps (the pipeline default is the 8-step distilled schedule)
    "max_sequence_length": TEXT_LEN,
    "output_type": "np",
}


def tiny_gemma3_encoder() -> Gemma3ForConditionalGeneration:
    torch.manual_seed(SEED)
    text = Gemma3TextConfig(
        vocab_size=VOCAB_SIZE + 3, hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256, sliding_window=16,
        pad_token_id=0, bos_token_id=3, eos_token_id=1,
    )  # fmt: skip
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)  # fmt: skip
    # Image tokens sit past the word vocabulary; the pipelines never pass images to the text encoder.
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          boi_token_index=VOCAB_SIZE, eoi_token_index=VOCAB_SIZE + 1,
                          image_token_index=VOCAB_SIZE + 2)  # fmt: skip
    return Gemma3ForConditionalGeneration(config).eval()


def tiny_ltx2_transformer(version: str = "2.3", keyframes: bool = False) -> LTX2VideoTransformer3DModel:
    """``keyframes=True`` adds the learned keyframe-token embedding that the DFR pipelines need (LTX-2.5)."""
    torch.manual_seed(SEED)
    if version == "2.3":
        extra = dict(gated_attn=True, cross_attn_mod=True, audio_gated_attn=True, audio_cross_attn_mod=True,
                     use_prompt_embeddings=False, perturbed_attn=True)  # fmt: skip
    elif version == "2.0":
        extra = dict(use_prompt_embeddings=True, caption_channels=TEXT_DIM)
    else:
        raise ValueError(f"version must be '2.3' or '2.0', got {version!r}")
    model = LTX2VideoTransformer3DModel(
        in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, patch_size=1, patch_size_t=1,
        num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, cross_attention_dim=HEADS * HEAD_DIM,
        vae_scale_factors=(4, 32, 32), audio_in_channels=AUDIO_LATENT_CHANNELS * AUDIO_MEL_BINS // 4,
        audio_out_channels=AUDIO_LATENT_CHANNELS * AUDIO_MEL_BINS // 4, audio_num_attention_heads=AUDIO_HEADS,
        audio_attention_head_dim=AUDIO_HEAD_DIM, audio_cross_attention_dim=AUDIO_HEADS * AUDIO_HEAD_DIM,
        num_layers=2, rope_type="split", rope_double_precision=False, use_keyframes_abs_pos_embedding=keyframes,
        **extra,
    )  # fmt: skip
    if keyframes:  # zero-initialized in diffusers; random here so that it acts on the keyframe tokens
        torch.nn.init.normal_(model.keyframes_abs_pos_embedding, std=0.1)
    return model.eval()


def tiny_ltx2_connectors(version: str = "2.3") -> LTX2TextConnectors:
    torch.manual_seed(SEED)
    if version == "2.3":  # per-modality projections to the video and audio widths
        extra = dict(per_modality_projections=True, video_hidden_dim=HEADS * HEAD_DIM,
                     audio_hidden_dim=AUDIO_HEADS * AUDIO_HEAD_DIM, proj_bias=True,
                     video_gated_attn=True, audio_gated_attn=True)  # fmt: skip
        audio_heads, audio_dim = AUDIO_HEADS, AUDIO_HEAD_DIM
    else:  # one projection to the Gemma width; the transformer's caption projections do the rest
        extra, audio_heads, audio_dim = {}, 4, 8
    return LTX2TextConnectors(
        caption_channels=TEXT_DIM, text_proj_in_factor=TEXT_LAYERS + 1,
        video_connector_num_attention_heads=HEADS, video_connector_attention_head_dim=HEAD_DIM,
        video_connector_num_layers=1, video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=audio_heads, audio_connector_attention_head_dim=audio_dim,
        audio_connector_num_layers=1, audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32, rope_double_precision=False, rope_type="split", **extra,
    ).eval()  # fmt: skip


def tiny_ltx2_vae() -> AutoencoderKLLTX2Video:
    # Patch 8 x two spatio-temporal downsamples: x32 spatial (as LTX-2), x4 temporal (LTX-2: x8).
    torch.manual_seed(SEED)
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, block_out_channels=(8, 8),
        down_block_types=("LTX2VideoDownBlock3D",) * 2, decoder_block_out_channels=(8, 8),
        layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1), spatio_temporal_scaling=(True, True),
        decoder_spatio_temporal_scaling=(True, True), decoder_inject_noise=(False, False, False),
        downsample_type=("spatiotemporal",) * 2, upsample_type=("spatiotemporal",) * 2,
        upsample_residual=(False, False), upsample_factor=(1, 1), timestep_conditioning=False, patch_size=8,
        patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )  # fmt: skip
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    return vae.eval()


def tiny_ltx2_audio_vae() -> AutoencoderKLLTX2Audio:
    torch.manual_seed(SEED)
    return AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=AUDIO_LATENT_CHANNELS, norm_type="pixel", causality_axis="height",
        dropout=0.0, mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True,
        mel_bins=AUDIO_MEL_BINS,
    ).eval()  # fmt: skip


def tiny_ltx2_vocoder() -> LTX2Vocoder:
    torch.manual_seed(SEED)
    return LTX2Vocoder(
        in_channels=2 * AUDIO_MEL_BINS, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4],
        upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1, output_sampling_rate=16000,
    ).eval()  # fmt: skip


def tiny_ltx2_scheduler() -> FlowMatchEulerDiscreteScheduler:
    # The pipelines compute mu from the video token count with base/max shift 0.95/2.05 (LTX-2's values).
    return FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024, max_image_seq_len=4096
    )


def tiny_ltx2_components(
    version: str = "2.3", transformer: torch.nn.Module | None = None, scheduler: Any = None
) -> dict[str, Any]:
    """The components every LTX-2 pipeline takes (tokenizer, Gemma-3, connectors, VAEs, vocoder, transformer)."""
    return {
        "scheduler": scheduler if scheduler is not None else tiny_ltx2_scheduler(),
        "vae": tiny_ltx2_vae(),
        "audio_vae": tiny_ltx2_audio_vae(),
        "text_encoder": tiny_gemma3_encoder(),
        "tokenizer": llama_tokenizer(),  # prepends <s> like Gemma's <bos>; the pipelines pad on the left
        "connectors": tiny_ltx2_connectors(version),
        "transformer": transformer if transformer is not None else tiny_ltx2_transformer(version),
        "vocoder": tiny_ltx2_vocoder(),
    }


def _pipeline(pipeline_class, version: str = "2.3", **extra):
    pipe = pipeline_class(**tiny_ltx2_components(version), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_ltx2_pipeline(version: str = "2.3") -> LTX2Pipeline:
    return _pipeline(LTX2Pipeline, version)


def tiny_ltx2_i2v_pipeline(version: str = "2.3") -> LTX2ImageToVideoPipeline:
    return _pipeline(LTX2ImageToVideoPipeline, version)


def tiny_ltx2_condition_pipeline(version: str = "2.3") -> LTX2ConditionPipeline:
    return _pipeline(LTX2ConditionPipeline, version)


def tiny_ltx2_in_context_pipeline(version: str = "2.3") -> LTX2InContextPipeline:
    return _pipeline(LTX2InContextPipeline, version)


def tiny_ltx2_hdr_pipeline(version: str = "2.3") -> LTX2HDRPipeline:
    return _pipeline(LTX2HDRPipeline, version)


def tiny_ltx2_dfr_pipeline() -> LTX2DFRPipeline:
    # The sigmas are given, so the scheduler must not shift them (no dynamic shifting).
    components = tiny_ltx2_components("2.3", tiny_ltx2_transformer("2.3", keyframes=True),
                                      FlowMatchEulerDiscreteScheduler())  # fmt: skip
    pipe = LTX2DFRPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_ltx2_temporal_upsampler() -> LTX2LatentUpsamplerModel:
    torch.manual_seed(SEED)
    return LTX2LatentUpsamplerModel(in_channels=LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1, dims=3,
                                    spatial_upsample=False, temporal_upsample=True).eval()  # fmt: skip


def tiny_ltx2_dfr_temporal_refine_pipeline() -> LTX2DFRTemporalRefinePipeline:
    """Refines a DFR stage's latent canvas at twice the frame rate, one temporal tile per transformer pass.

    It takes one prompt's stage outputs (see ``refine_kwargs``): the canvas is not prompt-batched, and there is
    no CFG.
    """
    components = tiny_ltx2_components("2.3", tiny_ltx2_transformer("2.3", keyframes=True),
                                      LTXEulerAncestralRFScheduler(eta=0.5))  # fmt: skip
    pipe = LTX2DFRTemporalRefinePipeline(**components, temporal_latent_upsampler=tiny_ltx2_temporal_upsampler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_image(height: int = LTX2_CALL["height"], width: int = LTX2_CALL["width"], seed: int = 1) -> PIL.Image.Image:
    """A fixed random RGB image of the call's size (an I2V image or a condition frame)."""
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def tiny_video(frames: int = 5) -> list[PIL.Image.Image]:
    """A fixed random reference video (IC-LoRA, HDR): 5 pixel frames -> 2 latent frames -> 2 x 63 tokens."""
    return [tiny_image(seed=seed) for seed in range(frames)]


def call_kwargs(
    call: dict[str, Any] = LTX2_CALL,
    prompt: str | list[str] = PROMPTS,
    *,
    seed: int = SEED,
    negative_prompt: str | list[str] | None = NEGATIVE_PROMPT,
    **overrides: Any,
) -> dict[str, Any]:
    """Pipeline kwargs: ``call`` + the prompts (two: batch 2) + one negative per prompt + a seeded CPU generator.

    ``negative_prompt=None`` leaves it out (the DFR pipelines take none: they run without CFG).
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if isinstance(negative_prompt, str):
        negative_prompt = [negative_prompt] * len(prompts)
    kwargs = dict(call, prompt=prompts)
    if negative_prompt is not None:
        kwargs["negative_prompt"] = negative_prompt
    kwargs["generator"] = torch.Generator("cpu").manual_seed(seed)
    kwargs.update(overrides)
    return kwargs


def refine_kwargs(stage: Any, prompt: str = PROMPTS[0], **overrides: Any) -> dict[str, Any]:
    """LTX2DFRTemporalRefinePipeline kwargs that refine ``stage`` (an LTX2DFRPipeline output for ``prompt``).

    The stage's latent canvas of F latent frames is (F - 1) * 4 + 1 pixel frames; the refine pipeline upsamples
    it x2 in time (2F - 1 latent frames) and appends the carried keyframes and one slot frame.
    """
    kwargs = dict(
        prompt=prompt, latents=stage.frames, keyframes_latents=stage.keyframes,
        keyframe_positions=stage.keyframe_positions, audio_latents=stage.audio,
        height=DFR_CALL["height"], width=DFR_CALL["width"], num_frames=(stage.frames.shape[2] - 1) * 4 + 1,
        frame_rate=DFR_CALL["frame_rate"], sigmas=[0.75, 0.5], max_sequence_length=TEXT_LEN,
        output_type="np", generator=torch.Generator("cpu").manual_seed(SEED),
    )  # fmt: skip
    kwargs.update(overrides)
    return kwargs
