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


def check_device(device: str | None) -> None:
    """Refuse, in one line, a `--device` this PyTorch cannot use (before a model is loaded onto it)."""
    if device is None:
        return
    import torch

    from geovlm.errors import CLIError

    try:
        where = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise CLIError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps, ...)") from err
    if where.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {device}: this PyTorch ({torch.__version__}) sees no CUDA GPU; use --device cpu "
                           "or install a CUDA build of PyTorch")
        if where.index is not None and where.index >= torch.cuda.device_count():
            raise CLIError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) are visible "
                           f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif where.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"--device {device}: MPS is not available here; use --device cpu")


def load_model_or_fail(name: str, device: str | None = None) -> tuple[Any, Any]:
    """Load a model for inference, turning the usual failures into one-line CLI errors."""
    from geovlm.errors import CLIError

    check_device(device)
    if not os.path.isdir(name) and not looks_like_hub_id(name):
        raise CLIError(f"no model folder at {name!r} (and it is not a hub id like org/name)")
    import torch
    from transformers.utils import logging as hf_logging

    from geovlm.loading import default_inference_dtype, load_pretrained

    hf_logging.disable_progress_bar()  # keep the terminal for the answer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = default_inference_dtype(device)
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    try:
        return load_pretrained(name, dtype=dtype, device=device)
    except (OSError, ValueError, RuntimeError, SafetensorError, StrictDataclassError) as err:  # a truncated weights file, too
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CLIError(f"cannot load model {name!r}: {first}") from err


def check_generation_options(args: argparse.Namespace) -> None:
    """`--max-new-tokens`, `--temperature`, `--top-p` in range, before a model is loaded."""
    from geovlm.errors import CLIError

    if args.max_new_tokens < 1:
        raise CLIError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise CLIError(f"--temperature must be 0 (greedy) or more, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise CLIError(f"--top-p must be in (0, 1], got {args.top_p}")


def run_ask(args: argparse.Namespace) -> int:
    from geovlm.data.images import ImageLoadError
    from geovlm.errors import CLIError
    from geovlm.serve.chat import BadQuestion, ContextTooLong, chat, prepare_image

    check_generation_options(args)
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
    except BadQuestion as err:
        raise CLIError(str(err)) from err
    except ContextTooLong as err:
        raise CLIError(f"{err}: shorten the question or lower --max-new-tokens") from err
    for chunk in reply:
        sys.stdout.write(chunk)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def check_port_free(host: str, port: int) -> None:
    """Refuse, in one line, an address the demo could not listen on (before the model is loaded)."""
    import socket

    from geovlm.errors import CLIError

    if not 1 <= port <= 65535:
        raise CLIError(f"--port must be between 1 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise CLIError(f"--host {host!r} is not an address of this machine ({err})") from err
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server's own socket does
        try:
            probe.bind(address)
        except OSError as err:
            raise CLIError(f"cannot listen on {host}:{port} ({err.strerror or err}): choose another --port, or stop "
                           "what uses it") from err


def run_demo(args: argparse.Namespace) -> int:
    from geovlm.errors import CLIError

    try:
        from geovlm.serve.demo import check_examples_dir, launch
    except ImportError as err:
        raise CLIError(f"the demo needs Gradio: pip install -e '.[demo]' ({err})") from err
    if args.examples is not None:
        try:
            check_examples_dir(args.examples)
        except ValueError as err:
            raise CLIError(str(err)) from err
    check_port_free(args.host, args.port)
    model, processor = load_model_or_fail(args.model, args.device)
    try:
        launch(model, processor, host=args.host, port=args.port, examples_dir=args.examples)
    except OSError as err:  # the port was taken between our check and the server's start
        raise CLIError(f"cannot start the demo on {args.host}:{args.port}: {str(err).splitlines()[0]}") from err
    return 0
