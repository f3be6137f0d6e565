"""Block-sparse attention on a CPU: gather each q block's kept kv blocks, then torch's fused CPU attention.

Every q block (one row of the block table, per batch and head) attends to the kv blocks it keeps. This
backend copies those kv blocks into one contiguous key/value sequence per row and runs PyTorch's own
flash-attention CPU kernel (``aten._scaled_dot_product_flash_attention_for_cpu``, the one dense SDPA uses,
which also returns the log-sum-exp) on a batch of rows at a time. Rows are grouped by how many blocks they
keep, so each group is one batched call with equal key lengths; no Python loop runs per block.

Why this shape: on a CPU the dense fused kernel is the fastest attention code torch has (measured against
compiled FlexAttention in ``benchmarks/attention.py``), and the gather costs one copy of the kept K and V
blocks, ``1 / bq`` of the attention FLOPs in bytes (about 7% of the call at N = 8,192, D = 64, block 128).

- Any sequence length: q is padded to whole q blocks (the padded rows are dropped); the last kv block may be
  partial, and since kept ids are gathered in ascending order its padding sits at the end of the gathered
  keys, where a shorter key length cuts it off. Rows that keep the last partial block form their own groups.
- Per-head and per-batch tables; a mask of batch 1 is shared by every sample.
- A mask that keeps every block runs the fused kernel on q, k, v directly: dense SDPA, nothing gathered.
- Rows that keep no block give zeros and an LSE of ``-inf``, as the other backends do.
- Memory: nothing N x N. K and V are gathered for at most ``_CHUNK_BYTES`` per call (a group is cut into
  chunks of rows), plus a padded copy of q, k or v when N is not a multiple of the block size.
- Inference only (the gathers write into preallocated outputs); fp32, bf16, fp16 and fp64.

The row groups of a mask are computed once per batch size and cached on the mask, so a static mask used in
every step pays for them once.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch

from ..mask import BlockSparseMask

# Bytes of gathered K plus V per fused-kernel call (at least one row per call, whatever its size).
_CHUNK_BYTES = 64 * 2**20


# Gather buffers, reused across calls: fresh allocations of tens of MB cost more in page faults than the
# copies themselves. One set per thread (calls from two threads must not share them), at most _CHUNK_BYTES
# for K and V plus the q rows of one chunk, per dtype.
_workspace = threading.local()


def _buffer(name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A reused 1-D buffer of at least ``numel`` elements of ``dtype`` for this thread."""
    buffers = _workspace.__dict__.setdefault("buffers", {})
    buf = buffers.get((name, dtype))
    # a buffer made under torch.inference_mode() cannot be written outside it: make a new one then
    stale = buf is not None and buf.is_inference() and not torch.is_inference_mode_enabled()
    if buf is None or stale or buf.numel() < numel:
        buf = buffers[(name, dtype)] = torch.empty(numel, dtype=dtype)
    return buf[:numel]


def flash_cpu_op():
    """torch's fused CPU attention returning ``(out, lse)`` (what dense SDPA runs on a CPU), or ``None``."""
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def fused_cpu_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, return_lse: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Dense attention by torch's fused CPU kernel (what SDPA runs on a CPU), with its LSE in fp32 when asked."""
    out, lse = flash_cpu_op()(q, k, v, scale=scale)
    return out, lse.float() if return_lse else None


def gather_unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why the gather backend cannot run on ``device`` (None if it can): it is the CPU path."""
    device = device or torch.device("cpu")
    if device.type != "cpu":
        return f"the gather backend runs on the CPU only (got {device.type}); use triton or flex there"
    if flash_cpu_op() is None:
        return f"torch {torch.__version__} has no aten._scaled_dot_product_flash_attention_for_cpu"
    return None


def gather_unsupported_reason(q: torch.Tensor, mask: BlockSparseMask, return_lse: bool) -> str | None:
    if q.requires_grad and torch.is_grad_enabled():
        return "the gather backend is inference only; run under torch.no_grad()"
    return None


@dataclass(frozen=True)
class _RowGroup:
    """q-block rows that keep the same number of kv blocks (and the same partial tail or none)."""

    count: int  # kept kv blocks per row
    keys: int  # keys in each row's gathered sequence: count * bk, less the last block's padding if kept
    rows: torch.Tensor  # (G,) flat q-block rows, (b * H + h) * nQ + i
    kv_rows: torch.Tensor  # (G * count,) flat kv-block rows, (b * H + h) * nK + j, row by row
    every_row: bool = False  # the group holds every row, in order


def holds_every_row(rows: torch.Tensor, total: int) -> bool:
    """Whether a group's ``rows`` are all ``total`` rows, in order (the one-call fast path of :func:`attend_rows`)."""
    return len(rows) == total and bool(torch.equal(rows, torch.arange(total)))


