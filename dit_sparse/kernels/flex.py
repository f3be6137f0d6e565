"""Block-sparse attention on ``torch.nn.attention.flex_attention``, compiled, on CPU and GPU.

FlexAttention skips the kv blocks that a ``BlockMask`` leaves out. Every kept block of a
:class:`~dit_sparse.BlockSparseMask` is marked *full*, so no per-token ``mask_mod`` runs inside kept
blocks; the ``mask_mod`` that reads the block table is still attached, because eager FlexAttention
evaluates it on every token pair and would otherwise compute dense attention.

FlexAttention is only ever called compiled: eager FlexAttention materializes the N x N score matrix.
The compiled function is created once per process and Dynamo caches one graph per (shapes, dtype,
device, block size); a recompile limit is raised for this call only, and hitting it raises instead of
silently falling back to eager. On a CPU, compiling a new shape takes 10-20 s on two cores.

On a CPU, inductor's flex template uses the mask's block size as its q/kv tile. Refining a 128 x 128
mask to smaller tiles (64 x 64, 64 x 32, 32 x 32) was measured at N = 8,192 on 2 AVX2 cores and made no
difference beyond the machine's noise, so masks run at their own block size. Since every block is full
and the CPU template bounds the last tile by the sequence length, the per-token mask evaluation is
skipped there (``SKIP_MASK_SCORE``).
"""

from __future__ import annotations

import functools
import math
import shutil

import torch

from ..mask import BlockSparseMask

_RECOMPILE_LIMIT = 64


def flex_unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why FlexAttention cannot run here (None if it can). Checked once per device type."""
    device = device or torch.device("cpu")
    if device.type == "cuda":
        from .triton_block_sparse import triton_unavailable_reason

        return triton_unavailable_reason(device)
    return _flex_unavailable_reason(device.type)


@functools.cache
def _flex_unavailable_reason(device_type: str) -> str | None:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention (needs >= 2.5)"
    if device_type == "cpu":
        capability = torch.backends.cpu.get_cpu_capability()
        if not capability.startswith("AVX"):
            return f"compiled FlexAttention on a CPU needs x86 AVX2 or AVX512 (this CPU: {capability})"
        if shutil.which("g++") is None and shutil.which("c++") is None:
            return "compiled FlexAttention on a CPU needs a C++ compiler (g++), none found on PATH"
        return None
    return f"FlexAttention is not wired up for device type {device_type!r}"


def flex_unsupported_reason(q: torch.Tensor, mask: BlockSparseMask, return_lse: bool) -> str | None:
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"flex runs fp16, bf16 and fp32, not {q.dtype}"
    if q.device.type == "cuda" and (q.shape[-1] < 16 or q.shape[-1] & (q.shape[-1] - 1)):
        return f"flex on a GPU needs a power-of-two head dim >= 16, got {q.shape[-1]}"
    if q.device.type == "cpu":
        if return_lse:
            return f"compiled FlexAttention on a CPU cannot return the LSE (torch {torch.__version__})"
        if q.requires_grad and torch.is_grad_enabled():
            return "compiled FlexAttention on a CPU is inference only; run under torch.no_grad()"
    return None


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False, fullgraph=True)


def _flex_block_mask(mask: BlockSparseMask):
    """The FlexAttention BlockMask for ``mask``, cached on the mask object."""
    if "flex" not in mask._derived:
        mask._derived["flex"] = mask.to_flex(compute_q_blocks=False)
    return mask._derived["flex"]


def flex_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockSparseMask,
    scale: float,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    block_mask = _flex_block_mask(mask)
    kernel_options = {"SKIP_MASK_SCORE": True} if q.device.type == "cpu" else None
    with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True):
        result = _compiled_flex()(
            q, k, v, block_mask=block_mask, scale=scale, return_lse=return_lse, kernel_options=kernel_options
        )
    if return_lse:
        out, lse = result
        # Rows with no kept block: FlexAttention leaves zeros in the output; make their LSE -inf,
        # as the other backends do.
        lse = lse.float()
        empty = mask.kv_num_blocks == 0  # (B or 1, H, nQ)
        if bool(empty.any()):
            rows = empty.repeat_interleave(mask.block_size[0], dim=-1)[..., : q.shape[-2]]
            lse = lse.masked_fill(rows, -math.inf)
        return out, lse
    return result, None
