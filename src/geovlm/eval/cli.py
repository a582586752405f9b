"""Evaluation subcommands of `geovlm`.

`register(subparsers)` adds every parser in `_REGISTRARS`; a new subcommand (e.g. `eval`, which
runs the model) is one more `_register_*` function plus its `run_*` handler appended there.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

SubParsers = Any  # argparse's _SubParsersAction is private; typing it precisely buys nothing


def _register_score(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score generations against GeoQA answers (G-LLaVA-compatible)",
        description=(
            "Score a predictions JSONL against an answers JSONL in G-LLaVA's formats. Strict "
            "extraction reproduces G-LLaVA's scripts/geo_acc_calculate.py; accuracy is over all "
            "gold questions, a missing prediction counting as wrong."
        ),
    )
    parser.add_argument(
        "--answers", required=True, type=Path, metavar="FILE", help="gold answers (JSONL or JSON list)"
    )
    parser.add_argument(
        "--predictions",
        required=True,
        type=Path,
        metavar="FILE",
        help="model generations (JSONL or JSON list)",
    )
    parser.add_argument(
        "--lenient",
        action="store_true",
        help="also report accuracy with lenient extraction (not comparable with published numbers)",
    )
    parser.add_argument(
        "--mode",
        choices=("choice", "number"),
        default="choice",
        help="choice: letter A-D against 'text'; number: final number against 'value' (default: choice)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON to OUT")
    parser.set_defaults(func=run_score)


def run_score(args: argparse.Namespace) -> int:
    """Print the score table (and write JSON if asked); bad input becomes a one-line CLIError."""
    from geovlm.cli import CLIError
    from geovlm.eval.score import score

    try:
        report = score(args.answers, args.predictions, mode=args.mode, lenient=args.lenient)
    except FileNotFoundError as err:
        raise CLIError(f"no such file: {err.filename}") from err
    except (ValueError, OSError) as err:
        raise CLIError(str(err).splitlines()[0]) from err
    print(report.format_table())
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as err:
            raise CLIError(f"cannot write {args.json}: {err.strerror or err}") from err
    return 0


# Subcommands this module contributes, in help order. Add `_register_eval` here.
_REGISTRARS: tuple[Callable[[SubParsers], None], ...] = (_register_score,)


def register(subparsers: SubParsers) -> None:
    for add_parser in _REGISTRARS:
        add_parser(subparsers)
