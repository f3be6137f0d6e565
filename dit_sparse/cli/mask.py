"""``dit-sparse mask``: draw a pattern's block mask for a token grid as a PNG."""

from __future__ import annotations

import argparse

import dit_sparse as ds
from dit_sparse import patterns
from dit_sparse.patterns.radial import radial_token_density
from dit_sparse.utils import parse_params
from dit_sparse.visualize import render_mask

from ._args import non_negative_int, positive_int

BUILDERS = {
    "radial": patterns.radial,
    "diagonal": patterns.diagonal,
    "multi_diagonal": patterns.multi_diagonal,
    "vertical_stripe": patterns.vertical_stripe,
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "mask",
        help="draw a sparse-attention pattern as a PNG",
        description="Build a pattern's block mask for a latent token grid and write it as a PNG "
        "(one map per head, labelled with its density).",
    )
    parser.add_argument("pattern", choices=sorted(BUILDERS), help="pattern family")
    parser.add_argument("--frames", type=positive_int, required=True, help="latent frames after patchify (F')")
    parser.add_argument("--height", type=positive_int, required=True, help="token rows per frame (H')")
    parser.add_argument("--width", type=positive_int, required=True, help="token columns per frame (W')")
    parser.add_argument("--text-len", type=non_negative_int, default=0, help="text tokens in the joint sequence")
    parser.add_argument("--text-position", choices=["none", "prefix", "suffix"], default="none")
    parser.add_argument("--block-size", type=positive_int, default=128)
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="pattern parameter (JSON value), repeatable"
    )
    parser.add_argument("--out", required=True, help="PNG path to write")
    return parser


def run(args: argparse.Namespace) -> int:
    layout = ds.VideoLayout(args.frames, args.height, args.width, args.text_len, args.text_position)
    params = parse_params(args.param)
    try:
        mask = BUILDERS[args.pattern](layout, block_size=args.block_size, **params)
    except TypeError as error:  # an unknown keyword for this pattern
        raise ValueError(f"{args.pattern} does not take {sorted(params)}: {error}") from error
    render_mask(mask, args.out)
    extra = ""
    if args.pattern == "radial":  # what the reduction to blocks adds over the token-level definition
        extra = f" (token-level definition: {radial_token_density(layout, block_size=args.block_size, **params):.4f})"
    print(
        f"{mask.name}: density {mask.density():.4f}{extra}, {mask.num_blocks[0]} x {mask.num_blocks[1]} blocks -> "
        f"{args.out}"
    )
    return 0
