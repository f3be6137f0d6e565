"""End-to-end transformer benchmark: real model architectures with random weights, dense vs each method.

Speed at real scale needs no trained weights: a transformer built from a published model's config times the
same as the trained one. Each case times denoising steps (one transformer forward each, the same inputs
and timesteps) densely and with each method in the same run, and reports the ratios, the mean density and
the share of time spent in self-attention. On a CPU the default is a scaled-down Wan2.1-1.3B (2 layers,
2,304 tokens) so the run takes a minute or two; on a GPU the full models at their native sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..config import SparseAttentionConfig, parse_method_point
from ..integration.apply import apply_sparse_attention, remove_sparse_attention, summary
from .attention import environment_info

# Published diffusers configs (architecture only, from diffusers' conversion scripts and the hub configs), the
# latent geometry of their VAEs, and each model's native video size (frames, height, width) in pixels.
_WAN_LATENT = {"channels": 16, "temporal": 4, "spatial": 8, "patch": (1, 2, 2), "text_len": 512, "text_dim": 4096}
_WAN_1_3B = dict(
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
_WAN_14B = _WAN_1_3B | dict(num_attention_heads=40, ffn_dim=13824, num_layers=40)
_HV15 = dict(in_channels=65, out_channels=32, num_attention_heads=16, attention_head_dim=128, num_layers=54,
             num_refiner_layers=2, mlp_ratio=4.0, patch_size=1, patch_size_t=1, qk_norm="rms_norm",
             text_embed_dim=3584, text_embed_2_dim=1472, image_embed_dim=1152, rope_theta=256.0,
             rope_axes_dim=(16, 56, 56), task_type="t2v")  # fmt: skip
_HV15_LATENT = {"channels": 65, "temporal": 4, "spatial": 16, "patch": (1, 1, 1), "text_len": 1000, "text_dim": 3584,
                "text_2": (256, 1472), "image_tokens": (729, 1152)}  # fmt: skip
MODELS: dict[str, dict[str, Any]] = {
    "wan2.1-1.3b": {"class": "WanTransformer3DModel", "config": _WAN_1_3B, "latent": _WAN_LATENT,
                    "native": (81, 480, 832)},
    "wan2.1-14b": {"class": "WanTransformer3DModel", "config": _WAN_14B, "latent": _WAN_LATENT,
                   "native": (81, 720, 1280)},
    # SkyReels-V2 diffusion forcing 1.3B (540P) and 14B (540P / 720P): Wan's blocks; the 1.3B adds an fps embedding.
    "skyreels-v2-1.3b": {"class": "SkyReelsV2Transformer3DModel", "config": _WAN_1_3B | dict(inject_sample_info=True),
                         "latent": _WAN_LATENT, "native": (97, 544, 960)},
    "skyreels-v2-14b": {"class": "SkyReelsV2Transformer3DModel", "config": _WAN_14B, "latent": _WAN_LATENT,
                        "native": (97, 544, 960)},
    # Wan 2.1 VACE: control blocks at every 2nd (1.3B) or 5th (14B) layer, 96 control channels.
    "wan2.1-vace-1.3b": {"class": "WanVACETransformer3DModel",
                         "config": _WAN_1_3B | dict(vace_layers=list(range(0, 30, 2)), vace_in_channels=96),
                         "latent": _WAN_LATENT, "native": (81, 480, 832)},
    "wan2.1-vace-14b": {"class": "WanVACETransformer3DModel",
                        "config": _WAN_14B | dict(vace_layers=list(range(0, 40, 5)), vace_in_channels=96),
                        "latent": _WAN_LATENT, "native": (81, 720, 1280)},
    # Wan 2.2 Animate 14B: [reference frame, video] over Wan 2.1 14B blocks, pose latents, a face adapter.
    "wan2.2-animate-14b": {"class": "WanAnimateTransformer3DModel",
                           "config": _WAN_14B | dict(in_channels=36, image_dim=1280, added_kv_proj_dim=5120,
                                                     inject_face_latents_blocks=5, motion_encoder_size=512),
                           "latent": _WAN_LATENT, "native": (77, 720, 1280)},
    # HunyuanVideo 1.5 480p and 720p (one architecture; target_size sets the I2V size buckets): 54 dual-stream
    # blocks over [video, image (729 SigLIP), byT5 (256), Qwen2.5-VL (1000)] tokens; the VAE is x16 in space.
    "hunyuanvideo1.5-480p": {"class": "HunyuanVideo15Transformer3DModel", "config": _HV15 | dict(target_size=640),
                             "latent": _HV15_LATENT, "native": (121, 480, 848)},
    "hunyuanvideo1.5-720p": {"class": "HunyuanVideo15Transformer3DModel", "config": _HV15 | dict(target_size=960),
                             "latent": _HV15_LATENT, "native": (121, 720, 1280)},
    # LTX-Video 0.9.x 2B (0.9.0-0.9.5) and 13B (0.9.7): packed tokens, VAE x32 in space and x8 in time, patch 1.
    "ltx-video-2b": {
        "class": "LTXVideoTransformer3DModel",
        "config": dict(in_channels=128, out_channels=128, num_attention_heads=32, attention_head_dim=64,
                       cross_attention_dim=2048, num_layers=28, caption_channels=4096),
        "latent": {"channels": 128, "temporal": 8, "spatial": 32, "patch": (1, 1, 1), "text_len": 128,
                   "text_dim": 4096},
        "native": (161, 512, 704),
    },
    "ltx-video-13b": {
        "class": "LTXVideoTransformer3DModel",
        "config": dict(in_channels=128, out_channels=128, num_attention_heads=32, attention_head_dim=128,
                       cross_attention_dim=4096, num_layers=48, caption_channels=4096),
        "latent": {"channels": 128, "temporal": 8, "spatial": 32, "patch": (1, 1, 1), "text_len": 256,
                   "text_dim": 4096},
        "native": (161, 512, 768),
    },
    # LTX-2 19B (2.0 flags): video 32 x 128 and audio 32 x 64 streams; audio at 25 latent frames per second.
    "ltx2-19b": {
        "class": "LTX2VideoTransformer3DModel",
        "config": dict(in_channels=128, out_channels=128, num_attention_heads=32, attention_head_dim=128,
                       cross_attention_dim=4096, audio_in_channels=128, audio_out_channels=128,
                       audio_num_attention_heads=32, audio_attention_head_dim=64, audio_cross_attention_dim=2048,
                       num_layers=48, caption_channels=3840, rope_type="split", rope_double_precision=True),
        "latent": {"channels": 128, "temporal": 8, "spatial": 32, "patch": (1, 1, 1), "text_len": 1024,
                   "text_dim": 3840, "fps": 24.0, "audio_per_second": 25},
        "native": (121, 512, 768),
    },
    # Mochi 1 (10B): joint [video, text] attention, VAE x8 in space and x6 in time, patch 2.
    "mochi-1": {
        "class": "MochiTransformer3DModel",
        "config": dict(patch_size=2, num_attention_heads=24, attention_head_dim=128, num_layers=48,
                       pooled_projection_dim=1536, in_channels=12, text_embed_dim=4096, time_embed_dim=256,
                       activation_fn="swiglu", qk_norm="rms_norm", max_sequence_length=256),
        "latent": {"channels": 12, "temporal": 6, "spatial": 8, "patch": (1, 2, 2), "text_len": 256,
                   "text_dim": 4096},
        "native": (163, 480, 848),
    },
    # Cosmos Predict2.5 2B (also Transfer2.5's transformer) on the Wan VAE, and Cosmos 1.0 7B on its CV8x8x8 VAE.
    # concat_padding_mask is off: it needs torchvision, and it only adds one input channel (the pipelines pass
    # an all-zero padding mask).
    "cosmos-predict2.5-2b": {
        "class": "CosmosTransformer3DModel",
        "config": dict(in_channels=17, out_channels=16, num_attention_heads=16, attention_head_dim=128, num_layers=28,
                       mlp_ratio=4.0, text_embed_dim=1024, adaln_lora_dim=256, max_size=(128, 240, 240),
                       patch_size=(1, 2, 2), rope_scale=(1.0, 3.0, 3.0), concat_padding_mask=False,
                       extra_pos_embed_type=None),
        "latent": {"channels": 16, "temporal": 4, "spatial": 8, "patch": (1, 2, 2), "text_len": 512,
                   "text_dim": 1024},
        "native": (93, 704, 1280),
    },
    "cosmos-1.0-7b": {
        "class": "CosmosTransformer3DModel",
        "config": dict(in_channels=16, out_channels=16, num_attention_heads=32, attention_head_dim=128, num_layers=28,
                       mlp_ratio=4.0, text_embed_dim=1024, adaln_lora_dim=256, max_size=(128, 240, 240),
                       patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0), concat_padding_mask=False,
                       extra_pos_embed_type="learnable"),
        "latent": {"channels": 16, "temporal": 8, "spatial": 8, "patch": (1, 2, 2), "text_len": 512,
                   "text_dim": 1024},
        "native": (121, 704, 1280),
    },
    "hunyuanvideo": {
        "class": "HunyuanVideoTransformer3DModel",
        "config": dict(in_channels=16, out_channels=16, num_attention_heads=24, attention_head_dim=128, num_layers=20,
                       num_single_layers=40, num_refiner_layers=2, patch_size=2, patch_size_t=1, text_embed_dim=4096,
                       pooled_projection_dim=768, rope_axes_dim=(16, 56, 56)),
        "latent": {"channels": 16, "temporal": 4, "spatial": 8, "patch": (1, 2, 2), "text_len": 256, "text_dim": 4096},
        "native": (129, 720, 1280),
    },
    "cogvideox1.5-5b": {
        "class": "CogVideoXTransformer3DModel",
        "config": dict(num_attention_heads=48, attention_head_dim=64, in_channels=16, out_channels=16,
                       time_embed_dim=512, text_embed_dim=4096, num_layers=42, sample_width=300, sample_height=300,
                       sample_frames=81, patch_size=2, patch_size_t=2, max_text_seq_length=226, ofs_embed_dim=512,
                       use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False),
        "latent": {"channels": 16, "temporal": 4, "spatial": 8, "patch": (2, 2, 2), "text_len": 226, "text_dim": 4096},
        "native": (81, 768, 1360),
    },
}  # fmt: skip

# (frames, height, width) in pixels; "native" is each model's own (MODELS[name]["native"]).
# "tiny" (320 tokens on Wan) is for smoke runs such as ``benchmarks/gpu_evidence.sh --dry-run``.
RESOLUTIONS = {"480p": (81, 480, 832), "720p": (81, 720, 1280), "cpu-small": (33, 256, 256), "tiny": (17, 128, 128)}


def resolution_of(name: str, resolution: str | tuple[int, int, int]) -> tuple[int, int, int]:
    """Pixels (frames, height, width) of a named resolution, ``"native"`` for ``name``'s own, or a tuple."""
    if not isinstance(resolution, str):
        return tuple(resolution)
    if resolution == "native":
        return MODELS[name]["native"]
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r}; choose 'native' or one of {sorted(RESOLUTIONS)}")
    return RESOLUTIONS[resolution]


