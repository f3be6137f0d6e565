"""Tiny randomly initialized HunyuanVideo 1.5 pipelines (text-to-video and image-to-video), built offline.

Everything is built from configs: the transformer, the VAE, a tiny Qwen2.5-VL text model with a word-level
chat tokenizer, a tiny byT5 (T5 encoder + the file-free ``ByT5Tokenizer``), and for image-to-video a tiny
SigLIP vision tower with an in-memory image processor. Each factory seeds torch itself.

How pixels become tokens (tiny VAE: /4 in space and /4 in time; the real VAE is /16 and /4. Both run the
transformer at patch (1, 1, 1); the tiny VAE is /4 only because a /16 conv3d decode takes seconds on CPU):

- default call: 9 frames, 28 x 36 px -> latents (9 - 1) / 4 + 1 = 3 x 7 x 9 -> patch 1 -> 189 video tokens
  (not a multiple of 16); ``num_frames=17`` gives 5 x 7 x 9 = 315 video tokens.
- the joint self-attention sequence is [video tokens, then per sample the valid image / byT5 / Qwen tokens,
  then their padding]: 9 SigLIP image-token slots + 16 byT5 slots + 16 Qwen slots = 41 tokens after the
  video (``TEXT_TOKENS``), so 230 tokens (default call) or 356 (17 frames). Padded tokens are masked as
  queries and as keys (a ``(B, 1, N, N)`` joint padding mask); text-to-video masks all image slots.

The pipelines hard-code their text lengths and image-token count as instance attributes in ``__init__``
(``tokenizer_max_length = 1000``, ``tokenizer_2_max_length = 256``, ``vision_num_semantic_tokens = 729``,
``prompt_template_encode_start_idx = 108``) and take no ``max_sequence_length``; `shrink` sets them on the
instance (no class is patched). Call it again on a pipeline loaded with ``from_pretrained``.

CFG: the pipelines take no ``guidance_scale``; the ``ClassifierFreeGuidance`` guider (scale 6.0, as released)
runs the conditional and the unconditional batch as two transformer calls per step, each in
``transformer.cache_context("pred_cond" / "pred_uncond")``, and the pipeline sets no step index. A list of
two prompts gives transformer calls of batch 2; image-to-video shares its one image between the prompts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKLHunyuanVideo15,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15ImageToVideoPipeline,
    HunyuanVideo15Pipeline,
    HunyuanVideo15Transformer3DModel,
)
from diffusers.guiders import ClassifierFreeGuidance
from tiny_models import NEGATIVE_PROMPT, SEED, SPECIAL_TOKENS, TEXT_LEN, VOCAB, call_kwargs
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import (
    ByT5Tokenizer,
    PreTrainedTokenizerFast,
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLTextModel,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
    T5Config,
    T5EncoderModel,
)

LATENT_CHANNELS = 4  # real: 32
TEXT_DIM = 32  # Qwen2.5-VL hidden size (real: 3584)
BYT5_DIM = 32  # byT5 d_model (real: 1472)
IMAGE_DIM = 32  # SigLIP hidden size (real: 1152)
IMAGE_SIZE, IMAGE_PATCH = 12, 4  # tiny SigLIP: (12 / 4)^2 = 9 image tokens (real: (384 / 14)^2 -> 729)
IMAGE_TOKENS = (IMAGE_SIZE // IMAGE_PATCH) ** 2
BYT5_LEN = TEXT_LEN  # byT5 glyph-text slots (real: 256)
TEXT_TOKENS = IMAGE_TOKENS + BYT5_LEN + TEXT_LEN  # 41 conditioning tokens after the video in self-attention

# The second prompt quotes a glyph text, so byT5 encodes 'Text "hi". ' for it; the first has no byT5 tokens
# (its byT5 slots are all padding). The two samples therefore keep different numbers of tokens.
PROMPTS = ["a red circle", 'a sign with the text "hi"']

# (latent frames, token rows, token columns) of the default call.
TOKEN_GRID = (3, 7, 9)

HUNYUAN_VIDEO15_CALL: dict[str, Any] = {
    "height": 28,  # 28 / 4 (VAE) / 1 (patch) = 7 token rows
    "width": 36,  # 36 / 4 / 1 = 9 token columns
    "num_frames": 9,  # (9 - 1) / 4 + 1 = 3 latent frames -> 3 x 7 x 9 = 189 video tokens
    "num_inference_steps": 2,
    "output_type": "np",
}

# Image-to-video: height and width come from the image. The pipeline snaps its aspect ratio to a bucket of
# ``transformer.config.target_size`` (buckets of (32 / 4)^2 = 64 VAE cells); the 28 x 36 image's 7 : 9 bucket
# is exact, so it stays 28 x 36 px -> 7 x 9 tokens.
HUNYUAN_VIDEO15_I2V_CALL: dict[str, Any] = {
    "num_frames": 9,  # 3 latent frames; frame 0 is the conditioning image (channel-concatenated + mask)
    "num_inference_steps": 2,
    "output_type": "np",
}

# ---------------------------------------------------------------------------------------------------------
# Text: a Qwen-style word tokenizer with a chat template, and byT5
# ---------------------------------------------------------------------------------------------------------

# The tiny chat template renders "system : <system message> . user : <prompt> . assistant :"; the pipeline
# drops the tokens before the prompt (`prompt_template_encode_start_idx`, 108 for the real Qwen template).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : {{ message['content'] }} . {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)
EXTRA_WORDS = ["system", "user", "assistant", "sign", "text", "hi", '"']
QWEN_VOCAB = VOCAB | {w: len(VOCAB) + i for i, w in enumerate(w for w in EXTRA_WORDS if w not in VOCAB)}


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    """Lowercasing word-level tokenizer over tiny_models' vocabulary (+ a few words), right padding with <pad>
    (id 0), no special-token template, and the tiny chat template."""
    tok = Tokenizer(WordLevel(QWEN_VOCAB, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=4096, padding_side="right", pad_token="<pad>",
        eos_token="</s>", unk_token="<unk>",
    )  # fmt: skip
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def crop_start(tokenizer: PreTrainedTokenizerFast, system_message: str) -> int:
    """Tokens of the rendered template before the user's prompt."""
    return len(tokenizer(f"system : {system_message} . user :", add_special_tokens=False)["input_ids"])


