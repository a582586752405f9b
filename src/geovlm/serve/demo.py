"""`geovlm demo`: a Gradio app — upload a diagram, ask, watch the answer stream.

The upload is taken as a file path and decoded by the project's own loader (`load_image`, as in training
and `geovlm ask`), never by Gradio: a text file or random bytes sent as "the diagram" then gets a message
saying what is wrong with it, where Gradio's own decoding raised "upstream app raised an exception".
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from geovlm.data.images import DEFAULT_MAX_PIXELS, ImageLoadError
from geovlm.serve.chat import BadQuestion, ContextTooLong, chat, prepare_image

TITLE = "GeoVLM — geometry diagrams, asked and answered"
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")


def check_examples_dir(folder: str | Path) -> list[Path]:
    """The example diagrams in `folder`; ValueError in one line when it is not a folder or holds none."""
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"--examples {folder}: no such folder; give a folder of .png/.jpg diagrams, or leave "
                         "--examples out for synthetic ones")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES and p.is_file())
    if not images:
        raise ValueError(f"--examples {folder}: no .png/.jpg diagrams in it")
    return images


def example_diagrams(folder: str | Path | None = None, n: int = 4) -> list[list[str]]:
    """(image, question) pairs: from `folder` if given, else freshly drawn by the synthetic engine."""
    if folder is not None:
        return [[str(p), "What is the answer? Explain step by step."] for p in check_examples_dir(folder)[:n]]
    from geovlm.synth import generate_problem

    out = Path(tempfile.mkdtemp(prefix="geovlm-demo-"))
    examples = []
    for index in range(n):
        problem = generate_problem(seed=2026, index=index)
        path = out / f"example_{index}.png"
        problem.render(448).save(path)
        examples.append([str(path), problem.prompt])
    return examples


def _upload_path(upload: Any) -> str | None:
    """The path of what `gr.File` hands over (a path string, or an object with `.name` in older Gradio)."""
    if upload is None or isinstance(upload, str):
        return upload
    return getattr(upload, "name", None) or getattr(upload, "path", None)


def load_diagram(upload: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """The uploaded file as the model will see it; `gr.Error` with a clear message when it cannot be used."""
    path = _upload_path(upload)
    if path is None:
        raise gr.Error("Upload a diagram first.")
    try:
        return prepare_image(path, max_pixels=max_pixels)
    except ImageLoadError as err:
        detail = f" ({err.detail})" if err.reason == "too_large" else ""  # else the detail is Pillow's
        raise gr.Error(f"{Path(path).name} cannot be used as a diagram: it is {err.reason.replace('_', ' ')}"
                       f"{detail}. Upload a PNG, JPEG, GIF, BMP, TIFF or WebP image.") from err


def make_respond(model: Any, processor: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Callable[..., Iterator[str]]:
    """The Ask handler: (uploaded file, question, max new tokens, temperature) → the answer as it streams."""

    def respond(upload: Any, question: str, max_new_tokens: float, temperature: float) -> Iterator[str]:
        if _upload_path(upload) is None:
            raise gr.Error("Upload a diagram first.")
        if not question or not question.strip():
            raise gr.Error("Type a question about the diagram.")
        prepared = load_diagram(upload, max_pixels)
        try:
            reply = chat(model, processor, prepared, question.strip(), stream=True,
                         max_new_tokens=int(max_new_tokens), temperature=float(temperature))
        except BadQuestion as err:
            raise gr.Error(f"This question cannot be asked: {err}.") from err
        except ContextTooLong as err:
            raise gr.Error(f"{err}: shorten the question or lower max new tokens.") from err
        text = ""
        for chunk in reply:
            text += chunk
            yield text

    return respond


def build_app(model: Any, processor: Any, examples_dir: str | Path | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS, max_new_tokens: int = 256) -> gr.Blocks:
    respond = make_respond(model, processor, max_pixels)

    def preview(upload: Any) -> Any:
        return None if _upload_path(upload) is None else load_diagram(upload, max_pixels)

    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"## {TITLE}\nUpload a geometry diagram, ask a question, and read the answer as it is written.")
        with gr.Row():
            with gr.Column():
                # A file, not gr.Image: gr.Image decodes the upload itself and fails without a message.
                image = gr.File(label="Diagram (an image file)", type="filepath", elem_id="diagram")
                shown = gr.Image(label="As the model sees it", interactive=False, height=224, elem_id="preview")
                question = gr.Textbox(label="Question", lines=3, elem_id="question")
                with gr.Accordion("Generation", open=False):
                    max_new_tokens_slider = gr.Slider(16, 1024, value=max_new_tokens, step=16, label="max new tokens")
                    temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)")
                ask = gr.Button("Ask", variant="primary", elem_id="ask")
            with gr.Column():
                answer = gr.Textbox(label="Answer", lines=14, elem_id="answer")
        gr.Examples(example_diagrams(examples_dir), inputs=[image, question])
        image.change(preview, inputs=image, outputs=shown)
        inputs = [image, question, max_new_tokens_slider, temperature]
        ask.click(respond, inputs=inputs, outputs=answer)
        question.submit(respond, inputs=inputs, outputs=answer)
    return app


def launch(model: Any, processor: Any, host: str = "127.0.0.1", port: int = 7860,
           examples_dir: str | Path | None = None, **launch_kwargs: Any) -> Any:
    app = build_app(model, processor, examples_dir)
    return app.queue().launch(server_name=host, server_port=port, **launch_kwargs)
