"""`geovlm ask` (one question, streamed to the terminal) and `geovlm demo` (a Gradio app)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    ask = subparsers.add_parser("ask", help="ask a model about one diagram; the answer streams to the terminal")
    ask.add_argument("model", help="GeoVLM folder, hub id, or seed-code checkpoint folder")
    ask.add_argument("image", help="image path, or - to read it from standard input")
    ask.add_argument("question")
    ask.add_argument("--max-new-tokens", type=int, default=512)
    ask.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ask.add_argument("--top-p", type=float)
    ask.add_argument("--system", help="system prompt (default: the model's own)")
    ask.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    ask.set_defaults(func=run_ask)

    demo = subparsers.add_parser("demo", help="a Gradio web demo (pip install -e '.[demo]')")
    demo.add_argument("model", help="GeoVLM folder, hub id, or seed-code checkpoint folder")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument("--examples", help="folder of example diagrams (default: a few made by the synthetic engine)")
    demo.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    demo.set_defaults(func=run_demo)


def looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not os.path.exists(name)


def load_model_or_fail(name: str, device: str | None = None) -> tuple[Any, Any]:
    """Load a model for inference, turning the usual failures into one-line CLI errors."""
    from geovlm.errors import CLIError

    if not os.path.isdir(name) and not looks_like_hub_id(name):
        raise CLIError(f"no model folder at {name!r} (and it is not a hub id like org/name)")
    import torch
    from transformers.utils import logging as hf_logging

    from geovlm.loading import load_pretrained

    hf_logging.disable_progress_bar()  # keep the terminal for the answer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else None
    from safetensors import SafetensorError

    try:
        return load_pretrained(name, dtype=dtype, device=device)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:  # a truncated weights file, too
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CLIError(f"cannot load model {name!r}: {first}") from err


def run_ask(args: argparse.Namespace) -> int:
    from geovlm.data.images import ImageLoadError
    from geovlm.errors import CLIError
    from geovlm.serve.chat import ContextTooLong, chat, prepare_image

    model, processor = load_model_or_fail(args.model, args.device)
    source: Any = sys.stdin.buffer.read() if args.image == "-" else args.image
    try:
        image = prepare_image(source)
    except ImageLoadError as err:
        raise CLIError(f"cannot use image {args.image!r}: {err.reason.replace('_', ' ')}") from err
    system = args.system if args.system is not None else ...
    try:
        reply = chat(model, processor, image, args.question, stream=True, system_prompt=system,
                     max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    except ContextTooLong as err:
        raise CLIError(str(err)) from err
    for chunk in reply:
        sys.stdout.write(chunk)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from geovlm.errors import CLIError

    try:
        from geovlm.serve.demo import launch
    except ImportError as err:
        raise CLIError(f"the demo needs Gradio: pip install -e '.[demo]' ({err})") from err
    model, processor = load_model_or_fail(args.model, args.device)
    launch(model, processor, host=args.host, port=args.port, examples_dir=args.examples)
    return 0
