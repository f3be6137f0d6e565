"""The interface every method implements."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from ..layout import VideoLayout
from ..levels import LevelMask
from ..mask import BlockSparseMask


@dataclass(frozen=True)
class AttentionCall:
    """What a method may know about one self-attention call.

    ``q``, ``k``, ``v`` are ``(B, h, N, D)``; static methods ignore them, dynamic ones score blocks from them.
    Under Ulysses context parallelism they hold only this rank's heads ``[head_offset, head_offset + h)`` of the
    layer's ``num_heads`` (``total_heads``); without it ``h == num_heads`` and ``head_offset == 0``.

    A plan covers either all ``num_heads`` heads (per-head data from a config or a plan file, indexed by the
    model's head numbers; the state keeps this rank's slice) or the ``h`` heads in ``q`` (masks computed from
    q and k, which then search this rank's heads only).
    """

    layer: int
    step: int
    context: str | None
    layout: VideoLayout
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    total_heads: int | None = None  # the layer's head count when q holds a slice of them
    head_offset: int = 0  # model head number of q's first head

    @property
    def num_heads(self) -> int:
        """The layer's head count (on every rank the same); ``q.shape[1]`` may be a slice of it."""
        return self.q.shape[1] if self.total_heads is None else self.total_heads


@dataclass(frozen=True)
class AttentionPlan:
    """How to run one call: the block mask, over the sequence reordered by ``permutation`` if one is given,
    or dense attention when ``dense`` is set.

    ``permutation`` is ``(N,)`` (all heads) or ``(H, N)`` (one order per head); ``x[..., perm, :]`` reorders
    and the state applies the exact inverse to the output. The mask's heads, an ``(H, N)`` permutation's rows
    and ``skip_heads`` count heads the same way: all of the layer's, or the call's slice (see :class:`AttentionCall`).
    """

    mask: BlockSparseMask | LevelMask | None
    permutation: torch.Tensor | None = None
    dense: bool = False  # run this call dense (e.g. before a method's first search); mask is then ignored
    skip_heads: tuple[int, ...] = ()  # heads computed by no kernel; their output is uniform attention (mean of V)


class LayoutCache(dict):
    """A method's cache keyed by tuples whose first element is the call's :class:`VideoLayout`, bounded by layout.

    It holds the entries of the ``max_layouts`` most recently used layouts; storing one for a new layout
    beyond that drops every entry of the least recently used one. A process that generates at many
    resolutions (a server) keeps a bounded set of masks, rebuilding those of a layout it has not used lately.
    Reads through ``get``, ``[]`` and stores through ``[]=`` count as uses.
    """

    def __init__(self, max_layouts: int = 8) -> None:
        super().__init__()
        self.max_layouts = max_layouts
        self._recent: OrderedDict[VideoLayout, None] = OrderedDict()  # least recently used first

    def _use(self, layout: VideoLayout) -> None:
        self._recent[layout] = None
        self._recent.move_to_end(layout)

    def get(self, key: tuple, default: Any = None) -> Any:
        if key in self:
            self._use(key[0])
            return super().__getitem__(key)
        return default

    def __getitem__(self, key: tuple) -> Any:
        value = super().__getitem__(key)
        self._use(key[0])
        return value

    def __setitem__(self, key: tuple, value: Any) -> None:
        super().__setitem__(key, value)
        self._use(key[0])
        while len(self._recent) > self.max_layouts:
            oldest, _ = self._recent.popitem(last=False)
            for stale in [k for k in self if k[0] == oldest]:
                super().__delitem__(stale)

    def layouts(self) -> list[VideoLayout]:
        """The layouts held, least recently used first."""
        return list(self._recent)

    def clear(self) -> None:
        super().clear()
        self._recent.clear()


class Method:
    """Decides the block mask of a self-attention call.

    Subclasses set ``name`` and implement :meth:`mask_for` (methods with a plain mask) or :meth:`plan_for`
    (methods that reorder tokens, skip heads or ask for dense calls); each defaults to the other.
    ``searches`` counts masks computed and ``reuses`` calls served from a cache, reset by :meth:`reset` at
    the start of each generation.
    """

    name: str = ""

    def __init__(self, config, spec) -> None:
        self.config = config
        self.spec = spec
        self.searches = 0
        self.reuses = 0

    def reset(self) -> None:
        self.searches = 0
        self.reuses = 0

    def mask_for(self, call: AttentionCall) -> BlockSparseMask | None:
        if type(self).plan_for is Method.plan_for:
            raise NotImplementedError(f"{type(self).__name__} must implement mask_for or plan_for")
        return self.plan_for(call).mask

    def plan_for(self, call: AttentionCall) -> AttentionPlan:
        """The mask (and token order) of this call; methods that reorder tokens override this."""
        return AttentionPlan(self.mask_for(call))


def mask_keeping_text(
    table: torch.Tensor, layout: VideoLayout, block_size: int | tuple[int, int], name: str
) -> BlockSparseMask:
    """Mask from a selected block table ``(B, H, nQ, nK)`` with every block holding text kept in full.

    Selections by score or mass may drop text blocks; the architecture keeps text rows and columns dense.
    ``block_size`` is one size or ``(q block, kv block)``.
    """
    fill_text_blocks(table, layout, block_size, True)
    n = layout.num_tokens
    return BlockSparseMask.from_dense(table, block_size, (n, n), name=name)


def fill_text_blocks(table: torch.Tensor, layout: VideoLayout, block_size: int | tuple[int, int], value) -> None:
    """Set, in place, every row and column of a ``(..., nQ, nK)`` block table whose block holds text to ``value``
    (kept for a bool table, full for a level table); ``block_size`` is one size or ``(q block, kv block)``."""
    text_tokens = torch.arange(layout.num_tokens)[layout.text_slice]
    sizes = (block_size, block_size) if isinstance(block_size, int) else block_size
    for dim, size in zip((-2, -1), sizes, strict=True):
        text = torch.zeros(-(-layout.num_tokens // size), dtype=torch.bool)
        text[text_tokens // size] = True
        index = [slice(None)] * table.dim()
        index[dim] = text.to(table.device)
        table[tuple(index)] = value
