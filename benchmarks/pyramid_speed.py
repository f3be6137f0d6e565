"""CPU speed of pyramid attention (level masks) against dense SDPA and binary block-sparse attention, one run.

For each allocation and compute density: a level mask allocated from random block masses (``quota``, the
method's default, PSA's ranked quotas scaled to the budget: full, pooled by 2 and by 8; ``mass``, every level
down to one pooled key per block), a binary mask of the same compute (top blocks by the same masses), dense
SDPA on the same inputs; the fastest of ``--repeats`` interleaved runs of each, and the time of the pooled
tables alone (pooling K and V once per call per level, the part of a pyramid call that a binary one does not
have).

    python benchmarks/pyramid_speed.py --out benchmarks/results/<date>-pyramid-speed-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import torch

import dit_sparse as ds
from dit_sparse.kernels.pyramid import _pooled_key_tables
from dit_sparse.methods.pyramid import allocate_levels, allocate_levels_by_mass, ratios_for_density


def _fastest_seconds(fns: dict, repeats: int) -> dict:
    """Each function's fastest of ``repeats`` runs, the functions interleaved in every round (after one warm-up
    round): a shared VM's speed drifts by 10-20% within minutes and spikes for single runs, which a median of
    each function's runs in a block of its own turns into spurious ratios."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    for line in out.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--densities", default="0.05,0.1,0.25,0.5")
    parser.add_argument("--allocations", default="quota,mass", help="comma-separated: quota, mass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the JSON here")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    n, H, D, bs = args.seq_len, args.heads, args.head_dim, args.block_size
    q, k, v = (torch.randn(1, H, n, D) for _ in range(3))
    n_blocks = -(-n // bs)
    mass = torch.rand(1, H, n_blocks, n_blocks) ** 6  # a few heavy blocks per row, as trained attention has
    mass = mass / mass.sum(-1, keepdim=True)
    max_level = bs.bit_length() - 1
    scale = D**-0.5
    rows = []
    cases = [(a, float(d)) for a in args.allocations.split(",") for d in args.densities.split(",")]
    for allocation, density in cases:
        if allocation == "quota":
            levels = ds.LevelMask(allocate_levels(mass, ratios_for_density(density)), bs, (n, n), max_level=3)
        elif allocation == "mass":
            table = allocate_levels_by_mass(mass, density, max_level)
            levels = ds.LevelMask(table, bs, (n, n), max_level=max_level)
        else:
            parser.error(f"unknown allocation {allocation!r}; use quota or mass")
        binary_levels = allocate_levels(mass, (levels.compute_density(),))
        binary = ds.BlockSparseMask.from_dense(binary_levels == 0, bs, (n, n))
        fastest = _fastest_seconds(
            {
                "dense": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v),
                "pyramid": lambda levels=levels: ds.pyramid_attention(q, k, v, levels),
                "tables": lambda levels=levels: _pooled_key_tables(k, v, levels, scale),
                "binary": lambda binary=binary: ds.block_sparse_attention(q, k, v, binary),
            },
            args.repeats,
        )
        dense, pyramid, tables, block_sparse = (fastest[x] for x in ("dense", "pyramid", "tables", "binary"))
        rows.append(
            {
                "allocation": allocation,
                "target_density": density,
                "compute_density": levels.compute_density(),
                "binary_density": binary.density(),
                "levels": levels.level_fractions(),
                "dense_ms": dense * 1e3,
                "pyramid_ms": pyramid * 1e3,
                "pooled_tables_ms": tables * 1e3,
                "binary_ms": block_sparse * 1e3,
                "pyramid_speedup": dense / pyramid,
                "binary_speedup": dense / block_sparse,
                "pooled_overhead_fraction": tables / pyramid,
            }
        )
        r = rows[-1]
        print(
            f"{allocation} compute {r['compute_density']:.3f}: "
            f"pyramid {r['pyramid_ms']:.1f} ms ({r['pyramid_speedup']:.2f}x), "
            f"binary {r['binary_ms']:.1f} ms ({r['binary_speedup']:.2f}x), dense {r['dense_ms']:.1f} ms; "
            f"pooled tables {r['pooled_tables_ms']:.1f} ms = {100 * r['pooled_overhead_fraction']:.1f}% of pyramid",
            flush=True,
        )
    report = {
        "environment": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "settings": vars(args),
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
