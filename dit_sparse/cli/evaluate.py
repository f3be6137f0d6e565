"""``dit-sparse evaluate``: PSNR, SSIM, LPIPS and temporal flickering of a video against its reference."""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

from dit_sparse.evaluation import VIDEO_EXTENSIONS, compare_videos, plot_per_frame_psnr


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="compare a video with its reference: PSNR, SSIM, LPIPS, temporal flickering",
        description="Compare CAND with REF frame by frame (PSNR, SSIM, LPIPS when its weights are cached) and "
        "score each one's temporal flickering (VBench). REF and CAND are two video files, or two folders whose "
        f"same-named {'/'.join(ext.lstrip('.') for ext in VIDEO_EXTENSIONS)} files are paired. Prints a markdown "
        "table.",
    )
    parser.add_argument("reference", metavar="REF", help="reference video, or a folder of them")
    parser.add_argument("candidate", metavar="CAND", help="video to score, or a folder of same-named ones")
    parser.add_argument(
        "--json", metavar="OUT.json", help='write the metrics as JSON (an infinite PSNR is written as "inf")'
    )
    parser.add_argument(
        "--plot", metavar="OUT.png", help="plot per-frame PSNR; with folders, one PNG per pair: OUT-<name>_<ext>.png"
    )
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    return parser


def pair_videos(reference: str, candidate: str) -> list[tuple[str, str, str]]:
    """``(name, reference_path, candidate_path)`` for two files, or for same-named videos in two folders.

    Args:
        reference (`str`): a video file or a folder.
        candidate (`str`): a video file, or a folder when ``reference`` is one.

    Raises:
        ValueError: a path is missing; one is a folder and the other is not; a folder has no videos; a video is
            in only one of the folders.
    """
    for label, path in (("REF", reference), ("CAND", candidate)):
        if not os.path.exists(path):
            raise ValueError(f"{label} not found: {path}")
    if os.path.isdir(reference) != os.path.isdir(candidate):
        kinds = ["folder" if os.path.isdir(p) else "file" for p in (reference, candidate)]
        raise ValueError(
            f"REF is a {kinds[0]} ({reference}) and CAND a {kinds[1]} ({candidate}); expected two files or two folders"
        )
    if not os.path.isdir(reference):
        return [(os.path.basename(candidate), reference, candidate)]
    names = {}
    for label, folder in (("REF", reference), ("CAND", candidate)):
        names[label] = {
            entry
            for entry in os.listdir(folder)
            if entry.lower().endswith(VIDEO_EXTENSIONS) and os.path.isfile(os.path.join(folder, entry))
        }
        if not names[label]:
            raise ValueError(f"{label} folder {folder} has no {' or '.join(VIDEO_EXTENSIONS)} videos")
    for label, folder, other, other_folder in (
        ("REF", reference, "CAND", candidate),
        ("CAND", candidate, "REF", reference),
    ):
        unpaired = sorted(names[label] - names[other])
        if unpaired:
            files = ", ".join(os.path.join(folder, name) for name in unpaired)
            raise ValueError(f"{files} has no same-named video in {other} folder {other_folder}")
    return [(name, os.path.join(reference, name), os.path.join(candidate, name)) for name in sorted(names["REF"])]


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present and len(present) == len(values) else None


def mean_metrics(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over pairs of ``psnr``, ``ssim``, ``lpips`` (None unless every pair has it) and both flickerings."""
    rows = list(results.values())
    return {
        "videos": len(rows),
        "frames": sum(r["frames"] for r in rows),
        "psnr": _mean([r["psnr"] for r in rows]),
        "ssim": _mean([r["ssim"] for r in rows]),
        "lpips": _mean([r["lpips"] for r in rows]),
        "temporal_flickering": {
            side: _mean([r["temporal_flickering"][side] for r in rows]) for side in ("reference", "candidate")
        },
    }


def _cell(value: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def format_table(results: dict[str, dict[str, Any]], mean: dict[str, Any] | None = None) -> str:
    """Markdown table: one row per pair (and a mean row), then why LPIPS is n/a where it is."""
    lines = [
        "| video | frames | size (WxH) | PSNR (dB) | SSIM | LPIPS | flickering REF | flickering CAND |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        flicker = r["temporal_flickering"]
        lines.append(
            f"| {name} | {r['frames']} | {r['width']}x{r['height']} | {_cell(r['psnr'], 2)} | {_cell(r['ssim'], 4)} "
            f"| {_cell(r['lpips'], 4)} | {_cell(flicker['reference'], 4)} | {_cell(flicker['candidate'], 4)} |"
        )
    if mean is not None:
        flicker = mean["temporal_flickering"]
        lines.append(
            f"| **mean of {mean['videos']}** | {mean['frames']} |  | {_cell(mean['psnr'], 2)} "
            f"| {_cell(mean['ssim'], 4)} | {_cell(mean['lpips'], 4)} | {_cell(flicker['reference'], 4)} "
            f"| {_cell(flicker['candidate'], 4)} |"
        )
    reasons = sorted({r["lpips_unavailable"] for r in results.values() if r["lpips_unavailable"]})
    lines += [f"\nLPIPS n/a: {reason}" for reason in reasons]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    """Strict JSON: infinite floats as the strings "inf" / "-inf" (NaN as "nan")."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _plot_path(plot: str, name: str, folder_mode: bool) -> str:
    if not folder_mode:
        return plot
    stem, ext = os.path.splitext(plot)
    return f"{stem}-{name.replace('.', '_')}{ext or '.png'}"


def run(args: argparse.Namespace) -> int:
    pairs = pair_videos(args.reference, args.candidate)
    folder_mode = os.path.isdir(args.reference)
    results = {name: compare_videos(ref, cand, lpips=not args.no_lpips) for name, ref, cand in pairs}
    mean = mean_metrics(results) if folder_mode else None
    if folder_mode:
        report: dict[str, Any] = {
            "reference": args.reference,
            "candidate": args.candidate,
            "pairs": results,
            "mean": mean,
        }
    else:
        report = {"reference": args.reference, "candidate": args.candidate, **next(iter(results.values()))}
    print(format_table(results, mean))
    if args.plot:
        for name, ref, cand in pairs:
            path = _plot_path(args.plot, name, folder_mode)
            try:
                plot_per_frame_psnr(results[name]["per_frame_psnr"], path, title=f"per-frame PSNR: {cand} vs {ref}")
            except OSError as error:
                raise ValueError(f"could not write plot {path}: {error}") from error
            print(f"per-frame PSNR plot -> {path}")
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(_jsonable(report), handle, indent=2, allow_nan=False)
        except OSError as error:
            raise ValueError(f"could not write JSON {args.json}: {error}") from error
        print(f"metrics -> {args.json}")
    return 0