def tiny_qwen_text_encoder() -> Qwen2_5_VLTextModel:
    """3 layers: the pipeline takes hidden_states[-3] (it skips the last 2), the first layer's output."""
    torch.manual_seed(SEED)
    config = Qwen2_5_VLTextConfig(
        vocab_size=len(QWEN_VOCAB), hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1e6},
        pad_token_id=SPECIAL_TOKENS.index("<pad>"),
    )  # fmt: skip
    return Qwen2_5_VLTextModel(config).eval()


def tiny_byt5_encoder() -> T5EncoderModel:
    torch.manual_seed(SEED)
    config = T5Config(
        vocab_size=len(ByT5Tokenizer()), d_model=BYT5_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    return T5EncoderModel(config).eval()


# ---------------------------------------------------------------------------------------------------------
# Transformer, VAE, image encoder
# ---------------------------------------------------------------------------------------------------------


def tiny_hunyuan_video15_transformer(task_type: str = "t2v") -> HunyuanVideo15Transformer3DModel:
    """2 dual-stream blocks of 2 heads of 16; input = latents + conditioning latents + 1 mask channel."""
    torch.manual_seed(SEED)
    model = HunyuanVideo15Transformer3DModel(
        in_channels=2 * LATENT_CHANNELS + 1, out_channels=LATENT_CHANNELS, num_attention_heads=2,
        attention_head_dim=16, num_layers=2, num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1,
        text_embed_dim=TEXT_DIM, text_embed_2_dim=BYT5_DIM, image_embed_dim=IMAGE_DIM, rope_axes_dim=(4, 6, 6),
        target_size=32, task_type=task_type,
    )  # fmt: skip
    return model.eval()


def tiny_hunyuan_video15_vae() -> AutoencoderKLHunyuanVideo15:
    """3 levels: 2 downsamples in space (x4), both also in time (x4); the real VAE has 5 levels (x16, x4).
    8 channels is the least its DCAE-style up/downsample rearranges allow (channels / (2 * 2 * 2))."""
    torch.manual_seed(SEED)
    vae = AutoencoderKLHunyuanVideo15(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, block_out_channels=(8, 8, 8),
        layers_per_block=1, spatial_compression_ratio=4, temporal_compression_ratio=4,
    )  # fmt: skip
    return vae.eval()


def tiny_siglip() -> tuple[SiglipVisionModel, SiglipImageProcessorPil]:
    torch.manual_seed(SEED)
    config = SiglipVisionConfig(
        hidden_size=IMAGE_DIM, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=IMAGE_PATCH,
    )  # fmt: skip
    processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return SiglipVisionModel(config).eval(), processor


def tiny_image(height: int = 28, width: int = 36) -> PIL.Image.Image:
    """A deterministic RGB gradient image."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
    return PIL.Image.fromarray(rgb.astype(np.uint8), "RGB")


def _components(task_type: str) -> dict[str, Any]:
    return dict(
        text_encoder=tiny_qwen_text_encoder(),
        tokenizer=qwen_tokenizer(),
        transformer=tiny_hunyuan_video15_transformer(task_type),
        vae=tiny_hunyuan_video15_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder_2=tiny_byt5_encoder(),
        tokenizer_2=ByT5Tokenizer(),
        guider=ClassifierFreeGuidance(guidance_scale=6.0),
    )


def shrink(pipe):
    """Set the tiny text lengths and image-token count (instance attributes the pipeline's __init__ hard-codes)."""
    pipe.tokenizer_max_length = TEXT_LEN
    pipe.tokenizer_2_max_length = BYT5_LEN
    pipe.vision_num_semantic_tokens = IMAGE_TOKENS  # text-to-video: zero image embeds of this many (masked) tokens
    pipe.prompt_template_encode_start_idx = crop_start(pipe.tokenizer, pipe.system_message)
    # The VAE's mid-block attention builds a (B, N, N) causal mask against (B, 1, N, C) queries, which SDPA
    # broadcasts to the wrong shape for B > 1 (diffusers 0.42.1); decoding one sample at a time avoids it.
    pipe.vae.enable_slicing()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_hunyuan_video15_pipeline() -> HunyuanVideo15Pipeline:
    return shrink(HunyuanVideo15Pipeline(**_components("t2v")))


def tiny_hunyuan_video15_i2v_pipeline() -> HunyuanVideo15ImageToVideoPipeline:
    image_encoder, feature_extractor = tiny_siglip()
    pipe = HunyuanVideo15ImageToVideoPipeline(
        **_components("i2v"), image_encoder=image_encoder, feature_extractor=feature_extractor
    )
    return shrink(pipe)


def t2v_call_kwargs(call: dict[str, Any] = HUNYUAN_VIDEO15_CALL, **overrides: Any) -> dict[str, Any]:
    """Text-to-video call kwargs: the two prompts, two negatives and a fresh seeded generator."""
    return call_kwargs(call, PROMPTS, negative_prompt=NEGATIVE_PROMPT, **overrides)


def i2v_call_kwargs(call: dict[str, Any] = HUNYUAN_VIDEO15_I2V_CALL, **overrides: Any) -> dict[str, Any]:
    """Image-to-video call kwargs: as `t2v_call_kwargs`, plus the tiny image."""
    return call_kwargs(call, PROMPTS, negative_prompt=NEGATIVE_PROMPT, image=tiny_image(), **overrides)


# pipeline -> (pipeline factory, call-kwargs builder)
PIPELINES: dict[str, tuple[Any, Any]] = {
    "t2v": (tiny_hunyuan_video15_pipeline, t2v_call_kwargs),
    "i2v": (tiny_hunyuan_video15_i2v_pipeline, i2v_call_kwargs),
}
