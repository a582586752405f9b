"""`python -m geovlm.synth ...`: the same as `geovlm synth ...`."""

from __future__ import annotations

import argparse
import sys

from .cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geovlm")
    sub = parser.add_subparsers(dest="command")
    synth = register(sub)
    args = synth.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
