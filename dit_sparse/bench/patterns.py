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
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import torch

from ..attention import block_sparse_attention, pyramid_attention
from ..layout import VideoLayout
from ..levels import LevelMask
from ..mask import BlockSparseMask
from ..patterns import diagonal, multi_diagonal, radial, vertical_stripe
from ..scoring import block_attention_mass
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
    return bisect_density(lambda p: build(layout, p, block_size, heads), target, low, high, integer)


def bisect_density(build: Callable[[float], Any], target: float, low: float, high: float, integer: bool):
    """``(built, parameter)`` whose density (``built.density()`` or ``built.mask.density()``) is closest to
    ``target``, for a builder whose density grows with its parameter."""
    best: tuple[float, Any, float] | None = None
    for _ in range(40):
        mid = (low + high) // 2 if integer else math.sqrt(low * high)
        built = build(mid)
        density = (built.mask if hasattr(built, "mask") else built).density()
        if best is None or abs(density - target) < best[0]:
            best = (abs(density - target), built, float(mid))
        if density < target:
            low = mid + 1 if integer else mid
        else:
            high = mid - 1 if integer else mid
        if (integer and low > high) or (not integer and high / low < 1.001):
            break
    assert best is not None
    return best[1], best[2]


# dynamic method -> (config keyword that sets its density, parameter range); each call searches anew
DYNAMIC = {
    "sparsed": ("tau", (1e-4, 1.0), {}),
    "adaspa": ("density", (1e-3, 1.0), {}),  # searches at the call's own step (set in dynamic_plan)
    "xattention": ("tau", (1e-4, 1.0), {"warmup_steps": 0}),  # its reference's stride 16, key block 0 kept
    "draft": ("fraction", (1e-4, 1.0), {"window": (4, 8)}),
    # level masks (compute density: pooled blocks at their share): PSA's ranked quotas, and our mass allocation
    "pyramid_quota": ("density", (1e-3, 1.0), {"allocation": "quota"}),
    "pyramid_mass": ("density", (1e-3, 1.0), {"allocation": "mass"}),
}


# dynamic methods whose knob is the compute density they reach (set directly, not bisected)
EXACT_KNOB = ("pyramid_quota", "pyramid_mass")


def dynamic_plan(method: str, call: Any, value: float, block_size: int):
    """The plan a dynamic method makes for ``call`` with its density knob at ``value`` (timed)."""
    from ..config import SparseAttentionConfig
    from ..integration.specs import SPECS
    from ..methods import AttentionCall, build_method

    knob, _, extra = DYNAMIC[method]
    if method in ("adaspa", *EXACT_KNOB):  # another search step would mean "dense, not searched yet"
        extra = {**extra, "search_steps": (call.step,)}
    name = "pyramid" if method.startswith("pyramid") else method
    config = SparseAttentionConfig(name, block_size=block_size, **{knob: min(value, 1.0)}, **extra)
    spec = next(s for s in SPECS if s.name == "wan")
    attention_call = AttentionCall(0, call.step, None, call.layout, call.q, call.k, call.v)
    start = time.perf_counter()
    plan = build_method(config, spec).plan_for(attention_call)
    return SimpleNamespace(mask=plan.mask, permutation=plan.permutation, search_seconds=time.perf_counter() - start)


def relative_l2(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out.double() - reference.double()).norm() / reference.double().norm())


def recall(
    q: torch.Tensor, k: torch.Tensor, mask: BlockSparseMask | LevelMask, permutation: torch.Tensor | None = None
) -> float:
    """Kept attention mass: the exact attention probability that falls in kept blocks (a level mask: blocks
    read at any level, pooled ones included), averaged over rows."""
    from ..integration.state import _reorder

    if permutation is not None:
        q, k = _reorder(q, permutation), _reorder(k, permutation)
    mass = block_attention_mass(q, k, block_size=mask.block_size)  # (B, H, nQ, nK), rows sum to 1
    read = (mask.levels >= 0) if isinstance(mask, LevelMask) else mask.blocks
    return float((mass * read).sum(-1).mean())


def _attention(call: Any, mask: BlockSparseMask | LevelMask, permutation: torch.Tensor | None) -> torch.Tensor:
    from ..integration.state import _reorder
    from ..layout import invert_permutation

    if isinstance(mask, LevelMask):  # the CPU path equals the token-level twin (tests/kernels/test_pyramid.py)
        return pyramid_attention(call.q, call.k, call.v, mask)
    if permutation is None:
        return block_sparse_attention(call.q, call.k, call.v, mask, backend="reference")
    q, k, v = (_reorder(t, permutation) for t in (call.q, call.k, call.v))
    return _reorder(block_sparse_attention(q, k, v, mask, backend="reference"), invert_permutation(permutation))


