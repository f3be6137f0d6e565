"""Tiny randomly initialized transformers of the four supported families, with forward inputs.

The token grids have enough frames for radial attention to be sparse, and token counts that are not
multiples of 64 (so the last block is partial).
"""

from __future__ import annotations

import torch
from diffusers import (
    CogVideoXTransformer3DModel,
    FluxTransformer2DModel,
    HunyuanVideoTransformer3DModel,
    WanTransformer3DModel,
)

B = 2


def wan(image_to_video: bool = False):
    """Wan 2.1 T2V, or I2V: image-conditioning channels and image tokens for cross-attention."""
    torch.manual_seed(0)
    channels = 8 if image_to_video else 4
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=channels, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=64, image_dim=24 if image_to_video else None,
    )  # fmt: skip
    inputs = {
        "hidden_states": torch.randn(B, channels, 7, 12, 14),  # (B, C, F, H, W): 7 x 6 x 7 = 294 tokens
        "timestep": torch.tensor([900.0] * B),
        "encoder_hidden_states": torch.randn(B, 5, 32),
    }
    if image_to_video:
        inputs["encoder_hidden_states_image"] = torch.randn(B, 3, 24)
    return model.eval(), inputs


def flux():
    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    rows, cols, text = 9, 11, 7  # 99 image tokens + 7 text tokens
    img_ids = torch.zeros(rows * cols, 3)
    img_ids[:, 1] = torch.arange(rows).repeat_interleave(cols)
    img_ids[:, 2] = torch.arange(cols).repeat(rows)
    inputs = {
        "hidden_states": torch.randn(B, rows * cols, 8),
        "encoder_hidden_states": torch.randn(B, text, 32),
        "pooled_projections": torch.randn(B, 16),
        "timestep": torch.tensor([0.9] * B),
        "img_ids": img_ids,
        "txt_ids": torch.zeros(text, 3),
    }
    return model.eval(), inputs


def cogvideox(patch_size_t: int | None = None):
    """CogVideoX 1.0, or 1.5 with ``patch_size_t=2`` (frames patchified in pairs, rotary embeddings)."""
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=16,
        text_embed_dim=32, num_layers=2, sample_width=14, sample_height=10, sample_frames=49, patch_size=2,
        patch_size_t=patch_size_t, max_text_seq_length=7, use_rotary_positional_embeddings=patch_size_t is not None,
    )  # fmt: skip
    frames = 7 * (patch_size_t or 1)
    inputs = {
        "hidden_states": torch.randn(B, frames, 4, 10, 14),  # (B, F, C, H, W): 7 x 5 x 7 = 245 video tokens
        "encoder_hidden_states": torch.randn(B, 7, 32),
        "timestep": torch.tensor([900] * B),
    }
    return model.eval(), inputs


def hunyuan():
    torch.manual_seed(0)
    model = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=32,
        pooled_projection_dim=16, rope_axes_dim=(4, 6, 6),
    )  # fmt: skip
    text_mask = torch.ones(B, 9, dtype=torch.long)
    text_mask[1, 5:] = 0  # the second prompt is shorter: padded text keys must stay masked
    inputs = {
        "hidden_states": torch.randn(B, 4, 7, 10, 14),  # 7 x 5 x 7 = 245 video tokens + 9 text
        "timestep": torch.tensor([900] * B),
        "encoder_hidden_states": torch.randn(B, 9, 32),
        "encoder_attention_mask": text_mask,
        "pooled_projections": torch.randn(B, 16),
        "guidance": torch.tensor([3000.0] * B),
    }
    return model.eval(), inputs


CASES = {
    "wan": wan,
    "wan_i2v": lambda: wan(image_to_video=True),
    "flux": flux,
    "cogvideox": cogvideox,
    "cogvideox_1_5": lambda: cogvideox(patch_size_t=2),
    "hunyuan": hunyuan,
}


def run(model, inputs, **overrides) -> torch.Tensor:
    with torch.no_grad():
        return model(**(inputs | overrides)).sample