def build_transformer(name: str, *, num_layers: int | None = None, dtype=torch.bfloat16, device="cuda"):
    """The named architecture with random weights (``num_layers`` scales it down for a CPU)."""
    import diffusers

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    entry = MODELS[name]
    config = dict(entry["config"])
    if num_layers is not None:
        config["num_layers"] = num_layers
        if "num_single_layers" in config:
            config["num_single_layers"] = num_layers
        if "inject_face_latents_blocks" in config:  # Wan Animate: a face adapter after every k-th block
            config["inject_face_latents_blocks"] = min(config["inject_face_latents_blocks"], num_layers)
        if "vace_layers" in config:  # the same spacing of control blocks over fewer layers
            step = config["vace_layers"][1] - config["vace_layers"][0] if len(config["vace_layers"]) > 1 else 1
            config["vace_layers"] = list(range(0, num_layers, step))
    torch.manual_seed(0)
    with torch.device(device):
        model = getattr(diffusers, entry["class"])(**config)
    return model.to(dtype).eval()


def model_inputs(name: str, resolution: tuple[int, int, int], *, dtype, device, batch: int = 1) -> dict[str, Any]:
    """Random forward inputs of ``name`` for a video of ``resolution`` (frames, height, width) pixels."""
    entry = MODELS[name]
    latent = entry["latent"]
    frames = (resolution[0] - 1) // latent["temporal"] + 1
    frames = -(-frames // latent["patch"][0]) * latent["patch"][0]  # CogVideoX 1.5 pads to whole frame pairs
    height, width = resolution[1] // latent["spatial"], resolution[2] // latent["spatial"]
    g = torch.Generator(device).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device, dtype=dtype)

    text = randn(batch, latent["text_len"], latent["text_dim"])
    timestep = torch.full((batch,), 900.0, device=device)
    cls = entry["class"]
    if cls == "CogVideoXTransformer3DModel":
        return {"hidden_states": randn(batch, frames, latent["channels"], height, width),
                "encoder_hidden_states": text, "timestep": timestep,
                "ofs": torch.full((batch,), 2.0, device=device)}  # fmt: skip
    inputs = {"hidden_states": randn(batch, latent["channels"], frames, height, width), "timestep": timestep,
              "encoder_hidden_states": text}  # fmt: skip
    if cls == "HunyuanVideoTransformer3DModel":
        inputs |= {"encoder_attention_mask": torch.ones(batch, latent["text_len"], device=device, dtype=torch.long),
                   "pooled_projections": randn(batch, 768),
                   "guidance": torch.full((batch,), 6000.0, device=device)}  # fmt: skip
    elif cls == "HunyuanVideo15Transformer3DModel":
        (len_2, dim_2), (image_tokens, image_dim) = latent["text_2"], latent["image_tokens"]
        inputs |= {"encoder_attention_mask": torch.ones(batch, latent["text_len"], device=device),
                   "encoder_hidden_states_2": randn(batch, len_2, dim_2),
                   "encoder_attention_mask_2": torch.ones(batch, len_2, device=device),
                   "image_embeds": randn(batch, image_tokens, image_dim)}  # fmt: skip
    elif cls == "MochiTransformer3DModel":
        inputs |= {"encoder_attention_mask": torch.ones(batch, latent["text_len"], device=device, dtype=torch.bool)}
    elif cls == "CosmosTransformer3DModel":
        inputs["timestep"] = torch.full((batch,), 0.9, device=device)
        if entry["config"]["in_channels"] > latent["channels"]:  # video-to-world: the condition-mask channel
            inputs["condition_mask"] = torch.ones(batch, 1, frames, height, width, device=device, dtype=dtype)
    elif cls == "WanAnimateTransformer3DModel":
        inputs["hidden_states"] = randn(batch, entry["config"]["in_channels"], frames + 1, height, width)  # + ref
        inputs |= {"pose_hidden_states": randn(batch, 16, frames, height, width),
                   "face_pixel_values": randn(batch, 3, resolution[0], 512, 512),
                   "encoder_hidden_states_image": randn(batch, 257, 1280)}  # fmt: skip
    elif cls in ("LTXVideoTransformer3DModel", "LTX2VideoTransformer3DModel"):
        tokens = randn(batch, frames * height * width, latent["channels"])  # packed (B, N, C), patch 1
        text_mask = torch.ones(batch, latent["text_len"], device=device)
        inputs |= {"hidden_states": tokens, "encoder_attention_mask": text_mask, "num_frames": frames,
                   "height": height, "width": width}  # fmt: skip
        if cls == "LTXVideoTransformer3DModel":
            inputs["rope_interpolation_scale"] = (latent["temporal"] / 25.0, latent["spatial"], latent["spatial"])
        else:
            audio_frames = round(resolution[0] / latent["fps"] * latent["audio_per_second"])
            inputs |= {"audio_hidden_states": randn(batch, audio_frames, entry["config"]["audio_in_channels"]),
                       "audio_encoder_hidden_states": text, "audio_num_frames": audio_frames, "fps": latent["fps"],
                       "audio_encoder_attention_mask": inputs["encoder_attention_mask"]}  # fmt: skip
    elif cls == "WanVACETransformer3DModel":
        inputs |= {"control_hidden_states": randn(batch, entry["config"]["vace_in_channels"], frames, height, width)}
    elif cls == "SkyReelsV2Transformer3DModel" and entry["config"].get("inject_sample_info"):
        inputs |= {"fps": [0] * batch}  # the pipeline's index for 16 fps
    return inputs


