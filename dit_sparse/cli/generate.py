"""``dit-sparse generate``: a video (or image) with sparse attention, optionally against dense with the same seed."""

from __future__ import annotations

import argparse
import os

import numpy as np

from dit_sparse.config import METHOD_NAMES, SparseAttentionConfig
from dit_sparse.generation import (
    GenerationSettings,
    enable_context_parallel,
    finish_context_parallel,
    init_context_parallel,
    load_pipeline,
    markdown_table,
    median_stats,
    pipeline_args,
    run_once,
    save_report,
    speed_report,
    write_video,
)
from dit_sparse.kernels import BACKENDS
from dit_sparse.utils import parse_params

from ._args import (
    DTYPES,
    default_device,
    default_dtype,
    fill_embedded_defaults,
    non_negative_int,
    positive_int,
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="generate with sparse attention (and optionally compare with dense)",
        description="Load a diffusers pipeline (hub id or local folder), generate with sparse attention, and write "
        "the video (mp4; png for image models). With --compare-dense, also generate densely with the same seed and "
        "write a side-by-side video and a speed/quality report.",
    )
    parser.add_argument(
        "--model", help="hub id or local folder of a supported diffusers pipeline (default: the embedded model)"
    )
    parser.add_argument("--prompt", default="a red circle moving right on a dark background")
    parser.add_argument("--negative-prompt", default=None)
    method = parser.add_mutually_exclusive_group()
    method.add_argument(
        "--method",
        choices=METHOD_NAMES,
        help="sparse-attention method (default: radial; with no --model, the embedded model's demo setting "
        "dit_sparse.embedded.DEMO_SPARSE_ATTENTION)",
    )
    method.add_argument(
        "--plan", help="JSON config file (a SparseAttentionConfig.to_dict() or {'config': ...}) or calibrated plan file"
    )
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="method parameter (JSON)")
    parser.add_argument(
        "--dense-steps",
        type=non_negative_int,
        help="first denoising steps to run dense (default: 0, or the demo setting's)",
    )
    parser.add_argument("--block-size", type=positive_int, help="mask block size (default: 128, or the demo setting's)")
    parser.add_argument("--backend", choices=["auto", *BACKENDS], default="auto")
    parser.add_argument(
        "--quant", choices=["int8", "int4"], help="quantize Q and K of the sparse attention (any sparse method or plan)"
    )
    parser.add_argument("--steps", type=positive_int, help="denoising steps (default: the pipeline's)")
    parser.add_argument("--frames", type=positive_int, help="number of frames (video models)")
    parser.add_argument("--height", type=positive_int)
    parser.add_argument("--width", type=positive_int)
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    parser.add_argument(
        "--pipeline-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another argument of the pipeline's call, e.g. frame_rate=24 or max_sequence_length=256 (JSON)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--offload", action="store_true", help="enable model CPU offload")
    parser.add_argument("--fps", type=positive_int, default=16)
    parser.add_argument("--compare-dense", action="store_true", help="also generate densely and report")
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        metavar="N",
        help="generate N times (with --compare-dense: dense and sparse alternately) and report the median times, "
        "for machines whose speed drifts; every run's times are in report.json",
    )
    parser.add_argument(
        "--ulysses",
        type=positive_int,
        default=1,
        metavar="N",
        help="Ulysses context parallelism over N GPUs: launch with torchrun --nproc-per-node N; each GPU computes "
        "1/N of the heads of every attention (Wan). Rank 0 writes the files and prints the report",
    )
    parser.add_argument("--out", required=True, help="output folder")
    return parser


def _config(args: argparse.Namespace) -> SparseAttentionConfig:
    if args.plan:
        from dit_sparse.integration.apply import _load_config

        config = _load_config(args.plan)
        if args.quant is not None:
            config.quant = args.quant
            config.validate()
        return config
    settings = {"method": "radial", "dense_steps": 0, "block_size": 128}
    if args.model is None and args.method is None:  # the embedded model's demo: its chosen method and settings
        from dit_sparse.embedded import DEMO_SPARSE_ATTENTION

        settings = dict(DEMO_SPARSE_ATTENTION)
    if args.method is not None:
        settings["method"] = args.method
    for name in ("dense_steps", "block_size"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    settings |= parse_params(args.param)  # a --param overrides the demo's value of the same name
    return SparseAttentionConfig(**settings, backend=args.backend, quant=args.quant)


def run(args: argparse.Namespace) -> int:
    from dit_sparse.embedded import DEMO_DEFAULTS

    config = _config(args)  # bad method parameters fail before any model loads
    fill_embedded_defaults(args, DEMO_DEFAULTS)
    if args.ulysses == 1:
        return _generate(args, config, default_device(args.device), rank=0)
    device, rank = init_context_parallel(args.ulysses, args.device)
    try:
        return _generate(args, config, device, rank)
    finally:
        finish_context_parallel()


def _generate(args: argparse.Namespace, config: SparseAttentionConfig, device: str, rank: int) -> int:
    """Every rank generates (context parallelism needs them all); rank 0 writes the files and the report."""
    dtype = default_dtype(args.dtype, device)
    pipe = load_pipeline(args.model, dtype=dtype, device=device, offload=args.offload)
    if args.ulysses > 1:
        enable_context_parallel(pipe, args.ulysses)
        pipe.set_progress_bar_config(disable=rank != 0)
    settings = GenerationSettings(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        steps=args.steps,
        frames=args.frames,
        height=args.height,
        width=args.width,
        guidance=args.guidance,
        seed=args.seed,
        extra=pipeline_args(pipe, parse_params(args.pipeline_arg, "--pipeline-arg")),
    )
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
    report: dict = {
        "model": args.model or "embedded",
        "method": config.method,
        "config": config.to_dict(),
        "settings": vars(settings),
        "ulysses": args.ulysses,
    }
    # the baseline runs the same path: padding keys merged in its cross-attention exactly when the sparse run's are
    baseline = SparseAttentionConfig("dense", merge_padding_keys=config.merge_padding_keys)
    dense_runs, sparse_runs = [], []
    for _ in range(args.repeats):  # alternately, so that a drift in the machine's speed reaches both alike
        if args.compare_dense:
            dense_frames, dense_stats = run_once(pipe, settings, baseline)
            dense_runs.append(dense_stats)
        frames, stats = run_once(pipe, settings, config)
        sparse_runs.append(stats)
    if rank != 0:  # every rank holds the same video
        return 0
    if args.repeats > 1:
        report["runs"] = {"dense": dense_runs, "sparse": sparse_runs}
        stats = median_stats(sparse_runs)
        dense_stats = median_stats(dense_runs) if args.compare_dense else None
    if args.compare_dense:
        report["dense_video"] = write_video(dense_frames, os.path.join(args.out, "dense.mp4"), args.fps)
    report["video"] = write_video(frames, os.path.join(args.out, "sparse.mp4"), args.fps)
    report["summary"] = stats
    if args.compare_dense:
        from dit_sparse.evaluation import compare_videos

        side = np.concatenate([dense_frames, frames], axis=2)  # (T, H, 2W, 3): dense left, sparse right
        report["side_by_side"] = write_video(side, os.path.join(args.out, "side_by_side.mp4"), args.fps)
        report["speed"] = speed_report(dense_stats, stats)
        report["quality"] = compare_videos(dense_frames, frames)
        print(markdown_table(report))
    save_report(report, os.path.join(args.out, "report.json"))
    print(f"wrote {report['video']} and {os.path.join(args.out, 'report.json')}")
    return 0
