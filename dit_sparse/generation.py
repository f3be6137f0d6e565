"""Generate with a diffusers pipeline, optionally against dense with the same seed, and report speed and quality."""

from __future__ import annotations

import inspect
import json
import logging
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import torch

from .attention import first_call_seconds
from .config import SparseAttentionConfig
from .integration.apply import _transformers, apply_sparse_attention, remove_sparse_attention, summary
from .integration.specs import spec_for
from .utils import pipeline_frames, synchronized_clock

logger = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    """Call arguments; ``None`` leaves the pipeline's own default."""

    prompt: str = "a red circle moving right on a dark background"
    negative_prompt: str | None = None
    steps: int | None = None
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    guidance: float | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _check_local_folder(model: str) -> None:
    """A clear error for a ``model`` that names a path (not a hub id) that holds no diffusers pipeline."""
    path = Path(model).expanduser()
    looks_like_path = path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1 or "\\" in model
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"{model!r} is a folder without model_index.json, not a saved diffusers pipeline")
    elif path.exists():
        raise ValueError(f"{model!r} is a file; give a diffusers pipeline folder (with model_index.json) or a hub id")
    elif looks_like_path:
        raise ValueError(f"no such folder: {model!r} (give a local diffusers pipeline folder or a hub id 'org/name')")


def load_pipeline(model: str | None, *, dtype: torch.dtype, device: str, offload: bool = False):
    """A supported diffusers pipeline from a hub id or a local folder (``model=None``: the embedded default)."""
    if model is None:
        from . import embedded

        try:
            pipe = embedded.load_pipeline(dtype=dtype)
        except FileNotFoundError as error:
            raise ValueError(str(error)) from error
    else:
        from diffusers import DiffusionPipeline

        _check_local_folder(model)
        try:
            pipe = DiffusionPipeline.from_pretrained(model, dtype=dtype)
        except (OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"cannot load a diffusers pipeline from {model!r}: {first}") from error
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        raise ValueError(f"{type(pipe).__name__} has no transformer; dit-sparse needs a DiT pipeline")
    spec_for(transformer)  # ValueError naming the supported models
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


def accepted_kwargs(pipe, optional: dict[str, Any]) -> dict[str, Any]:
    """The non-None entries of ``optional``; ValueError if ``pipe``'s ``__call__`` does not take one of them."""
    accepted = set(inspect.signature(type(pipe).__call__).parameters)
    kwargs: dict[str, Any] = {}
    for name, value in optional.items():
        if value is None:
            continue
        if name not in accepted:
            raise ValueError(f"{type(pipe).__name__} does not take {name} (an image pipeline has no frames)")
        kwargs[name] = value
    return kwargs


