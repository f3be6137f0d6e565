"""``dit-sparse bench``: the attention benchmark and the end-to-end transformer benchmark."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark attention kernels or whole transformers (dense vs sparse, same run)",
        description="attention: backends x densities x sequence lengths against dense SDPA "
        "(see `dit-sparse bench attention --help`). transformer: a real model architecture with random "
        "weights, denoising steps dense vs each method (see `dit-sparse bench transformer --help`).",
    )
    parser.add_argument("kind", choices=["attention", "transformer"])
    parser.add_argument("options", nargs=argparse.REMAINDER, help="options of that benchmark")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.kind == "attention":
        from dit_sparse.bench.attention import main
    else:
        from dit_sparse.bench.transformer import main
    return main(args.options)