def _row_groups(mask: BlockSparseMask, batch: int) -> list[_RowGroup]:
    """The rows of ``mask`` broadcast to ``batch`` samples, grouped by kept-block count; cached on the mask."""
    key = ("gather_groups", batch)
    if key in mask._derived:
        return mask._derived[key]
    counts, indices = mask._compress()  # (Bm, H, nQ), (Bm, H, nQ, nK)
    _, H, n_q = counts.shape
    n_k = indices.shape[-1]
    bk = mask.block_size[1]
    tail_pad = n_k * bk - mask.seq_len[1]  # padding keys of the last kv block
    counts = counts.expand(batch, H, n_q).reshape(-1).long()  # (R,)
    indices = indices.expand(batch, H, n_q, n_k).reshape(-1, n_k).long()  # (R, nK)
    head_base = torch.arange(batch * H, device=counts.device).repeat_interleave(n_q) * n_k  # (R,)
    keeps_tail = mask.blocks[..., -1].expand(batch, H, n_q).reshape(-1) if tail_pad else torch.zeros_like(counts)
    group_key = counts * 2 + keeps_tail.long()  # rows with equal keys share a key length
    order = torch.argsort(group_key, stable=True)
    values, sizes = torch.unique_consecutive(group_key[order], return_counts=True)
    groups = []
    for key_value, rows in zip(values.tolist(), torch.split(order, sizes.tolist()), strict=True):
        count, tail = divmod(key_value, 2)
        if count == 0:
            continue  # rows that keep nothing stay zero (LSE -inf)
        kv_rows = (indices[rows, :count] + head_base[rows, None]).reshape(-1)  # (G * count,)
        groups.append(_RowGroup(count, count * bk - tail * tail_pad, rows, kv_rows, holds_every_row(rows, len(counts))))
    mask._derived[key] = groups
    return groups


def _every_row_in_one_call(groups: list[_RowGroup], rows: int, block_bytes: int) -> _RowGroup | None:
    """The one group holding every row in order, if there is one and its K and V fit one call's chunk."""
    if len(groups) != 1 or not groups[0].every_row or rows * groups[0].count * block_bytes > _CHUNK_BYTES:
        return None
    return groups[0]


