"""Block-sparse attention masks: which kv blocks each q block attends to, per (batch, head).

A :class:`BlockSparseMask` is the common currency between mask builders (patterns, methods, plans) and
kernels. It holds a dense boolean block map ``blocks[b, h, i, j]`` (q block ``i`` attends to kv block
``j``) for a sequence of ``seq_len = (Nq, Nk)`` tokens cut into blocks of ``block_size = (bq, bk)``
tokens; the last block of each axis may be partial, so any sequence length works. The batch dimension
is either the batch size or 1 (one mask broadcast over the batch). Kernels read the compressed form
(``kv_num_blocks``, ``kv_indices``), computed once and cached.

The block map costs ``nQ * nK`` booleans per head, which is ``N^2 / (bq * bk)``: a few MB at N = 75,600.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

SUPPORTED_BLOCK_SIZES = (16, 32, 64, 128, 256)


def _normalize_pair(value: int | tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    ):
        raise ValueError(f"{what} must be an int or a pair of ints (q, kv), got {value!r}")
    return int(value[0]), int(value[1])


def check_sizes(block_size: int | tuple[int, int], seq_len: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((bq, bk), (Nq, Nk))``: supported block sizes and a positive sequence length, or a ValueError."""
    bq, bk = _normalize_pair(block_size, "block_size")
    for b in (bq, bk):
        if b not in SUPPORTED_BLOCK_SIZES:
            raise ValueError(f"block sizes must be in {SUPPORTED_BLOCK_SIZES}, got {(bq, bk)}")
    nq, nk = _normalize_pair(seq_len, "seq_len")
    if nq < 1 or nk < 1:
        raise ValueError(f"seq_len must be positive, got {(nq, nk)}")
    return (bq, bk), (nq, nk)


