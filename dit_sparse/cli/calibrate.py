"""``dit-sparse calibrate``: search per-head attention patterns on a few prompts and write a plan file.

Writes the plan (``--out plan.json``, plus ``plan.safetensors`` when some heads carry explicit masks), a
picture of it (``plan.png``: layers x heads, colour = pattern, label = density) and prints the summary
table. Run the plan with ``dit-sparse generate --plan plan.json`` or ``apply_sparse_attention(pipe,
"plan.json")``.
"""

from __future__ import annotations

import argparse
import os

from dit_sparse.calibration import calibrate, render_plan
from dit_sparse.calibration.search import check_target
from dit_sparse.generation import accepted_kwargs, load_pipeline

from ._args import DTYPES, default_device, default_dtype, fill_embedded_defaults, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "calibrate",
        help="search per-head sparse-attention patterns and write a plan file",
        description="Run the dense model on the prompts, measure every self-attention head's attention at the "
        "sampled steps, and choose per (step bucket, layer, head) the cheapest pattern meeting the target "
        "(Sparse-vDiT-style search), or with --method paro each head's token order and block mask at a density "
        "(PAROAttention). Writes the plan JSON, a PNG of it, and prints a summary table.",
    )
    parser.add_argument(
        "--model", help="hub id or local folder of a supported diffusers pipeline (default: the embedded model)"
    )
    parser.add_argument("--prompts", required=True, help="text file, one prompt per line ('#' lines are comments)")
    parser.add_argument("--out", required=True, help="plan file to write (JSON), e.g. plan.json")
    parser.add_argument(
        "--method",
        choices=["sparse_vdit", "paro"],
        default="sparse_vdit",
        help="sparse_vdit: per-head patterns meeting a target (give --target-recall or --max-rel-l2); paro: "
        "per-head token orders and masks at --density",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-recall", type=float, help="keep at least this fraction of each head's attention")
    target.add_argument("--max-rel-l2", type=float, help="keep each head's output relative L2 error at most this")
    parser.add_argument("--density", type=float, default=0.25, help="paro: fraction of key blocks kept per row")
    parser.add_argument(
        "--levels",
        action="store_true",
        help="sparse_vdit: also offer each head Pyramid Sparse Attention level tables (full, pooled and dropped "
        "blocks, PSA's quotas at compute 5-40%%)",
    )
    parser.add_argument(
        "--quant-weight", type=float, default=1.0, help="paro: weight of the quantization error in the order score"
    )
    parser.add_argument(
        "--quant", choices=["int8", "int4"], help="paro: the quantization the plan will run with (sets the bits)"
    )
    parser.add_argument("--steps", type=positive_int, help="denoising steps (default: the pipeline's)")
    parser.add_argument(
        "--step-buckets",
        default="1",
        help="number of equal step buckets, or their start steps as a comma list (e.g. 0,10,30)",
    )
    parser.add_argument("--steps-per-bucket", type=positive_int, help="steps sampled per bucket (default: all)")
    parser.add_argument("--block-size", type=positive_int, default=128)
    parser.add_argument(
        "--cost",
        choices=["auto", "flops", "measured"],
        default="auto",
        help="cost model: measured kernel times (GPU), analytic FLOPs, or auto (measured on a GPU)",
    )
    parser.add_argument("--frames", type=positive_int, help="number of frames (video models)")
    parser.add_argument("--height", type=positive_int)
    parser.add_argument("--width", type=positive_int)
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def read_prompts(path: str) -> list[str]:
    """Non-empty lines of ``path`` that are not ``#`` comments."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except FileNotFoundError as error:
        raise ValueError(f"no such prompts file: {path}") from error
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"{path} holds no prompts (one per line; '#' lines are comments)")
    return prompts


def _step_buckets(text: str) -> int | list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError as error:
        raise ValueError(f"--step-buckets takes a number or comma-separated start steps, got {text!r}") from error
    return values[0] if len(values) == 1 and "," not in text else values


def run(args: argparse.Namespace) -> int:
    prompts = read_prompts(args.prompts)  # bad input fails before any model loads
    if args.method == "paro":
        if args.levels:
            raise ValueError("--levels adds level tables to the sparse_vdit search; --method paro has none")
        if args.target_recall is not None or args.max_rel_l2 is not None:
            raise ValueError("--method paro keeps --density of the blocks; --target-recall/--max-rel-l2 do not apply")
    else:
        check_target(args.target_recall, args.max_rel_l2)
        if args.levels and args.target_recall is not None:
            raise ValueError("--levels needs --max-rel-l2: level tables are scored by their output error")
    buckets = _step_buckets(args.step_buckets)
    fill_embedded_defaults(args)
    device = default_device(args.device)
    dtype = default_dtype(args.dtype, device)
    pipe = load_pipeline(args.model, dtype=dtype, device=device)
    optional = {"num_frames": args.frames, "height": args.height, "width": args.width, "guidance_scale": args.guidance}
    plan = calibrate(
        pipe,
        prompts,
        method=args.method,
        density=args.density,
        quant_weight=args.quant_weight,
        quant=args.quant,
        target_recall=args.target_recall,
        max_rel_l2=args.max_rel_l2,
        levels=args.levels,
        num_inference_steps=args.steps,
        step_buckets=buckets,
        steps_per_bucket=args.steps_per_bucket,
        block_size=args.block_size,
        cost=args.cost,
        negative_prompt=args.negative_prompt,
        seed=args.seed,
        progress=not args.no_progress,
        **accepted_kwargs(pipe, optional),
    )
    path = plan.save(args.out)
    picture = os.path.splitext(path)[0] + ".png"
    render_plan(plan, picture)
    print(plan.summary_table())
    print(f"wrote {path} and {picture}")
    return 0
