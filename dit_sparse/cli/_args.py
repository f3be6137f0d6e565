"""Argument parsing shared by subcommands."""

from __future__ import annotations

import argparse

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_device(device: str | None) -> str:
    """``--device`` as given, else ``cuda`` where a GPU is visible, else ``cpu``."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(dtype: str | None, device: str) -> torch.dtype:
    """``--dtype`` as given, else bfloat16 on CUDA and float32 elsewhere."""
    return DTYPES[dtype or ("bfloat16" if device.startswith("cuda") else "float32")]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (steps, frames, sizes), so a bad value exits 2 with a message."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (e.g. dense steps)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


# Options that take the embedded model's GENERATION_DEFAULTS when --model is not given.
EMBEDDED_DEFAULT_ARGS = {
    "steps": "num_inference_steps",
    "frames": "num_frames",
    "height": "height",
    "width": "width",
    "guidance": "guidance_scale",
}


def fill_embedded_defaults(args: argparse.Namespace, defaults: dict | None = None) -> None:
    """With no ``--model``, the embedded model runs with ``defaults`` (default: its native size, steps and
    guidance, ``GENERATION_DEFAULTS``) wherever the options leave a value unset."""
    from dit_sparse.embedded import GENERATION_DEFAULTS

    if args.model is not None:
        return
    for attr, key in EMBEDDED_DEFAULT_ARGS.items():
        if getattr(args, attr) is None:
            setattr(args, attr, (defaults or GENERATION_DEFAULTS)[key])