def attend_rows(
    q_rows: torch.Tensor,
    k_rows: torch.Tensor,
    v_rows: torch.Tensor,
    groups: list[_RowGroup],
    bq: int,
    bk: int,
    scale: float,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every row of ``q_rows`` ``(R, bq * D)`` against its groups' kv blocks: ``(out (R, bq * D), lse (R, bq) fp32
    or None)``; rows in no group give zeros and LSE ``-inf``.

    When every row keeps as many blocks (a top-fraction selection does) and they fit one call, the fused kernel
    runs on q as it is and its own output is returned: no gather of q rows, no copy of the output into place.
    """
    R, D = q_rows.shape[0], q_rows.shape[1] // bq
    every_row = _every_row_in_one_call(groups, R, 2 * bk * D * q_rows.element_size())
    if every_row is not None:
        k_g, v_g = _gathered_kv(k_rows, v_rows, every_row, every_row.kv_rows, bk, D)
        out, lse = flash_cpu_op()(q_rows.view(R, 1, bq, D), k_g, v_g, scale=scale)
        return out.view(R, bq * D), (lse.view(R, bq).float() if return_lse else None)
    empty_rows = sum(len(g.rows) for g in groups) < R
    out = (torch.zeros_like if empty_rows else torch.empty_like)(q_rows)  # (R, bq * D)
    lse = torch.full((R, bq), -math.inf, dtype=torch.float32) if return_lse else None
    attend_groups(q_rows, k_rows, v_rows, groups, bq, bk, scale, out, lse)
    return out, lse


def attend_groups(
    q_rows: torch.Tensor,
    k_rows: torch.Tensor,
    v_rows: torch.Tensor,
    groups: list[_RowGroup],
    bq: int,
    bk: int,
    scale: float,
    out: torch.Tensor,
    lse: torch.Tensor | None,
) -> None:
    """Each group's q rows against its gathered kv blocks by the fused kernel, written into ``out`` / ``lse``.

    ``q_rows`` ``(R, bq * D)``, ``k_rows`` / ``v_rows`` ``(rows of kv blocks, bk * D)``, ``out`` like
    ``q_rows``, ``lse`` ``(R, bq)`` fp32 or None. Rows in no group are left as they are.
    """
    flash = flash_cpu_op()
    D = q_rows.shape[1] // bq
    row_bytes = 2 * bk * D * q_rows.element_size()  # K and V of one kept block
    for group in groups:
        step = max(1, _CHUNK_BYTES // (row_bytes * group.count))
        for start in range(0, len(group.rows), step):
            rows = group.rows[start : start + step]
            kv_rows = group.kv_rows[start * group.count : (start + len(rows)) * group.count]
            G = len(rows)
            q_g = torch.index_select(q_rows, 0, rows, out=_buffer("q", G * bq * D, q_rows.dtype).view(G, bq * D))
            k_g, v_g = _gathered_kv(k_rows, v_rows, group, kv_rows, bk, D)
            o_g, lse_g = flash(q_g.view(G, 1, bq, D), k_g, v_g, scale=scale)  # (G, 1, bq, D), (G, 1, bq)
            out.index_copy_(0, rows, o_g.reshape(G, bq * D))
            if lse is not None:
                lse.index_copy_(0, rows, lse_g.reshape(G, bq).float())


def _gathered_kv(
    k_rows: torch.Tensor, v_rows: torch.Tensor, group: _RowGroup, kv_rows: torch.Tensor, bk: int, D: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V of ``kv_rows`` (some of ``group``'s rows, ``count`` blocks each) gathered into this thread's
    buffers, as ``(rows, 1, keys, D)`` key sequences (the last block's padding cut off)."""
    n_kv, dtype = len(kv_rows), k_rows.dtype
    k_g = torch.index_select(k_rows, 0, kv_rows, out=_buffer("k", n_kv * bk * D, dtype).view(n_kv, bk * D))
    v_g = torch.index_select(v_rows, 0, kv_rows, out=_buffer("v", n_kv * bk * D, dtype).view(n_kv, bk * D))
    shape = (n_kv // group.count, 1, group.count * bk, D)
    return k_g.view(shape)[:, :, : group.keys], v_g.view(shape)[:, :, : group.keys]


def _blocked(x: torch.Tensor, blocks: int, block: int) -> torch.Tensor:
    """``x`` (B, H, N, D) as ``(B * H * blocks, block * D)`` rows, zero-padded to ``blocks * block`` tokens."""
    B, H, N, D = x.shape
    pad = blocks * block - N
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))  # (B, H, blocks * block, D)
    return x.contiguous().view(B * H * blocks, block * D)


def gather_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockSparseMask,
    scale: float,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Block-sparse attention by gathered kv blocks and the fused CPU kernel; LSE in fp32, natural log."""
    if mask.is_full():  # dense attention: the fused kernel on q, k, v as they are, nothing gathered
        return fused_cpu_attention(q, k, v, scale, return_lse)
    B, H, n_q_tokens, D = q.shape
    bq, bk = mask.block_size
    n_q, n_k = mask.num_blocks
    groups = _row_groups(mask, B)
    q_rows = _blocked(q, n_q, bq)  # (B * H * nQ, bq * D)
    k_rows, v_rows = _blocked(k, n_k, bk), _blocked(v, n_k, bk)  # (B * H * nK, bk * D)
    out, lse = attend_rows(q_rows, k_rows, v_rows, groups, bq, bk, scale, return_lse)
    out = out.view(B, H, n_q * bq, D)
    if n_q * bq != n_q_tokens:
        out = out[:, :, :n_q_tokens].contiguous()
    if lse is not None:
        lse = lse.view(B, H, n_q * bq)[..., :n_q_tokens].contiguous()
    return out, lse
