"""Attention over mixed levels (Pyramid Sparse Attention): full kv blocks, pooled kv blocks, dropped ones.

The definition, token by token (:func:`reference_pyramid_attention` is exactly this): for a query row in q
block ``i``, the keys it attends to are

- every token of each kv block at level 0 (full), with score ``scale * q . k_t``;
- for each kv block at level ``j >= 1``, each group ``g`` of ``2^j`` consecutive tokens of that block (groups
  never straddle blocks; the last group of the sequence's partial last block may be short) as one pooled key
  ``k_g = mean(k_t, t in g)`` with value ``v_g = mean(v_t, t in g)`` and score
  ``scale * q . k_g + log |g|``: the pooled key stands for its ``|g|`` tokens, so that when those tokens'
  keys are equal it is exactly the attention over them;
- nothing from dropped blocks.

The output is the softmax over that union of keys times their values, and the LSE (natural log) is that
softmax's normalizer. A mask with only full and dropped blocks is ordinary block-sparse attention;
:func:`pyramid_attention` hands those to :func:`dit_sparse.block_sparse_attention` unchanged.

Backends: ``reference`` (the definition, N x N-sized; tests), ``gather`` (CPU: the full blocks as binary
block-sparse attention, whole blocks gathered; K and V pooled once per call per level and each q block's
pooled keys of every level gathered into one sequence, the ``log |g|`` term riding in one extra head-dim
column, ``q' = [q, 1]``, ``k' = [k, log|g| / scale]``; torch's fused CPU attention kernel on batches of q
blocks with equal key counts for both; the two merged through their LSE: :func:`gather_pyramid_attention`),
``triton`` (GPU; under ``TRITON_INTERPRET=1`` on CPU tensors for tests: see below).

The Triton kernel (``_pyramid_fwd_kernel`` in :mod:`dit_sparse.kernels.triton_jit`) is the block-sparse
flash-attention kernel of :mod:`dit_sparse.kernels.triton_block_sparse` walking one more table per level: K and
V are pooled once per call per level (:func:`pool_keys_values`) and stacked into one ``(B, H, G, D)`` table;
each program runs one online softmax (fp32, log2 units) through its q block's level-0 blocks (tiles of K, V),
then each level ``j``'s blocks (tiles of ``min(BLOCK_N, bk >> j)`` pooled keys, at least 16, the columns past
a block's ``bk >> j`` keys masked), each level its own flattened, software-pipelined loop. A pooled key of a
whole group adds ``log 2^j`` to its score, a constant folded into the scale's FMA; only the sequence's partial
last kv block (at every level the last kept id, if kept) is masked, in a tail loop that also gives its short
last group ``log |g|``. Tile configs, limits and dtypes are those of the attention kernel: fp16 and bf16 on a
GPU (fp32 inputs run with bf16 operands), fp32 (IEEE dots) and fp16 under the interpreter; head dims up to
256; any N; rows that read nothing give zeros and LSE ``-inf``. Forward only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import torch

from ..levels import DROPPED, LevelMask
from ..mask import BlockSparseMask
from .gather import _blocked, _row_groups, _RowGroup, attend_rows, holds_every_row
from .gpu_model import attention_configs, padded_head_dim
from .triton_block_sparse import (
    LOG2E,
    autotuned,
    launch_tiled,
    table_strides,
    triton_unavailable_reason,
    triton_unsupported_reason,
)


def pool_keys_values(
    k: torch.Tensor, v: torch.Tensor, block_k: int, level: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K and V averaged over groups of ``2^level`` tokens inside each kv block.

    Args:
        k, v (`torch.Tensor` of shape ``(B, H, Nk, D)``): keys and values (any N; the last block may be partial).
        block_k (`int`): kv block size (``2^level`` must divide it).
        level (`int`): pooling level ``j >= 1``.

    Returns:
        ``(k_pooled, v_pooled, counts)``: ``(B, H, G, D)`` in the inputs' dtype (means computed in fp32),
        with ``G = ceil(Nk / block_k) * block_k / 2^level`` groups (those past the sequence end are zeros),
        and ``counts`` ``(G,)`` fp32, the tokens each group holds (0 past the end).
    """
    group = 1 << level
    if block_k % group:
        raise ValueError(f"pooling by {group} tokens does not divide the kv block size {block_k}")
    B, H, n_k, D = k.shape
    padded = math.ceil(n_k / block_k) * block_k
    counts = torch.clamp(n_k - torch.arange(0, padded, group, device=k.device, dtype=torch.float32), 0, group)
    sums = []
    for x in (k, v):
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        if padded != n_k:
            x = torch.nn.functional.pad(x, (0, 0, 0, padded - n_k))
        sums.append(x.view(B, H, padded // group, group, D).sum(dim=3))
    safe = counts.clamp(min=1)[:, None]
    return (sums[0] / safe).to(k.dtype), (sums[1] / safe).to(v.dtype), counts


def reference_pyramid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: LevelMask,
    scale: float,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The definition above in fp32 (fp64 for fp64 inputs), one N x (N + pooled keys) score matrix: for tests.

    Output in the inputs' dtype, LSE fp32 (natural log); rows that read nothing give zeros and LSE ``-inf``.
    """
    bq, bk = mask.block_size
    n_q, n_k = mask.seq_len
    levels = mask.levels.long()  # (Bm, H, nQ, nK)
    compute = torch.promote_types(q.dtype, torch.float32)
    keys, values, bias, allowed = [k.to(compute)], [v.to(compute)], [torch.zeros(n_k, device=q.device)], []
    token_block = torch.arange(n_k, device=q.device) // bk
    allowed.append(levels[..., token_block] == 0)  # (Bm, H, nQ, Nk)
    for level in range(1, mask.max_level + 1):
        k_pool, v_pool, counts = pool_keys_values(k, v, bk, level)
        real = counts > 0
        group_block = (torch.arange(counts.numel(), device=q.device) * (1 << level)) // bk
        keys.append(k_pool.to(compute)[..., real, :])
        values.append(v_pool.to(compute)[..., real, :])
        bias.append(torch.log(counts[real]))
        allowed.append(levels[..., group_block[real]] == level)
    keys_all, values_all = torch.cat(keys, dim=2), torch.cat(values, dim=2)  # (B, H, M, D)
    bias_all = torch.cat(bias)  # (M,)
    allowed_rows = torch.cat(allowed, dim=-1).repeat_interleave(bq, dim=-2)[..., :n_q, :]  # (Bm, H, Nq, M)
    scores = torch.matmul(q.to(compute), keys_all.transpose(-2, -1)) * scale + bias_all.to(compute)
    scores = scores.masked_fill(~allowed_rows, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, Nq)
    probs = torch.exp(scores - lse.masked_fill(lse == float("-inf"), 0.0)[..., None])
    out = torch.matmul(probs, values_all).to(v.dtype)
    return out, (lse if return_lse else None)


# --------------------------------------------------------------------------------------------------
# CPU: gathered keys of every level, torch's fused kernel
# --------------------------------------------------------------------------------------------------
def _pooled_sums(
    k: torch.Tensor, v: torch.Tensor, block_k: int, max_level: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per level ``1 .. max_level``: K and V summed over groups of ``2^level`` tokens inside each kv block, and
    the tokens each group holds, ``(B, H, G, D)`` (fp32, fp64 for fp64 inputs) and ``(G,)``.

    Each level halves the one before, so all levels together read K and V about twice (where
    :func:`pool_keys_values`, the definition, reads them once per level). Groups past the end sum to 0 with count 0.
    """
    B, H, n_k, D = k.shape
    padded = math.ceil(n_k / block_k) * block_k
    compute = torch.promote_types(k.dtype, torch.float32)

    def padded_copy(x: torch.Tensor) -> torch.Tensor:  # (B, H, padded, D) in `compute`; x itself when it is one
        if n_k == padded and x.dtype == compute:
            return x  # never written: each level is a new tensor
        out = x.new_zeros(B, H, padded, D, dtype=compute)  # (F.pad is several times slower on a CPU)
        out[:, :, :n_k] = x
        return out

    sums_k, sums_v = padded_copy(k), padded_copy(v)
    counts = torch.clamp(n_k - torch.arange(padded, device=k.device, dtype=torch.float32), 0, 1)
    for _ in range(max_level):
        # pairs of neighbours, as strided adds (a view-and-sum over a dim of 2 is ~6x slower on a CPU)
        sums_k = sums_k[:, :, 0::2] + sums_k[:, :, 1::2]
        sums_v = sums_v[:, :, 0::2] + sums_v[:, :, 1::2]
        counts = counts[0::2] + counts[1::2]
        yield sums_k, sums_v, counts


# Pooled keys are grouped for the fused kernel by their count per row rounded up to this many (one call per
# group: with a count of its own each, the rows of a mask allocated by mass would make a call each).
_KEY_COUNT_STEP = 16


def _pooled_levels(mask: LevelMask) -> list[int]:
    """The pooled levels (``j >= 1``) the mask reads, ascending; cached on the mask."""
    if "pooled_levels" not in mask._derived:
        mask._derived["pooled_levels"] = sorted(set(torch.unique(mask.levels).tolist()) - {DROPPED, 0})
    return mask._derived["pooled_levels"]


def _pooled_key_tables(
    k: torch.Tensor, v: torch.Tensor, mask: LevelMask, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """K' and V' of the pooled levels the mask reads, rows of one pooled key with ``D + 1`` columns, in the
    inputs' dtype: those levels' groups stacked in order (each ``(B, H, nK * bk / 2^j)``, the means of
    :func:`pool_keys_values`, from :func:`_pooled_sums`: all levels together read K and V about twice), then one
    padding key. K' carries ``log |g| / scale`` in its last column (``-inf`` for groups past the end and for the
    padding key), V' zeros there.
    """
    B, H, _, D = k.shape
    levels = _pooled_levels(mask)
    key_k, key_v = [], []
    for level, (sums_k, sums_v, counts) in enumerate(_pooled_sums(k, v, mask.block_size[1], levels[-1]), start=1):
        if level in levels:
            safe = counts.clamp(min=1)[:, None]
            log_counts = torch.where(counts > 0, torch.log(safe[:, 0]) / scale, -math.inf)
            k_rows = torch.cat([sums_k / safe, log_counts.to(sums_k.dtype).expand(B, H, -1)[..., None]], dim=-1)
            key_k.append(k_rows.to(k.dtype).view(-1, D + 1))
            key_v.append(torch.nn.functional.pad(sums_v / safe, (0, 1)).to(v.dtype).view(-1, D + 1))
    padding_k = torch.zeros(1, D + 1, dtype=k.dtype)
    padding_k[0, D] = -math.inf
    return torch.cat([*key_k, padding_k]), torch.cat([*key_v, torch.zeros(1, D + 1, dtype=v.dtype)])


def _pooled_key_groups(mask: LevelMask, batch: int) -> list[_RowGroup]:
    """Rows grouped by pooled key count (rounded up to ``_KEY_COUNT_STEP`` with the padding key), as the gather
    path's row groups with one-key "blocks": ``kv_rows`` index :func:`_pooled_key_tables`; cached on the mask per
    batch size."""
    cache_key = ("pyramid_key_groups", batch)
    if cache_key in mask._derived:
        return mask._derived[cache_key]
    levels = mask.levels.long().expand(batch, -1, -1, -1)
    B, H, n_q, n_kv = levels.shape
    bk = mask.block_size[1]
    row_parts, key_parts = [], []
    offset = 0
    for level in _pooled_levels(mask):
        groups = bk >> level
        b, h, i, j = (levels == level).nonzero(as_tuple=True)
        rows = (b * H + h) * n_q + i
        base = offset + ((b * H + h) * n_kv + j) * groups
        row_parts.append(rows.repeat_interleave(groups))
        key_parts.append((base[:, None] + torch.arange(groups)).reshape(-1))
        offset += B * H * n_kv * groups
    rows = torch.cat(row_parts)
    order = torch.sort(rows, stable=True).indices
    rows, keys = rows[order], torch.cat([torch.cat(key_parts)[order], torch.tensor([offset])])  # + the padding key
    counts = torch.bincount(rows, minlength=B * H * n_q)
    starts = torch.cumsum(counts, 0) - counts
    padded = (counts + _KEY_COUNT_STEP - 1) // _KEY_COUNT_STEP * _KEY_COUNT_STEP
    result = []
    for count in torch.unique(padded).tolist():
        if count:
            group_rows = (padded == count).nonzero(as_tuple=True)[0]
            slot = torch.arange(count)
            index = torch.where(slot < counts[group_rows, None], starts[group_rows, None] + slot, len(keys) - 1)
            every_row = holds_every_row(group_rows, len(counts))
            result.append(_RowGroup(count, count, group_rows, keys[index].reshape(-1), every_row))
    mask._derived[cache_key] = result
    return result


def _attend_pooled_keys(
    q_rows: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor], groups: list[_RowGroup], bq: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's q against its gathered ``D + 1``-column pooled keys (the gather path, one key a "block"), with
    ``q' = [q, 1]``: ``(out (R, bq, D), lse (R, bq) fp32)``, rows in no group zeros and ``-inf``."""
    k_table, v_table = tables
    R, D1 = q_rows.shape[0], k_table.shape[1]
    q_ext = torch.ones(R, bq, D1, dtype=q_rows.dtype)
    q_ext[..., : D1 - 1] = q_rows.view(R, bq, D1 - 1)
    out, lse = attend_rows(q_ext.view(R, bq * D1), k_table, v_table, groups, bq, 1, scale, True)
    return out.view(R, bq, D1)[..., : D1 - 1], lse


def gather_pyramid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: LevelMask,
    scale: float,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pyramid attention on a CPU, in two parts merged through their LSE.

    - **Full blocks** are binary block-sparse attention: the kept blocks gathered whole and torch's fused kernel
      run on rows grouped by key count, as :func:`dit_sparse.kernels.gather.gather_block_sparse_attention`.
    - **Pooled keys** of every level are gathered key by key into one sequence per row, with the ``log |g|``
      term in one extra head-dim column: ``q' = [q, 1]``, ``k' = [k, log|g| / scale]``, so ``scale * q' . k'``
      is the score (and ``-inf`` for groups past the end).

    The two outputs are weighted by ``exp(lse_part - lse)``, where ``lse`` is the log-sum-exp of both: the
    softmax over the union of their keys. Why two parts: full blocks hold most of a typical mask's keys (65-75%
    with PSA's quotas), and the fused kernel is ~30% slower at head size ``D + 1`` than at ``D``; pooled blocks
    hold a few keys each, too few for a kernel call per level (measured in ``benchmarks/pyramid_speed.py``).
    """
    B, H, n_q_tokens, D = q.shape
    bq, bk = mask.block_size
    n_q, n_kv = mask.num_blocks
    R = B * H * n_q
    q_rows = _blocked(q, n_q, bq)  # (R, bq * D)
    full = cached_full_blocks(mask)
    parts = []  # (out (R, bq, D), lse (R, bq)) of the full blocks, of the pooled keys
    if full is not None:
        k_rows, v_rows = _blocked(k, n_kv, bk), _blocked(v, n_kv, bk)
        out, lse = attend_rows(q_rows, k_rows, v_rows, _row_groups(full, B), bq, bk, scale, True)
        parts.append((out.view(R, bq, D), lse))
    if _pooled_levels(mask):
        tables = _pooled_key_tables(k, v, mask, scale)
        parts.append(_attend_pooled_keys(q_rows, tables, _pooled_key_groups(mask, B), bq, scale))
    if len(parts) == 1:
        out, lse = parts[0]
    else:
        (out_full, lse_full), (out_pooled, lse_pooled) = parts
        lse = torch.logaddexp(lse_full, lse_pooled)  # (R, bq)
        safe = lse.masked_fill(lse == -math.inf, 0.0)
        w_full, w_pooled = (torch.exp(x - safe)[..., None] for x in (lse_full, lse_pooled))  # 0 where none read
        if q.dtype == torch.float32:  # out_full is the kernel's own (or our) fresh output: scaled in place
            out = out_full.mul_(w_full).addcmul_(out_pooled, w_pooled)
        else:
            out = (out_full.float() * w_full).addcmul_(out_pooled.float(), w_pooled).to(q.dtype)
    out = out.reshape(B, H, n_q * bq, D)[:, :, :n_q_tokens].contiguous()
    if return_lse:
        return out, lse.reshape(B, H, n_q * bq)[..., :n_q_tokens].contiguous()
    return out, None


def cached_full_blocks(mask: LevelMask) -> BlockSparseMask | None:
    """The blocks read in full as a binary mask (rows may be empty), or None when there are none; cached on the
    mask, so that the gather path's row groups are cached on it in turn."""
    if "full_blocks" not in mask._derived:
        full = mask.full_blocks()
        mask._derived["full_blocks"] = full if bool(full.blocks.any()) else None
    return mask._derived["full_blocks"]


# --------------------------------------------------------------------------------------------------
# GPU: one Triton kernel through every level
# --------------------------------------------------------------------------------------------------
def pooled_tables(k: torch.Tensor, v: torch.Tensor, block_k: int, max_level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V pooled at levels ``1 .. max_level`` (the means of :func:`pool_keys_values`, built level from level by
    :func:`_pooled_sums`), stacked along the key axis.

    Returns two contiguous ``(B, H, P - (P >> max_level) + 16, D)`` tables, ``P = ceil(Nk / block_k) * block_k``;
    level ``j`` is rows ``P - (P >> (j - 1))`` to ``P - (P >> j)``, groups past the sequence end zero, and 16
    zero rows at the end: the kernel reads a level with fewer than 16 keys per block in 16-key tiles.
    """
    B, H, _, D = k.shape
    k_levels, v_levels = [], []
    for sums_k, sums_v, counts in _pooled_sums(k, v, block_k, max_level):
        safe = counts.clamp(min=1)[:, None]
        k_levels.append((sums_k / safe).to(k.dtype))
        v_levels.append((sums_v / safe).to(v.dtype))
    pad = k.new_zeros(B, H, _POOL_PAD_ROWS, D)
    return torch.cat([*k_levels, pad], dim=2), torch.cat([*v_levels, pad], dim=2)


_POOL_PAD_ROWS = 16


@functools.cache
def _pyramid_kernels():
    """(plain kernel, autotuned kernel), built on first use so that importing dit_sparse never imports triton."""
    from .triton_jit import _pyramid_fwd_kernel

    def configs_for(arch, kwargs, named_args):
        """The attention kernel's configs: level 0 has its tiles, every pooled level's are no larger."""
        return attention_configs(arch, kwargs["MASK_BQ"], kwargs["MASK_BK"], kwargs["HEAD_DIM"],
                                 named_args["V"].element_size())  # fmt: skip

    key = ["N_Q", "N_K", "HEAD_DIM", "MASK_BQ", "MASK_BK", "MAX_LEVEL", "EVEN_N", "OUTPUT_LSE", "IEEE_DOT"]
    return _pyramid_fwd_kernel, autotuned(_pyramid_fwd_kernel, key, configs_for)


def _launch_pyramid(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    level_num: torch.Tensor,
    level_idx: torch.Tensor,
    scale: float,
    mask_bq: int,
    mask_bk: int,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, N_Q, D = q.shape  # (B, H, N, D)
    N_K = k.shape[2]
    max_level = level_num.shape[0] - 1
    n_kv_blocks = level_idx.shape[-1]
    if level_num.stride(-1) != 1 or level_idx.stride(-1) != 1:
        raise ValueError("the level tables must be contiguous in their last dim (LevelMask.level_tables() are)")
    k_pool, v_pool = pooled_tables(k, v, mask_bk, max_level)  # (B, H, G, D) each, contiguous
    out_dtype = v.dtype
    if q.device.type == "cuda" and v.dtype == torch.float32:
        # As in the attention kernel: fp32 dots spill, so fp32 inputs run with bf16 operands (fp32 softmax,
        # accumulation and output; bf16's tolerance). Pooled from fp32, rounded once.
        q, k, v, k_pool, v_pool = (t.to(torch.bfloat16) for t in (q, k, v, k_pool, v_pool))
    out = torch.empty_like(q, dtype=v.dtype)
    lse = torch.empty((B, H, N_Q) if return_lse else (0,), device=q.device, dtype=torch.float32)
    num_strides = table_strides(level_num, 4, batch_dim=1)  # (level, batch or 1, head, q block)
    idx_strides = table_strides(level_idx, 4, batch_dim=1)
    args = (
        q, k, v, k_pool, v_pool, out, lse if return_lse else out, level_num, level_idx,
        scale * LOG2E,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *k_pool.stride(),
        *num_strides, *idx_strides,
        H, N_Q, N_K, n_kv_blocks,
    )  # fmt: skip
    common = dict(
        HEAD_DIM=D, MASK_BQ=mask_bq, MASK_BK=mask_bk, MAX_LEVEL=max_level, BLOCK_D=padded_head_dim(D),
        EVEN_N=N_K % mask_bk == 0, OUTPUT_LSE=return_lse, IEEE_DOT=v.dtype == torch.float32,
    )  # fmt: skip
    launch_tiled(_pyramid_kernels(), N_Q, B * H, args, mask_bq, mask_bk, q.device, **common)
    return out.to(out_dtype), lse


@torch.library.custom_op("dit_sparse::pyramid_attention_fwd", mutates_args=())
def _pyramid_attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    level_num: torch.Tensor,
    level_idx: torch.Tensor,
    scale: float,
    mask_bq: int,
    mask_bk: int,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch_pyramid(q, k, v, level_num, level_idx, scale, mask_bq, mask_bk, return_lse)


@_pyramid_attention_fwd.register_fake
def _(q, k, v, level_num, level_idx, scale, mask_bq, mask_bk, return_lse):
    B, H, N_Q, _ = q.shape
    lse = q.new_empty((B, H, N_Q) if return_lse else (0,), dtype=torch.float32)
    return torch.empty_like(q, dtype=v.dtype), lse


def triton_pyramid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: LevelMask,
    scale: float,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Triton kernel through the ``dit_sparse::pyramid_attention_fwd`` op, so ``torch.compile`` can trace it.

    Takes any level mask, binary ones too (:func:`pyramid_attention` sends those to the block-sparse kernels).
    """
    bq, bk = mask.block_size
    level_num, level_idx = mask.level_tables()
    out, lse = torch.ops.dit_sparse.pyramid_attention_fwd(q, k, v, level_num, level_idx, float(scale), bq, bk,
                                                          return_lse)  # fmt: skip
    return out, (lse if return_lse else None)


def triton_pyramid_unsupported_reason(q: torch.Tensor, mask: LevelMask, return_lse: bool) -> str | None:
    """Why the Triton pyramid kernel cannot take this call (None if it can): the attention kernel's rules."""
    return triton_unavailable_reason(q.device) or triton_unsupported_reason(q, cached_read_blocks(mask), return_lse)


def cached_read_blocks(mask: LevelMask) -> BlockSparseMask:
    """The blocks read at any level, cached on the mask (building one checks its rows: a device sync)."""
    if "read_blocks" not in mask._derived:
        mask._derived["read_blocks"] = mask.read_blocks()
    return mask._derived["read_blocks"]


PYRAMID_BACKENDS = ("auto", "reference", "gather", "triton")


__all__ = [
    "DROPPED",
    "pool_keys_values",
    "pooled_tables",
    "reference_pyramid_attention",
    "triton_pyramid_attention",
]
