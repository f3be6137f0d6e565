"""Level masks: per (q block, kv block) a level, full, pooled by ``2^j`` or dropped (Pyramid Sparse Attention).

A :class:`~dit_sparse.BlockSparseMask` keeps or drops whole kv blocks. PSA (Pyramid Sparse Attention, one of
the seed papers, ``PAPERS.md``) gives each query block's kv blocks a level instead: its most important
blocks are read in full, the next ones as keys and values average-pooled over groups of ``2^j`` consecutive
tokens (``j = 1 .. max_level``), the least important not at all. A pooled level costs ``1 / 2^j`` of a full
block. The attention over mixed levels is defined token by token in
:func:`dit_sparse.kernels.pyramid.reference_pyramid_attention`.

Encoding of ``levels`` (an int8 tensor ``(B or 1, H, nQ, nK)``): ``0`` full, ``j`` in ``1 .. max_level``
pooled by ``2^j``, ``-1`` (``DROPPED``) dropped. A mask with only ``0`` and ``-1`` is a binary block mask
(:meth:`LevelMask.from_block_mask`, :meth:`LevelMask.to_block_mask`).

Pooling groups never straddle kv blocks: ``2^max_level`` must divide the kv block size. In the sequence's
partial last kv block the last group may be short; it is the mean of the tokens it holds, and it stands
for that many tokens.
"""

from __future__ import annotations

import math

import torch

from .mask import BlockSparseMask, block_extents, check_block_geometry, check_no_empty_rows, compress_blocks

FULL = 0
DROPPED = -1


