"""Attention kernels behind :func:`dit_sparse.block_sparse_attention`, one module per backend.

Each backend is a :class:`Backend`: a forward function ``(q, k, v, mask, scale, return_lse) -> (out,
lse | None)``, a check of whether it can run on a device at all, and a check of whether it supports a
given call (dtype, head dim, block size). ``reference`` is the exact twin the others are tested against.

A backend that supports quantized Q/K (:mod:`.quant`) also has a ``quantized_forward`` taking the same
arguments plus ``quant`` (``"int8"`` or ``"int4"``); for the others it is ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..mask import BlockSparseMask
from .flex import (
    flex_block_sparse_attention,
    flex_flash_block_sparse_attention,
    flex_flash_unavailable_reason,
    flex_flash_unsupported_reason,
    flex_unavailable_reason,
    flex_unsupported_reason,
)
from .gather import gather_block_sparse_attention, gather_unavailable_reason, gather_unsupported_reason
from .reference import reference_block_sparse_attention, reference_quantized_block_sparse_attention
from .triton_block_sparse import (
    triton_block_sparse_attention,
    triton_quantized_block_sparse_attention,
    triton_tma_block_sparse_attention,
    triton_tma_unavailable_reason,
    triton_tma_unsupported_reason,
    triton_unavailable_reason,
    triton_unsupported_reason,
)

ForwardFn = Callable[..., tuple[torch.Tensor, "torch.Tensor | None"]]


@dataclass(frozen=True)
class Backend:
    name: str
    forward: ForwardFn
    unavailable_reason: Callable[[torch.device | None], str | None]
    unsupported_reason: Callable[[torch.Tensor, BlockSparseMask, bool], str | None]
    description: str
    quantized_forward: ForwardFn | None = None


def _always_available(device: torch.device | None = None) -> str | None:
    return None


def _reference_unsupported(q: torch.Tensor, mask: BlockSparseMask, return_lse: bool) -> str | None:
    return None


BACKENDS: dict[str, Backend] = {
    "reference": Backend(
        "reference",
        reference_block_sparse_attention,
        _always_available,
        _reference_unsupported,
        "exact masked SDPA; allocates N x N (tests and small inputs)",
        reference_quantized_block_sparse_attention,
    ),
    "gather": Backend(
        "gather",
        gather_block_sparse_attention,
        gather_unavailable_reason,
        gather_unsupported_reason,
        "kept kv blocks gathered per q block, then torch's fused CPU attention (with LSE); CPU",
    ),
    "flex": Backend(
        "flex",
        flex_block_sparse_attention,
        flex_unavailable_reason,
        flex_unsupported_reason,
        "compiled torch FlexAttention with the block table; CPU and GPU",
    ),
    "flex-flash": Backend(
        "flex-flash",
        flex_flash_block_sparse_attention,
        flex_flash_unavailable_reason,
        flex_flash_unsupported_reason,
        "compiled FlexAttention with BACKEND='FLASH' (FlashAttention-4, CuTe DSL); Hopper/Blackwell GPUs, "
        "needs flash-attn-4; fp16/bf16; auto picks it only where gpu_backend_table.json says it is fastest",
    ),
    "triton": Backend(
        "triton",
        triton_block_sparse_attention,
        triton_unavailable_reason,
        triton_unsupported_reason,
        "block-sparse flash-attention forward in Triton; CUDA (CPU only under TRITON_INTERPRET=1)",
        triton_quantized_block_sparse_attention,
    ),
    "triton-tma": Backend(
        "triton-tma",
        triton_tma_block_sparse_attention,
        triton_tma_unavailable_reason,
        triton_tma_unsupported_reason,
        "the Triton kernel on tensor descriptors (TMA bulk copies); sm_90+, fp16/bf16, head dim 64/128; auto "
        "picks it only where gpu_backend_table.json says it is fastest",
    ),
}


def quantized_backends() -> list[str]:
    """Backends that take ``quant=``, in registry order."""
    return [name for name, backend in BACKENDS.items() if backend.quantized_forward is not None]
