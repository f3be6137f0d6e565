"""Entry point of the ``dit-sparse`` console script."""

from __future__ import annotations

import argparse
import sys

from . import bench, calibrate, env, evaluate, generate, mask, sweep

SUBCOMMANDS = {
    "generate": generate,
    "calibrate": calibrate,
    "evaluate": evaluate,
    "sweep": sweep,
    "bench": bench,
    "mask": mask,
    "env": env,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dit-sparse",
        description="Sparse attention for diffusion-transformer video and image generation.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(SUBCOMMANDS[args.command].run(args) or 0)
    except ValueError as error:  # bad input: one line, no traceback
        print(f"dit-sparse {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
