"""dit-sparse: sparse attention for diffusion-transformer video and image generation.

Importing this package has no side effects: no device probing, no logging configuration, no triton
import (kernels load on first use).
"""

from __future__ import annotations

from . import calibration, patterns
from .attention import backend_status, block_sparse_attention, list_backends, select_backend
from .calibration import HeadPattern, SparsityPlan, calibrate
from .config import SparseAttentionConfig
from .kernels.pyramid import pyramid_attention
from .layout import ORDERS, VideoLayout
from .levels import LevelMask
from .mask import BlockSparseMask


def __getattr__(name: str):
    # The diffusers integration imports diffusers; load it on first use so `import dit_sparse` stays light.
    if name in ("apply_sparse_attention", "remove_sparse_attention", "summary"):
        from .integration import apply

        return getattr(apply, name)
    if name == "pipelines":
        import importlib

        return importlib.import_module(".pipelines", __name__)
    raise AttributeError(f"module 'dit_sparse' has no attribute {name!r}")


__version__ = "0.1.0"

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
