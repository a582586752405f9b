"""The web demo in a real browser: upload a diagram, ask, see an answer (headless Chromium)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from conftest import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
]
DOCS = Path(__file__).resolve().parents[1] / "docs"


def random_model_and_triangle(tmp_path: Path, tokenizer) -> tuple:
    """A random tiny model (it answers gibberish) and a hand-drawn triangle."""
    from geovlm import build_tiny

    torch.manual_seed(3)
    model, processor = build_tiny(head_std=0.5)
    model.eval()
    image = Image.new("RGB", (320, 240), "white")
    ImageDraw.Draw(image).polygon([(20, 220), (300, 210), (140, 20)], outline="black", width=4)
    image.save(tmp_path / "triangle.png")
    return model, processor, tmp_path / "triangle.png", "What is the largest angle of the triangle?", None


def quickstart_model_and_question(folder: Path) -> tuple:
    """The model `geovlm quickstart` trained and the first held-out diagram question it got right
    in its evaluation (for the README's screenshot: GEOVLM_DEMO_QUICKSTART=out/quickstart)."""
    from geovlm import load_pretrained

    def rows(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    questions = {q["question_id"]: q for q in rows(folder / "data" / "test_questions.jsonl")}
    answers = {a["question_id"]: a for a in rows(folder / "data" / "test_answers.jsonl")}
    for prediction in rows(folder / "vision" / "predictions.jsonl"):
        answer = answers[prediction["question_id"]]
        if answer.get("style") == "diagram" and prediction["extracted"] == answer["text"]:
            question = questions[prediction["question_id"]]
            model, processor = load_pretrained(folder / "vision" / "stage2", device="cpu")
            image = folder / "data" / "images" / question["image"]  # synth records are relative to images/
            return model, processor, image, question["text"], answer["text"]
    raise AssertionError(f"no correctly answered diagram question in {folder}")


def test_demo_answers_an_uploaded_diagram(tmp_path, tokenizer, monkeypatch):
    pytest.importorskip("gradio")
    playwright = pytest.importorskip("playwright.sync_api")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from geovlm.serve.demo import build_app

    trained = os.environ.get("GEOVLM_DEMO_QUICKSTART")
    model, processor, image_path, question, expected = (
        quickstart_model_and_question(Path(trained)) if trained else random_model_and_triangle(tmp_path, tokenizer))
    examples = tmp_path / "examples"
    examples.mkdir()
    shutil.copy(image_path, examples / image_path.name)

    port = free_port()
    app = build_app(model, processor, examples_dir=examples, max_new_tokens=16)
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
            page.locator("#diagram input[type=file]").set_input_files(str(examples / image_path.name))
            page.locator("#question textarea").fill(question)
            page.locator("#ask").click()
            answer = page.locator("#answer textarea")
            page.wait_for_function(
                "el => el.value.trim().length > 0", arg=answer.element_handle(), timeout=60_000
            )
            assert answer.input_value().strip()
            if expected is not None:  # the demo's path gives the answer the evaluation recorded
                page.wait_for_function(
                    "([el, want]) => el.value.replace(/\\s/g, '').includes(want)",
                    arg=[answer.element_handle(), f"Answer:{expected}"], timeout=60_000,
                )
            if os.environ.get("GEOVLM_UPDATE_SCREENSHOT"):  # only when asked: a test never writes into the repository
                DOCS.mkdir(exist_ok=True)
                page.screenshot(path=str(DOCS / "demo.png"))
            browser.close()
    finally:
        app.close()
