"""Argument parsing shared by subcommands."""

from __future__ import annotations

import json


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
