"""Block scores for dynamic sparsity: exact per-block attention mass, computed without an N x N matrix.

``block_attention_mass(q, k)`` gives, for each (q block, kv block), the mean over the block's queries of
the attention probability mass the block's keys receive: ``sum_{j in block} exp(q_i k_j * scale - lse_i)``
averaged over rows ``i`` of the q block. Each row of the result sums to 1 over kv blocks. This is the
quantity AdaSpa and SparseD select blocks by (AdaSpa: Xia et al., 2025, https://arxiv.org/abs/2502.21079).

Two passes: the row log-sum-exp (skipped when ``lse`` is given, e.g. cached from an earlier search or
returned by the attention kernel), then the masses. The PyTorch path streams over kv chunks (memory
``N * chunk`` per head); the Triton kernel streams over kv tiles.
"""

from __future__ import annotations

import functools
import math

import torch

from .kernels.gather import flash_cpu_op
from .kernels.triton_block_sparse import LOG2E, interpreting, triton_unavailable_reason


def row_logsumexp(q: torch.Tensor, k: torch.Tensor, *, scale: float | None = None, chunk: int = 1024) -> torch.Tensor:
    """``logsumexp_j(q_i k_j * scale)`` for every query row, ``(B, H, N)`` fp32, without an N x N matrix.

    On a CPU it is the LSE that torch's fused attention kernel returns (run with ``k`` as the values,
    whose output is dropped): one fused pass, about 7x faster than the streaming PyTorch loop that serves
    other devices (``chunk`` kv tokens at a time).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    flash_cpu = flash_cpu_op()
    if q.device.type == "cpu" and flash_cpu is not None and q.dtype == k.dtype:
        with torch.no_grad():
            return flash_cpu(q, k, k, scale=scale)[1].float()
    running_max = running_sum = None
    for start in range(0, k.shape[2], chunk):
        scores = torch.matmul(q.float(), k[:, :, start : start + chunk].float().transpose(-2, -1)) * scale
        chunk_max = scores.amax(dim=-1)  # (B, H, N)
        if running_max is None:
            running_max, running_sum = chunk_max, torch.exp(scores - chunk_max[..., None]).sum(-1)
            continue
        new_max = torch.maximum(running_max, chunk_max)
        running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(scores - new_max[..., None]).sum(-1)
        running_max = new_max
    return running_max + torch.log(running_sum)


# Scores held at once by the PyTorch block-mass loop (fp32 elements, whole q blocks; at least one block).
# About 4 MiB measured fastest on 2 CPU cores (N = 5,184, 4 heads): larger chunks fall out of cache.
_MASS_CHUNK_ELEMENTS = 2**20


def _block_mass_torch(q, k, lse, bq, bk, scale) -> torch.Tensor:
    B, H, n_q, _ = q.shape
    n_k = k.shape[2]
    n_q_blocks, n_kv_blocks = -(-n_q // bq), -(-n_k // bk)
    mass = torch.empty(B, H, n_q_blocks, n_kv_blocks, dtype=torch.float32, device=q.device)
    q32, k_t = q.float(), k.float().transpose(-2, -1)  # (B, H, Nq, D), (B, H, D, Nk)
    pad = n_kv_blocks * bk - n_k
    blocks_per_chunk = max(1, _MASS_CHUNK_ELEMENTS // (B * H * bq * n_k))
    for first in range(0, n_q_blocks, blocks_per_chunk):
        last = min(first + blocks_per_chunk, n_q_blocks)
        rows = slice(first * bq, min(last * bq, n_q))
        probs = torch.matmul(q32[:, :, rows], k_t)  # (B, H, r, Nk) scores, then probabilities in place
        probs.mul_(scale).sub_(lse[:, :, rows, None]).exp_()
        n_rows = probs.shape[2]
        if pad:
            probs = torch.nn.functional.pad(probs, (0, pad))
        col_sums = probs.view(B, H, n_rows, n_kv_blocks, bk).sum(dim=-1)  # (B, H, r, nK)
        mass[:, :, first:last] = _mean_per_q_block(col_sums, bq)
    return mass


def _mean_per_q_block(rows: torch.Tensor, bq: int) -> torch.Tensor:
    """``(B, H, r, nK)`` per-row values as ``(B, H, ceil(r / bq), nK)`` means over each q block's rows.

    The rows start at a q-block boundary; the last block may be partial and is averaged over the rows it has.
    """
    B, H, n_rows, n_cols = rows.shape
    n_blocks = -(-n_rows // bq)
    row_pad = n_blocks * bq - n_rows
    if row_pad:
        rows = torch.nn.functional.pad(rows, (0, 0, 0, row_pad))
    sums = rows.view(B, H, n_blocks, bq, n_cols).sum(dim=3)  # (B, H, blocks, nK)
    counts = torch.full((n_blocks, 1), float(bq), device=rows.device)
    counts[-1] = bq - row_pad
    return sums / counts


@functools.cache
def _block_mass_kernel():
    """(plain kernel, autotuned kernel), built on first use so that importing dit_sparse never imports triton."""
    from .kernels.gpu_model import block_mass_configs
    from .kernels.triton_block_sparse import autotuned
    from .kernels.triton_jit import _block_mass_kernel as kernel

    def configs_for(arch, kwargs, named_args):
        return block_mass_configs(arch, kwargs["MASK_BQ"], kwargs["MASK_BK"], kwargs["HEAD_DIM"],
                                  named_args["Q"].element_size())  # fmt: skip

    return kernel, autotuned(
        kernel, ["N_Q", "N_K", "HEAD_DIM", "MASK_BQ", "MASK_BK", "EVEN_N", "IEEE_DOT"], configs_for
    )


def _block_mass_triton(q, k, lse, bq, bk, scale) -> torch.Tensor:
    """Each q tile's summed mass per kv block from the kernel, then summed per q block and divided by its rows."""
    from .kernels.gpu_model import padded_head_dim

    B, H, n_q, D = q.shape
    n_k = k.shape[2]
    n_q_blocks, n_kv_blocks = -(-n_q // bq), -(-n_k // bk)
    if q.is_cuda and q.dtype == torch.float32:
        q, k = q.to(torch.bfloat16), k.to(torch.bfloat16)  # fp32 dots on a GPU spill; bf16 operands, fp32 sums
    lse = lse.float().contiguous()
    common = dict(
        HEAD_DIM=D, MASK_BQ=bq, MASK_BK=bk, BLOCK_D=padded_head_dim(D), EVEN_N=n_k % bk == 0,
        IEEE_DOT=q.dtype == torch.float32,
    )  # fmt: skip
    args = (q, k, lse, scale * LOG2E, *q.stride(), *k.stride(), H, n_q, n_k, n_kv_blocks)
    plain, autotuned = _block_mass_kernel()
    # The kernel writes (B*H, q tiles, nK) with q tiles = its grid's first dim, which depends on the BLOCK_M the
    # autotuner picks: a flat buffer sized for the most tiles, read back in the layout of the launch that ran last.
    flat = q.new_empty(B * H * n_q_blocks * max(1, bq // 64) * n_kv_blocks, dtype=torch.float32)
    launched = {}

    def grid(meta):
        launched["tiles"] = n_q_blocks * (bq // meta["BLOCK_M"])
        return (launched["tiles"], B * H)

    if q.device.type == "cpu":
        block_m, block_n = min(64, bq), min(32, bk)  # the interpreter: one fixed tile, no autotuning
        plain[grid({"BLOCK_M": block_m})](q, k, lse, flat, *args[3:], BLOCK_M=block_m, BLOCK_N=block_n, **common)
    else:
        with torch.cuda.device(q.device):
            autotuned[grid](q, k, lse, flat, *args[3:], **common)
    partial = flat[: B * H * launched["tiles"] * n_kv_blocks]
    per_block = partial.view(B, H, n_q_blocks, -1, n_kv_blocks).sum(dim=3)  # (B, H, nQ, nK)
    rows = torch.full((n_q_blocks, 1), float(bq), device=q.device)
    rows[-1] = n_q - (n_q_blocks - 1) * bq
    return per_block / rows


def _block_mass_fused_cpu(q, k, lse, bq, bk, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Block mass from torch's fused CPU attention kernel: ``P @ V`` with V the kv-block indicator.

    With ``V[t, j] = 1`` where key ``t`` lies in kv block ``j`` (else 0), ``softmax(q k^T * scale) @ V`` is each
    query row's attention mass per kv block, exactly; the kernel streams it without an N x N matrix and
    returns the row LSE too. V has the head dim's width, so ``ceil(nK / D)`` calls cover every kv block.
    Rows are then averaged per q block. When ``lse`` is given the masses are rescaled to it:
    ``exp(s - lse) = p * exp(lse_now - lse)``. Returns the mass and the LSE it is normalized by.
    """
    B, H, _, D = q.shape
    n_k = k.shape[2]
    n_kv_blocks = -(-n_k // bk)
    q32, k32 = q.float().contiguous(), k.float().contiguous()  # the masses in fp32 whatever the inputs
    block_of_key = torch.arange(n_k, device=q.device) // bk  # (Nk,)
    row_mass = []
    lse_now = None
    for first in range(0, n_kv_blocks, D):
        columns = first + torch.arange(D, device=q.device)  # kv blocks of this call (past nK: all zero)
        indicator = (block_of_key[:, None] == columns[None, :]).float()  # (Nk, D)
        out, lse_now = flash_cpu_op()(q32, k32, indicator.expand(B, H, n_k, D).contiguous(), scale=scale)
        row_mass.append(out[..., : min(D, n_kv_blocks - first)])  # (B, H, Nq, <= D)
    mass_rows = torch.cat(row_mass, dim=-1)  # (B, H, Nq, nK)
    lse_now = lse_now.float()
    if lse is None:
        lse = lse_now
    else:
        mass_rows = mass_rows * torch.exp(lse_now - lse.float())[..., None]
    return _mean_per_q_block(mass_rows, bq), lse


# On a CPU the fused mass (a block-indicator V of nK columns) is the faster up to nK of about 2-3 D, the streaming
# PyTorch one beyond: benchmarks/results/2026-12-02-mass-backends-cpu.json.
_FUSED_MAX_BLOCKS_PER_DIM = 2.5


def block_attention_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    block_size: int | tuple[int, int] = 128,
    lse: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mean attention mass per (q block, kv block), ``(B, H, nQ, nK)`` fp32; rows sum to 1.

    Args:
        q, k (`torch.Tensor` of shape ``(B, H, N, D)``): queries and keys.
        block_size (`int` or `(int, int)`, defaults to 128): q and kv block sizes.
        lse (`torch.Tensor` of shape ``(B, H, Nq)``, optional): row log-sum-exp (natural log) to normalize by,
            e.g. cached from an earlier search (then rows sum to ``exp(lse_now - lse)``, not 1); computed
            when absent.
        scale (`float`, optional): softmax scale, default ``1 / sqrt(D)``.
        backend (`str`, defaults to ``"auto"``): ``"torch"`` (streaming PyTorch), ``"fused"`` (torch's fused
            CPU attention kernel on a block-indicator V: one pass gives the masses and the LSE, about 2x
            faster than ``"torch"`` on two cores while the kv blocks are few; its cost grows with their number),
            ``"triton"``, or ``"auto"`` (Triton on a CUDA GPU; on a CPU fused while ``nK <= 2.5 * D``, the
            crossover ``benchmarks/mass_backends.py`` measured between 2 and 3, else PyTorch).
        return_lse (`bool`, defaults to False): also return the LSE the masses are normalized by (``lse``
            when given), ``(B, H, Nq)`` fp32.
    """
    if q.dim() != 4 or k.dim() != 4 or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must be (B, H, N, D) with matching B, H, D; got {tuple(q.shape)}, {tuple(k.shape)}")
    bq, bk = (block_size, block_size) if isinstance(block_size, int) else block_size
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if lse is not None and lse.shape != q.shape[:3]:
        raise ValueError(f"lse must be (B, H, Nq) = {tuple(q.shape[:3])}, got {tuple(lse.shape)}")
    if backend == "auto":
        if q.is_cuda and triton_unavailable_reason(q.device) is None:
            backend = "triton"
        elif (
            q.device.type == "cpu"
            and flash_cpu_op() is not None
            and -(-k.shape[2] // bk) <= _FUSED_MAX_BLOCKS_PER_DIM * q.shape[-1]
        ):
            backend = "fused"
        else:
            backend = "torch"
    if backend == "fused":
        if q.device.type != "cpu" or flash_cpu_op() is None:
            raise ValueError(f"the fused block mass runs on a CPU with torch's fused attention kernel, got {q.device}")
        with torch.no_grad():
            mass, lse = _block_mass_fused_cpu(q, k, lse, bq, bk, scale)
        return (mass, lse) if return_lse else mass
    if lse is None:
        lse = row_logsumexp(q, k, scale=scale)
    if backend == "triton":
        reason = triton_unavailable_reason(q.device)
        if reason is not None:
            raise ValueError(f"triton block mass cannot run: {reason}")
        if q.device.type == "cpu" and interpreting() and q.dtype == torch.bfloat16:
            raise ValueError("bf16 is silently wrong under the Triton interpreter; use fp16 or fp32 on a CPU")
        mass = _block_mass_triton(q, k, lse, bq, bk, scale)
    elif backend == "torch":
        mass = _block_mass_torch(q, k, lse, bq, bk, scale)
    else:
        raise ValueError(f"backend must be 'auto', 'torch', 'fused' or 'triton', got {backend!r}")
    return (mass, lse.float()) if return_lse else mass


def select_blocks(
    mass: torch.Tensor,
    *,
    fraction: float | None = None,
    tau: float | None = None,
    top_k: int | None = None,
    min_blocks_per_row: int = 1,
) -> torch.Tensor:
    """Boolean block table ``(B, H, nQ, nK)`` from block masses, by exactly one rule per row.

    ``fraction``: the top ``ceil(fraction * nK)`` blocks; ``tau``: the fewest top blocks whose mass reaches
    ``tau`` (XAttention / AdaSpa style); ``top_k``: the top ``k``. Every row keeps at least
    ``min_blocks_per_row`` blocks.
    """
    rules = [x is not None for x in (fraction, tau, top_k)]
    if sum(rules) != 1:
        raise ValueError("give exactly one of fraction, tau, top_k")
    n_kv = mass.shape[-1]
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        counts = torch.full(mass.shape[:-1], math.ceil(fraction * n_kv), device=mass.device)
    elif top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k!r}")
        counts = torch.full(mass.shape[:-1], min(top_k, n_kv), device=mass.device)
    else:
        if not 0 < tau <= 1:
            raise ValueError(f"tau must be in (0, 1], got {tau!r}")
        ordered = torch.sort(mass, dim=-1, descending=True).values
        before = torch.cumsum(ordered, dim=-1) - ordered  # mass of the blocks ranked above each one
        counts = (before < tau * ordered.sum(-1, keepdim=True) - 1e-12).sum(-1)
    counts = counts.clamp(min=min(min_blocks_per_row, n_kv), max=n_kv)
    rank = torch.argsort(torch.argsort(mass, dim=-1, descending=True, stable=True), dim=-1)
    return rank < counts[..., None]


def antidiagonal_block_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    block_size: int = 128,
    stride: int = 8,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """XAttention block importance ``(B, H, nQ, nK)``: softmax of strided antidiagonal sums, summed per block.

    Xu et al., "XAttention: Block Sparse Attention with Antidiagonal Scoring" (2025),
    https://arxiv.org/abs/2503.16661. Inside every ``stride x stride`` tile of the attention matrix the
    antidiagonal sum is one dot product of strided, offset-reversed copies of q and k (row ``r`` of ``q_s``
    holds ``q[r*S + S-1-o]`` for ``o = 0..S-1``, row ``c`` of ``k_s`` holds ``k[c*S + o]``). A row softmax of
    ``q_s k_s^T * scale / S`` summed over each block's ``(block/S)^2`` entries is then exactly the block mass
    of ``q_s, k_s`` with blocks of ``block/S``, which :func:`block_attention_mass` computes (PyTorch or
    Triton) without the ``(N/S)^2`` matrix. Rows of the result sum to 1; sequences are padded to whole
    blocks inside, strided keys that start past the end are dropped and partial query rows kept.
    """
    if block_size % stride:
        raise ValueError(f"block_size ({block_size}) must be a multiple of stride ({stride})")
    n_q, n_k = q.shape[2], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    nb_q, nb_k = -(-n_q // block_size), -(-n_k // block_size)
    q_pad = torch.nn.functional.pad(q, (0, 0, 0, nb_q * block_size - n_q))
    k_pad = torch.nn.functional.pad(k, (0, 0, 0, nb_k * block_size - n_k))
    q_s = torch.cat([q_pad[:, :, stride - 1 - o :: stride] for o in range(stride)], dim=-1)  # (B, H, Nq/S, D*S)
    k_s = torch.cat([k_pad[:, :, o::stride] for o in range(stride)], dim=-1)  # (B, H, Nk/S, D*S)
    q_s, k_s = q_s[:, :, : -(-n_q // stride)], k_s[:, :, : -(-n_k // stride)]
    per_block = block_size // stride
    if backend == "auto" and (per_block < 16 or not q.is_cuda):
        backend = "torch"  # Triton's tl.dot needs tiles of at least 16
    return block_attention_mass(
        q_s.contiguous(), k_s.contiguous(), block_size=per_block, scale=scale / stride, backend=backend
    )
