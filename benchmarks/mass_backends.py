"""CPU time of the exact block mass (``dit_sparse.scoring.block_attention_mass``) by backend, against the block count.

The ``fused`` backend runs torch's fused attention kernel once with a block-indicator V of ``nK`` columns, so its
cost grows with the number of kv blocks; the ``torch`` backend streams ``N x block`` score pieces whatever the
block count. ``backend="auto"`` on a CPU picks ``fused`` while ``nK <= 2.5 * D`` (the crossover this script
measures lies between 2 D and 3 D) and ``torch`` beyond.

    python benchmarks/mass_backends.py --out benchmarks/results/<date>-mass-backends-cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from dit_sparse.scoring import block_attention_mass

SHAPES = (  # (N, H, D, block)
    (6400, 4, 64, 32),
    (6400, 4, 64, 64),
    (6400, 4, 64, 128),
    (8192, 2, 64, 64),
    (8192, 2, 64, 128),
    (6400, 4, 32, 32),
    (6400, 4, 32, 128),
    (6400, 4, 32, 256),
    (2304, 4, 32, 16),
    (2304, 4, 32, 64),
)


def _fastest_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write the JSON here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    for n, heads, dim, block in SHAPES:
        q, k = (torch.randn(1, heads, n, dim) for _ in range(2))
        times = {}
        for backend in ("fused", "torch", "auto"):

            def mass(q=q, k=k, block=block, backend=backend):
                return block_attention_mass(q, k, block_size=block, backend=backend)

            times[backend] = _fastest_ms(mass, args.repeats)
        n_kv = -(-n // block)
        rows.append({"N": n, "H": heads, "D": dim, "block": block, "kv_blocks": n_kv})
        rows[-1].update({f"{b}_ms": t for b, t in times.items()})
        print(
            f"N {n} H {heads} D {dim} block {block} (nK {n_kv}, nK/D {n_kv / dim:.2f}): "
            f"fused {times['fused']:.0f} ms, torch {times['torch']:.0f} ms, auto {times['auto']:.0f} ms",
            flush=True,
        )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
