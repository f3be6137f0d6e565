"""``measure_cost_profile``: a measured :class:`~dit_sparse.cost.CostModel` for the per-head search.

Sparse-vDiT (Chen et al., 2025, https://arxiv.org/abs/2506.03065) ranks each head's candidate patterns by
the kernel time on the target device rather than by FLOPs. This times the block-sparse kernel on this device
at a few densities (random masks keeping the same number of blocks in every row) and the dense-equivalent
full mask; the cost of a pattern is then the measured time at its block density, interpolated, relative to
the full mask. The analytic model, ``CostModel.flops()``, needs no measurement (see :mod:`dit_sparse.cost`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..cost import CostModel
from ..utils import median_ms


def measure_cost_profile(
    num_tokens: int,
    head_dim: int,
    *,
    num_heads: int = 1,
    block_size: int = 128,
    densities: Sequence[float] = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75),
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    backend: str = "auto",
    warmup: int = 2,
    repeats: int = 5,
    seed: int = 0,
) -> CostModel:
    """Time :func:`dit_sparse.block_sparse_attention` at a few block densities on this device.

    Every profile also measures one block per row (the cheapest non-empty mask), the full mask (the
    reference, relative time 1) and the mean of V (a skipped head). Masks keep the same number of kv
    blocks in every q-block row (:func:`dit_sparse.bench.attention.random_block_mask`), so a point's block
    fraction is exact. On a CPU ``backend="auto"`` compiles FlexAttention once per mask layout (seconds
    each); the analytic :meth:`CostModel.flops` needs no measurement.

    Args:
        num_tokens (`int`): sequence length N of the calls to model (a layer's layout).
        head_dim (`int`): head dimension D.
        num_heads (`int`, defaults to 1): heads per call (more heads amortize launch overhead as in a model).
        block_size (`int`, defaults to 128): the plan's block size.
        densities (`Sequence[float]`, defaults to ``(0.05, 0.1, 0.2, 0.35, 0.5, 0.75)``): block fractions
            to measure (rounded to whole blocks per row).
        device (`torch.device` or `str`, optional): default CUDA if available, else CPU.
        dtype (`torch.dtype`, optional): default bfloat16 on CUDA, float32 on a CPU.
        backend (`str`, defaults to ``"auto"``): kernel backend to time.
        warmup, repeats (`int`): untimed calls, then the median of ``repeats`` timed calls.
        seed (`int`, defaults to 0): seed of the random inputs and masks.

    Returns:
        A ``"measured"`` :class:`CostModel`.
    """
    from ..attention import block_sparse_attention, select_backend
    from ..bench.attention import random_block_mask

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    generator = torch.Generator(device).manual_seed(seed)
    q, k, v = (
        torch.randn(1, num_heads, num_tokens, head_dim, generator=generator, device=device, dtype=dtype)
        for _ in range(3)
    )
    n_blocks = -(-num_tokens // block_size)
    counts = sorted({1, n_blocks} | {min(n_blocks, max(1, round(d * n_blocks))) for d in densities})
    mask_generator = torch.Generator(device).manual_seed(seed)
    times = {}
    chosen_backend = backend
    for count in counts:
        mask = random_block_mask(
            1, num_heads, num_tokens, count / n_blocks, block_size, generator=mask_generator, device=device
        )
        if chosen_backend == "auto":
            chosen_backend = select_backend(q, mask)
        block_sparse_attention(q, k, v, mask, backend=chosen_backend)  # compile / autotune outside the timing
        times[count] = median_ms(
            lambda mask=mask, backend=chosen_backend: block_sparse_attention(q, k, v, mask, backend=backend),
            device,
            warmup,
            repeats,
        )
    skip_ms = median_ms(lambda: v.float().mean(dim=2, keepdim=True), device, warmup, repeats)
    dense_ms = times[n_blocks]
    return CostModel(
        kind="measured",
        block_fractions=tuple(c / n_blocks for c in counts),
        relative_times=tuple(times[c] / dense_ms for c in counts),
        skip_relative_time=skip_ms / dense_ms,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        backend=chosen_backend,
        dtype=str(dtype).removeprefix("torch."),
        num_tokens=num_tokens,
        head_dim=head_dim,
        num_heads=num_heads,
        block_size=block_size,
        dense_ms=dense_ms,
    )
