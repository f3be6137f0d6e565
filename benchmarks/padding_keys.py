"""Cross-attention with and without its repeated padding keys merged, on the embedded model at the demo size.

Captures the text cross-attention inputs of one transformer call of the embedded Wan at ``DEMO_DEFAULTS`` (6,400
video tokens; the prompt padded to the pipeline's 512 rows), then times, interleaved and fastest of ``--repeats``:

- one cross-attention call as diffusers runs it (SDPA over every key, on diffusers' (B, N, H, D) strides) against
  :func:`dit_sparse.integration.cross.merged_cross_attention`, and their largest difference;
- one dense transformer forward through dit-sparse with ``merge_padding_keys`` off and on.

    python benchmarks/padding_keys.py --out benchmarks/results/<date>-padding-keys-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F

import dit_sparse as ds
from dit_sparse.integration.cross import merged_cross_attention, repeated_tail_start


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else "unknown"


def fastest(functions: dict, repeats: int) -> dict[str, float]:
    """Seconds per call of each function, the fastest of ``repeats`` rounds that run them one after another."""
    best = {name: float("inf") for name in functions}
    for fn in functions.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="a red circle moving right on a dark background")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None, help="write the JSON here")
    args = parser.parse_args()

    pipe = ds.embedded.load_pipeline()
    transformer = pipe.transformer
    demo = ds.embedded.DEMO_DEFAULTS
    prompt_embeds = pipe.encode_prompt(args.prompt, do_classifier_free_guidance=False, max_sequence_length=512)[0]
    frames = (demo["num_frames"] - 1) // pipe.vae_scale_factor_temporal + 1
    latents = torch.randn(
        1,
        transformer.config.in_channels,
        frames,
        demo["height"] // pipe.vae_scale_factor_spatial,
        demo["width"] // pipe.vae_scale_factor_spatial,
    )
    timestep = torch.tensor([500.0])

    def forward():
        transformer(hidden_states=latents, timestep=timestep, encoder_hidden_states=prompt_embeds, return_dict=False)

    captured = {}

    def capture(module, args, kwargs):
        if "qkv" not in captured:
            attn, hidden = module, args[0]
            context = args[1] if len(args) > 1 else kwargs["encoder_hidden_states"]
            q = attn.norm_q(attn.to_q(hidden)).unflatten(2, (attn.heads, -1))
            k = attn.norm_k(attn.to_k(context)).unflatten(2, (attn.heads, -1))
            v = attn.to_v(context).unflatten(2, (attn.heads, -1))
            captured["qkv"] = (q, k, v)

    with torch.no_grad():
        handle = transformer.blocks[0].attn2.register_forward_pre_hook(capture, with_kwargs=True)
        forward()
        handle.remove()
        q, k, v = captured["qkv"]  # (B, N, H, D), as diffusers hands them to the attention backend
        start = repeated_tail_start(k, v)

        def as_diffusers():
            return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))

        def merged():
            return merged_cross_attention(q, k, v, start, None)

        difference = float((as_diffusers().transpose(1, 2) - merged()).abs().max())
        call = fastest({"dense": as_diffusers, "merged": merged}, args.repeats)

        def forward_with(merge: bool):
            def run():
                ds.apply_sparse_attention(transformer, ds.SparseAttentionConfig("dense", merge_padding_keys=merge))
                forward()

            return run

        forwards = fastest({"kept": forward_with(False), "merged": forward_with(True)}, args.repeats)
        ds.remove_sparse_attention(transformer)

    result = {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "video_tokens": int(q.shape[1]),
        "keys": int(k.shape[1]),
        "keys_merged": int(start + 1),
        "cross_attention_ms": {name: 1e3 * t for name, t in call.items()},
        "max_abs_difference": difference,
        "forward_ms": {name: 1e3 * t for name, t in forwards.items()},
        "cross_attention_calls_per_forward": len(transformer.blocks),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
