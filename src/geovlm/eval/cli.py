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
    from geovlm.errors import CLIError
    from geovlm.eval.score import score

    try:
        report = score(args.answers, args.predictions, mode=args.mode, lenient=args.lenient)
    except FileNotFoundError as err:
        raise CLIError(f"no such file: {err.filename}") from err
    except (ValueError, OSError) as err:
        raise CLIError(str(err).splitlines()[0]) from err
    printed = _print_to_stdout(report.format_table())  # False: the reader went away (`| head -1`)
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as err:
            raise CLIError(f"cannot write {args.json}: {err.strerror or err}") from err
    return 0 if printed else EXIT_BROKEN_PIPE


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what `yes | head -1` reports for `yes`


def _print_to_stdout(text: str) -> bool:
    """Print `text`; False, quietly, when the reader has gone (`geovlm score ... | head -1`).

    As Python's documentation advises for BrokenPipeError: stdout is pointed at os.devnull so that
    the interpreter's final flush cannot raise again and print "Exception ignored ..." at exit."""
    import os
    import sys

    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout with no file descriptor (e.g. captured)
            pass
        return False
    return True


def _register_eval(subparsers: SubParsers) -> None:
    from geovlm.serve.cli import add_precision_arguments

    parser = subparsers.add_parser(
        "eval",
        help="answer a GeoQA-format test set with a model and score it",
        description=(
            "Batched greedy generation over test_questions.jsonl (G-LLaVA's GeoQA format), predictions "
            "written as JSONL that G-LLaVA's scorer also reads, then scored like `geovlm score`."
        ),
    )
    parser.add_argument("model", help="GeoVLM folder, hub id, or seed-code checkpoint folder")
    parser.add_argument("--questions", required=True, type=Path, metavar="FILE", help="test_questions.jsonl")
    parser.add_argument("--answers", type=Path, metavar="FILE", help="test_answers.jsonl (omit to only generate)")
    parser.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder the image paths are under")
    parser.add_argument("--out", type=Path, default=Path("predictions.jsonl"), metavar="FILE",
                        help="predictions JSONL to write (default: predictions.jsonl)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--prompt-template", default="{text}",
                        help="how a question's text becomes the user turn; {text} is the question (default: {text})")
    parser.add_argument("--limit", type=int, help="only the first N questions (N at least 1)")
    parser.add_argument(
        "--mode",
        choices=("choice", "number"),
        default="choice",
        help="as for `geovlm score`: choice: letter A-D against 'text'; number: final number against 'value' "
        "(default: choice)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    add_precision_arguments(parser)
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the score report as JSON")
    parser.add_argument("--text-only", action="store_true", help="allow a questions file where no question has an image")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even if it holds another run's predictions (an interrupted run of the "
                        "same evaluation is continued without it)")
    parser.set_defaults(func=run_eval)


def model_fingerprint(name: str) -> str:
    """Which model a predictions file came from: a folder's path and its weights' sizes and times."""
    folder = Path(name)
    if not folder.is_dir():
        return name
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    stamp = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return f"{folder.resolve()}|{stamp}"


def run_eval(args: argparse.Namespace) -> int:
    from geovlm.errors import CLIError
    from geovlm.eval.evaluate import check_inputs, check_writable, evaluate
    from geovlm.serve.cli import load_model_or_fail

    def one_line(err: Exception) -> CLIError:
        if isinstance(err, FileNotFoundError):
            return CLIError(f"no such file: {err.filename}")
        return CLIError(str(err).splitlines()[0] if str(err).strip() else type(err).__name__)

    options = dict(batch_size=args.batch_size, prompt_template=args.prompt_template,
                   max_new_tokens=args.max_new_tokens, limit=args.limit, text_only=args.text_only, mode=args.mode)
    try:  # inputs first: nothing is loaded or generated for a run that would fail
        check_inputs(args.questions, args.answers, args.images, **options)
        check_writable(args.out, "--out")
        if args.json is not None:
            check_writable(args.json, "--json")
    except (ValueError, OSError) as err:
        raise one_line(err) from err
    model, processor = load_model_or_fail(args.model, args.device, args.dtype, args.quantize,
                                          sequences=args.batch_size)
    try:
        result = evaluate(model, processor, args.questions, args.answers, args.images, args.out, **options,
                          overwrite=args.overwrite, model_id=model_fingerprint(args.model))
    except (ValueError, KeyError, OSError) as err:
        raise one_line(err) from err
    report = result.report
    print(f"predictions: {args.out}" + (f" ({result.resumed} from an interrupted run, {result.answered} new)"
                                        if result.resumed else ""))
    for reason, count in sorted(result.problems.items()):
        print(f"  {count} question(s) answered without their image: {reason}")
    for reason, ids in sorted(result.unanswered_ids.items()):
        named = ", ".join(repr(qid) for qid in ids[:3]) + (", ..." if len(ids) > 3 else "")
        print(f"  {len(ids)} question(s) not answered, scored wrong: {reason} (question_id {named}; the reasons "
              f"are in {args.out}, field 'error')")
    if report is not None:
        print(report.format_table())
        if args.json is not None:
            try:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
            except OSError as err:
                raise CLIError(f"cannot write {args.json}: {err.strerror or err}") from err
    return 0


# Subcommands this module contributes, in help order.
_REGISTRARS: tuple[Callable[[SubParsers], None], ...] = (_register_score, _register_eval)


def register(subparsers: SubParsers) -> None:
    for add_parser in _REGISTRARS:
        add_parser(subparsers)
