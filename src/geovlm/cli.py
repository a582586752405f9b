"""The `geovlm` command: a thin layer that hands each subcommand to the module that owns it.

Each module listed below exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int`. Modules import their heavy dependencies (torch, transformers) inside the
handler so that `geovlm --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from geovlm.errors import CLIError

COMMAND_MODULES = [
    "geovlm.synth.cli",
    "geovlm.data.cli",
    "geovlm.convert.cli",
    "geovlm.eval.cli",
    "geovlm.train.cli",
    "geovlm.serve.cli",
    "geovlm.bench.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geovlm", description="GeoVLM: a small vision-language model that solves geometry problems from diagrams."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"geovlm {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
