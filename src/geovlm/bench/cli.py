"""`geovlm bench`: speed and memory of training and generation, GeoVLM vs the seed code's method."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from geovlm.bench.run import __doc__ as doc
    from geovlm.bench.run import add_arguments

    parser = subparsers.add_parser(
        "bench", help="benchmark training steps, generation, evaluation and data loading against the seed's way",
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geovlm.bench.run import run_from_args

    return run_from_args(args)
