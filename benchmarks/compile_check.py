"""Compile every Triton kernel variant the library can launch for sm_80 and sm_90, on this machine (no GPU).

For each kernel (attention, block mass), target, input dtype, head dim, mask block, LSE and int8 flags, and
every tile config the per-architecture model keeps (``--all-configs``: also the ones it prunes), record the
shared memory, registers and spills that ``ptxas`` reports, and whether it can launch. Writes a JSON of all
rows and a markdown summary; exits 1 if any kept config cannot launch or spills.

    python benchmarks/compile_check.py --out benchmarks/results/<date>-compile-check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from dit_sparse.kernels.compile_check import (
    ARCHS,
    DTYPES,
    HEAD_DIMS,
    KERNELS,
    MASK_BLOCKS,
    check_variant,
    kernel_variants,
    model_configs,
    unavailable_reason,
)
from dit_sparse.kernels.gpu_model import autotune_candidates


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def _strs(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="path prefix: writes <out>.json and <out>.md")
    parser.add_argument("--kernels", type=_strs, default=KERNELS)
    parser.add_argument("--archs", type=_ints, default=ARCHS)
    parser.add_argument("--dtypes", type=_strs, default=DTYPES)
    parser.add_argument("--head-dims", type=_ints, default=HEAD_DIMS)
    parser.add_argument("--mask-blocks", type=_ints, default=MASK_BLOCKS)
    parser.add_argument("--all-configs", action="store_true", help="also compile the configs the model prunes")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"cannot compile for GPU targets here: {reason}", file=sys.stderr)
        return 2
    variants = kernel_variants(
        args.kernels, args.archs, args.dtypes, args.head_dims, args.mask_blocks, all_configs=args.all_configs
    )
    start = time.perf_counter()
    results = []
    with ProcessPoolExecutor(args.workers) as pool:
        for i, result in enumerate(pool.map(check_variant, variants, chunksize=4), 1):
            results.append(result)
            if i % 50 == 0 or i == len(variants):
                print(f"{i}/{len(variants)} compiled, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    rows = [r.as_row() for r in results]
    for row, result in zip(rows, results, strict=True):
        row["kept_by_model"] = result.variant.config in autotune_candidates(model_configs(result.variant))
    bad = [r for r in rows if r["kept_by_model"] and not r["ok"]]
    report = {
        "environment": {"machine": platform.processor() or platform.machine(), "python": platform.python_version()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": round(time.perf_counter() - start, 1),
        "variants": len(rows),
        "kept_failing": len(bad),
        "rows": rows,
    }
    try:
        import triton

        report["environment"]["triton"] = triton.__version__
    except ImportError:  # unavailable_reason already refused
        pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(render_markdown(report))
    print(render_markdown(report))
    return 1 if bad else 0


def render_markdown(report: dict) -> str:
    rows = report["rows"]
    model_ok = all(r["shared_bytes"] <= r["model_shared_bytes"] for r in rows if r["error"] is None)
    lines = [
        "# Compile check: our Triton kernels for sm_80 and sm_90 (ptxas, no GPU)",
        "",
        f"{report['variants']} variants compiled in {report['seconds']} s with triton "
        f"{report['environment'].get('triton', '?')}. Command: `python benchmarks/compile_check.py "
        f"--out <prefix>{' --all-configs' if report['settings'].get('all_configs') else ''}`.",
        f"Autotune candidates (configs the model keeps, at most 8 per key) that cannot launch or spill: "
        f"**{report['kept_failing']}**. The shared-memory model "
        f"{'never underestimates' if model_ok else '**underestimates some**'} what ptxas reports.",
        "",
        "| kernel | target | dtype | D | mask | autotune candidates | compiled ok | max shared (KiB) | limit (KiB) "
        "| max regs | spilling | not candidates |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["kernel"], row["arch"], row["dtype"], row["head_dim"], row["mask_block"])
        groups.setdefault(key, []).append(row)
    for (kernel, arch, dtype, d, mask), group in sorted(groups.items()):
        kept = [r for r in group if r["kept_by_model"]]
        ok = sum(r["ok"] for r in kept)
        shared = max((r["shared_bytes"] for r in kept), default=0) / 1024
        regs = max((r["registers"] for r in kept), default=0)
        spilling = sum(r["spill_stores"] > 0 or r["spill_loads"] > 0 for r in kept)
        pruned = len(group) - len(kept)
        lines.append(
            f"| {kernel} | sm_{arch} | {dtype} | {d} | {mask} | {len(kept)} | {ok} | {shared:.0f} | "
            f"{group[0]['max_shared_bytes'] / 1024:.0f} | {regs} | {spilling} | {pruned} |"
        )
    errors = Counter(r["error"] for r in rows if r["error"])
    if errors:
        lines += ["", "Compile errors:", *(f"- {n} x {e}" for e, n in errors.most_common())]
    reference = [
        r
        for r in rows
        if (r["kernel"], r["arch"], r["dtype"], r["head_dim"], r["mask_block"]) == ("attention", 90, "bf16", 128, 128)
        and (r["block_m"], r["block_n"], r["num_warps"], r["num_stages"]) == (128, 64, 8, 3)
        and not r["lse"]
        and not r["quant"]
    ]
    if reference:
        r = reference[0]
        lines += [
            "",
            f"Attention at sm_90, bf16, D 128, 128x64, 8 warps, 3 stages: {r['shared_bytes'] / 1024:.0f} KiB shared, "
            f"{r['registers']} registers, {r['spill_stores']} bytes spilled.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
