"""Small helpers shared across the package."""

from __future__ import annotations

import importlib.metadata
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


def package_version(name: str) -> str | None:
    """Installed version of distribution ``name``, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def pipeline_frames(output) -> np.ndarray:
    """(T, H, W, 3) uint8 from a pipeline output (video frames or images)."""
    frames = getattr(output, "frames", None)
    if frames is not None:
        array = np.asarray(frames[0])  # (T, H, W, 3) in [0, 1]
    else:
        array = np.asarray(output.images[0])[None]  # (1, H, W, 3)
    return np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)


def synchronized_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` has finished (a CUDA synchronize first)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def median_ms(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls, after ``warmup`` untimed calls.

    CUDA events around each call (waited on) on a GPU, ``time.perf_counter`` on a CPU.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(repeats):
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def parse_params(items: list[str], option: str = "--param") -> dict:
    """``["NAME=VALUE", ...]`` from a repeated ``option``; values are JSON where they parse, else strings."""
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{option} takes NAME=VALUE, got {item!r}")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params


# Packages a report of the environment lists (``dit-sparse env``, benchmark records).
REPORTED_PACKAGES = (
    "torch",
    "triton",
    "diffusers",
    "accelerate",
    "transformers",
    "xformers",
    "torchmetrics",
    "imageio",
)


def package_versions() -> dict[str, str | None]:
    """Installed version of each of ``REPORTED_PACKAGES`` (None where not installed)."""
    return {name: package_version(name) for name in REPORTED_PACKAGES}


def padding_groups(
    key_lengths: Sequence[int] | None, query_lengths: Sequence[int] | None, batch: int, n: int
) -> list[tuple[int, int, list[int]]]:
    """Samples grouped by their padding: ``(kept keys, kept queries, sample indices)`` per distinct pair, in
    ascending order; lengths default to ``n`` (no padding). ValueError for a length outside ``[1, n]``."""
    lengths = list(zip(key_lengths or [n] * batch, query_lengths or [n] * batch, strict=True))
    if any(not 0 < length <= n for pair in lengths for length in pair):
        raise ValueError(f"padding lengths must be in [1, {n}], got {lengths}")
    return [(*pair, [i for i, other in enumerate(lengths) if other == pair]) for pair in sorted(set(lengths))]
