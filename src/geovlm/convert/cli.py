"""`geovlm convert SEED_DIR OUT_DIR`: a seed-code checkpoint to a self-contained GeoVLM folder."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint made by the seed code to a GeoVLM folder",
        description=__doc__,
    )
    parser.add_argument("seed_dir", help="folder with the seed's config.json and weights")
    parser.add_argument("out_dir", help="where to write the GeoVLM folder")
    parser.add_argument("--vision", help="vision backbone (hub id or folder); default: the seed config's")
    parser.add_argument("--llm", help="language backbone (hub id or folder); default: the seed config's")
    parser.add_argument("--overwrite", action="store_true", help="replace out_dir if it is not empty")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from geovlm.convert.seed import convert_seed_checkpoint
    from geovlm.errors import CLIError

    out = Path(args.out_dir)
    if out.is_symlink():
        # Replacing the folder a link points to would delete files that live elsewhere (perhaps shared
        # with other links), and replacing the link with a folder would quietly move the output off the
        # disk the user chose: neither is what `--overwrite` promises, so the user picks the real path.
        raise CLIError(f"{out} is a symbolic link (to {os.readlink(out)}); convert does not write through or "
                       "replace links: give the folder it points to, or remove the link first")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise CLIError(f"{out} already exists and is not empty; pass --overwrite to replace it, or choose another folder")
    try:
        model, processor = convert_seed_checkpoint(args.seed_dir, vision=args.vision, llm=args.llm)
    except (ValueError, FileNotFoundError, OSError) as err:
        raise CLIError(str(err).splitlines()[0]) from err
    # Written next to out_dir and moved in whole, so an interrupted conversion leaves no half folder.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {args.out_dir} (merge: sequential ×{model.config.merge_factor}, "
          f"{model.config.num_image_tokens} image tokens, seed prompt format)")
    return 0
