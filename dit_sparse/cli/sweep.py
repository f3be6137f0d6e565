"""``dit-sparse sweep``: the speed-quality frontier, one point per (method, setting), on one prompt and seed."""

from __future__ import annotations

import argparse
import os

from dit_sparse.config import SparseAttentionConfig, parse_method_point
from dit_sparse.generation import GenerationSettings, load_pipeline, run_once, save_report
from dit_sparse.kernels import BACKENDS

from ._args import DTYPES, default_device, default_dtype, fill_embedded_defaults, non_negative_int, positive_int

# method -> (parameter that moves its density, values from dense-ish to sparse)
DEFAULT_GRID = {
    "radial": ("decay_factor", [4.0, 1.0, 0.25]),
    "sparsed": ("fraction", [0.5, 0.25, 0.1]),
    "adaspa": ("density", [0.5, 0.25, 0.1]),
    "draft": ("fraction", [0.5, 0.25, 0.1]),
    "xattention": ("tau", [0.95, 0.9, 0.7]),
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sweep",
        help="speed-quality frontier: PSNR against speedup over methods and settings",
        description="Generate once densely and once per (method, setting) with the same prompt and seed; write "
        "frontier.json, a markdown table, and frontier.png (PSNR against end-to-end speedup, one point each).",
    )
    parser.add_argument("--model", help="hub id or local folder of a supported diffusers pipeline")
    parser.add_argument("--prompt", default="a red circle moving right on a dark background")
    parser.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="METHOD:NAME=VALUE[,NAME=VALUE]",
        help="one point (repeatable), e.g. adaspa:density=0.2; default: a grid over "
        + ", ".join(f"{m} {p}" for m, (p, _) in DEFAULT_GRID.items()),
    )
    parser.add_argument("--block-size", type=positive_int, default=128)
    parser.add_argument("--backend", choices=["auto", *BACKENDS], default="auto")
    parser.add_argument("--dense-steps", type=non_negative_int, default=0)
    parser.add_argument("--steps", type=positive_int)
    parser.add_argument("--frames", type=positive_int)
    parser.add_argument("--height", type=positive_int)
    parser.add_argument("--width", type=positive_int)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(DTYPES))
    parser.add_argument("--device")
    parser.add_argument("--out", required=True, help="output folder")
    return parser


_TIMES = ("total_seconds", "transformer_seconds", "attention_seconds")


def parse_point(text: str) -> tuple[str, dict]:
    """A sweep point names its parameters: ``METHOD:NAME=VALUE[,NAME=VALUE]`` (see ``parse_method_point``)."""
    if ":" not in text:
        raise ValueError(f"--point takes METHOD:NAME=VALUE[,NAME=VALUE], got {text!r}")
    return parse_method_point(text)


