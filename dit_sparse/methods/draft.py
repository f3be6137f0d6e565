"""``method="draft"``: DraftAttention's low-resolution draft map, window-major reordering, block-sparse attention.

Shen et al., "DraftAttention: Fast Video Diffusion via Low-Resolution Attention Guidance" (2025),
https://arxiv.org/abs/2505.14708. Queries and keys are average-pooled inside each frame in windows of
``window = (h, w)`` latent cells (the paper's 8 x 16), giving one draft token per window; the draft map
``softmax(q~ k~^T / sqrt(D))`` is cheap, and per head its top ``fraction`` of entries (and every row's
largest) say which window pairs to compute. Tokens are reordered window-major so each window is
contiguous (a block when ``h * w`` equals the block size), attention runs on the resulting block mask,
and the output is put back in order. Windows at grid edges that do not divide are partial; a block that
touches a kept window pair is kept. Text rows and columns are dense. A new draft is made every call.
"""

from __future__ import annotations

import functools
import math

import torch

from ..kernels.triton_block_sparse import triton_unavailable_reason
from ..mask import BlockSparseMask
from ..patterns._tiles import blocks_from_tile_keep, tile_grid, tile_incidence, tile_of_position
from .base import AttentionCall, AttentionPlan, LayoutCache, Method


def pool_windows(x: torch.Tensor, tile_of: torch.Tensor, n_tiles: int, backend: str = "auto") -> torch.Tensor:
    """Mean of ``x`` ``(B, H, N, D)`` (tile-major order) over each tile -> ``(B, H, T, D)`` fp32; text ignored.

    ``backend``: ``"torch"`` (index_add, the twin), ``"triton"`` (one program per (tile, batch*head) summing the
    tile's contiguous rows), or ``"auto"`` (Triton on a CUDA GPU).
    """
    if backend == "auto":
        backend = "triton" if x.is_cuda and triton_unavailable_reason(x.device) is None else "torch"
    video = tile_of >= 0
    index = tile_of[video].to(x.device)
    counts = torch.bincount(index, minlength=n_tiles)
    if backend == "triton":
        starts = torch.zeros(n_tiles + 1, dtype=torch.int32, device=x.device)
        starts[1:] = torch.cumsum(counts, 0)
        starts += int(torch.nonzero(video)[0])  # tiles are contiguous and in order after any text prefix
        return _pool_triton(x, starts, n_tiles)
    sums = torch.zeros(*x.shape[:2], n_tiles, x.shape[-1], dtype=torch.float32, device=x.device)
    sums.index_add_(2, index, x[:, :, video.to(x.device)].float())
    return sums / counts.clamp(min=1)[:, None]


@functools.cache
def _pool_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def _window_mean_kernel(
        X, STARTS, OUT,
        stride_xb, stride_xh, stride_xn, stride_xd,
        H, N_TILES, HEAD_DIM,
        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        tile = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b, h = pid_bh // H, pid_bh % H
        start = tl.load(STARTS + tile)
        stop = tl.load(STARTS + tile + 1)
        offs_d = tl.arange(0, BLOCK_D)
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for row in range(start, stop, BLOCK_N):
            offs_n = row + tl.arange(0, BLOCK_N)
            x = tl.load(
                X + b * stride_xb + h * stride_xh + offs_n[:, None] * stride_xn + offs_d[None, :] * stride_xd,
                mask=(offs_n[:, None] < stop) & (offs_d[None, :] < HEAD_DIM),
                other=0.0,
            )
            acc += tl.sum(x.to(tl.float32), 0)
        count = tl.maximum(stop - start, 1)
        tl.store(OUT + (pid_bh * N_TILES + tile) * HEAD_DIM + offs_d, acc / count, mask=offs_d < HEAD_DIM)

    return _window_mean_kernel


def _pool_triton(x: torch.Tensor, starts: torch.Tensor, n_tiles: int) -> torch.Tensor:
    B, H, _, D = x.shape
    out = torch.empty(B, H, n_tiles, D, dtype=torch.float32, device=x.device)
    block_d = max(16, 1 << (D - 1).bit_length())
    _pool_kernel()[(n_tiles, B * H)](x, starts, out, *x.stride(), H, n_tiles, D, BLOCK_N=32, BLOCK_D=block_d)
    return out


def draft_keep(q_draft: torch.Tensor, k_draft: torch.Tensor, fraction: float) -> torch.Tensor:
    """Per (batch, head): the top ``fraction`` of draft-map entries, plus each row's largest. ``(B, H, T, T)``."""
    probs = torch.softmax(q_draft @ k_draft.transpose(-2, -1) / math.sqrt(q_draft.shape[-1]), dim=-1)
    flat = probs.flatten(-2)  # (B, H, T*T)
    count = max(1, math.ceil(fraction * flat.shape[-1]))
    threshold = flat.topk(count, dim=-1).values[..., -1:]  # (B, H, 1)
    keep = probs >= threshold[..., None]
    return keep | (probs == probs.amax(dim=-1, keepdim=True))


class DraftMethod(Method):
    name = "draft"

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self._layouts = LayoutCache()

    def _tiles(self, call: AttentionCall, window: tuple[int, int]):
        key = (call.layout, window, self.config.block_size, call.q.device)
        if key not in self._layouts:
            tile = (1, *window)
            n_tiles = math.prod(tile_grid(call.layout, tile))
            self._layouts[key] = (
                call.layout.tile_permutation(tile, device=call.q.device),
                tile_of_position(call.layout, tile),
                tile_incidence(call.layout, tile, self.config.block_size),
                n_tiles,
            )
        return self._layouts[key]

    def plan_for(self, call: AttentionCall) -> AttentionPlan:
        params = self.config.method_params(call.layer)
        perm, tile_of, incidence, n_tiles = self._tiles(call, tuple(params["window"]))
        q = call.q[:, :, perm]  # (B, H, N, D), window-major
        k = call.k[:, :, perm]
        keep = draft_keep(pool_windows(q, tile_of, n_tiles), pool_windows(k, tile_of, n_tiles), params["fraction"])
        table = blocks_from_tile_keep(incidence, keep)  # (B, H, nB, nB)
        n = call.layout.num_tokens
        self.searches += 1
        mask = BlockSparseMask.from_dense(table, self.config.block_size, (n, n), name=f"draft({params['fraction']})")
        return AttentionPlan(mask, perm)
