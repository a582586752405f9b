"""`geovlm demo`: a Gradio app — upload or paste a diagram, ask, watch the answer stream."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from geovlm.data.images import DEFAULT_MAX_PIXELS, ImageLoadError
from geovlm.serve.chat import ContextTooLong, chat, prepare_image

TITLE = "GeoVLM — geometry diagrams, asked and answered"


def example_diagrams(folder: str | Path | None = None, n: int = 4) -> list[list[str]]:
    """(image, question) pairs: from `folder` if given, else freshly drawn by the synthetic engine."""
    if folder is not None:
        images = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
        return [[str(p), "What is the answer? Explain step by step."] for p in images[:n]]
    from geovlm.synth import generate_problem

    out = Path(tempfile.mkdtemp(prefix="geovlm-demo-"))
    examples = []
    for index in range(n):
        problem = generate_problem(seed=2026, index=index)
        path = out / f"example_{index}.png"
        problem.render(448).save(path)
        examples.append([str(path), problem.prompt])
    return examples


def build_app(model: Any, processor: Any, examples_dir: str | Path | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS, max_new_tokens: int = 256) -> gr.Blocks:
    def respond(image: Any, question: str, max_new_tokens: int, temperature: float) -> Any:
        if image is None:
            raise gr.Error("Upload or paste a diagram first.")
        if not question or not question.strip():
            raise gr.Error("Type a question about the diagram.")
        try:
            prepared = prepare_image(image, max_pixels=max_pixels)
        except ImageLoadError as err:
            raise gr.Error(f"This image cannot be used ({err.reason}): {err.detail}") from err
        try:
            reply = chat(model, processor, prepared, question.strip(), stream=True,
                         max_new_tokens=int(max_new_tokens), temperature=float(temperature))
        except ContextTooLong as err:
            raise gr.Error(f"{err}: shorten the question or lower max new tokens.") from err
        text = ""
        for chunk in reply:
            text += chunk
            yield text

    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"## {TITLE}\nUpload or paste a geometry diagram, ask a question, and read the answer as it is written.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Diagram", sources=["upload", "clipboard"], elem_id="diagram")
                question = gr.Textbox(label="Question", lines=3, elem_id="question")
                with gr.Accordion("Generation", open=False):
                    max_new_tokens_slider = gr.Slider(16, 1024, value=max_new_tokens, step=16, label="max new tokens")
                    temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)")
                ask = gr.Button("Ask", variant="primary", elem_id="ask")
            with gr.Column():
                answer = gr.Textbox(label="Answer", lines=14, elem_id="answer")
        gr.Examples(example_diagrams(examples_dir), inputs=[image, question])
        inputs = [image, question, max_new_tokens_slider, temperature]
        ask.click(respond, inputs=inputs, outputs=answer)
        question.submit(respond, inputs=inputs, outputs=answer)
    return app


def launch(model: Any, processor: Any, host: str = "127.0.0.1", port: int = 7860,
           examples_dir: str | Path | None = None, **launch_kwargs: Any) -> Any:
    app = build_app(model, processor, examples_dir)
    return app.queue().launch(server_name=host, server_port=port, **launch_kwargs)
