"""The embedded model's components, built from configs: tokenizer, text encoder, VAE, transformer, scheduler.

A Wan 2.1 text-to-video architecture scaled down so that it trains on a 2-core CPU and still has a token
grid on which sparsity matters:

- VAE (``AutoencoderKLWan``): 3 levels, x4 spatial and x2 temporal compression, 8 latent channels; an 8-wide
  encoder (cheap to run over the training set) and a 16-wide decoder.
- Transformer (``WanTransformer3DModel``): 4 layers, 4 heads x 32, patch (1, 2, 2). At the defaults
  (17 frames of 128 x 128) the latents are 9 x 32 x 32 and self-attention sees 9 x 16 x 16 = 2,304 tokens.
- Text: a word-level tokenizer over the scene vocabulary and a 2-layer UMT5 encoder (64 wide), trained with
  the transformer.
- Scheduler: UniPC with flow sigmas (Wan's default), shift 2.
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from .scenes import PROMPT_WORDS

LATENT_CHANNELS = 8
TEXT_DIM = 64
FLOW_SHIFT = 2.0
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Lowercasing word-level tokenizer over the scene vocabulary; appends ``</s>``, pads with ``<pad>`` (id 0)."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + PROMPT_WORDS)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=512,
        padding_side="right",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def build_text_encoder(vocab_size: int) -> UMT5EncoderModel:
    config = UMT5Config(
        vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
        relative_attention_num_buckets=16, relative_attention_max_distance=32, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    return UMT5EncoderModel(config)


def build_vae() -> AutoencoderKLWan:
    # latents_mean / latents_std are placeholders here; training measures them and writes them to the config.
    return AutoencoderKLWan(
        base_dim=8, decoder_base_dim=16, z_dim=LATENT_CHANNELS, dim_mult=[1, 2, 4], num_res_blocks=1,
        attn_scales=[], temperal_downsample=[False, True], latents_mean=[0.0] * LATENT_CHANNELS,
        latents_std=[1.0] * LATENT_CHANNELS, scale_factor_temporal=2, scale_factor_spatial=4,
    )  # fmt: skip


def build_transformer() -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS, text_dim=TEXT_DIM, freq_dim=64, ffn_dim=256, num_layers=4,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
    )  # fmt: skip


def build_scheduler() -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(
        num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=FLOW_SHIFT
    )


def encode_prompts(
    tokenizer: PreTrainedTokenizerFast, text_encoder: UMT5EncoderModel, prompts: list[str], max_length: int = 512
) -> torch.Tensor:
    """Prompt embeddings exactly as ``WanPipeline`` makes them: encoder states, zeroed past each prompt's end.

    Returns (B, max_length, TEXT_DIM). Training calls this with gradients on; the pipeline's own
    ``_get_t5_prompt_embeds`` computes the same thing at generation time.
    """
    return _masked_states(tokenizer, text_encoder, prompts, "max_length", max_length)


def _masked_states(
    tokenizer: PreTrainedTokenizerFast,
    text_encoder: UMT5EncoderModel,
    prompts: list[str],
    padding: str,
    max_length: int,
) -> torch.Tensor:
    """Encoder states (B, L, C) of the tokenized prompts, zeroed past each prompt's end."""
    inputs = tokenizer(prompts, padding=padding, max_length=max_length, truncation=True, return_tensors="pt").to(
        text_encoder.device
    )
    states = text_encoder(inputs.input_ids, inputs.attention_mask).last_hidden_state  # (B, L, C)
    return states * inputs.attention_mask[..., None].to(states.dtype)


def encode_prompts_compact(
    tokenizer: PreTrainedTokenizerFast, text_encoder: UMT5EncoderModel, prompts: list[str], max_length: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same cross-attention input as ``encode_prompts``, without the hundreds of zero rows.

    ``WanPipeline`` pads every prompt to ``max_length`` rows with zeros. Zero rows give identical keys and
    values in every cross-attention, so ``n`` of them weigh exactly as one zero row whose score is raised by
    ``log(n)``. Returns ``(embeds, bias)``: embeds (B, L + 1, C) are the encoder states of the batch's
    longest prompt (L tokens, the shorter ones zero-padded) plus one zero row; bias (1, 1, 1, L + 1) is 0
    except ``log(max_length - L)`` on that row. ``PaddingBiasedCrossAttention`` adds the bias; a transformer
    given both returns what it returns for ``encode_prompts`` (tested), at about half the cost of a training
    step at half resolution.
    """
    states = _masked_states(tokenizer, text_encoder, prompts, "longest", max_length)  # (B, L, C)
    length = states.shape[1]
    if length >= max_length:
        raise ValueError(f"a prompt fills all {max_length} tokens; nothing to compact")
    embeds = torch.cat([states, states.new_zeros(states.shape[0], 1, states.shape[2])], dim=1)
    bias = states.new_zeros(1, 1, 1, length + 1)
    bias[..., -1] = math.log(max_length - length)
    return embeds, bias


class PaddingBiasedCrossAttention:
    """Wraps a Wan cross-attention processor so that it adds ``bias`` (set before each call) to the scores.

    Installed by ``use_compact_prompts`` for training with ``encode_prompts_compact``; the saved model never
    holds it.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.bias: torch.Tensor | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if self.bias is None:
            raise RuntimeError("PaddingBiasedCrossAttention called before its bias was set")
        return self.inner(attn, hidden_states, encoder_hidden_states, self.bias, rotary_emb)


def use_compact_prompts(transformer: WanTransformer3DModel) -> list[PaddingBiasedCrossAttention]:
    """Wrap every block's cross-attention processor (see ``encode_prompts_compact``); returns the wrappers."""
    wrappers = []
    for block in transformer.blocks:
        wrapper = PaddingBiasedCrossAttention(block.attn2.processor)
        block.attn2.processor = wrapper
        wrappers.append(wrapper)
    return wrappers
