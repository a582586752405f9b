"""`geovlm ask` (one question, streamed to the terminal), `geovlm demo` (a Gradio app) and `geovlm serve` (an
OpenAI-compatible server, `geovlm.serve.server`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from geovlm.constants import QUANTIZE_METHODS


def register(subparsers: argparse._SubParsersAction) -> None:
    quiet_optional_imports()  # before any command imports transformers (and with it torchao)
    ask = subparsers.add_parser("ask", help="ask a model about one diagram; the answer streams to the terminal")
    ask.add_argument("model", help="GeoVLM folder, hub id, or seed-code checkpoint folder")
    ask.add_argument("image", help="image path, or - to read it from standard input")
    ask.add_argument("question")
    ask.add_argument("--max-new-tokens", type=int, default=512)
    ask.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ask.add_argument("--top-p", type=float)
    ask.add_argument("--system", help="system prompt (default: the model's own)")
    ask.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    add_precision_arguments(ask)
    ask.set_defaults(func=run_ask)

    demo = subparsers.add_parser("demo", help="a Gradio web demo (pip install -e '.[demo]')")
    demo.add_argument("model", help="GeoVLM folder, hub id, or seed-code checkpoint folder")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument("--examples", help="folder of example diagrams (default: a few made by the synthetic engine)")
    demo.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    demo.set_defaults(func=run_demo)

    serve = subparsers.add_parser(
        "serve", help="an OpenAI-compatible chat server (/v1/chat/completions, /v1/models; pip install -e '.[serve]')")
    serve.add_argument("model", help="GeoVLM folder, hub id, or seed-code checkpoint folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=os.environ.get("GEOVLM_API_KEY"),
                       help="require 'Authorization: Bearer KEY' (default: $GEOVLM_API_KEY; none: no key)")
    serve.add_argument("--model-name", help="the model id clients name (default: the folder's name)")
    serve.add_argument("--max-batch", type=int, default=8, help="requests generated together (default 8)")
    serve.add_argument("--max-queue", type=int, default=64, help="requests allowed to wait; more get 429 (default 64)")
    serve.add_argument("--max-tokens-limit", type=int, default=1024, help="the most max_tokens a request may ask")
    serve.add_argument("--max-body-mb", type=float, default=20.0, help="request body limit in MiB (default 20)")
    serve.add_argument("--max-image-pixels", type=int, help="image size limit in pixels (default: training's)")
    serve.add_argument("--allow-local-images", metavar="DIR",
                       help="let requests name image files under DIR (default: data URLs only)")
    serve.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    add_precision_arguments(serve)
    serve.set_defaults(func=run_serve)


def add_precision_arguments(parser: argparse.ArgumentParser) -> None:
    """`--dtype` and `--quantize`, shared by ask, eval and serve."""
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"),
                        help="the model's dtype (default: bf16 on a CUDA GPU, or on a CPU with bf16 units: "
                        "avx512_bf16 or amx_bf16; else as saved, i.e. fp32, with --quantize bf16's weights when up "
                        "to 4 sequences are generated at once; GEOVLM_CPU_DTYPE=fp32 fixes the CPU's)")
    parser.add_argument("--quantize", choices=QUANTIZE_METHODS,
                        help="weights in int8 (torchao through transformers' quantization_config; vocabulary tables "
                             "in bf16): 0.32x fp32's memory; or in bf16, computing in fp32: 0.50x, and on a CPU "
                             "without bf16 units the fastest for up to 4 sequences at a time")


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


def quiet_optional_imports() -> None:
    """Where torchao is installed (the serve extra), transformers imports it with every model, and its import
    warns about CUDA-only kernels it cannot load on a CPU machine (and torch about its enums): lines that
    would precede every answer. Errors still show."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.ERROR)


def load_model_or_fail(name: str, device: str | None = None, dtype: str | None = None,
                       quantize: str | None = None, sequences: int = 1) -> tuple[Any, Any]:
    """Load a model for inference, turning the usual failures into one-line CLI errors. `dtype` ("fp32",
    "bf16", "fp16") and `quantize` ("int8", "bf16") as the `--dtype` and `--quantize` options give them;
    neither given: `default_inference_dtype` and `default_quantize` for `sequences` generated at once. On a
    CPU where the choice is slower than fp32 one line on stderr says so."""
    from geovlm.errors import CLIError

    check_device(device)
    if not os.path.isdir(name) and not looks_like_hub_id(name):
        raise CLIError(f"no model folder at {name!r} (and it is not a hub id like org/name)")
    quiet_optional_imports()
    import torch
    from transformers.utils import logging as hf_logging

    from geovlm.loading import load_pretrained
    from geovlm.precision import (
        default_quantize,
        inference_dtype,
        quantization_config,
        reduced_precision_note,
    )

    hf_logging.disable_progress_bar()  # keep the terminal for the answer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch_dtype = inference_dtype(dtype, device)
    except ValueError as err:  # a bad GEOVLM_CPU_DTYPE
        raise CLIError(str(err)) from err
    if dtype is None and quantize is None:
        quantize = default_quantize(device, sequences)
    if quantize is not None:
        try:
            quantization_config(quantize)
        except ValueError as err:
            raise CLIError(str(err)) from err
    note = reduced_precision_note(torch_dtype, quantize, device, sequences)
    if note:
        print(f"note: {note}", file=sys.stderr)
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    try:
        return load_pretrained(name, dtype=torch_dtype, device=device, quantize=quantize)
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
    model, processor = load_model_or_fail(args.model, args.device, args.dtype, args.quantize, sequences=1)
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


def run_serve(args: argparse.Namespace) -> int:
    from geovlm.errors import CLIError

    try:
        import uvicorn

        from geovlm.serve.server import ServeSettings, create_app
    except ImportError as err:
        raise CLIError(f"geovlm serve needs FastAPI and uvicorn: pip install -e '.[serve]' ({err})") from err
    for name in ("max_batch", "max_queue", "max_tokens_limit"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.max_body_mb <= 0 or (args.max_image_pixels is not None and args.max_image_pixels < 1):
        raise CLIError("--max-body-mb and --max-image-pixels must be positive")
    if args.allow_local_images is not None and not os.path.isdir(args.allow_local_images):
        raise CLIError(f"--allow-local-images {args.allow_local_images!r} is not a folder")
    if args.api_key is not None and not args.api_key.strip():
        raise CLIError("--api-key is empty")
    check_port_free(args.host, args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1") and args.api_key is None:
        print(f"warning: serving on {args.host} without --api-key: anyone who reaches this port can use the model",
              file=sys.stderr)
    model, processor = load_model_or_fail(args.model, args.device, args.dtype, args.quantize,
                                          sequences=args.max_batch)
    settings = ServeSettings(
        model_name=args.model_name or os.path.basename(os.path.normpath(args.model)), api_key=args.api_key,
        max_body_bytes=int(args.max_body_mb * 2**20), max_tokens_limit=args.max_tokens_limit,
        default_max_tokens=min(512, args.max_tokens_limit), max_batch=args.max_batch, max_queue=args.max_queue,
        local_images=args.allow_local_images,
    )
    if args.max_image_pixels is not None:
        settings.max_image_pixels = args.max_image_pixels
    app = create_app(model, processor, settings)
    print(f"serving {settings.model_name!r} on http://{args.host}:{args.port}/v1 (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30)
    return 0
