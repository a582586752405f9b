"""`geovlm data check|stats DATA.json --images DIR`: find every unusable record before a run, and show the
token lengths that `max_length` should be chosen from."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

SubParsers = Any  # argparse's _SubParsersAction is private


def register(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="check a LLaVA-format corpus before training",
        description="Corpus tools for LLaVA-format JSON/JSONL records (chat.json, Geo170K, ...).",
    )
    data_sub = parser.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    check = data_sub.add_parser(
        "check",
        help="list every record training would skip (exit 1 if there is any)",
        description=(
            "Scan every record: malformed records (missing fields, unknown roles, no gpt turn, more <image> "
            "tags than images, special tokens in the text), images that are missing, unreadable, truncated "
            "or too large (each decoded exactly as training decodes it), and samples too long for "
            "--max-length. Prints the token-length percentiles and each error by id and reason; exits 1 "
            "when any record is unusable or the file holds no records, 0 on a clean corpus."
        ),
    )
    _common_arguments(check)
    check.add_argument(
        "--max-pixels", type=_positive_int, default=None, metavar="P",
        help="largest image in pixels (width x height) before it counts as too large (default: 40,000,000)",
    )  # fmt: skip
    decode = check.add_mutually_exclusive_group()
    decode.add_argument(
        "--headers-only", action="store_true",
        help="only read each image's header (faster; a truncated or corrupt image then passes, and the "
        "report says the images were not decoded)",
    )  # fmt: skip
    decode.add_argument(
        "--verify", action="store_true",
        help="decode every image as training does: the default, kept for old command lines",
    )  # fmt: skip
    check.add_argument(
        "--show", type=int, default=20, metavar="N", help="errors to print (default 20; --json lists all)"
    )
    check.set_defaults(func=run_check)

    stats = data_sub.add_parser(
        "stats",
        help="token-length distribution, to choose max_length",
        description=(
            "Token lengths of every record (with and without the image span): percentiles, a histogram and, "
            "for several max_length values, how many samples fit, would be truncated or would be dropped. "
            "Images are not opened."
        ),
    )
    _common_arguments(stats)
    stats.set_defaults(func=run_stats)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, metavar="DATA", help="records: a .json list or a .jsonl file")
    parser.add_argument(
        "--images", type=Path, metavar="DIR", help="image root the records' paths are relative to "
        "(default: the folder of DATA)",
    )  # fmt: skip
    parser.add_argument(
        "--max-length", type=_positive_int, default=1024, metavar="N",
        help="tokens per sample, image span included, as in training (default 1024)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=_positive_int, default=min(8, os.cpu_count() or 1), metavar="W",
        help="worker processes (default: up to 8)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT ('-': stdout)")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument(
        "--system-prompt", metavar="TEXT", help="system prompt added to records without one "
        "(default: the processor's, 'You are a helpful assistant.')",
    )  # fmt: skip
    prompt.add_argument("--no-system-prompt", action="store_true", help="add no system turn")
    parser.add_argument(
        "--model", metavar="FOLDER",
        help="tokenize with this GeoVLM folder's processor (default: Qwen2.5 tokenizer, tiny preset: 49 "
        "image tokens)",
    )  # fmt: skip


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def run_check(args: argparse.Namespace) -> int:
    report = _scan(args, check_images=True)
    _emit(args, report.format(show=max(0, args.show)), report.to_dict())
    return 0 if report.ok else 1


def run_stats(args: argparse.Namespace) -> int:
    report = _scan(args, check_images=False)
    _emit(args, report.format_stats(), report.to_dict(stats=True))
    return 0


def _scan(args: argparse.Namespace, *, check_images: bool) -> Any:
    from geovlm.data.check import check_corpus, default_processor
    from geovlm.data.images import DEFAULT_MAX_PIXELS
    from geovlm.data.records import RecordError
    from geovlm.errors import CLIError

    if not args.data.is_file():
        raise CLIError(f"no such data file: {args.data}")
    if args.images is not None and not args.images.is_dir():
        raise CLIError(f"no such image folder: {args.images}")
    try:
        processor = default_processor(args.model)
    except (OSError, ValueError) as err:
        raise CLIError(f"cannot load the processor of {args.model}: {err}") from err
    system_prompt: Any = ...
    if args.no_system_prompt:
        system_prompt = None
    elif args.system_prompt is not None:
        system_prompt = args.system_prompt
    try:
        return check_corpus(
            args.data,
            args.images,
            processor,
            max_length=args.max_length,
            max_pixels=getattr(args, "max_pixels", None) or DEFAULT_MAX_PIXELS,
            check_images=check_images,
            verify=check_images and not getattr(args, "headers_only", False),
            system_prompt=system_prompt,
            workers=args.workers,
        )
    except RecordError as err:  # the file as a whole is broken (not JSON, not a list, ...)
        raise CLIError(str(err)) from err


def _emit(args: argparse.Namespace, text: str, data: dict[str, Any]) -> None:
    if args.json == "-":
        print(text, file=sys.stderr)  # keep stdout pure JSON
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"report written to {args.json}")
