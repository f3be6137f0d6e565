"""Argument parsing shared by subcommands."""

from __future__ import annotations

import json

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_device(device: str | None) -> str:
    """``--device`` as given, else ``cuda`` where a GPU is visible, else ``cpu``."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(dtype: str | None, device: str) -> torch.dtype:
    """``--dtype`` as given, else bfloat16 on CUDA and float32 elsewhere."""
    return DTYPES[dtype or ("bfloat16" if device.startswith("cuda") else "float32")]


def parse_params(items: list[str]) -> dict:
    """``["NAME=VALUE", ...]`` from repeated ``--param`` options; values are JSON where they parse, else strings."""
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param takes NAME=VALUE, got {item!r}")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params
