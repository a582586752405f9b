"""`geovlm pretrain` and `geovlm sft`: the two training stages, each a YAML config plus overrides."""

from __future__ import annotations

import argparse
from importlib import resources

STAGES = {
    "pretrain": "stage 1: train the projector (vision tower and LM frozen) on image-caption pairs",
    "sft": "stage 2: geometry SFT of the projector plus part of the LM, from a stage-1 folder",
    "rl": "stage 3: GRPO (TRL) with verifiable rewards on exact geometry answers, from a stage-2 folder",
}


def config_class(stage: str) -> type:
    if stage == "rl":
        from geovlm.train.rl.config import RLConfig

        return RLConfig
    from geovlm.train.config import TrainConfig

    return TrainConfig


def default_config_path(stage: str) -> str:
    """The recipe shipped with the package (also reachable as configs/<stage>.yaml in a checkout)."""
    return str(resources.files("geovlm") / "configs" / f"{stage}.yaml")


def build_stage_parser(stage: str, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    from geovlm.train.config import add_config_arguments

    parser = parser or argparse.ArgumentParser(prog=f"geovlm {stage}", description=STAGES[stage])
    add_config_arguments(parser, config_class(stage))
    parser.set_defaults(func=run, stage_name=stage)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    for stage, help_text in STAGES.items():
        sub = subparsers.add_parser(
            stage, help=help_text, description=f"{help_text}. Default config: configs/{stage}.yaml."
        )
        build_stage_parser(stage, sub)
    quick = subparsers.add_parser(
        "quickstart",
        help="synthetic geometry → tiny GeoVLM, both stages, evaluated against a text-only baseline (CPU)",
        description="With no options: generate a synthetic geometry set, train a tiny GeoVLM (stage 1 then "
        "stage 2) and a text-only baseline on the CPU, and compare them on held-out questions. With --vision, "
        "--llm and --data: run the real two-stage recipe on real backbones and data instead.",
    )
    quick.add_argument("--out", default="out/quickstart", help="output folder (default: out/quickstart)")
    quick.add_argument("--no-baseline", action="store_true", help="skip the text-only baseline")
    quick.add_argument("--quiet", action="store_true", help="no progress bars")
    real = quick.add_argument_group(
        "the real recipe instead (all three switch the quickstart to configs/pretrain.yaml then configs/sft.yaml "
        "on real backbones and data; no synthetic set, no baseline)")
    real.add_argument("--vision", help="vision backbone (hub id or folder), e.g. google/siglip-base-patch16-224")
    real.add_argument("--llm", help="language backbone (hub id or folder), e.g. Qwen/Qwen2.5-0.5B-Instruct")
    real.add_argument("--data", help="data root in the README's layout (LLaVA-CC3M-Pretrain-595K/, Geo170K/)")
    from geovlm.train.config import add_field_arguments
    from geovlm.train.quickstart import QuickstartRecipe

    add_field_arguments(quick, QuickstartRecipe, "CPU recipe (values are YAML, e.g. --stage2-steps 900)")
    quick.set_defaults(func=run_quickstart_cli)


def run(args: argparse.Namespace) -> int:
    from geovlm.errors import CLIError
    from geovlm.train.config import config_from_args

    try:
        config = config_from_args(args, default_config=default_config_path(args.stage_name),
                                  cls=config_class(args.stage_name))
    except (ValueError, OSError) as err:
        raise CLIError(str(err)) from err
    if config.stage != args.stage_name:
        raise CLIError(f"the config says stage {config.stage!r}; use `geovlm {config.stage}`")
    if config.stage == "rl":
        from geovlm.train.rl.run import train_rl as train
    else:
        from geovlm.train.run import train

    from geovlm.data.skips import DataQualityError
    from geovlm.train.run import end_distributed

    try:
        train(config)
    except (ValueError, OSError, DataQualityError) as err:  # OSError: a starting model that cannot be loaded
        raise CLIError(error_message(err)) from err
    end_distributed()  # under torchrun: all processes leave together (DeepSpeed can abort at exit otherwise)
    return 0


def error_message(err: BaseException) -> str:
    """The message of an error, without the worker traceback a DataLoader wraps around it."""
    text = str(err).strip()
    if "Original Traceback" in text:  # raised in a DataLoader worker: the original is the last line
        last = text.splitlines()[-1]
        name, sep, message = last.partition(": ")
        text = message if sep and "." in name or name.endswith("Error") else last
    return text


def run_quickstart_cli(args: argparse.Namespace) -> int:
    from geovlm.errors import CLIError

    real = [args.vision, args.llm, args.data]
    if any(real) and not all(real):
        raise CLIError("the real recipe needs all of --vision, --llm and --data")
    if all(real):
        return run_real_recipe(args)
    from geovlm.train.config import field_overrides
    from geovlm.train.quickstart import QuickstartRecipe, run_quickstart

    try:
        recipe = QuickstartRecipe(**field_overrides(args, QuickstartRecipe))
    except (TypeError, ValueError) as err:
        raise CLIError(f"quickstart recipe: {err}") from err
    run_quickstart(args.out, recipe, progress=not args.quiet, baseline=not args.no_baseline)
    return 0


def run_real_recipe(args: argparse.Namespace) -> int:
    """Stage 1 on CC3M-595K, stage 2 on Geo170K, with the shipped recipes and the given backbones."""
    from pathlib import Path

    from geovlm.data.sources import DataSource
    from geovlm.train.config import TrainConfig
    from geovlm.train.run import train

    root, out = Path(args.data), Path(args.out)
    cc3m, geo = root / "LLaVA-CC3M-Pretrain-595K", root / "Geo170K"
    stage1 = TrainConfig.from_yaml(default_config_path("pretrain"), vision=args.vision, llm=args.llm,
                                   output_dir=str(out / "pretrain"), progress_bar=not args.quiet)
    stage1.data = [DataSource(path=str(cc3m / "chat.json"), images=str(cc3m / "images"))]
    stage2 = TrainConfig.from_yaml(default_config_path("sft"), init_from=str(out / "pretrain"),
                                   output_dir=str(out / "sft"), progress_bar=not args.quiet)
    stage2.data = [DataSource(path=str(geo / "qa_tuning.json"), images=str(geo / "images"))]
    train(stage1)
    train(stage2)
    return 0