def plot_frontier(points: list[dict], path: str) -> None:
    """PSNR (up) against speedup (across), one labelled dot per point; PIL only."""
    from PIL import Image, ImageDraw

    width, height, margin = 640, 420, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    finite = [p for p in points if p["psnr"] is not None and p["psnr"] != float("inf")]
    xs = [1.0, *(p["speedup"] for p in finite)]  # 1x (dense) always on the axis
    ys = [p["psnr"] for p in finite] or [0.0]
    x_lo, x_hi = min(xs) * 0.95, max(xs) * 1.05
    y_lo, y_hi = min(ys) - 1.0, max(ys) + 1.0

    def to_px(x, y):
        return (
            margin + (x - x_lo) / (x_hi - x_lo) * (width - 2 * margin),
            height - margin - (y - y_lo) / (y_hi - y_lo) * (height - 2 * margin),
        )

    draw.line([(margin, margin), (margin, height - margin), (width - margin, height - margin)], fill="black")
    draw.text((width // 2 - 60, height - margin + 25), "end-to-end speedup (x)", fill="black")
    draw.text((5, margin - 20), "PSNR vs dense (dB)", fill="black")
    for value in (x_lo, x_hi):
        draw.text((to_px(value, y_lo)[0] - 10, height - margin + 5), f"{value:.2f}", fill="black")
    for value in (y_lo, y_hi):
        draw.text((5, to_px(x_lo, value)[1] - 6), f"{value:.1f}", fill="black")
    for point in finite:
        x, y = to_px(point["speedup"], point["psnr"])
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(32, 96, 200))
        draw.text((x + 6, y - 6), point["label"], fill="black")
    image.save(path, format="PNG")


def run(args: argparse.Namespace) -> int:
    from dit_sparse.evaluation import compare_videos

    if args.point:
        points = [parse_point(text) for text in args.point]
    else:
        points = [(m, {p: v}) for m, (p, values) in DEFAULT_GRID.items() for v in values]
    common = dict(dense_steps=args.dense_steps, block_size=args.block_size, backend=args.backend)
    # a point's own parameters (dense_steps too) override the common ones; all are validated before any run
    configs = [(m, params, SparseAttentionConfig(m, **(common | params))) for m, params in points]
    fill_embedded_defaults(args)
    device = default_device(args.device)
    dtype = default_dtype(args.dtype, device)
    pipe = load_pipeline(args.model, dtype=dtype, device=device)
    settings = GenerationSettings(
        prompt=args.prompt, steps=args.steps, frames=args.frames, height=args.height, width=args.width,
        guidance=args.guidance, seed=args.seed,
    )  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    dense_frames, dense_before = run_once(pipe, settings, SparseAttentionConfig("dense"))
    measured = []
    for method, params, config in configs:
        frames, stats = run_once(pipe, settings, config)
        measured.append((method, params, stats, compare_videos(dense_frames, frames, lpips=False)))
    # A second dense run at the end: a machine whose speed drifts over a long sweep (a shared VM does) would
    # otherwise bias the later points. Each point is measured against the dense times interpolated to its place
    # between the two runs.
    _, dense_after = run_once(pipe, settings, SparseAttentionConfig("dense"))
    rows = []
    for index, (method, params, stats, quality) in enumerate(measured):
        weight = (index + 1) / (len(measured) + 1)
        dense = {key: (1 - weight) * dense_before[key] + weight * dense_after[key] for key in _TIMES}
        label = method + "(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")"
        rows.append(
            {
                "label": label,
                "method": method,
                "params": params,
                "total_seconds": stats["total_seconds"],
                "dense_total_seconds": dense["total_seconds"],
                "speedup": dense["total_seconds"] / stats["total_seconds"],
                "transformer_speedup": dense["transformer_seconds"] / stats["transformer_seconds"],
                "attention_speedup": dense["attention_seconds"] / stats["attention_seconds"],
                "mean_density": stats["mean_density"],
                "search_seconds": stats.get("search_seconds"),
                "overhead_fraction": stats.get("overhead_fraction"),
                "psnr": quality["psnr"],
                "ssim": quality["ssim"],
            }
        )
    print("| point | density | speedup | transformer speedup | attention speedup | PSNR (dB) | SSIM |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['label']} | {row['mean_density']:.3f} | {row['speedup']:.2f}x | {row['transformer_speedup']:.2f}x "
            f"| {row['attention_speedup']:.2f}x | {row['psnr']:.2f} | {row['ssim']:.4f} |"
        )
    before, after = dense_before["total_seconds"], dense_after["total_seconds"]
    print(f"dense end to end {before:.2f} s before the points, {after:.2f} s after (speedups use both)")
    report = {"dense": dense_before, "dense_after": dense_after, "dense_drift": after / before, "points": rows}
    save_report(report, os.path.join(args.out, "frontier.json"))
    plot_frontier(rows, os.path.join(args.out, "frontier.png"))
    print(f"wrote {os.path.join(args.out, 'frontier.json')} and frontier.png")
    return 0