def _time_steps(model, inputs, steps: int, device) -> float:
    """Seconds for ``steps`` forwards at falling timesteps (a fresh generation)."""
    with torch.inference_mode():
        # Warm-up (compiles flex, autotunes triton) at a lower timestep, so the timed steps, starting higher,
        # count as a new generation in dit-sparse's statistics.
        model(**(inputs | {"timestep": inputs["timestep"] * 0.1}))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for i in range(steps):
            model(**(inputs | {"timestep": inputs["timestep"] * (1 - i / (steps + 1))}))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run_transformer_benchmark(
    model_name: str,
    resolution: str | tuple[int, int, int],
    configs: dict[str, SparseAttentionConfig],
    *,
    steps: int = 3,
    num_layers: int | None = None,
    dtype=torch.bfloat16,
    device: str = "cuda",
) -> list[dict[str, Any]]:
    """Rows: per config, step time, its ratio to dense in the same run, attention share and density."""
    device = torch.device(device)
    pixels = resolution_of(model_name, resolution)
    model = build_transformer(model_name, num_layers=num_layers, dtype=dtype, device=device)
    inputs = model_inputs(model_name, pixels, dtype=dtype, device=device)
    dense_seconds = _time_steps(model, inputs, steps, device)
    rows = [{"method": "vanilla (no dit-sparse)", "seconds_per_step": dense_seconds / steps, "speedup": 1.0}]
    for label, config in configs.items():
        apply_sparse_attention(model, config)
        seconds = _time_steps(model, inputs, steps, device)
        stats = summary(model)
        remove_sparse_attention(model)
        rows.append(
            {
                "method": label,
                "seconds_per_step": seconds / steps,
                "speedup": dense_seconds / seconds,
                "mean_density": stats["mean_density"],
                "attention_share": stats["attention_seconds"] / stats["transformer_seconds"],
                "layout": stats["layout"],
            }
        )
    for row in rows:
        row |= {"model": model_name, "resolution": list(pixels), "steps": steps, "num_layers": num_layers}
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dit-sparse bench transformer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="wan2.1-1.3b")
    parser.add_argument(
        "--resolution",
        choices=["native", *sorted(RESOLUTIONS)],
        help="native: the model's own video size; default: 480p on GPU, cpu-small on CPU",
    )
    parser.add_argument("--layers", type=int, help="scale the model down (default: all on GPU, 2 on CPU)")
    parser.add_argument("--methods", default="radial,sparse_vdit,sliding_tile", help="comma-separated methods")
    parser.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="METHOD:NAME=VALUE[,NAME=VALUE]",
        help="a method with parameters, e.g. adaspa:search_steps=[0] (repeatable; after --methods, labelled by "
        "the text)",
    )
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write JSON here")
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    resolution = args.resolution or ("480p" if on_gpu else "cpu-small")
    layers = args.layers if args.layers is not None else (None if on_gpu else 2)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    configs = {"dense (through dit-sparse)": SparseAttentionConfig("dense")}
    for text in [m for m in args.methods.split(",") if m] + args.point:
        method, params = parse_method_point(text)
        configs[text] = SparseAttentionConfig(method, block_size=args.block_size, backend=args.backend, **params)
    rows = run_transformer_benchmark(
        args.model, resolution, configs, steps=args.steps, num_layers=layers, dtype=dtype, device=args.device
    )
    print(f"{'method':<28} {'s/step':>9} {'speedup':>8} {'density':>8} {'attn share':>10}")
    for row in rows:
        density = "-" if row.get("mean_density") is None else f"{row['mean_density']:.3f}"
        share = "-" if row.get("attention_share") is None else f"{row['attention_share']:.2f}"
        print(f"{row['method']:<28} {row['seconds_per_step']:>9.3f} {row['speedup']:>7.2f}x {density:>8} {share:>10}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            settings = {"model": args.model, "resolution": resolution, "layers": layers, "steps": args.steps,
                        "block_size": args.block_size, "backend": args.backend, "dtype": str(dtype),
                        "methods": list(configs)}  # fmt: skip
            report = {"environment": environment_info(args.device), "settings": settings, "rows": rows}
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