def pattern_quality(
    calls: Sequence[Any], densities: Sequence[float] = (0.5, 0.25, 0.10), block_size: int = 64, dynamic: bool = True
) -> list[dict[str, Any]]:
    """Rows (family, target, density, parameter, rel_l2, recall, search_overhead) averaged over the calls.

    ``search_overhead`` (dynamic methods) is the time to make the call's mask over the time of dense SDPA
    on the same inputs (CPU wall time).
    """
    rows = []
    families = [*FAMILIES, "random", *(DYNAMIC if dynamic else ())]
    for family in families:
        for target in densities:
            errors, reached, recalls, overheads, params = [], [], [], [], []
            for call in calls:
                heads = call.q.shape[1]
                permutation, overhead = None, None
                if family == "random":
                    generator = torch.Generator().manual_seed(0)
                    n = call.layout.num_tokens
                    mask = random_block_mask(1, heads, n, target, (block_size, block_size), generator=generator)
                    param = None
                elif family in EXACT_KNOB:  # the knob is the compute density itself: no search
                    plan, param = dynamic_plan(family, call, target, block_size), target
                    mask, permutation = plan.mask, plan.permutation
                    start = time.perf_counter()
                    torch.nn.functional.scaled_dot_product_attention(call.q, call.k, call.v)
                    overhead = plan.search_seconds / (time.perf_counter() - start)
                elif family in DYNAMIC:
                    plan, param = bisect_density(
                        lambda value, family=family, call=call: dynamic_plan(family, call, value, block_size),
                        target,
                        *DYNAMIC[family][1],
                        integer=False,
                    )
                    mask, permutation = plan.mask, plan.permutation
                    start = time.perf_counter()
                    torch.nn.functional.scaled_dot_product_attention(call.q, call.k, call.v)
                    overhead = plan.search_seconds / (time.perf_counter() - start)
                else:
                    mask, param = fit_density(family, call.layout, target, block_size, heads)
                dense = torch.nn.functional.scaled_dot_product_attention(call.q, call.k, call.v)
                errors.append(relative_l2(_attention(call, mask, permutation), dense))
                reached.append(mask.density())
                recalls.append(recall(call.q, call.k, mask, permutation))
                overheads.append(overhead)
                params.append(param)
            rows.append(
                {
                    "family": family,
                    "target_density": target,
                    "density": sum(reached) / len(reached),
                    "parameter": params[0],
                    "rel_l2": sum(errors) / len(errors),
                    "recall": sum(recalls) / len(recalls),
                    "search_overhead": None if overheads[0] is None else sum(overheads) / len(overheads),
                }
            )
    return rows


# Each method at its published setting (SparseAttentionConfig.recommended, Wan 2.1), as (row name, method,
# parameter overrides); radial also with the lossless block rule.
PAPER_SETTINGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("radial (paper)", "radial", {}),
    ("radial (cover)", "radial", {"block_rule": "cover"}),
    ("svg (paper)", "svg", {}),
    ("xattention (paper)", "xattention", {}),
    ("draft (paper)", "draft", {}),
    ("adaspa (paper)", "adaspa", {}),
    ("pyramid (paper)", "pyramid", {}),
    ("sparsed (default)", "sparsed", {}),
    ("sliding_tile (default)", "sliding_tile", {}),
    ("sparse_vdit (default)", "sparse_vdit", {}),
)


