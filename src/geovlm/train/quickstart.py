"""`geovlm quickstart`: the whole pipeline on a CPU in minutes, with no download.

1. `geovlm synth` writes a synthetic geometry set (training records + a held-out GeoQA-style split);
2. a tiny GeoVLM (real Qwen2.5 tokenizer and vocabulary) trains stage 1 (projector) then stage 2;
3. the same recipe trains a text-only baseline whose images are all blank;
4. both are evaluated on the held-out split and a table compares them by question style.

With `--vision/--llm` (real backbones) and `--data` (a folder in the README's layout) the same
command runs the real two-stage recipe instead.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from geovlm.data.sources import DataSource
from geovlm.train.config import TrainConfig, check_field_types, option

BLANK_IMAGE = "blank.png"
VISION_ROW = "GeoVLM (sees the diagram)"
BLIND_ROW = "  same model, diagrams blanked"
BASELINE_ROW = "text-only baseline (trained blank)"


@dataclass
class QuickstartRecipe:
    """Everything the CPU quickstart decides; measured choices, see docs/BENCHMARKS.md."""

    seed: int = option(0, "seed of the synthetic set, the models and the data order")
    n_problems: int = option(10000, "problems drawn, train + test; with fewer pictures the tower overfits")
    test_fraction: float = option(0.1, "share of the problems held out for evaluation")
    # Diagram-only: which of four shapes (choices in a fixed order, so the letter names the shape);
    # text-stated: one-step angle sums, values in the question.
    families: dict[str, float] = field(default_factory=lambda: {"four_shapes": 0.9, "triangle_angle_sum": 0.1},
                                       metadata={"help": "problem families and their shares"})
    difficulty: dict[str, float] = field(default_factory=lambda: {"perception": 0.9, "one_step": 0.1},
                                         metadata={"help": "difficulty levels and their shares"})
    style: str = option("text", "style of the reasoning questions (perception questions are always "
                                "diagram-only)")
    render_size: int = option(64, "diagrams are drawn at the size the tower sees")
    # ~2-4 px lines at 64 px: thin lines vanish for a tower trained from scratch.
    line_scale: float = option(6.0, "line width multiplier of the drawings")
    vision_config: dict[str, Any] = field(default_factory=lambda: dict(
        image_size=64, patch_size=8, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4), metadata={"help": "the tiny SigLIP tower's config fields"})
    # initializer_range 0.06 (Qwen's 0.02 is meant for width 896+): at width 128 the image's share of
    # the answer position's state, and the letters' logits, start too small to learn from quickly.
    text_config: dict[str, Any] = field(default_factory=lambda: dict(
        hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, initializer_range=0.06), metadata={"help": "the tiny Qwen2 LM's config fields"})
    # All 64 patches as image tokens: a larger share of the answer's attention than 16.
    merge_factor: int = option(1, "patches per image token")
    system_prompt: str | None = option(None, "system turn (none: shorter samples; the tiny LM gains nothing "
                                             "from it)")
    batch_size: int = option(32, "samples per step, both stages")
    stage1_steps: int = option(20, "stage-1 (projector) steps")
    stage1_lr: float = option(2e-3, "stage-1 learning rate")
    stage2_steps: int = option(1000, "stage-2 steps")
    stage2_lr: float = option(3e-4, "stage-2 learning rate of the LM")
    stage2_projector_lr: float = option(2e-3, "stage-2 learning rate of the projector")
    stage2_vision_lr: float = option(2e-3, "stage-2 learning rate of the vision tower")
    adam_beta2: float = option(0.98, "AdamW's beta2 (0.98 adapts faster in short runs)")
    # Frozen (tied) embeddings: the 19.4M-row vocabulary update was ~40% of each step, and the
    # model learns faster without it (docs/BENCHMARKS.md#quickstart).
    freeze_embeddings: bool = option(True, "keep the (tied) token embeddings fixed")
    max_new_tokens: int = option(16, "tokens generated per held-out question")
    answer_only: bool = option(True, 'train on each reply\'s final "Answer:X" line (see answer_only_records)')

    def __post_init__(self) -> None:
        check_field_types(self)
        from geovlm.synth.families import FAMILIES

        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown:
            raise ValueError(f"families: unknown {', '.join(unknown)}; choose from {', '.join(sorted(FAMILIES))}")


def write_data(out: Path, recipe: QuickstartRecipe, progress: bool = True) -> Path:
    from geovlm.synth import write_dataset
    from geovlm.synth.writer import FORMAT_VERSION

    data = out / "data"
    wanted = {"format_version": FORMAT_VERSION, "seed": recipe.seed, "n": recipe.n_problems, "size": recipe.render_size,
              "line_scale": recipe.line_scale, "test_fraction": recipe.test_fraction}
    try:
        manifest = json.loads((data / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    if any(manifest.get(key) != value for key, value in wanted.items()):
        # The quickstart's own set, from an earlier release or another recipe: drawn again.
        write_dataset(data, recipe.n_problems, recipe.seed, family=recipe.families, difficulty=recipe.difficulty,
                      style=recipe.style, size=recipe.render_size, line_scale=recipe.line_scale, test_fraction=recipe.test_fraction,
                      progress=progress, overwrite=True)
    return data


def answer_only_records(data: Path) -> Path:
    """The training records with each reply cut to its final `Answer:X` line.

    Every supervised position costs an `lm_head` row over the 151,936-token vocabulary; the synthetic
    solutions are ~35 tokens long, so on a CPU they would take most of each step while the tiny model
    learns to see. The quickstart trains on the answer line only; full solutions stay in qa_tuning.json.
    """
    records = json.loads((data / "qa_tuning.json").read_text())
    for record in records:
        for turn in record["conversations"]:
            if turn["from"] == "gpt":
                turn["value"] = turn["value"].strip().splitlines()[-1]
    path = data / "qa_answer_only.json"
    path.write_text(json.dumps(records, ensure_ascii=False))
    return path


def blank_copy(data: Path, out: Path) -> Path:
    """The same records and questions with every image replaced by one white square: what a model
    that cannot see learns. Only this baseline uses blank images, and it says so."""
    blank = out / "data-blank"
    (blank / "images").mkdir(parents=True, exist_ok=True)
    size = json.loads((data / "manifest.json").read_text())["size"]
    Image.new("RGB", (size, size), "white").save(blank / "images" / BLANK_IMAGE)
    for name in ("qa_tuning.json", "qa_answer_only.json"):
        if (data / name).exists():
            records = json.loads((data / name).read_text())
            (blank / name).write_text(json.dumps([{**r, "image": BLANK_IMAGE} for r in records], ensure_ascii=False))
    lines = [json.loads(line) for line in (data / "test_questions.jsonl").read_text().splitlines()]
    (blank / "test_questions.jsonl").write_text("".join(json.dumps({**q, "image": BLANK_IMAGE}) + "\n" for q in lines))
    shutil.copy(data / "test_answers.jsonl", blank / "test_answers.jsonl")
    return blank


def initial_model(out: Path, recipe: QuickstartRecipe) -> Path:
    """A fresh tiny GeoVLM saved as a folder, so both stages start through the normal loading path."""
    from transformers import set_seed

    from geovlm.loading import build_tiny

    folder = out / "init"
    set_seed(recipe.seed)
    model, processor = build_tiny(vision=recipe.vision_config, text=recipe.text_config,
                                  merge_factor=recipe.merge_factor)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def stage_configs(init: Path, data: Path, out: Path, recipe: QuickstartRecipe, progress: bool) -> list[TrainConfig]:
    records = "qa_answer_only.json" if recipe.answer_only else "qa_tuning.json"
    common = dict(data=[DataSource(path=str(data / records), images=str(data / "images"))],
                  per_device_batch_size=recipe.batch_size, seed=recipe.seed, max_length=256, num_workers=1,
                  logging_steps=20, save_steps=10_000, save_total_limit=1, report_to="tensorboard",
                  progress_bar=progress, precision="fp32", train_sampling_strategy="group_by_length", warmup_steps=0.05,
                  system_prompt=recipe.system_prompt, adam_beta2=recipe.adam_beta2,
                  overwrite=True)  # the quickstart's own folders, made again on each run
    stage1 = TrainConfig(stage="pretrain", init_from=str(init), max_steps=recipe.stage1_steps,
                         learning_rate=recipe.stage1_lr, output_dir=str(out / "stage1"), **common)
    stage2 = TrainConfig(stage="sft", init_from=str(out / "stage1"), lm_trainable="all", train_vision=True,
                         freeze_embeddings=recipe.freeze_embeddings,
                         max_steps=recipe.stage2_steps, learning_rate=recipe.stage2_lr,
                         projector_lr=recipe.stage2_projector_lr, vision_lr=recipe.stage2_vision_lr,
                         output_dir=str(out / "stage2"), **common)
    return [stage1, stage2]


def train_and_evaluate(name: str, data: Path, out: Path, init: Path, recipe: QuickstartRecipe,
                       progress: bool) -> dict[str, Any]:
    from geovlm.loading import load_pretrained
    from geovlm.train.model_card import write_model_card
    from geovlm.train.run import train

    start = time.perf_counter()
    for config in stage_configs(init, data, out, recipe, progress):
        print(f"\n[quickstart] {name}: {config.stage} ({config.max_steps} steps)")
        final = train(config)
    train_seconds = time.perf_counter() - start
    model, processor = load_pretrained(final)
    report = evaluate_on(model, processor, data, out / "predictions.jsonl", recipe, progress)
    (final / "eval_results.json").write_text(json.dumps(report.to_dict(), indent=2))
    write_model_card(final, config, model.config)  # again, now with the evaluation
    return {"model": str(final), "train_seconds": round(train_seconds, 1), "report": report,
            "loaded": (model, processor)}


def evaluate_on(model: Any, processor: Any, data: Path, predictions: Path, recipe: QuickstartRecipe,
                progress: bool) -> Any:
    """The held-out split of `data` (the synthetic set or its blank copy), greedy, scored."""
    from geovlm.eval.evaluate import evaluate

    return evaluate(model, processor, data / "test_questions.jsonl", data / "test_answers.jsonl", data / "images",
                    predictions, batch_size=64, max_new_tokens=recipe.max_new_tokens, progress=progress,
                    overwrite=True).report  # the quickstart's own file, made again with its model


def blind_test(trained: dict[str, Any], blank: Path, out: Path, recipe: QuickstartRecipe,
               progress: bool) -> dict[str, Any]:
    """The trained model asked the same questions with every diagram blanked: near chance on
    diagram-only questions if it really answers them from the picture."""
    model, processor = trained["loaded"]
    report = evaluate_on(model, processor, blank, out / "predictions-blank-images.jsonl", recipe, progress)
    return {"model": trained["model"], "train_seconds": 0.0, "report": report}


def style_accuracy(report: Any) -> dict[str, float]:
    groups = report.to_dict().get("breakdowns", {}).get("style", {})
    return {style: g["accuracy"] for style, g in groups.items()}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    columns = {"diagram": "diagram-only", "text": "text-stated"}
    lines = [f"{'model':<36}" + "".join(f"{c:>15}" for c in columns.values()) + f"{'overall':>10}{'train s':>10}"]
    for name, r in results.items():
        acc = style_accuracy(r["report"])
        cells = "".join(f"{acc[s]:>14.1f}%" if s in acc else f"{'—':>15}" for s in columns)
        lines.append(f"{name:<36}{cells}{r['report'].accuracy:>9.1f}%{r['train_seconds']:>10.0f}")
    return "\n".join(lines)


def run_quickstart(out: str | Path = "out/quickstart", recipe: QuickstartRecipe | None = None,
                   progress: bool = True, baseline: bool = True) -> dict[str, Any]:
    recipe = recipe or QuickstartRecipe()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2))
    started = time.perf_counter()
    data = write_data(out, recipe, progress)
    if recipe.answer_only:
        answer_only_records(data)
    init = initial_model(out, recipe)
    blank = blank_copy(data, out)
    vision = train_and_evaluate("vision", data, out / "vision", init, recipe, progress)
    results = {VISION_ROW: vision, BLIND_ROW: blind_test(vision, blank, out / "vision", recipe, progress)}
    if baseline:
        results[BASELINE_ROW] = train_and_evaluate("text-only baseline", blank, out / "text-only", init, recipe,
                                                   progress)
    table = format_table(results)
    total = time.perf_counter() - started
    print("\n" + table)
    print(f"\nheld-out questions: {data / 'test_questions.jsonl'}  (total time {total / 60:.1f} min)")
    print(f"model: {vision['model']}   TensorBoard: tensorboard --logdir {out}")
    print(f"try it: geovlm ask {vision['model']} {data}/images/<file>.png \"<question>\"")
    summary = {name: {"model": r["model"], "train_seconds": r["train_seconds"], **r["report"].to_dict()}
               for name, r in results.items()}
    (out / "results.json").write_text(json.dumps({"table": table, "total_seconds": round(total, 1),
                                                  "results": summary}, indent=2))
    return {"table": table, "results": results, "total_seconds": total}
