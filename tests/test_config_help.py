"""`--help` explains every config field (from the field's own metadata) and lists a choice field's values;
fields renamed to their `TrainingArguments` names still read under the old name, with a warning."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from geovlm.cli import build_parser
from geovlm.train.config import RENAMED_FIELDS, TrainConfig, config_from_args
from geovlm.train.quickstart import QuickstartRecipe
from geovlm.train.rl.config import RLConfig


def help_text(*argv: str) -> str:
    parser = build_parser()
    for action in parser._subparsers._group_actions:  # the subcommands
        if argv[0] in action.choices:
            return " ".join(action.choices[argv[0]].format_help().split())
    raise AssertionError(argv)


@pytest.mark.parametrize("cls", [TrainConfig, RLConfig, QuickstartRecipe])
def test_every_field_carries_its_explanation(cls):
    missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")]
    assert not missing, f"{cls.__name__} fields without help: {missing}"


def test_rl_help_explains_scale_rewards_and_lists_its_choices():
    text = help_text("rl")
    assert "how a group's rewards become advantages" in text
    assert "--scale-rewards V, --scale_rewards V how a group's" in text
    assert "one of group, batch, none; default: 'group'" in text
    assert "one of grpo, dapo, dr_grpo, bnpo" in text  # loss_type


def test_sft_help_uses_the_trainingarguments_names():
    text = help_text("sft")
    for old, new in RENAMED_FIELDS.items():
        assert "--" + new.replace("_", "-") in text and "--" + old.replace("_", "-") + " " not in text
    assert "one of group_by_length, random, sequential" in text
    assert "--max-bad-fraction V, --max_bad_fraction V stop if a larger share" in text


def test_quickstart_help_explains_its_recipe_fields():
    assert "stage-2 learning rate of the LM; default: 0.0003" in help_text("quickstart")


def test_old_field_names_still_load_with_a_warning(tmp_path, caplog):
    path = tmp_path / "old.yaml"
    path.write_text("stage: sft\nwarmup_ratio: 0.1\ngradient_checkpointing: true\nsampling: random\n")
    with caplog.at_level(logging.WARNING, logger="geovlm.train.config"):
        config = TrainConfig.from_yaml(path)
    assert (config.warmup_steps, config.activation_checkpointing, config.train_sampling_strategy) == (0.1, True, "random")
    assert sum("is now" in m for m in caplog.messages) == 3
    with pytest.raises(ValueError, match="both warmup_ratio and warmup_steps"):
        TrainConfig.from_dict({"warmup_ratio": 0.1, "warmup_steps": 5})


def test_old_flags_still_work():
    parser = build_parser()
    args = parser.parse_args(["sft", "--warmup-ratio", "0.2", "--sampling", "random", "--gradient-checkpointing"])
    config = config_from_args(args, cls=TrainConfig)
    assert (config.warmup_steps, config.train_sampling_strategy, config.activation_checkpointing) == (0.2, "random", True)