def check_block_geometry(
    table: torch.Tensor, block_size: int | tuple[int, int], seq_len: tuple[int, int] | None, what: str
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((bq, bk), (Nq, Nk))`` of a per-block ``table`` ``(..., nQ, nK)``: supported block sizes, a positive
    ``seq_len`` (default: whole blocks) that needs exactly ``nQ x nK`` blocks; a ValueError naming ``what``."""
    bq, bk = _normalize_pair(block_size, "block_size")
    n_q_blocks, n_kv_blocks = table.shape[-2:]
    (bq, bk), (nq, nk) = check_sizes((bq, bk), (n_q_blocks * bq, n_kv_blocks * bk) if seq_len is None else seq_len)
    if n_q_blocks != math.ceil(nq / bq) or n_kv_blocks != math.ceil(nk / bk):
        raise ValueError(
            f"{what} has {n_q_blocks} x {n_kv_blocks} blocks, but seq_len {(nq, nk)} with block_size "
            f"{(bq, bk)} needs {math.ceil(nq / bq)} x {math.ceil(nk / bk)}"
        )
    return (bq, bk), (nq, nk)


def check_no_empty_rows(empty: torch.Tensor, verb: str) -> None:
    """A ValueError naming the first of the (batch, head, q block) rows flagged in ``empty``, if any."""
    if bool(empty.any()):
        b, h, i = (int(x) for x in empty.nonzero()[0])
        raise ValueError(
            f"{int(empty.sum())} q-block rows {verb} (first: batch {b}, head {h}, q block {i}); every row needs "
            f"at least one block, or pass allow_empty_rows=True"
        )


def block_extents(
    block_size: tuple[int, int], seq_len: tuple[int, int], num_blocks: tuple[int, int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens in each q block and each kv block, float64 ``(nQ,)`` and ``(nK,)`` (the last one may be partial)."""
    extents = []
    for block, tokens, count in zip(block_size, seq_len, num_blocks, strict=True):
        sizes = torch.full((count,), float(block), dtype=torch.float64, device=device)
        sizes[-1] = tokens - (count - 1) * block
        extents.append(sizes)
    return extents[0], extents[1]


def compress_blocks(kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(counts, ids)`` of a boolean ``(..., nK)`` table: int32 counts of kept blocks, and int32 kept ids in
    ascending order first, then padding (a stable sort of "not kept"); both contiguous."""
    counts = kept.sum(dim=-1, dtype=torch.int32)
    order = torch.sort((~kept).to(torch.int8), dim=-1, stable=True).indices
    return counts.contiguous(), order.to(torch.int32).contiguous()


class BlockSparseMask:
    """Per (batch or 1, head) table of kept kv blocks for each q block.

    Build one with :meth:`from_dense`, :meth:`from_indices` or :meth:`from_flex`; the constructor takes
    the same arguments as :meth:`from_dense`.

    Args:
        blocks (`torch.BoolTensor` of shape ``(B or 1, H, nQ, nK)``): ``True`` where q block ``i``
            attends to kv block ``j``.
        block_size (`int` or `(int, int)`, defaults to 128): tokens per q block and per kv block; each a
            power of two from 16 to 256.
        seq_len (`(int, int)`, optional): ``(Nq, Nk)`` tokens; defaults to whole blocks
            ``(nQ * bq, nK * bk)``. Must satisfy ``nQ == ceil(Nq / bq)`` and ``nK == ceil(Nk / bk)``.
        allow_empty_rows (`bool`, defaults to False): a q block that attends to nothing produces zeros
            (and LSE ``-inf``); that is almost always a bug in a mask builder, so it is rejected unless
            asked for.
        name (`str`, optional): a label that names the pattern and its parameters, for reports.

    Example:
        >>> blocks = torch.eye(4, dtype=torch.bool).expand(1, 2, 4, 4)
        >>> mask = BlockSparseMask.from_dense(blocks, block_size=64, seq_len=(250, 250))
        >>> round(mask.density(), 4)
        0.2534
    """

    def __init__(
        self,
        blocks: torch.Tensor,
        block_size: int | tuple[int, int] = 128,
        seq_len: tuple[int, int] | None = None,
        *,
        allow_empty_rows: bool = False,
        name: str | None = None,
    ) -> None:
        if not isinstance(blocks, torch.Tensor):
            raise ValueError(f"blocks must be a torch.Tensor, got {type(blocks).__name__}")
        if blocks.dtype != torch.bool:
            raise ValueError(f"blocks must be a bool tensor, got dtype {blocks.dtype}")
        if blocks.dim() != 4:
            raise ValueError(
                f"blocks must have shape (B or 1, H, nQ, nK), got {tuple(blocks.shape)} ({blocks.dim()} dims)"
            )
        if min(blocks.shape) < 1:
            raise ValueError(f"blocks must not have an empty dimension, got shape {tuple(blocks.shape)}")
        (bq, bk), (nq, nk) = check_block_geometry(blocks, block_size, seq_len, "blocks")
        if not allow_empty_rows:
            check_no_empty_rows(~blocks.any(dim=-1), "attend to no kv block")
        self.blocks = blocks
        self.block_size = (bq, bk)
        self.seq_len = (nq, nk)
        self.allow_empty_rows = allow_empty_rows
        self.name = name
        # Forms derived from ``blocks`` (compressed indices, kernel-specific masks), built on first use.
        # ``blocks`` is treated as immutable once the mask exists.
        self._derived: dict = {}

    # ----------------------------------------------------------------------------------------------
    # construction
    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_dense(
        cls,
        blocks: torch.Tensor,
        block_size: int | tuple[int, int] = 128,
        seq_len: tuple[int, int] | None = None,
        *,
        allow_empty_rows: bool = False,
        name: str | None = None,
    ) -> BlockSparseMask:
        """Mask from a boolean block map of shape ``(B or 1, H, nQ, nK)``."""
        return cls(blocks, block_size, seq_len, allow_empty_rows=allow_empty_rows, name=name)

    @classmethod
    def from_indices(
        cls,
        kv_indices: torch.Tensor,
        kv_num_blocks: torch.Tensor,
        block_size: int | tuple[int, int],
        seq_len: tuple[int, int],
        *,
        allow_empty_rows: bool = False,
        name: str | None = None,
    ) -> BlockSparseMask:
        """Mask from the compressed form.

        Row ``(b, h, i)`` keeps ``kv_indices[b, h, i, :kv_num_blocks[b, h, i]]`` (ids may repeat or come
        in any order).

        Args:
            kv_indices (`torch.LongTensor` or `IntTensor` of shape ``(B, H, nQ, K)``): kv block ids.
            kv_num_blocks (`torch.Tensor` of shape ``(B, H, nQ)``): how many leading entries are valid.
        """
        (bq, bk), (nq, nk) = check_sizes(block_size, seq_len)
        if not isinstance(kv_indices, torch.Tensor) or not isinstance(kv_num_blocks, torch.Tensor):
            raise ValueError(
                f"kv_indices and kv_num_blocks must be tensors, got {type(kv_indices).__name__} and "
                f"{type(kv_num_blocks).__name__}"
            )
        n_kv_blocks = math.ceil(nk / bk)
        if kv_indices.dim() != 4 or kv_num_blocks.shape != kv_indices.shape[:3]:
            raise ValueError(
                f"kv_indices must be (B, H, nQ, K) and kv_num_blocks (B, H, nQ); got "
                f"{tuple(kv_indices.shape)} and {tuple(kv_num_blocks.shape)}"
            )
        if kv_indices.dtype.is_floating_point or kv_num_blocks.dtype.is_floating_point:
            raise ValueError("kv_indices and kv_num_blocks must be integer tensors")
        width = kv_indices.shape[-1]
        if bool((kv_num_blocks < 0).any()) or bool((kv_num_blocks > width).any()):
            raise ValueError(f"kv_num_blocks must lie in [0, {width}] (the last dim of kv_indices)")
        valid = torch.arange(width, device=kv_indices.device) < kv_num_blocks[..., None]
        used = kv_indices[valid]
        if used.numel() and (int(used.min()) < 0 or int(used.max()) >= n_kv_blocks):
            raise ValueError(
                f"kv_indices out of range: found {int(used.min())}..{int(used.max())}, but seq_len {nk} with "
                f"kv block size {bk} has blocks 0..{n_kv_blocks - 1}"
            )
        blocks = torch.zeros(*kv_indices.shape[:3], n_kv_blocks, dtype=torch.int8, device=kv_indices.device)
        blocks.scatter_reduce_(-1, kv_indices.long().clamp(0, n_kv_blocks - 1), valid.to(torch.int8), "amax")
        return cls(blocks.bool(), (bq, bk), (nq, nk), allow_empty_rows=allow_empty_rows, name=name)

    @classmethod
    def from_flex(cls, block_mask: BlockMask, *, allow_empty_rows: bool = False) -> BlockSparseMask:
        """Mask from a FlexAttention ``BlockMask``: the union of its partial and full blocks.

        A partial block (one whose ``mask_mod`` masks some of its token pairs) is kept whole, so the
        result is exact for block-level masks and a conservative superset otherwise.
        """
        bq, bk = block_mask.BLOCK_SIZE
        nq, nk = block_mask.seq_lengths
        n_q_blocks, n_kv_blocks = math.ceil(nq / bq), math.ceil(nk / bk)
        parts = [(block_mask.kv_indices, block_mask.kv_num_blocks)]
        if block_mask.full_kv_indices is not None:
            parts.append((block_mask.full_kv_indices, block_mask.full_kv_num_blocks))
        dense = None
        for indices, counts in parts:
            indices, counts = indices[..., :n_q_blocks, :], counts[..., :n_q_blocks]
            part = cls.from_indices(indices, counts, (bq, bk), (nq, nk), allow_empty_rows=True).blocks
            dense = part if dense is None else dense | part
        assert dense is not None and dense.shape[-1] == n_kv_blocks
        return cls(dense, (bq, bk), (nq, nk), allow_empty_rows=allow_empty_rows)

    # ----------------------------------------------------------------------------------------------
    # views
    # ----------------------------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        return self.blocks.shape[0]

    @property
    def num_heads(self) -> int:
        return self.blocks.shape[1]

    @property
    def num_blocks(self) -> tuple[int, int]:
        return self.blocks.shape[2], self.blocks.shape[3]

    @property
    def device(self) -> torch.device:
        return self.blocks.device

    def to_dense(self) -> torch.Tensor:
        """The boolean block map ``(B or 1, H, nQ, nK)``."""
        return self.blocks

    def token_mask(self) -> torch.Tensor:
        """Token-level boolean mask ``(B or 1, H, Nq, Nk)``.

        Allocates N x N: for references and tests only.
        """
        bq, bk = self.block_size
        nq, nk = self.seq_len
        rows = self.blocks.repeat_interleave(bq, dim=-2)[..., :nq, :]
        return rows.repeat_interleave(bk, dim=-1)[..., :nk]

    def _block_extents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens in each q block and each kv block (the last one may be partial)."""
        return block_extents(self.block_size, self.seq_len, self.num_blocks, self.device)

    def density_per_head(self) -> torch.Tensor:
        """(B or 1, H) fraction of token pairs each head computes."""
        rows, cols = self._block_extents()
        kept = torch.einsum("bhij,i,j->bh", self.blocks.to(torch.float64), rows, cols)
        return kept / (self.seq_len[0] * self.seq_len[1])

    def density(self) -> float:
        """Fraction of (q, kv) token pairs computed, averaged over batch and heads (1.0 = dense).

        Partial tail blocks count by the tokens they hold, so this is the fraction of attention FLOPs
        that a block-sparse kernel performs, up to padding of the last block.
        """
        return float(self.density_per_head().mean())

    def is_full(self) -> bool:
        """Whether every block is kept, i.e. the mask is dense attention (cached)."""
        if "full" not in self._derived:
            self._derived["full"] = bool(self.blocks.all())
        return self._derived["full"]

    @property
    def kv_num_blocks(self) -> torch.Tensor:
        """(B or 1, H, nQ) int32: how many kv blocks each q block keeps."""
        return self._compress()[0]

    @property
    def kv_indices(self) -> torch.Tensor:
        """(B or 1, H, nQ, nK) int32: kept kv block ids in ascending order first, then padding."""
        return self._compress()[1]

    def _compress(self) -> tuple[torch.Tensor, torch.Tensor]:
        if "compressed" not in self._derived:
            self._derived["compressed"] = compress_blocks(self.blocks)
        return self._derived["compressed"]

    # ----------------------------------------------------------------------------------------------
    # conversions
    # ----------------------------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> BlockSparseMask:
        if torch.device(device) == self.device:
            return self
        return BlockSparseMask(
            self.blocks.to(device),
            self.block_size,
            self.seq_len,
            allow_empty_rows=self.allow_empty_rows,
            name=self.name,
        )

    def refine(self, block_size: int | tuple[int, int]) -> BlockSparseMask:
        """The same token-level mask on a finer block grid (each block size must divide the current one)."""
        new_bq, new_bk = _normalize_pair(block_size, "block_size")
        bq, bk = self.block_size
        if bq % new_bq or bk % new_bk:
            raise ValueError(f"refine needs block sizes that divide {(bq, bk)}, got {(new_bq, new_bk)}")
        if (new_bq, new_bk) == (bq, bk):
            return self
        nq, nk = self.seq_len
        blocks = self.blocks.repeat_interleave(bq // new_bq, dim=-2)[..., : math.ceil(nq / new_bq), :]
        blocks = blocks.repeat_interleave(bk // new_bk, dim=-1)[..., : math.ceil(nk / new_bk)]
        return BlockSparseMask(
            blocks, (new_bq, new_bk), self.seq_len, allow_empty_rows=self.allow_empty_rows, name=self.name
        )

    def to_flex(self, *, compute_q_blocks: bool = True) -> BlockMask:
        """FlexAttention ``BlockMask`` with every kept block marked full.

        Its ``mask_mod`` reads the block table, so even eager FlexAttention (which evaluates ``mask_mod``
        on every token pair) computes this mask rather than silently falling back to dense attention.
        """
        from torch.nn.attention.flex_attention import BlockMask

        bq, bk = self.block_size
        table = self.blocks
        counts, indices = self._compress()
        if self.batch == 1:

            def mask_mod(b, h, q_idx, kv_idx):
                return table[0, h, q_idx // bq, kv_idx // bk]

        else:

            def mask_mod(b, h, q_idx, kv_idx):
                return table[b, h, q_idx // bq, kv_idx // bk]

        # Distinct tensors for the empty partial set and the full set: inductor's CPU template
        # mis-generates code when one tensor object is passed for both.
        return BlockMask.from_kv_blocks(
            torch.zeros_like(counts),
            torch.zeros_like(indices),
            counts,
            indices,
            BLOCK_SIZE=(bq, bk),
            mask_mod=mask_mod,
            seq_lengths=self.seq_len,
            compute_q_blocks=compute_q_blocks,
        )

    def __repr__(self) -> str:
        label = f"name={self.name!r}, " if self.name else ""
        return (
            f"BlockSparseMask({label}batch={self.batch}, heads={self.num_heads}, blocks={self.num_blocks}, "
            f"block_size={self.block_size}, seq_len={self.seq_len}, density={self.density():.4f})"
        )