class LevelMask:
    """Per (batch or 1, head, q block, kv block) level: 0 full, ``j`` pooled by ``2^j``, -1 dropped.

    Args:
        levels (`torch.Tensor` of shape ``(B or 1, H, nQ, nK)``, an integer dtype): the levels.
        block_size (`int` or `(int, int)`, defaults to 128): tokens per q block and per kv block; each a power of
            two from 16 to 256, as for :class:`~dit_sparse.BlockSparseMask`.
        seq_len (`(int, int)`, optional): ``(Nq, Nk)``; defaults to whole blocks.
        max_level (`int`, optional): the deepest pooling level allowed (default: the largest level present, at
            least 1); ``2^max_level`` must divide the kv block size.
        allow_empty_rows (`bool`, defaults to False): accept q blocks whose every kv block is dropped.
        name (`str`, optional): a label for reports.

    Example:
        >>> levels = torch.tensor([[[[0, 1, -1], [2, 0, 1]]]], dtype=torch.int8)  # (1, 1, 2, 3)
        >>> mask = LevelMask(levels, block_size=64)
        >>> mask.compute_density()  # (1 + 1/2) / 3 and (1/4 + 1 + 1/2) / 3, averaged
        0.5416666666666666
    """

    def __init__(
        self,
        levels: torch.Tensor,
        block_size: int | tuple[int, int] = 128,
        seq_len: tuple[int, int] | None = None,
        *,
        max_level: int | None = None,
        allow_empty_rows: bool = False,
        name: str | None = None,
    ) -> None:
        if not isinstance(levels, torch.Tensor):
            raise ValueError(f"levels must be a torch.Tensor, got {type(levels).__name__}")
        if levels.dtype.is_floating_point or levels.dtype.is_complex or levels.dtype == torch.bool:
            raise ValueError(
                f"levels must be an integer tensor (0 full, j pooled by 2^j, -1 dropped), got {levels.dtype}"
            )
        if levels.dim() != 4 or min(levels.shape) < 1:
            raise ValueError(f"levels must have shape (B or 1, H, nQ, nK) with no empty dim, got {tuple(levels.shape)}")
        (bq, bk), (nq, nk) = check_block_geometry(levels, block_size, seq_len, "levels")
        lowest, highest = int(levels.min()), int(levels.max())
        if max_level is None:
            max_level = max(highest, 1)
        if isinstance(max_level, bool) or not isinstance(max_level, int) or max_level < 1:
            raise ValueError(f"max_level must be a positive int, got {max_level!r}")
        if bk % (1 << max_level):
            raise ValueError(
                f"pooling by 2^{max_level} = {1 << max_level} tokens does not divide the kv block size {bk}; "
                f"use max_level <= {int(math.log2(bk))}"
            )
        if lowest < DROPPED or highest > max_level:
            raise ValueError(f"levels must lie in [-1, {max_level}] (-1 dropped, 0 full, j pooled by 2^j), "
                             f"got values from {lowest} to {highest}")  # fmt: skip
        if not allow_empty_rows:
            check_no_empty_rows((levels == DROPPED).all(dim=-1), "read no kv block at any level")
        self.levels = levels.to(torch.int8)
        self.block_size = (bq, bk)
        self.seq_len = (nq, nk)
        self.max_level = max_level
        self.allow_empty_rows = allow_empty_rows
        self.name = name
        self._derived: dict = {}

    # ----------------------------------------------------------------------------------------------
    # conversion
    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_block_mask(cls, mask: BlockSparseMask, *, max_level: int = 1, rest: int = DROPPED) -> LevelMask:
        """A binary mask as levels: kept blocks full, the rest at level ``rest`` (default dropped; ``j`` >= 1 reads
        them pooled by ``2^j``, and ``max_level`` is raised to ``j``)."""
        if not isinstance(mask, BlockSparseMask):
            raise ValueError(f"mask must be a dit_sparse.BlockSparseMask, got {type(mask).__name__}")
        if isinstance(rest, bool) or not isinstance(rest, int) or rest < DROPPED or rest == FULL:
            raise ValueError(f"rest must be -1 (dropped) or a pooling level >= 1, got {rest!r}")
        levels = torch.where(mask.blocks, FULL, rest).to(torch.int8)
        name = mask.name if rest == DROPPED or mask.name is None else f"{mask.name}+pooled{1 << rest}"
        return cls(levels, mask.block_size, mask.seq_len, max_level=max(max_level, rest),
                   allow_empty_rows=mask.allow_empty_rows, name=name)  # fmt: skip

    def is_binary(self) -> bool:
        """Whether every block is full or dropped (then it is a :class:`BlockSparseMask`)."""
        if "binary" not in self._derived:
            self._derived["binary"] = bool(((self.levels == FULL) | (self.levels == DROPPED)).all())
        return self._derived["binary"]

    def is_full(self) -> bool:
        """Whether every block is read in full, i.e. the mask is dense attention (cached)."""
        if "full" not in self._derived:
            self._derived["full"] = bool((self.levels == FULL).all())
        return self._derived["full"]

    def to_block_mask(self) -> BlockSparseMask:
        """The full blocks as a binary mask; only for a binary level mask (pooled blocks have no binary form)."""
        if not self.is_binary():
            raise ValueError("this level mask has pooled blocks; only a mask of full and dropped blocks is binary "
                             "(see full_blocks() and read_blocks())")  # fmt: skip
        return self.full_blocks()

    def full_blocks(self) -> BlockSparseMask:
        """The blocks read in full, as a binary mask (rows may be empty)."""
        return BlockSparseMask(self.levels == FULL, self.block_size, self.seq_len, allow_empty_rows=True,
                               name=self.name)  # fmt: skip

    def read_blocks(self) -> BlockSparseMask:
        """The blocks read at any level (full or pooled), as a binary mask."""
        return BlockSparseMask(self.levels != DROPPED, self.block_size, self.seq_len,
                               allow_empty_rows=self.allow_empty_rows, name=self.name)  # fmt: skip

    # ----------------------------------------------------------------------------------------------
    # shape and cost
    # ----------------------------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        return self.levels.shape[0]

    @property
    def num_heads(self) -> int:
        return self.levels.shape[1]

    @property
    def num_blocks(self) -> tuple[int, int]:
        return self.levels.shape[2], self.levels.shape[3]

    @property
    def device(self) -> torch.device:
        return self.levels.device

    def to(self, device: torch.device | str) -> LevelMask:
        return LevelMask(self.levels.to(device), self.block_size, self.seq_len, max_level=self.max_level,
                         allow_empty_rows=self.allow_empty_rows, name=self.name)  # fmt: skip

    def keys_per_block(self) -> torch.Tensor:
        """``(max_level + 1, nK)`` float64: keys (tokens or pooled groups) kv block ``j`` holds at each level."""
        tokens = block_extents(self.block_size, self.seq_len, self.num_blocks, self.device)[1]
        return torch.stack([torch.ceil(tokens / (1 << level)) for level in range(self.max_level + 1)])

    def compute_density_per_head(self) -> torch.Tensor:
        """(B or 1, H) attention compute in dense-equivalent token pairs, as a fraction of dense.

        A full block counts its token pairs; a block pooled by ``2^j`` counts its pooled keys (``1 / 2^j`` of
        its tokens, rounded up per group) times the q block's rows; a dropped block nothing.
        """
        rows = block_extents(self.block_size, self.seq_len, self.num_blocks, self.device)[0]
        keys = self.keys_per_block()  # (L + 1, nK)
        level = self.levels.long()
        per_block = torch.where(level >= 0, keys[level.clamp(min=0), torch.arange(keys.shape[1], device=self.device)],
                                torch.zeros((), dtype=torch.float64, device=self.device))  # fmt: skip
        pairs = torch.einsum("bhij,i->bh", per_block, rows)
        return pairs / (self.seq_len[0] * self.seq_len[1])

    def compute_density(self) -> float:
        """Attention compute as a fraction of dense (pooled blocks at their fraction), averaged over batch and heads."""
        return float(self.compute_density_per_head().mean())

    def density(self) -> float:
        """The fraction of dense attention's work: :meth:`compute_density` (as ``BlockSparseMask.density``)."""
        return self.compute_density()

    def level_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Compressed per-level tables for kernels (cached): ``(num, idx)``.

        ``num``: int32 ``(max_level + 1, B or 1, H, nQ)``, the kv blocks each q block reads at each level;
        ``idx``: int32 ``(max_level + 1, B or 1, H, nQ, nK)``, their ids in ascending order first, then padding.
        """
        if "level_tables" not in self._derived:
            at_level = torch.stack([self.levels == level for level in range(self.max_level + 1)])
            self._derived["level_tables"] = compress_blocks(at_level)
        return self._derived["level_tables"]

    def level_fractions(self) -> dict[str, float]:
        """Share of (q block, kv block) pairs at each level: ``{"full": .., "pool2": .., ..., "dropped": ..}``."""
        total = self.levels.numel()
        fractions = {"full": int((self.levels == FULL).sum()) / total}
        for level in range(1, self.max_level + 1):
            fractions[f"pool{1 << level}"] = int((self.levels == level).sum()) / total
        fractions["dropped"] = int((self.levels == DROPPED).sum()) / total
        return fractions

    def __repr__(self) -> str:
        name = f"name={self.name!r}, " if self.name else ""
        return (
            f"LevelMask({name}shape={tuple(self.levels.shape)}, block_size={self.block_size}, "
            f"seq_len={self.seq_len}, max_level={self.max_level}, compute_density={self.compute_density():.4f})"
        )
