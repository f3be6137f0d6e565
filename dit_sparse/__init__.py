"""dit-sparse: sparse attention for diffusion-transformer video and image generation.

Importing this package has no side effects: no device probing, no logging configuration, no triton
import (kernels load on first use).
"""

from __future__ import annotations

from . import calibration, patterns
from ._version import __version__
from .attention import backend_status, block_sparse_attention, list_backends, pyramid_attention, select_backend
from .calibration import calibrate
from .config import SparseAttentionConfig
from .heads import HeadPattern
from .layout import ORDERS, VideoLayout
from .levels import LevelMask
from .mask import BlockSparseMask
from .plan import SparsityPlan

# Submodules reached as ``ds.<name>`` after a plain ``import dit_sparse as ds``, imported on first use (some
# import diffusers, imageio or matplotlib, which ``import dit_sparse`` must not pay for).
_LAZY_SUBMODULES = frozenset(
    {
        "bench",
        "embedded",
        "evaluation",
        "generation",
        "integration",
        "kernels",
        "levels",
        "methods",
        "pipelines",
        "scoring",
        "utils",
        "visualize",
    }
)
# Functions of the diffusers integration, reached as ``ds.<name>``.
_INTEGRATION_NAMES = frozenset({"apply_sparse_attention", "remove_sparse_attention", "summary"})


def __getattr__(name: str):
    import importlib

    if name in _INTEGRATION_NAMES:
        return getattr(importlib.import_module(".integration.apply", __name__), name)
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'dit_sparse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_SUBMODULES | _INTEGRATION_NAMES)


__all__ = [
    "ORDERS",
    "BlockSparseMask",
    "HeadPattern",
    "LevelMask",
    "SparseAttentionConfig",
    "SparsityPlan",
    "VideoLayout",
    "__version__",
    "apply_sparse_attention",
    "backend_status",
    "block_sparse_attention",
    "calibrate",
    "calibration",
    "list_backends",
    "patterns",
    "pyramid_attention",
    "remove_sparse_attention",
    "select_backend",
    "summary",
]