def pipeline_args(pipe, extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` call arguments; ValueError naming any that ``pipe``'s ``__call__`` does not take."""
    accepted = set(inspect.signature(type(pipe).__call__).parameters)
    unknown = sorted(set(extra) - accepted)
    if unknown:
        raise ValueError(f"{type(pipe).__name__} does not take {', '.join(unknown)}")
    return dict(extra)


def _call_kwargs(pipe, settings: GenerationSettings) -> dict[str, Any]:
    optional = {
        "negative_prompt": settings.negative_prompt,
        "num_inference_steps": settings.steps,
        "num_frames": settings.frames,
        "height": settings.height,
        "width": settings.width,
        "guidance_scale": settings.guidance,
    }
    kwargs: dict[str, Any] = {"prompt": settings.prompt, "output_type": "np", **accepted_kwargs(pipe, optional)}
    kwargs.update(settings.extra)
    device = _transformer_device(pipe)
    generator_device = "cpu" if device.type != "cuda" else device
    kwargs["generator"] = torch.Generator(generator_device).manual_seed(settings.seed)
    return kwargs


def run_once(pipe, settings: GenerationSettings, config: SparseAttentionConfig) -> tuple[np.ndarray, dict]:
    """One generation with ``config`` applied (``dense`` measures the baseline through the same path).

    The times are steady-state: the first call of each kernel signature (its compilation: 10-20 s per shape
    for FlexAttention on two CPU cores) is measured apart, left out of ``total_seconds``,
    ``transformer_seconds`` and ``attention_seconds`` (it is inside all three) and reported as
    ``kernel_first_call_seconds``.
    """
    apply_sparse_attention(pipe, config)
    kwargs = _call_kwargs(pipe, settings)
    compiled_before = first_call_seconds()
    try:
        start = _now(pipe)
        output = pipe(**kwargs)
        total = _now(pipe) - start
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"generation failed: {str(error).strip().splitlines()[0]}") from error
    first_calls = first_call_seconds() - compiled_before
    stats = _mean_over_ranks(summary(pipe))
    stats["total_seconds"] = total
    for key in ("total_seconds", "transformer_seconds", "attention_seconds"):
        stats[key] -= first_calls
    stats["kernel_first_call_seconds"] = first_calls
    remove_sparse_attention(pipe)
    return pipeline_frames(output), stats


def _transformer_device(pipe) -> torch.device:
    return _transformers(pipe)[0][1].device


def _now(pipe) -> float:
    return synchronized_clock(_transformer_device(pipe))


def init_context_parallel(ulysses: int, device: str | None = None) -> tuple[str, int]:
    """Join the process group of a ``torchrun --nproc-per-node N`` launch, for Ulysses degree ``N``.

    Args:
        ulysses (`int`): the Ulysses degree; must equal the number of processes (``WORLD_SIZE``).
        device (`str`, optional): ``"cuda"`` or ``"cpu"``; by default CUDA where available. On CUDA each
            process takes the GPU of its ``LOCAL_RANK`` and the group uses NCCL; on a CPU, gloo.

    Returns:
        `tuple[str, int]`: this process's device and its rank (rank 0 writes files and reports).
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" not in os.environ or world != ulysses:
        raise ValueError(
            f"--ulysses {ulysses} needs {ulysses} processes started by torchrun, found WORLD_SIZE={world}; run "
            f"torchrun --nproc-per-node {ulysses} -m dit_sparse.cli.main generate --ulysses {ulysses} ..."
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {local_rank} of this node has no GPU: {torch.cuda.device_count()} visible")
        torch.cuda.set_device(local_rank)
        device, backend = f"cuda:{local_rank}", "nccl"
    elif torch.cuda.is_available():
        raise ValueError("--ulysses runs on the GPUs where there are any (diffusers builds its device mesh there)")
    elif torch.accelerator.device_count() == 0:
        raise ValueError(
            "--ulysses needs an accelerator: diffusers 0.42 takes each rank's device as rank % "
            "torch.accelerator.device_count(), which is 0 here. On a CPU one process already uses every core; "
            "run without --ulysses"
        )
    else:
        device, backend = "cpu", "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return device, dist.get_rank()


def enable_context_parallel(pipe, ulysses: int) -> None:
    """Ulysses context parallelism of degree ``ulysses`` on each of the pipeline's transformers.

    Every rank then runs the whole pipeline on the same inputs; inside each self-attention, rank ``r`` computes
    heads ``[r * H / ulysses, (r + 1) * H / ulysses)`` over the whole sequence.
    """
    from diffusers import ContextParallelConfig, ParallelConfig

    for _, transformer in _transformers(pipe):
        parallel = ParallelConfig(context_parallel_config=ContextParallelConfig(ulysses_degree=ulysses))
        transformer.enable_parallelism(config=parallel)


def finish_context_parallel() -> None:
    """Leave the process group joined by :func:`init_context_parallel`."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _mean_over_ranks(stats: dict) -> dict:
    """Densities of the whole model from per-rank statistics (a no-op in a single process).

    Under Ulysses each rank measures the density of its own heads; with equal head counts per rank the
    model's density is their mean. Times stay this rank's; ``transformers`` (Wan 2.2) stays this rank's too.
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return stats
    values = [stats["mean_density"], *stats["per_layer"]]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    sums = torch.tensor([0.0 if v is None else float(v) for v in values], dtype=torch.float64, device=device)
    counts = torch.tensor([v is not None for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    dist.all_reduce(counts)
    means = [s / n if n else None for s, n in zip(sums.tolist(), counts.tolist(), strict=True)]
    merged = stats | {"mean_density": means[0], "per_layer": means[1:]}
    if "mean_layer_density" in stats:
        counted = [d for d in means[1:] if d is not None]
        merged["mean_layer_density"] = sum(counted) / len(counted) if counted else None
    return merged


def write_video(frames: np.ndarray, path: str, fps: int = 16) -> str:
    """An mp4 for videos, a png for single images; returns the path written."""
    if frames.shape[0] == 1:
        path = os.path.splitext(path)[0] + ".png"
        imageio.imwrite(path, frames[0])
        return path
    even = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]  # yuv420p needs even sizes
    imageio.mimwrite(path, list(even), fps=fps, macro_block_size=1)
    return path


_MEDIAN_KEYS = ("total_seconds", "transformer_seconds", "attention_seconds", "search_seconds", "overhead_seconds")


def median_stats(runs: list[dict]) -> dict:
    """The last of ``runs`` (``run_once`` statistics of one config) with each time the median over all of them."""
    stats = dict(runs[-1])
    for key in _MEDIAN_KEYS:
        values = [run[key] for run in runs if run.get(key) is not None]
        if values:
            stats[key] = statistics.median(values)
    if stats.get("attention_seconds") and stats.get("overhead_seconds") is not None:
        stats["overhead_fraction"] = stats["overhead_seconds"] / stats["attention_seconds"]
    stats["repeats"] = len(runs)
    return stats


def speed_report(dense: dict, sparse: dict) -> dict[str, Any]:
    def ratio(key):
        return dense[key] / sparse[key] if sparse.get(key) else None

    density = sparse.get("mean_density")
    return {
        "dense": {k: dense[k] for k in ("total_seconds", "transformer_seconds", "attention_seconds")},
        "sparse": {k: sparse[k] for k in ("total_seconds", "transformer_seconds", "attention_seconds")},
        # left out of both runs' times above (compilation); reported so the one-time cost is not hidden
        "kernel_first_call_seconds": {
            "dense": dense.get("kernel_first_call_seconds"),
            "sparse": sparse.get("kernel_first_call_seconds"),
        },
        "speedup_total": ratio("total_seconds"),
        "speedup_transformer": ratio("transformer_seconds"),
        "speedup_attention": ratio("attention_seconds"),
        "mean_density": density,
        # attention FLOPs are proportional to the computed token pairs, i.e. to the density
        "attention_flops_saved": None if density is None else 1.0 - density,
        "searches": sparse.get("searches"),
        "reuses": sparse.get("reuses"),
        # mask searches (scoring passes, pattern construction), then dit-sparse's own work besides kernels and
        # searches (mask lookups, permutations, hooks)
        "search_seconds": sparse.get("search_seconds"),
        "overhead_seconds": sparse.get("overhead_seconds"),
        "overhead_fraction": sparse.get("overhead_fraction"),
        "full_mask_calls": sparse.get("full_mask_calls"),
        # cross-attention calls whose repeated padding keys were merged, in each run (both runs, or neither)
        "merged_cross_calls": {"dense": dense.get("merged_cross_calls"), "sparse": sparse.get("merged_cross_calls")},
        "merged_keys_per_call": sparse.get("merged_keys_per_call"),
        "repeats": sparse.get("repeats", 1),
    }


def markdown_table(report: dict) -> str:
    speed = report["speed"]
    rows = [
        ("end to end (s)", speed["dense"]["total_seconds"], speed["sparse"]["total_seconds"], speed["speedup_total"]),
        (
            "transformer (s)",
            speed["dense"]["transformer_seconds"],
            speed["sparse"]["transformer_seconds"],
            speed["speedup_transformer"],
        ),
        (
            "self-attention (s)",
            speed["dense"]["attention_seconds"],
            speed["sparse"]["attention_seconds"],
            speed["speedup_attention"],
        ),
    ]
    lines = ["| | dense | sparse | speedup |", "|---|---|---|---|"]
    lines += [f"| {name} | {d:.3f} | {s:.3f} | {r:.2f}x |" for name, d, s, r in rows]
    if speed.get("repeats", 1) > 1:
        runs = report.get("runs") or {}
        pairs = [
            f"{d['transformer_seconds'] / s['transformer_seconds']:.2f}x"
            for d, s in zip(runs.get("dense", []), runs.get("sparse", []), strict=False)
        ]
        lines += [
            "",
            f"medians of {speed['repeats']} runs each, dense and sparse alternately; the transformer speedup of each "
            f"pair: {', '.join(pairs)}",
        ]
    quality = report.get("quality", {})
    first_calls = speed.get("kernel_first_call_seconds") or {}
    if first_calls.get("sparse"):
        lines += [
            "",
            f"steady-state times: the first call of each sparse kernel shape (compilation) took "
            f"{first_calls['sparse']:.1f} s once and is left out above",
        ]
    lines += [
        "",
        f"method {report['method']}, mean density {speed['mean_density']:.3f} "
        f"(attention FLOPs saved {100 * speed['attention_flops_saved']:.1f}%)",
    ]
    if speed.get("overhead_seconds") is not None:
        fraction = speed.get("overhead_fraction") or 0.0
        lines.append(
            f"inside sparse self-attention: mask searches {speed.get('search_seconds') or 0.0:.3f} s, dit-sparse's "
            f"own work besides kernels and searches {speed['overhead_seconds']:.3f} s ({100 * fraction:.1f}%); "
            f"{speed.get('full_mask_calls') or 0} calls kept every block and ran dense"
        )
    merged = speed.get("merged_cross_calls") or {}
    if merged.get("sparse") and merged.get("dense"):
        lines.append(
            f"both runs' cross-attention merged the prompt's repeated padding keys into one (exact up to rounding; "
            f"{merged['sparse']} calls, {speed.get('merged_keys_per_call') or 0:.0f} keys fewer each), so the two runs "
            "differ in self-attention only"
        )
    if quality:
        lines.append(f"PSNR {quality.get('psnr'):.2f} dB, SSIM {quality.get('ssim'):.4f} (sparse vs dense, same seed)")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """JSON has no infinity (identical videos have infinite PSNR): non-finite floats become None."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def save_report(report: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(_json_safe(report), handle, indent=2)
