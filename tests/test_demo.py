"""The web demo in a real browser: upload a diagram, ask, see an answer (headless Chromium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from conftest import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
]
DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_demo_answers_an_uploaded_diagram(tmp_path, tokenizer, monkeypatch):
    pytest.importorskip("gradio")
    playwright = pytest.importorskip("playwright.sync_api")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from geovlm import GeoVLM, GeoVLMConfig, GeoVLMProcessor
    from geovlm.serve.demo import build_app

    torch.manual_seed(3)
    config = GeoVLMConfig.from_preset("tiny", text={"tie_word_embeddings": False})
    model = GeoVLM(config).eval()
    with torch.no_grad():
        model.language_model.lm_head.weight.normal_(0, 0.5)
    processor = GeoVLMProcessor.from_tokenizer(tokenizer, config)

    examples = tmp_path / "examples"
    examples.mkdir()
    image = Image.new("RGB", (320, 240), "white")
    ImageDraw.Draw(image).polygon([(20, 220), (300, 210), (140, 20)], outline="black", width=4)
    image.save(examples / "triangle.png")

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
            page.locator("#diagram input[type=file]").set_input_files(str(examples / "triangle.png"))
            page.locator("#question textarea").fill("What is the largest angle of the triangle?")
            page.locator("#ask").click()
            answer = page.locator("#answer textarea")
            page.wait_for_function(
                "el => el.value.trim().length > 0", arg=answer.element_handle(), timeout=60_000
            )
            assert answer.input_value().strip()
            if os.environ.get("GEOVLM_UPDATE_SCREENSHOT") or not (DOCS / "demo.png").exists():
                DOCS.mkdir(exist_ok=True)
                page.screenshot(path=str(DOCS / "demo.png"))
            browser.close()
    finally:
        app.close()
