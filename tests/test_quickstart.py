"""The quickstart's plumbing end to end at toy scale: synth → tiny model → both stages → eval → table.

Whether the default recipe *learns* is measured by `geovlm quickstart` itself (docs/BENCHMARKS.md);
here a few steps only prove that every piece connects and the report is complete."""

from __future__ import annotations

import json

import pytest

from geovlm.train.quickstart import (
    BASELINE_ROW,
    BLANK_IMAGE,
    BLIND_ROW,
    VISION_ROW,
    QuickstartRecipe,
    run_quickstart,
)

pytestmark = pytest.mark.integration


def test_quickstart_runs_end_to_end_and_reports_both_models(tmp_path):
    recipe = QuickstartRecipe(n_problems=40, test_fraction=0.25, stage1_steps=1, stage2_steps=2, batch_size=4,
                              max_new_tokens=8)
    result = run_quickstart(tmp_path, recipe, progress=False)
    table = result["table"]
    assert all(row in table for row in (VISION_ROW, BLIND_ROW, BASELINE_ROW))
    assert "diagram-only" in table and "text-stated" in table
    summary = json.loads((tmp_path / "results.json").read_text())
    n_test = len((tmp_path / "data" / "test_questions.jsonl").read_text().splitlines())
    for name, report in summary["results"].items():
        assert report["total"] == n_test, name
    # The baseline really saw only blank images, in training and at test time.
    blank_records = json.loads((tmp_path / "data-blank" / "qa_tuning.json").read_text())
    assert {r["image"] for r in blank_records} == {BLANK_IMAGE}
    assert (tmp_path / "vision" / "stage2" / "eval_results.json").exists()
    assert (tmp_path / "vision" / "predictions-blank-images.jsonl").exists()  # the blind row
    # Every held-out image was found (synth records are relative to data/images, as Geo170K's).
    for name in ("vision/predictions.jsonl", "vision/predictions-blank-images.jsonl", "text-only/predictions.jsonl"):
        rows = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        assert len(rows) == n_test and not [r for r in rows if "error" in r], name
    assert (tmp_path / "vision" / "stage2" / "model.safetensors").exists()


def test_quickstart_recipe_fields_are_command_line_options(monkeypatch, tmp_path):
    from geovlm import cli
    from geovlm.train import quickstart

    seen = {}
    monkeypatch.setattr(quickstart, "run_quickstart", lambda out, recipe, **kw: seen.update(out=out, recipe=recipe))
    assert cli.main(["quickstart", "--out", str(tmp_path), "--stage2-steps", "7", "--stage2_lr", "1e-4",
                     "--families", "{four_shapes: 1}", "--system-prompt", "Be brief."]) == 0
    recipe = seen["recipe"]
    assert (recipe.stage2_steps, recipe.stage2_lr, recipe.families) == (7, 1e-4, {"four_shapes": 1})
    assert recipe.system_prompt == "Be brief." and recipe.batch_size == QuickstartRecipe().batch_size
    assert cli.main(["quickstart", "--stage2-steps", "many"]) == 2  # a typed field refuses a word
