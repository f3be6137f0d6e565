"""Sparse-attention methods: each decides, per self-attention call, which blocks to compute.

A method never launches kernels; it returns a :class:`~dit_sparse.BlockSparseMask` (``pyramid``: a
:class:`~dit_sparse.LevelMask`), or ``None`` for dense, for an :class:`AttentionCall`.
"""

from __future__ import annotations

from .adaspa import AdaSpaMethod
from .base import AttentionCall, AttentionPlan, Method
from .draft import DraftMethod
from .paro import ParoMethod
from .plan import PlanMethod
from .pyramid import PyramidMethod
from .radial import RadialMethod
from .sliding_tile import SlidingTileMethod
from .sparse_vdit import SparseVDiTMethod
from .sparsed import SparseDMethod
from .svg import SVGMethod
from .xattention import XAttentionMethod

METHODS: dict[str, type[Method]] = {
    "radial": RadialMethod,
    "sparse_vdit": SparseVDiTMethod,
    "sliding_tile": SlidingTileMethod,
    "svg": SVGMethod,
    "sparsed": SparseDMethod,
    "adaspa": AdaSpaMethod,
    "xattention": XAttentionMethod,
    "draft": DraftMethod,
    "paro": ParoMethod,
    "pyramid": PyramidMethod,
}


def build_method(config, spec) -> Method | None:
    """The method object for ``config`` (``None`` for the ``dense`` method; a plan's runner when it has one)."""
    if config.method == "dense":
        return None
    if getattr(config, "plan", None) is not None:
        return PlanMethod(config, spec)
    return METHODS[config.method](config, spec)


__all__ = ["METHODS", "AttentionCall", "AttentionPlan", "Method", "PlanMethod", "build_method"]
