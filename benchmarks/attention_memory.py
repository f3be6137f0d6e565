"""Peak memory of one block-sparse attention call above its inputs, on a CPU.

Measures the process's peak resident memory (``ru_maxrss``) after the inputs exist and after one call
(in a fresh process, so nothing earlier set the peak), and prints the difference: what the call itself
needed at its peak (gathered K/V chunks, outputs, padding copies). Random per-head tables with every row
keeping ``density`` of the kv blocks (``dit_sparse.bench.attention.random_block_mask``).

    python benchmarks/attention_memory.py --seq-len 32768 --heads 2 --head-dim 64 --density 0.1
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys

import torch

import dit_sparse as ds
from dit_sparse.bench.attention import environment_info, random_block_mask


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=32768)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--lse", action="store_true", help="the call also returns the LSE")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args(argv)
    if platform.system() != "Linux":
        parser.error("ru_maxrss is read in KiB as on Linux; run this on Linux")

    n, shape = args.seq_len, (1, args.heads, args.seq_len, args.head_dim)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=generator) for _ in range(3))  # (B, H, N, D)
    mask = random_block_mask(1, args.heads, n, args.density, args.block_size, generator=generator)
    mask.kv_num_blocks  # noqa: B018 - the compressed table belongs to the mask, not to the call
    inputs_mib = sum(t.numel() * t.element_size() for t in (q, k, v)) / 2**20
    before = _peak_mib()
    with torch.no_grad():
        ds.block_sparse_attention(q, k, v, mask, backend=args.backend, return_lse=args.lse)
    after = _peak_mib()
    result = {
        "environment": environment_info("cpu"),
        "settings": vars(args),
        "density": mask.density(),
        "inputs_mib": inputs_mib,
        "peak_before_call_mib": before,
        "peak_after_call_mib": after,
        "call_peak_above_inputs_mib": after - before,
        "n_x_n_fp32_per_head_mib": n * n * 4 / 2**20,
    }
    print(
        f"N={n} H={args.heads} D={args.head_dim} density={mask.density():.3f} backend={args.backend}: "
        f"inputs {inputs_mib:.0f} MiB; peak memory of the call above them {after - before:.0f} MiB "
        f"(an N x N fp32 map of one head: {n * n * 4 / 2**20:.0f} MiB)"
    )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
