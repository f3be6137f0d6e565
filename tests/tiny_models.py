"""Tiny randomly initialized diffusers pipelines of the supported families, built offline.

Everything is built from configs (no hub ids, no downloads): the transformers, the VAEs, the text encoders
and word-level tokenizers made in memory with the `tokenizers` library. Each factory seeds torch itself, so
every call builds identical weights. A batch-of-two call with classifier-free guidance and the matching
``*_CALL`` defaults (2 steps, output_type "np", so the tiny VAE decodes) takes 0.1-0.6 s on a 2-core CPU,
and its latent token grid is not a multiple of 64 (so the last attention block is partial):

- Wan:       9 frames, 144 x 112 px  -> latents 3 x 18 x 14 -> patch (1, 2, 2) -> 3 x 9 x 7 = 189 tokens.
- Flux:      36 x 44 px              -> latents 18 x 22 (VAE /2) -> packed 2 x 2 -> 9 x 11 = 99 tokens.
- CogVideoX: 9 frames, 144 x 112 px  -> latents 3 x 18 x 14 -> patch 2 -> 3 x 9 x 7 = 189 tokens.
- Hunyuan:   13 frames, 112 x 144 px -> latents 4 x 14 x 18 -> patch (1, 2, 2) -> 4 x 7 x 9 = 252 tokens.
- SkyReels-V2 and Wan VACE: as Wan (their transformers are Wan's, with other conditioning).
- Mochi:     13 frames, 144 x 112 px -> latents 3 x 18 x 14 (VAE /6 in time) -> patch 2 -> 3 x 9 x 7 = 189 tokens.

Text sequences are 16 tokens (T5/UMT5/Llama after the template crop) plus the pooled CLIP vector where the
family uses one. Build the call arguments with `call_kwargs`, e.g.
``pipe(**call_kwargs(WAN_CALL, ["a red circle", "a blue square"], seed=0))``.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLCogVideoX,
    AutoencoderKLHunyuanVideo,
    AutoencoderKLMochi,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
    MochiPipeline,
    MochiTransformer3DModel,
    SkyReelsV2DiffusionForcingPipeline,
    SkyReelsV2Pipeline,
    SkyReelsV2Transformer3DModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
    WanVACEPipeline,
    WanVACETransformer3DModel,
)
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (
    CLIPImageProcessorPil,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

SEED = 0
PROMPTS = ["a red circle", "a blue square"]
NEGATIVE_PROMPT = "blurry low quality"
TEXT_LEN = 16  # T5 / UMT5 / Llama text tokens, and the CLIP length where the pipeline lets us choose it
TEXT_DIM = 32  # hidden size of every tiny text encoder

# ---------------------------------------------------------------------------------------------------------
# Tokenizers: one word-level vocabulary shared by all families; each tokenizer adds its own special tokens.
# ---------------------------------------------------------------------------------------------------------

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>", "<s>", "<|startoftext|>", "<|endoftext|>"]
PAD_ID, EOS_ID, UNK_ID, BOS_ID, CLIP_BOS_ID, CLIP_EOS_ID = range(len(SPECIAL_TOKENS))
WORDS = (
    "a an the of and with in on to is are at by for from this that it video image picture photo scene "
    "red blue green yellow white black orange purple pink gray bright dark light colorful "
    "circle square triangle ball box cube cat dog bird car tree house flower sun moon sky sea water road "
    "big small large tiny moving running flying walking spinning rolling slowly quickly camera "
    "blurry low high quality bad good ugly noisy distorted static describe detailing following "
    ": , . ! ? - ( )"
).split()
VOCAB = {token: i for i, token in enumerate(SPECIAL_TOKENS + list(dict.fromkeys(WORDS)))}
VOCAB_SIZE = len(VOCAB)

# HunyuanVideo formats each prompt into a template and drops the template's leading tokens from the Llama
# hidden states; `crop_start` is the token count of the part before "{}" (the <s> token included).
HUNYUAN_PROMPT_TEMPLATE: dict[str, Any] = {"template": "describe the video : {}", "crop_start": 5}


def _word_tokenizer(
    template: str, specials: list[str], model_max_length: int, **tokens: str
) -> PreTrainedTokenizerFast:
    """A lowercasing, whitespace/punctuation-splitting word-level tokenizer with a special-token template.

    `template` is a tokenizers TemplateProcessing single-sequence template such as "$A </s>"; `tokens` are
    the PreTrainedTokenizerFast special-token arguments (pad_token, eos_token, ...).
    """
    tok = Tokenizer(WordLevel(VOCAB, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=template,
        pair=template.replace("$A", "$A $B"),
        special_tokens=[(s, VOCAB[s]) for s in specials],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length, padding_side="right", **tokens
    )


def t5_tokenizer() -> PreTrainedTokenizerFast:
    """T5 / UMT5 style: appends </s>, pads with <pad> (id 0)."""
    return _word_tokenizer("$A </s>", ["</s>"], TEXT_LEN, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def clip_tokenizer(model_max_length: int = TEXT_LEN) -> PreTrainedTokenizerFast:
    """CLIP style: <|startoftext|> ... <|endoftext|>, padded with <|endoftext|> like openai/clip-vit."""
    return _word_tokenizer(
        "<|startoftext|> $A <|endoftext|>",
        ["<|startoftext|>", "<|endoftext|>"],
        model_max_length,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    )


def llama_tokenizer() -> PreTrainedTokenizerFast:
    """Llama style: prepends <s>, pads with <pad> on the right."""
    return _word_tokenizer(
        "<s> $A", ["<s>"], 256, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


# ---------------------------------------------------------------------------------------------------------
# Text encoders
# ---------------------------------------------------------------------------------------------------------


def _t5_kwargs() -> dict[str, Any]:
    return dict(
        vocab_size=VOCAB_SIZE, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
        pad_token_id=PAD_ID, eos_token_id=EOS_ID, decoder_start_token_id=PAD_ID,
    )  # fmt: skip


def tiny_t5_encoder() -> T5EncoderModel:
    torch.manual_seed(SEED)
    return T5EncoderModel(T5Config(**_t5_kwargs(), feed_forward_proj="gated-gelu")).eval()


def tiny_umt5_encoder() -> UMT5EncoderModel:
    torch.manual_seed(SEED)
    return UMT5EncoderModel(UMT5Config(**_t5_kwargs(), feed_forward_proj="gated-gelu")).eval()


def tiny_clip_text_encoder(max_positions: int = TEXT_LEN) -> CLIPTextModel:
    torch.manual_seed(SEED)
    config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=max_positions, projection_dim=TEXT_DIM,
        pad_token_id=CLIP_EOS_ID, bos_token_id=CLIP_BOS_ID, eos_token_id=CLIP_EOS_ID,
    )  # fmt: skip
    return CLIPTextModel(config).eval()


def tiny_llama_encoder() -> LlamaModel:
    # 3 layers: HunyuanVideo takes hidden_states[-3], the output of the first decoder layer.
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
    )  # fmt: skip
    return LlamaModel(config).eval()


# ---------------------------------------------------------------------------------------------------------
# Image encoder of the image-to-video pipelines (Wan I2V, SkyReels-V2 I2V, Wan Animate): a tiny CLIP ViT
# ---------------------------------------------------------------------------------------------------------

CLIP_IMAGE_SIZE = 32  # CLIP ViT input 32 x 32, patch 8 -> 16 patches + the class token = 17 image tokens
CLIP_DIM = 32  # hidden size of the tiny CLIP vision tower = the transformer's image_dim (the real model: 1280)


def tiny_clip_vision_encoder() -> CLIPVisionModel:
    # The pipeline takes hidden_states[-2] (the penultimate layer), as Wan I2V: 17 tokens of CLIP_DIM.
    torch.manual_seed(SEED)
    config = CLIPVisionConfig(
        hidden_size=CLIP_DIM, intermediate_size=64, projection_dim=CLIP_DIM, num_hidden_layers=2,
        num_attention_heads=4, num_channels=3, image_size=CLIP_IMAGE_SIZE, patch_size=8,
    )  # fmt: skip
    return CLIPVisionModel(config).eval()


def tiny_clip_image_processor() -> CLIPImageProcessorPil:
    # The PIL backend: what CLIPImageProcessor falls back to without torchvision, chosen explicitly.
    return CLIPImageProcessorPil(
        do_resize=True, size={"shortest_edge": CLIP_IMAGE_SIZE}, do_center_crop=True,
        crop_size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE}, do_normalize=True, do_convert_rgb=True,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Wan 2.1: WanTransformer3DModel + AutoencoderKLWan + UMT5 + FlowMatchEuler
# ---------------------------------------------------------------------------------------------------------

WAN_LATENT_CHANNELS = 4
WAN_CALL: dict[str, Any] = {
    "height": 144,  # 144 / 8 (VAE) / 2 (patch) = 9 token rows
    "width": 112,  # 112 / 8 / 2 = 7 token columns
    "num_frames": 9,  # (9 - 1) / 4 + 1 = 3 latent frames -> 3 x 9 x 7 = 189 tokens
    "num_inference_steps": 2,
    "guidance_scale": 3.0,
    "max_sequence_length": TEXT_LEN,
    "output_type": "np",
}


def wan_family_transformer(transformer_class, **extra):
    """A tiny ``transformer_class`` (Wan, or a Wan-derived class taking Wan's config), seeded; ``extra``
    overrides or adds config values."""
    torch.manual_seed(SEED)
    config = dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=WAN_LATENT_CHANNELS,
        out_channels=WAN_LATENT_CHANNELS, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
    )  # fmt: skip
    model = transformer_class(**config | extra)
    return model.eval()


def tiny_wan_transformer() -> WanTransformer3DModel:
    return wan_family_transformer(WanTransformer3DModel)


def tiny_wan_vae() -> AutoencoderKLWan:
    # 4 levels: 3 spatial downsamples (x8), 2 of them also temporal (x4), as the real Wan 2.1 VAE.
    torch.manual_seed(SEED)
    vae = AutoencoderKLWan(
        base_dim=4, z_dim=WAN_LATENT_CHANNELS, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True], latents_mean=[0.0] * WAN_LATENT_CHANNELS,
        latents_std=[1.0] * WAN_LATENT_CHANNELS,
    )  # fmt: skip
    return vae.eval()


def wan_family_pipeline(pipeline_class, transformer, scheduler=None):
    """``pipeline_class`` (Wan, or a Wan-derived pipeline) around ``transformer`` with the tiny UMT5 and Wan VAE."""
    pipe = pipeline_class(
        tokenizer=t5_tokenizer(),
        text_encoder=tiny_umt5_encoder(),
        vae=tiny_wan_vae(),
        scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=5.0),
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def wan_family_i2v_pipeline(pipeline_class, transformer_class, scheduler=None):
    """An image-to-video ``pipeline_class`` (Wan or SkyReels-V2 I2V): the transformer takes the noisy latents,
    the first-frame latents and a 4-channel mask (3 x 4 channels) and cross-attends to the CLIP image tokens."""
    transformer = wan_family_transformer(
        transformer_class, in_channels=3 * WAN_LATENT_CHANNELS, image_dim=CLIP_DIM, added_kv_proj_dim=32
    )
    pipe = pipeline_class(
        tokenizer=t5_tokenizer(),
        text_encoder=tiny_umt5_encoder(),
        image_encoder=tiny_clip_vision_encoder(),
        image_processor=tiny_clip_image_processor(),
        transformer=transformer,
        vae=tiny_wan_vae(),
        scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=5.0),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_wan_pipeline() -> WanPipeline:
    return wan_family_pipeline(WanPipeline, tiny_wan_transformer())


# ---------------------------------------------------------------------------------------------------------
# Flux.1: FluxTransformer2DModel + AutoencoderKL + CLIP (pooled) + T5 + FlowMatchEuler
# ---------------------------------------------------------------------------------------------------------

FLUX_LATENT_CHANNELS = 2  # packed 2 x 2 -> 8 transformer input channels
FLUX_CALL: dict[str, Any] = {
    "height": 36,  # 36 / 2 (VAE) / 2 (packing) = 9 token rows
    "width": 44,  # 44 / 2 / 2 = 11 token columns -> 99 image tokens
    "num_inference_steps": 2,
    "true_cfg_scale": 3.0,  # real classifier-free guidance; needs a negative_prompt
    "guidance_scale": 3.5,  # only the embedded guidance of guidance-distilled models (unused here)
    "max_sequence_length": TEXT_LEN,
    "output_type": "np",
}


def tiny_flux_transformer() -> FluxTransformer2DModel:
    torch.manual_seed(SEED)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * FLUX_LATENT_CHANNELS, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM, guidance_embeds=False, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    return model.eval()


def tiny_flux_vae() -> AutoencoderKL:
    # 2 blocks: spatial compression 2 (the real Flux VAE has 4 blocks, x8).
    torch.manual_seed(SEED)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=FLUX_LATENT_CHANNELS, norm_num_groups=4, sample_size=32, scaling_factor=1.5035,
        shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
    )  # fmt: skip
    return vae.eval()


def tiny_flux_pipeline() -> FluxPipeline:
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )  # fmt: skip
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=tiny_flux_vae(),
        text_encoder=tiny_clip_text_encoder(TEXT_LEN),
        tokenizer=clip_tokenizer(TEXT_LEN),
        text_encoder_2=tiny_t5_encoder(),
        tokenizer_2=t5_tokenizer(),
        transformer=tiny_flux_transformer(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------------
# CogVideoX 1.0 (with RoPE, as CogVideoX-5b): CogVideoXTransformer3DModel + AutoencoderKLCogVideoX + T5
# ---------------------------------------------------------------------------------------------------------

COGVIDEOX_LATENT_CHANNELS = 4
COGVIDEOX_CALL: dict[str, Any] = {
    "height": 144,  # 144 / 8 (VAE) / 2 (patch) = 9 token rows
    "width": 112,  # 112 / 8 / 2 = 7 token columns
    "num_frames": 9,  # 3 latent frames -> 3 x 9 x 7 = 189 video tokens (+ 16 text tokens in the sequence)
    "num_inference_steps": 2,
    "guidance_scale": 3.0,
    "max_sequence_length": TEXT_LEN,
    "output_type": "np",
}


def tiny_cogvideox_transformer() -> CogVideoXTransformer3DModel:
    torch.manual_seed(SEED)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=COGVIDEOX_LATENT_CHANNELS,
        out_channels=COGVIDEOX_LATENT_CHANNELS, time_embed_dim=16, text_embed_dim=TEXT_DIM, num_layers=2,
        sample_width=14, sample_height=18, sample_frames=9, patch_size=2, max_text_seq_length=TEXT_LEN,
        use_rotary_positional_embeddings=True,
    )  # fmt: skip
    return model.eval()


def tiny_cogvideox_vae() -> AutoencoderKLCogVideoX:
    # 4 blocks: spatial compression 8, temporal 4, as the real CogVideoX VAE.
    torch.manual_seed(SEED)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
        latent_channels=COGVIDEOX_LATENT_CHANNELS, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4,
    )  # fmt: skip
    return vae.eval()


def tiny_cogvideox_pipeline() -> CogVideoXPipeline:
    scheduler = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
        prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
        snr_shift_scale=1.0, timestep_spacing="trailing",
    )  # fmt: skip
    pipe = CogVideoXPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=tiny_t5_encoder(),
        vae=tiny_cogvideox_vae(),
        transformer=tiny_cogvideox_transformer(),
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------------
# HunyuanVideo: HunyuanVideoTransformer3DModel + AutoencoderKLHunyuanVideo + Llama + CLIP + FlowMatchEuler
# ---------------------------------------------------------------------------------------------------------

HUNYUAN_LATENT_CHANNELS = 4
HUNYUAN_CLIP_LEN = 77  # the pipeline always tokenizes the CLIP prompt to 77 tokens
HUNYUAN_CALL: dict[str, Any] = {
    "height": 112,  # 112 / 8 (VAE) / 2 (patch) = 7 token rows
    "width": 144,  # 144 / 8 / 2 = 9 token columns
    "num_frames": 13,  # (13 - 1) / 4 + 1 = 4 latent frames -> 4 x 7 x 9 = 252 video tokens (+ 16 text tokens)
    "num_inference_steps": 2,
    "true_cfg_scale": 3.0,  # real classifier-free guidance; needs a negative_prompt
    "guidance_scale": 6.0,  # embedded guidance (the transformer has guidance_embeds=True)
    "max_sequence_length": TEXT_LEN,
    "prompt_template": HUNYUAN_PROMPT_TEMPLATE,
    "output_type": "np",
}


def tiny_hunyuan_transformer() -> HunyuanVideoTransformer3DModel:
    torch.manual_seed(SEED)
    model = HunyuanVideoTransformer3DModel(
        in_channels=HUNYUAN_LATENT_CHANNELS, out_channels=HUNYUAN_LATENT_CHANNELS, num_attention_heads=2,
        attention_head_dim=16, num_layers=1, num_single_layers=1, num_refiner_layers=1, mlp_ratio=2.0,
        patch_size=2, patch_size_t=1, guidance_embeds=True, text_embed_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM, rope_axes_dim=(4, 6, 6),
    )  # fmt: skip
    return model.eval()


def tiny_hunyuan_vae() -> AutoencoderKLHunyuanVideo:
    torch.manual_seed(SEED)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=HUNYUAN_LATENT_CHANNELS,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4, up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
        spatial_compression_ratio=8, temporal_compression_ratio=4,
    )  # fmt: skip
    return vae.eval()


def tiny_hunyuan_pipeline() -> HunyuanVideoPipeline:
    pipe = HunyuanVideoPipeline(
        text_encoder=tiny_llama_encoder(),
        tokenizer=llama_tokenizer(),
        transformer=tiny_hunyuan_transformer(),
        vae=tiny_hunyuan_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=tiny_clip_text_encoder(HUNYUAN_CLIP_LEN),
        tokenizer_2=clip_tokenizer(HUNYUAN_CLIP_LEN),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------------
# SkyReels-V2: SkyReelsV2Transformer3DModel (Wan-derived) + the Wan VAE + UMT5 + UniPC flow matching
# ---------------------------------------------------------------------------------------------------------

SKYREELS_CALL: dict[str, Any] = WAN_CALL  # same grid: 3 x 9 x 7 = 189 tokens


def tiny_skyreels_transformer() -> SkyReelsV2Transformer3DModel:
    return wan_family_transformer(SkyReelsV2Transformer3DModel)


def skyreels_scheduler() -> UniPCMultistepScheduler:
    # As the SkyReels-V2 checkpoints: UniPC on shifted flow-matching sigmas.
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0)


def tiny_skyreels_pipeline() -> SkyReelsV2Pipeline:
    return wan_family_pipeline(SkyReelsV2Pipeline, tiny_skyreels_transformer(), skyreels_scheduler())


def tiny_skyreels_diffusion_forcing_pipeline() -> SkyReelsV2DiffusionForcingPipeline:
    """The diffusion-forcing pipeline: per-frame timesteps (call it with ``ar_step`` > 0 for the asynchronous
    schedule, where frames start denoising ``ar_step`` steps after the previous one)."""
    return wan_family_pipeline(SkyReelsV2DiffusionForcingPipeline, tiny_skyreels_transformer(), skyreels_scheduler())


# ---------------------------------------------------------------------------------------------------------
# Wan VACE: WanVACETransformer3DModel (Wan blocks + VACE control blocks) + the Wan VAE + UMT5 + FlowMatchEuler
# ---------------------------------------------------------------------------------------------------------

# WanVACEPipeline takes one prompt string per call (batch 1, CFG on): the call fixes its prompts. Without a
# control video the pipeline conditions on a blank one.
WAN_VACE_CALL: dict[str, Any] = WAN_CALL | {"prompt": PROMPTS[0], "negative_prompt": NEGATIVE_PROMPT}


def tiny_wan_vace_transformer() -> WanVACETransformer3DModel:
    # vace_in_channels: the pipeline's control latents are 2 x the VAE's channels (inactive and reactive
    # video) + the mask packed 8 x 8 -> 64 channels.
    return wan_family_transformer(
        WanVACETransformer3DModel, vace_layers=[0], vace_in_channels=2 * WAN_LATENT_CHANNELS + 64
    )


def tiny_wan_vace_pipeline() -> WanVACEPipeline:
    return wan_family_pipeline(WanVACEPipeline, tiny_wan_vace_transformer())


# ---------------------------------------------------------------------------------------------------------
# Mochi: MochiTransformer3DModel + AutoencoderKLMochi + T5 + FlowMatchEuler (the pipeline passes its own sigmas)
# ---------------------------------------------------------------------------------------------------------

MOCHI_LATENT_CHANNELS = 12  # fixed: MochiPipeline reshapes latents_mean/std to 12 channels
MOCHI_CALL: dict[str, Any] = {
    "height": 144,  # 144 / 8 (VAE) / 2 (patch) = 9 token rows
    "width": 112,  # 112 / 8 / 2 = 7 token columns
    "num_frames": 13,  # (13 - 1) / 6 + 1 = 3 latent frames (the VAE is x6 in time) -> 3 x 9 x 7 = 189 tokens
    "num_inference_steps": 2,
    "guidance_scale": 4.5,  # CFG: negative and positive prompts batched in one forward
    "max_sequence_length": TEXT_LEN,
    "output_type": "np",
}


def tiny_mochi_transformer() -> MochiTransformer3DModel:
    """2 blocks (the last one context_pre_only, as in the real model), 2 heads of 16 channels."""
    torch.manual_seed(SEED)
    model = MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=16, num_layers=2, pooled_projection_dim=16,
        in_channels=MOCHI_LATENT_CHANNELS, qk_norm="rms_norm", text_embed_dim=TEXT_DIM, time_embed_dim=16,
        activation_fn="swiglu", max_sequence_length=TEXT_LEN,
    )  # fmt: skip
    with torch.no_grad():  # diffusers initializes the RoPE frequencies to zeros (RoPE = identity)
        model.pos_frequencies.normal_(0.0, 0.5)
    return model.eval()


def tiny_mochi_vae() -> AutoencoderKLMochi:
    # Mochi's VAE group-normalizes in 32 groups, so 32 channels is the smallest width. Spatial x8, temporal x6.
    torch.manual_seed(SEED)
    vae = AutoencoderKLMochi(
        latent_channels=MOCHI_LATENT_CHANNELS, out_channels=3, encoder_block_out_channels=(32, 32, 32, 32),
        decoder_block_out_channels=(32, 32, 32, 32), layers_per_block=(0, 0, 0, 0, 1),
        add_attention_block=(False, False, False, False, False),
    )  # fmt: skip
    return vae.eval()


def tiny_mochi_pipeline() -> MochiPipeline:
    pipe = MochiPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=tiny_mochi_vae(),
        text_encoder=tiny_t5_encoder(),
        tokenizer=t5_tokenizer(),
        transformer=tiny_mochi_transformer(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------------
# Registry and call helper
# ---------------------------------------------------------------------------------------------------------

# family -> (transformer factory, pipeline factory, call defaults)
FAMILIES: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "wan": (tiny_wan_transformer, tiny_wan_pipeline, WAN_CALL),
    "flux": (tiny_flux_transformer, tiny_flux_pipeline, FLUX_CALL),
    "cogvideox": (tiny_cogvideox_transformer, tiny_cogvideox_pipeline, COGVIDEOX_CALL),
    "hunyuan": (tiny_hunyuan_transformer, tiny_hunyuan_pipeline, HUNYUAN_CALL),
    "skyreels_v2": (tiny_skyreels_transformer, tiny_skyreels_pipeline, SKYREELS_CALL),
    "wan_vace": (tiny_wan_vace_transformer, tiny_wan_vace_pipeline, WAN_VACE_CALL),
    "mochi": (tiny_mochi_transformer, tiny_mochi_pipeline, MOCHI_CALL),
}

# (latent frames, token rows, token columns) after the VAE and patchify for each family's *_CALL settings;
# Flux images count as 1 frame. None of the products is a multiple of 64.
TOKEN_GRIDS: dict[str, tuple[int, int, int]] = {
    "wan": (3, 9, 7),
    "flux": (1, 9, 11),
    "cogvideox": (3, 9, 7),
    "hunyuan": (4, 7, 9),
    "skyreels_v2": (3, 9, 7),
    "wan_vace": (3, 9, 7),
    "mochi": (3, 9, 7),
}


def call_kwargs(
    call: dict[str, Any],
    prompt: str | list[str] = PROMPTS,
    *,
    seed: int = SEED,
    negative_prompt: str | list[str] | None = NEGATIVE_PROMPT,
    **overrides: Any,
) -> dict[str, Any]:
    """Pipeline keyword arguments: `call` + prompts + a fresh CPU generator seeded with `seed`.

    A string `negative_prompt` is repeated once per prompt (Flux and HunyuanVideo need one negative per
    prompt for true CFG; CogVideoX needs the same type as `prompt`). A `call` that fixes its prompts (a
    pipeline that takes one prompt string, as Wan VACE) keeps them. `overrides` win over everything.
    """
    if "prompt" in call:
        kwargs = dict(call, generator=torch.Generator("cpu").manual_seed(seed))
        kwargs.update(overrides)
        return kwargs
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if isinstance(negative_prompt, str):
        negative_prompt = [negative_prompt] * len(prompts)
    kwargs = dict(call, prompt=prompts, negative_prompt=negative_prompt)
    kwargs["generator"] = torch.Generator("cpu").manual_seed(seed)
    kwargs.update(overrides)
    return kwargs
