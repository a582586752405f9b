"""`geovlm pretrain` and `geovlm sft`: the two training stages, each a YAML config plus overrides."""

from __future__ import annotations

import argparse
from importlib import resources

STAGES = {
    "pretrain": "stage 1: train the projector (vision tower and LM frozen) on image-caption pairs",
    "sft": "stage 2: geometry SFT of the projector plus part of the LM, from a stage-1 folder",
}


def default_config_path(stage: str) -> str:
    """The recipe shipped with the package (also reachable as configs/<stage>.yaml in a checkout)."""
    return str(resources.files("geovlm") / "configs" / f"{stage}.yaml")


def build_stage_parser(stage: str, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    from geovlm.train.config import add_config_arguments

    parser = parser or argparse.ArgumentParser(prog=f"geovlm {stage}", description=STAGES[stage])
    add_config_arguments(parser)
    parser.set_defaults(func=run, stage_name=stage)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    for stage, help_text in STAGES.items():
        sub = subparsers.add_parser(
            stage, help=help_text, description=f"{help_text}. Default config: configs/{stage}.yaml."
        )
        build_stage_parser(stage, sub)


def run(args: argparse.Namespace) -> int:
    from geovlm.cli import CLIError
    from geovlm.train.config import config_from_args

    try:
        config = config_from_args(args, default_config=default_config_path(args.stage_name))
    except (ValueError, OSError) as err:
        raise CLIError(str(err)) from err
    if config.stage != args.stage_name:
        raise CLIError(f"the config says stage {config.stage!r}; use `geovlm {config.stage}`")
    from geovlm.train.run import train

    try:
        train(config)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from err
    return 0