def paper_setting_rows(calls: Sequence[Any], block_size: int = 64) -> list[dict[str, Any]]:
    """Rows (family, density, rel_l2, recall) of each method at its published setting, averaged over the calls.

    The setting's schedule (dense steps and layers, warm-up) is left out: each call is treated as a sparse step
    at which searching methods search (so the row is the mask the method makes there).
    """
    from ..config import SparseAttentionConfig
    from ..integration.specs import SPECS
    from ..methods import AttentionCall, build_method

    spec = next(s for s in SPECS if s.name == "wan")
    rows = []
    for name, method, overrides in PAPER_SETTINGS:
        errors, reached, recalls = [], [], []
        params = {**SparseAttentionConfig.recommended(method, model="wan2.1").params, **overrides}
        if method == "xattention":
            params["warmup_steps"] = 0
        for call in calls:
            if method in ("adaspa", "pyramid"):
                params["search_steps"] = (call.step,)
            config = SparseAttentionConfig(method, block_size=block_size, **params)
            plan = build_method(config, spec).plan_for(
                AttentionCall(0, call.step, None, call.layout, call.q, call.k, call.v)
            )
            dense = torch.nn.functional.scaled_dot_product_attention(call.q, call.k, call.v)
            errors.append(relative_l2(_attention(call, plan.mask, plan.permutation), dense))
            reached.append(plan.mask.density())
            recalls.append(recall(call.q, call.k, plan.mask, plan.permutation))
        rows.append(
            {
                "family": name,
                "target_density": None,
                "density": sum(reached) / len(reached),
                "parameter": None,
                "rel_l2": sum(errors) / len(errors),
                "recall": sum(recalls) / len(recalls),
                "search_overhead": None,
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


def embedded_calls(step: int = 10, seed: int = 0) -> list:
    """q, k, v of every self-attention layer of the embedded model at ``step`` of one default generation."""
    from ..embedded import GENERATION_DEFAULTS, load_pipeline
    from ..embedded.scenes import evaluation_scenes
    from ..integration.capture import capture_attention_inputs

    steps = GENERATION_DEFAULTS["num_inference_steps"]
    if not 0 <= step < steps:
        raise ValueError(f"step must be in [0, {steps}), got {step}")
    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    prompt = evaluation_scenes(1)[0].prompt
    with torch.no_grad(), capture_attention_inputs(pipe, steps=[step]) as calls:
        pipe(prompt, generator=torch.Generator().manual_seed(seed), output_type="latent", **GENERATION_DEFAULTS)
    return calls


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the measured q, k, v come from: ``--source``, its size or step, ``--block-size`` and ``--seed``."""
    parser.add_argument(
        "--source",
        choices=["random-wan", "embedded"],
        default="random-wan",
        help="q/k/v from a random-weight 2-layer Wan (size from --frames/--height/--width) or from the trained "
        "embedded model (its 9 x 16 x 16 tokens, every layer, cond and uncond, at --step of a default generation)",
    )
    parser.add_argument("--frames", type=int, default=9, help="random-wan: latent frames")
    parser.add_argument("--height", type=int, default=16, help="random-wan: token rows per frame")
    parser.add_argument("--width", type=int, default=16, help="random-wan: token columns per frame")
    parser.add_argument("--step", type=int, default=10, help="embedded: the denoising step captured")
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)


def write_rows(args: argparse.Namespace, rows: list[dict]) -> None:
    """The settings and rows as JSON to ``--out``, when it was given."""
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"settings": vars(args), "rows": rows}, handle, indent=2)


def captured_calls(args: argparse.Namespace) -> list:
    """The calls that :func:`add_source_arguments`' options name."""
    if args.source == "embedded":
        return embedded_calls(args.step, args.seed)
    return _tiny_wan_calls(args.frames, args.height, args.width, args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pattern_quality",
        description="Relative L2 error of each static pattern against dense attention at target densities, on "
        "q/k/v captured from a small random-weight Wan transformer (random weights have little of a trained "
        "model's structure, so read those numbers as a comparison between patterns) or from the trained "
        "embedded model (--source embedded).",
    )
    add_source_arguments(parser)
    parser.add_argument("--densities", default="0.5,0.25,0.10", help="comma-separated fractions")
    parser.add_argument(
        "--paper-settings", action="store_true", help="also each method at its published setting (one row each)"
    )
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    densities = [float(x) for x in args.densities.split(",")]
    calls = captured_calls(args)
    rows = pattern_quality(calls, densities, args.block_size)
    if args.paper_settings:
        rows += paper_setting_rows(calls, args.block_size)
    print(
        f"{'method':<16} {'target':>6} {'density':>8} {'parameter':>10} {'rel L2':>8} {'recall':>7} "
        f"{'search/dense':>12}"
    )
    for row in rows:
        param = "-" if row["parameter"] is None else f"{row['parameter']:.4g}"
        overhead = "-" if row["search_overhead"] is None else f"{row['search_overhead']:.2f}"
        target = "paper" if row["target_density"] is None else f"{row['target_density']:.2f}"
        print(
            f"{row['family']:<16} {target:>6} {row['density']:>8.3f} {param:>10} "
            f"{row['rel_l2']:>8.4f} {row['recall']:>7.3f} {overhead:>12}"
        )
    write_rows(args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
