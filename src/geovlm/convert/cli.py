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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geovlm.convert.seed import convert_seed_checkpoint
    from geovlm.errors import CLIError

    try:
        model, processor = convert_seed_checkpoint(args.seed_dir, vision=args.vision, llm=args.llm)
    except (ValueError, FileNotFoundError, OSError) as err:
        raise CLIError(str(err)) from err
    model.save_pretrained(args.out_dir)
    processor.save_pretrained(args.out_dir)
    print(f"wrote {args.out_dir} (merge: sequential ×{model.config.merge_factor}, "
          f"{model.config.num_image_tokens} image tokens, seed prompt format)")
    return 0
