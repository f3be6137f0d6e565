"""Attention-level quality of the static patterns: relative L2 error against dense, at target densities.

For each pattern family and target density, the family's size parameter is searched (bisection) for the
density closest to the target, the layer's attention is recomputed with that mask on captured q, k, v,
and ``||out - dense|| / ||dense||`` is reported with the density actually reached.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..attention import block_sparse_attention
from ..layout import VideoLayout
from ..mask import BlockSparseMask
from ..patterns import diagonal, multi_diagonal, radial, vertical_stripe
from .attention import random_block_mask

# family -> (builder of a mask from one size parameter, parameter range, integer parameter?)
FAMILIES: dict[str, tuple[Callable[[VideoLayout, float, int, int], BlockSparseMask], tuple[float, float], bool]] = {
    "radial": (
        lambda layout, p, block, heads: radial(layout, decay_factor=p, block_size=block, num_heads=heads),
        (1 / 256, 256.0),
        False,
    ),
    "diagonal": (
        lambda layout, p, block, heads: diagonal(layout, width=int(p), block_size=block, num_heads=heads),
        (0, None),
        True,
    ),
    "multi_diagonal": (
        lambda layout, p, block, heads: multi_diagonal(layout, width=int(p), block_size=block, num_heads=heads),
        (0, None),
        True,
    ),
    "vertical_stripe": (
        lambda layout, p, block, heads: vertical_stripe(
            layout, columns=range(max(1, int(p))), block_size=block, num_heads=heads
        ),
        (1, None),
        True,
    ),
}


def fit_density(
    family: str, layout: VideoLayout, target: float, block_size: int, heads: int
) -> tuple[BlockSparseMask, float]:
    """The family's mask whose density is closest to ``target`` (bisection on its size parameter)."""
    build, (low, high), integer = FAMILIES[family]
    high = layout.video_tokens if high is None else high
    best: tuple[float, BlockSparseMask, float] | None = None
    for _ in range(40):
        mid = (low + high) // 2 if integer else math.sqrt(low * high)
        mask = build(layout, mid, block_size, heads)
        density = mask.density()
        if best is None or abs(density - target) < best[0]:
            best = (abs(density - target), mask, float(mid))
        if density < target:
            low = mid + 1 if integer else mid
        else:
            high = mid - 1 if integer else mid
        if (integer and low > high) or (not integer and high / low < 1.01):
            break
    assert best is not None
    return best[1], best[2]


def relative_l2(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out.double() - reference.double()).norm() / reference.double().norm())


def pattern_quality(
    calls: Sequence[Any], densities: Sequence[float] = (0.5, 0.25, 0.10), block_size: int = 64
) -> list[dict[str, Any]]:
    """Rows (family, target, density, parameter, rel_l2 averaged over the captured calls)."""
    rows = []
    families = [*FAMILIES, "random"]
    for family in families:
        for target in densities:
            errors, reached, params = [], [], []
            for call in calls:
                heads = call.q.shape[1]
                if family == "random":
                    generator = torch.Generator().manual_seed(0)
                    mask = random_block_mask(
                        1, heads, call.layout.num_tokens, target, (block_size, block_size), generator=generator
                    )
                    param = None
                else:
                    mask, param = fit_density(family, call.layout, target, block_size, heads)
                dense = torch.nn.functional.scaled_dot_product_attention(call.q, call.k, call.v)
                out = block_sparse_attention(call.q, call.k, call.v, mask, backend="reference")
                errors.append(relative_l2(out, dense))
                reached.append(mask.density())
                params.append(param)
            rows.append(
                {
                    "family": family,
                    "target_density": target,
                    "density": sum(reached) / len(reached),
                    "parameter": params[0],
                    "rel_l2": sum(errors) / len(errors),
                }
            )
    return rows


def _tiny_wan_calls(frames: int, height: int, width: int, seed: int):
    """q, k, v of both layers of a small random-weight Wan transformer (3D RoPE on) at one step."""
    from diffusers import WanTransformer3DModel

    from ..integration.capture import capture_attention_inputs

    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=128, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024,
    ).eval()  # fmt: skip
    latents = torch.randn(1, 4, frames, 2 * height, 2 * width)  # (B, C, F, H, W)
    with torch.no_grad(), capture_attention_inputs(model) as calls:
        model(latents, torch.tensor([900.0]), torch.randn(1, 8, 32))
    return calls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pattern_quality",
        description="Relative L2 error of each static pattern against dense attention at target densities, on "
        "q/k/v captured from a small random-weight Wan transformer (no trained model needed; random weights "
        "have little of a trained model's structure, so read the numbers as a comparison between patterns).",
    )
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--height", type=int, default=16, help="token rows per frame")
    parser.add_argument("--width", type=int, default=16, help="token columns per frame")
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--densities", default="0.5,0.25,0.10", help="comma-separated fractions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    densities = [float(x) for x in args.densities.split(",")]
    calls = _tiny_wan_calls(args.frames, args.height, args.width, args.seed)
    rows = pattern_quality(calls, densities, args.block_size)
    print(f"{'family':<16} {'target':>6} {'density':>8} {'parameter':>10} {'rel L2':>8}")
    for row in rows:
        param = "-" if row["parameter"] is None else f"{row['parameter']:.4g}"
        print(
            f"{row['family']:<16} {row['target_density']:>6.2f} {row['density']:>8.3f} "
            f"{param:>10} {row['rel_l2']:>8.4f}"
        )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"settings": vars(args), "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
