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

``flex-flash`` is the same call with ``kernel_options={"BACKEND": "FLASH"}``: inductor then emits
FlashAttention-4 (Zadouri et al., 2026; CuTe DSL, https://github.com/Dao-AILab/flash-attention) instead of
its Triton template. It needs a torch whose FlexAttention knows that option (2.13 does), a Hopper
(sm_90) or Blackwell (sm_100 / sm_110) GPU, and the ``flash-attn-4`` package (``flash_attn.cute``, with
``nvidia-cutlass-dsl``); it runs fp16 and bf16 only, inference only, and returns the LSE (in natural-log
units, as FlexAttention reports it for that kernel). ``auto`` never picks it by itself: only a measured
entry in ``gpu_backend_table.json`` (see :mod:`.backend_table`) makes it the first choice on a GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import shutil
import typing

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


def flex_flash_unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why FlexAttention's FlashAttention-4 kernel cannot run on ``device`` (None if it can)."""
    device = device or torch.device("cpu")
    if device.type != "cuda":
        return (
            "flex-flash runs FlexAttention's FlashAttention-4 (CuTe DSL) kernel, which needs a CUDA GPU; "
            f"this device is {device.type!r}"
        )
    return _flex_flash_unavailable_reason(device.index)


@functools.cache
def _flex_flash_unavailable_reason(index: int | None) -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    if not flex_has_flash_backend():
        return (
            f"torch {torch.__version__} has no FlexAttention kernel option BACKEND='FLASH' "
            "(torch 2.13 has it; older releases lack it or need patches)"
        )
    major, minor = torch.cuda.get_device_capability(torch.device("cuda", index))
    if major not in (9, 10, 11):
        return (
            "FlexAttention's FlashAttention-4 kernel targets Hopper (sm_90) and Blackwell (sm_100, sm_110) "
            f"GPUs; this one is sm_{major}{minor}"
        )
    if not flash_attn_cute_available():
        return (
            "the flash-attn-4 package (module flash_attn.cute, with nvidia-cutlass-dsl) is not installed: "
            "`pip install flash-attn-4` (`flash-attn-4[cu13]` on CUDA 13)"
        )
    from .triton_block_sparse import triton_unavailable_reason

    # Inductor still compiles the rest of the graph (the block table's mask_mod) with Triton.
    return triton_unavailable_reason(torch.device("cuda", index))


def flex_has_flash_backend() -> bool:
    """Whether this torch's FlexAttention accepts ``kernel_options={"BACKEND": "FLASH"}``."""
    try:
        from torch.nn.attention import flex_attention as module
    except ImportError:
        return False
    return "FLASH" in typing.get_args(getattr(module, "_Backend", None))


def flash_attn_cute_available() -> bool:
    """Whether FlashAttention-4's CuTe DSL package (``flash_attn.cute``) can be imported; no import is done."""
    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except (ImportError, ValueError):  # no flash_attn package at all, or a broken one
        return False


def flex_flash_unsupported_reason(q: torch.Tensor, mask: BlockSparseMask, return_lse: bool) -> str | None:
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"flex-flash (FlashAttention-4) runs fp16 and bf16, not {q.dtype}"
    D = q.shape[-1]
    if D % 8:
        return f"flex-flash needs a head dim divisible by 8, got {D}"
    if q.device.type == "cuda":
        major = torch.cuda.get_device_capability(q.device)[0]
        if major == 9 and not 8 <= D <= 256:
            return f"flex-flash on sm_90 takes head dims 8 to 256, got {D}"
        if major in (10, 11) and not (8 <= D <= 128 or D == 256):
            return f"flex-flash on sm_{major}x takes head dims 8 to 128 or 256, got {D}"
    if any(size < 128 for size in mask.block_size):
        # FlashAttention-4 tiles are 128 tokens (or more) per side; a sparse block must cover whole tiles.
        return f"flex-flash needs mask blocks of at least 128 x 128 tokens, got {mask.block_size}"
    if q.requires_grad and torch.is_grad_enabled():
        return "flex-flash is inference only here; run under torch.no_grad()"
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
    kernel_options = {"SKIP_MASK_SCORE": True} if q.device.type == "cpu" else None
    return _flex_call(q, k, v, mask, scale, return_lse, kernel_options)


def flex_flash_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockSparseMask,
    scale: float,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    return _flex_call(q, k, v, mask, scale, return_lse, {"BACKEND": "FLASH"})


def _flex_call(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockSparseMask,
    scale: float,
    return_lse: bool,
    kernel_options: dict | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    block_mask = _flex_block_mask(mask)
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
