"""`geovlm synth`: write a synthetic geometry dataset (see `geovlm.synth.writer` for the layout)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .families import FAMILIES
from .problem import DIFFICULTIES, STYLES

EXAMPLES = """examples:
  geovlm synth --out dataset/Geo170K --n 2000 --seed 0      # then `geovlm sft` trains on it (configs/sft.yaml)
  geovlm synth --out dataset/synth --n 2000 --seed 1 --overwrite
  geovlm synth --out dataset/shapes --n 2000 --families shapes --difficulty perception
  geovlm synth --out dataset/mix --n 10000 --difficulty perception=0.5,one_step=0.3,multi_step=0.2 --style diagram
"""


def parse_weights(
    text: str | None, allowed: tuple[str, ...] | list[str], what: str
) -> dict[str, float] | None:
    """ "a,b" or "a=2,b=1" (or "all") into {name: weight}; None when everything is wanted."""
    if text is None or text.strip() in ("", "all", "mixed"):
        return None
    out: dict[str, float] = {}
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        name, _, weight = part.partition("=")
        if name not in allowed:
            raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(allowed)}")
        try:
            out[name] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"bad weight in {part!r}") from None
        if out[name] < 0:
            raise ValueError(f"negative weight in {part!r}")
    return out


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synth",
        help="generate a synthetic geometry dataset (diagrams, questions, exact answers)",
        description=(
            "Draw geometry diagrams from constructions with exact answers and write them in the "
            "Geo170K / LLaVA format (qa_tuning.json, alignment.json) with a GeoQA-format test split."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        type=Path,
        help="output folder (created if missing), laid out like Geo170K: qa_tuning.json, alignment.json, "
        "test_*.jsonl and images/, every record's image path relative to OUT/images",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a synthetic set already in OUT (its JSON/JSONL files, manifest, preview and synth-*.png "
        "images are removed first); without it an existing set is an error",
    )
    p.add_argument(
        "--n", type=int, default=1000, help="number of problems, train and test together (default 1000)"
    )
    p.add_argument("--seed", type=int, default=0, help="the same seed gives byte-identical files (default 0)")
    p.add_argument(
        "--families",
        nargs="+",
        metavar="FAMILY",
        help=f"families to draw from, comma- or space-separated, optionally weighted (name=2); default all but four_shapes: {', '.join(n for n, f in FAMILIES.items() if f.in_default_mix)}",
    )
    p.add_argument(
        "--difficulty",
        help="perception, one_step, multi_step, a comma list or weights such as perception=0.5,one_step=0.5 "
        "(default perception=0.25,one_step=0.45,multi_step=0.3)",
    )
    p.add_argument(
        "--style",
        help="text (values in the question), diagram (values only in the image) or both (default: both, "
        "half each); perception questions are always diagram style",
    )
    p.add_argument("--size", type=int, default=224, help="image side in pixels, at least 64 (default 224)")
    p.add_argument(
        "--line-scale",
        type=float,
        default=1.0,
        help="multiply line widths (thicker lines survive small model image sizes; default 1)",
    )
    p.add_argument(
        "--test-fraction", type=float, default=0.1, help="share of problems in the test split (default 0.1)"
    )
    p.add_argument(
        "--free-answer",
        action="store_true",
        help="no choices: the reply must state the exact value (solutions end 'Answer: <value>'; records "
        "carry answer_type 'number'); perception questions keep their choices. For rewards a guess "
        "cannot collect (geovlm rl) and `geovlm score --mode number`",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPU cores)")
    p.add_argument(
        "--preview",
        nargs="?",
        const="",
        default=None,
        metavar="PNG",
        help="also write a contact sheet of a dozen diagrams (default path OUT/preview.png)",
    )
    p.add_argument("--list-families", action="store_true", help="list the problem families and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)
    return p


def _error(message: str) -> int:
    print(f"geovlm synth: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from .writer import write_dataset  # deferred: keeps `geovlm --help` fast

    if args.list_families:
        for name, fam in FAMILIES.items():
            print(f"{name:20s} {fam.title}  ({', '.join(fam.difficulties)})")
        return 0
    if args.out is None:
        return _error("--out is required")
    try:
        families = parse_weights(",".join(args.families) if args.families else None, list(FAMILIES), "family")
        difficulty = parse_weights(args.difficulty, DIFFICULTIES, "difficulty")
        style = parse_weights(args.style, STYLES, "style")
    except ValueError as err:
        return _error(str(err))
    if args.n < 0 or args.seed < 0:
        return _error("--n and --seed must be at least 0")
    if args.size < 64:
        return _error("--size must be at least 64")
    if not 0 <= args.test_fraction < 1:
        return _error("--test-fraction must be in [0, 1)")
    if args.workers is not None and args.workers < 1:
        return _error("--workers must be at least 1")
    if (
        difficulty
        and style
        and set(style) == {"text"}
        and set(d for d, w in difficulty.items() if w > 0) == {"perception"}
    ):
        return _error("perception questions only exist in diagram style; drop --style text")
    if args.out.exists() and not args.out.is_dir():
        return _error(f"--out {args.out} is a file, not a folder")
    preview = None if args.preview is None else (args.preview or str(args.out / "preview.png"))
    from .writer import OutputExists

    start = time.perf_counter()
    try:
        manifest = write_dataset(
            args.out,
            args.n,
            args.seed,
            family=families,
            difficulty=difficulty,
            style=style,
            size=args.size,
            line_scale=args.line_scale,
            test_fraction=args.test_fraction,
            workers=args.workers,  # None: every CPU this process may use
            preview=preview,
            progress=not args.quiet,
            overwrite=args.overwrite,
            free_answer=args.free_answer,
        )
    except OutputExists as err:
        return _error(str(err))
    except ValueError as err:
        return _error(str(err))
    except OSError as err:  # OUT is a file, not writable, the disk is full, ...
        where = f" {err.filename}" if err.filename else ""
        return _error(f"cannot write{where}: {err.strerror or err}")
    if not args.quiet:
        took = time.perf_counter() - start
        counts = manifest["counts"]
        rate = args.n / took if took > 0 else float("inf")
        print(
            f"wrote {counts['train']['total']} training and {counts['test']['total']} test problems to {args.out} "
            f"in {took:.1f}s ({rate:.0f} problems/s)" + (f"; preview {preview}" if preview else ""),
            file=sys.stderr,
        )
    return 0
