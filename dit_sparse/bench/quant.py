"""Attention-output error of quantized Q/K (int8, int4) next to fp32 and fp16, at one block-sparse mask.

For each attention call the mask keeps, per q-block row, the kv blocks with the most exact attention mass
(``density`` of them, as PAROAttention's offline masks do), after an optional token permutation. Every
precision then runs through the ``reference`` backend on that mask and is compared, by relative L2 of the
output, with exact fp64 attention on the same mask (the error of the precision alone) and with exact dense
fp64 attention (sparsity and precision together). int8 and int4 quantize Q and K per block after smoothing
K (see :mod:`dit_sparse.kernels.quant`), with ``P V`` in ``quant_dtype``.

A token permutation changes which blocks the mask can keep, never the norms, so errors are measured in the
permuted order. ``k_offset`` adds a fixed random offset per channel to K (the same for every token), as
trained DiTs' keys have: exact attention does not change, and smoothing should keep quantization from
noticing either.

``order="paro"`` gives every head of every call its own order, the one PAROAttention's selection
(:func:`~dit_sparse.methods.paro.choose_orders`) picks on that call at the same density.

``benchmarks/quant_quality.py`` and :func:`main` are the command line; the input is q, k, v captured from
the small random-weight Wan transformer of :mod:`dit_sparse.bench.patterns` (``--source random-wan``) or
from the trained embedded model mid-generation (``--source embedded``), whose heads have learnt structure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import torch

from ..attention import block_sparse_attention
from ..layout import ORDERS
from ..mask import BlockSparseMask
from ..scoring import block_attention_mass, select_blocks
from .patterns import relative_l2

# precision -> (input dtype, quant); None means ``quant_dtype``.
PRECISIONS: dict[str, tuple[torch.dtype | None, str | None]] = {
    "fp32": (torch.float32, None),
    "fp16": (torch.float16, None),
    "int8": (None, "int8"),
    "int4": (None, "int4"),
}


def _reorder(x: torch.Tensor, permutation: torch.Tensor | None) -> torch.Tensor:
    from ..integration.state import _reorder as reorder

    return x if permutation is None else reorder(x, permutation)


def top_mass_mask(q: torch.Tensor, k: torch.Tensor, density: float, block_size: int) -> BlockSparseMask:
    """Per q-block row, the ``ceil(density * nK)`` kv blocks with the most exact attention mass."""
    mass = block_attention_mass(q.float(), k.float(), block_size=block_size, backend="torch")  # (B, H, nQ, nK)
    blocks = select_blocks(mass, fraction=density)
    return BlockSparseMask.from_dense(blocks, block_size, (q.shape[2], k.shape[2]), name=f"top_mass({density:g})")


def quantization_error(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    density: float = 0.25,
    block_size: int = 64,
    permutation: torch.Tensor | None = None,
    precisions: Sequence[str] = tuple(PRECISIONS),
    quant_dtype: torch.dtype = torch.float16,
    k_offset: float = 0.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Relative L2 output error of each precision on one attention call.

    Args:
        q, k, v (`torch.Tensor` of shape ``(B, H, N, D)``): one self-attention call.
        density (`float`, defaults to 0.25): fraction of kv blocks kept per q-block row, by exact block mass.
        block_size (`int`, defaults to 64): q and kv block size of the mask (and of the quantization blocks).
        permutation (`torch.Tensor`, optional): token order ``(N,)`` or per head ``(H, N)`` applied to q, k, v
            before the mask is chosen (e.g. ``layout.permutation("HWF")``, or a per-head best order).
        precisions (`Sequence[str]`, defaults to all of ``PRECISIONS``): ``"fp32"``, ``"fp16"``, ``"int8"``,
            ``"int4"``.
        quant_dtype (`torch.dtype`, defaults to fp16): input dtype of the quantized runs (``P V`` runs in it).
        k_offset (`float`, defaults to 0): size of a per-channel offset added to K (``k_offset * randn(D)``).
        seed (`int`, defaults to 0): seed of that offset.

    Returns:
        One dict per precision: ``precision``, ``density`` (reached), ``rel_l2_vs_masked`` (against exact
        attention with the same mask) and ``rel_l2_vs_dense`` (against exact dense attention).
    """
    unknown = [name for name in precisions if name not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown precision(s) {unknown}; choose from {list(PRECISIONS)}")
    if k_offset:
        generator = torch.Generator().manual_seed(seed)
        k = k + k_offset * torch.randn(k.shape[-1], generator=generator).to(k.device, k.dtype)
    q, k, v = (_reorder(t, permutation) for t in (q, k, v))
    mask = top_mass_mask(q, k, density, block_size)
    q64, k64, v64 = q.double(), k.double(), v.double()
    masked = block_sparse_attention(q64, k64, v64, mask, backend="reference")  # (B, H, N, D)
    dense = torch.nn.functional.scaled_dot_product_attention(q64, k64, v64)  # (B, H, N, D)
    rows = []
    for name in precisions:
        dtype, quant = PRECISIONS[name]
        dtype = quant_dtype if dtype is None else dtype
        out = block_sparse_attention(
            q.to(dtype), k.to(dtype), v.to(dtype), mask, backend="reference", quant=quant
        )  # (B, H, N, D)
        rows.append(
            {
                "precision": name,
                "density": mask.density(),
                "rel_l2_vs_masked": relative_l2(out, masked),
                "rel_l2_vs_dense": relative_l2(out, dense),
            }
        )
    return rows


def call_permutation(call: Any, order: str | None, density: float, block_size: int) -> torch.Tensor | None:
    """The token order of one captured call: ``None`` (native), one of ``ORDERS``, or ``"paro"`` (per head)."""
    if order is None or order == "FHW":
        return None
    if order != "paro":
        return call.layout.permutation(order, device=call.q.device)
    from ..methods.paro import OrderStatistics, choose_orders

    stats = OrderStatistics(call.layout, block_size)
    stats.update(call.q.float(), call.k.float())
    heads = choose_orders(stats, density=density)
    return torch.stack([call.layout.permutation(h.order, device=call.q.device) for h in heads])  # (H, N)


def quantization_error_table(
    calls: Sequence[Any],
    *,
    k_offsets: Sequence[float] = (0.0,),
    order: str | None = None,
    density: float = 0.25,
    block_size: int = 64,
    **options: Any,
) -> list[dict[str, Any]]:
    """:func:`quantization_error` averaged over ``calls`` (objects with ``q, k, v`` and ``layout``), per K offset.

    ``order`` is ``None`` (native), one of ``ORDERS``, or ``"paro"`` (see :func:`call_permutation`);
    ``options`` are passed to :func:`quantization_error`; each row also has ``k_offset``, ``order`` and
    ``calls``.
    """
    rows = []
    permutations = [call_permutation(c, order, density, block_size) for c in calls]
    for offset in k_offsets:
        per_call = [
            quantization_error(
                c.q, c.k, c.v, k_offset=offset, permutation=p, density=density, block_size=block_size, **options
            )
            for c, p in zip(calls, permutations, strict=True)
        ]
        for same_precision in zip(*per_call, strict=True):  # one row of each call
            row = {
                "precision": same_precision[0]["precision"],
                "k_offset": offset,
                "order": order or "FHW",
                "calls": len(calls),
            }
            for key in ("density", "rel_l2_vs_masked", "rel_l2_vs_dense"):
                row[key] = sum(r[key] for r in same_precision) / len(same_precision)
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Print the error table for q, k, v captured from a random-weight Wan or the embedded model."""
    from .patterns import add_source_arguments, captured_calls, write_rows

    parser = argparse.ArgumentParser(
        prog="quant_quality",
        description="Relative L2 output error of fp32, fp16, int8 and int4 (Q/K quantized per block, K smoothed) "
        "block-sparse attention against exact fp64 attention, with the mask that keeps the top-mass blocks, on "
        "q/k/v captured from a small random-weight Wan transformer (both self-attention layers, one step) or from "
        "the trained embedded model (--source embedded).",
    )
    add_source_arguments(parser)
    parser.add_argument("--density", type=float, default=0.25)
    parser.add_argument(
        "--order",
        choices=[*ORDERS, "paro"],
        help="token order applied before choosing the mask; paro: each head's order chosen by PARO's selection",
    )
    parser.add_argument(
        "--k-offsets", default="0,10", help="comma-separated sizes of a per-channel offset added to K (default 0,10)"
    )
    parser.add_argument("--quant-dtype", choices=["fp16", "fp32"], default="fp16", help="input dtype of int8/int4")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if not 0 < args.density <= 1:
        parser.error(f"--density must be in (0, 1], got {args.density}")
    try:
        offsets = [float(x) for x in args.k_offsets.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--k-offsets must be comma-separated numbers, got {args.k_offsets!r}")
    calls = captured_calls(args)
    rows = quantization_error_table(
        calls,
        k_offsets=offsets,
        density=args.density,
        block_size=args.block_size,
        order=args.order,
        quant_dtype=torch.float16 if args.quant_dtype == "fp16" else torch.float32,
        seed=args.seed,
    )
    q = calls[0].q
    print(
        f"{len(calls)} calls ({args.source}), q/k/v {tuple(q.shape)}, block {args.block_size}, "
        f"order {args.order or 'native'}, "
        f"int8/int4 inputs {args.quant_dtype}"
    )
    print(f"{'precision':<10} {'k offset':>8} {'density':>8} {'rel L2 vs masked':>17} {'rel L2 vs dense':>16}")
    for row in rows:
        print(
            f"{row['precision']:<10} {row['k_offset']:>8g} {row['density']:>8.3f} "
            f"{row['rel_l2_vs_masked']:>17.2e} {row['rel_l2_vs_dense']:>16.2e}"
        )
    write_rows(args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
