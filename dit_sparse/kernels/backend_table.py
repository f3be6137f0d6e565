"""The measured GPU backend table that ``backend="auto"`` consults on CUDA.

``auto`` has a built-in order on a GPU (``triton``, then ``flex``, then ``reference``). Whether another
backend (``flex-flash``, say) is faster depends on the GPU, the dtype and the head dim, and only a
measurement can say so. ``gpu_backend_table.json`` beside this file holds such measurements: each entry
names a GPU (as ``torch.cuda.get_device_name`` reports it), a dtype and a head dim, the backend that was
fastest there, and the results file that shows it (``benchmarks/gpu_evidence.sh`` suggests entries). An
entry moves its backend to the front of ``auto``'s order for matching calls; a backend that cannot take the
call is still passed over, so a stale entry costs nothing but a check.

The table ships with no entries: without a measurement ``auto`` does what it always did.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

TABLE_PATH = Path(__file__).with_name("gpu_backend_table.json")
ENTRY_KEYS = {"gpu", "dtype", "head_dim", "backend", "evidence"}
OPTIONAL_ENTRY_KEYS = {"note", "speedup_over_default"}
DEFAULT_CUDA_ORDER = ("triton", "flex", "reference")


def parse_backend_table(data: dict[str, Any], source: str = "backend table") -> list[dict[str, Any]]:
    """The entries of a table read from JSON, checked: known keys only, a registered backend, a real dtype.

    Raises:
        ValueError: naming the entry and what to fix.
    """
    from . import BACKENDS

    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ValueError(f"{source}: expected an object with a list 'entries', got {type(data).__name__}")
    unknown_top = sorted(set(data) - {"comment", "entries"})
    if unknown_top:
        raise ValueError(f"{source}: unknown key(s) {unknown_top}; a table has 'comment' and 'entries'")
    entries = []
    for index, entry in enumerate(data["entries"]):
        where = f"{source}: entry {index}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object, got {type(entry).__name__}")
        missing = sorted(ENTRY_KEYS - set(entry))
        unknown = sorted(set(entry) - ENTRY_KEYS - OPTIONAL_ENTRY_KEYS)
        if missing or unknown:
            raise ValueError(
                f"{where} has missing key(s) {missing} and unknown key(s) {unknown}; "
                f"an entry has {sorted(ENTRY_KEYS)} and optionally {sorted(OPTIONAL_ENTRY_KEYS)}"
            )
        if entry["backend"] not in BACKENDS:
            raise ValueError(f"{where} names backend {entry['backend']!r}; choose one of {list(BACKENDS)}")
        if not isinstance(getattr(torch, str(entry["dtype"]), None), torch.dtype):
            raise ValueError(f"{where} has dtype {entry['dtype']!r}; write it as torch names it, e.g. 'bfloat16'")
        if isinstance(entry["head_dim"], bool) or not isinstance(entry["head_dim"], int) or entry["head_dim"] < 1:
            raise ValueError(f"{where} has head_dim {entry['head_dim']!r}; expected a positive int")
        entries.append(dict(entry))
    return entries


@functools.cache
def load_backend_table(path: str | None = None) -> tuple[dict[str, Any], ...]:
    """The checked entries of the table at ``path`` (default: the one shipped in the package), read once."""
    path = Path(path) if path is not None else TABLE_PATH
    return tuple(parse_backend_table(json.loads(path.read_text()), str(path)))


def table_backend(
    device_name: str, dtype: torch.dtype, head_dim: int, table: Sequence[dict[str, Any]] | None = None
) -> str | None:
    """The measured fastest backend for (GPU, dtype, head dim), or None when the table has no such entry."""
    table = load_backend_table() if table is None else table
    dtype_name = str(dtype).removeprefix("torch.")
    for entry in table:
        if entry["gpu"] == device_name and entry["dtype"] == dtype_name and entry["head_dim"] == head_dim:
            return entry["backend"]
    return None


def cuda_backend_order(
    device_name: str, dtype: torch.dtype, head_dim: int, table: Sequence[dict[str, Any]] | None = None
) -> tuple[str, ...]:
    """``auto``'s order of backends to try on a CUDA GPU: a table entry's backend first, then the built-in order."""
    preferred = table_backend(device_name, dtype, head_dim, table)
    if preferred is None:
        return DEFAULT_CUDA_ORDER
    return (preferred, *(name for name in DEFAULT_CUDA_ORDER if name != preferred))


@functools.cache
def cuda_device_name(index: int | None) -> str:
    """``torch.cuda.get_device_name``, asked once per device (``auto`` runs on every attention call)."""
    return torch.cuda.get_device_name(index)
