"""dit-sparse: sparse attention for diffusion-transformer video and image generation.

Importing this package has no side effects: no device probing, no logging configuration, no triton
import (kernels load on first use).
"""

from __future__ import annotations

from .attention import backend_status, block_sparse_attention, list_backends, select_backend
from .layout import ORDERS, VideoLayout
from .mask import BlockSparseMask

__version__ = "0.1.0"

__all__ = [
    "ORDERS",
    "BlockSparseMask",
    "VideoLayout",
    "__version__",
    "backend_status",
    "block_sparse_attention",
    "list_backends",
    "select_backend",
]
