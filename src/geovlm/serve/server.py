"""`geovlm serve`: an OpenAI-compatible chat server (`/v1/chat/completions`, streamed or not, and
`/v1/models`) on FastAPI/uvicorn (`pip install -e '.[serve]'`).

Why not `transformers serve`: it loads a model with `getattr(transformers, config.architectures[0])`,
which fails for a remote-code model such as a GeoVLM folder, and it refuses request contents of a
modality it does not know; neither can be changed through a public hook. This server is thin instead:
it parses the OpenAI request, checks it (size, image, tokens, control tokens), and hands each
conversation to `geovlm.serve.batching.Batcher`, which batches concurrent requests into one `generate`.

Safety: loopback by default; `--api-key` (401 without it); the body, the image's pixels, `max_tokens`
and the queue are capped (413, 400, 429, each a JSON error); images come as data URLs, or as local
files only under a folder named with `--allow-local-images`; no URL is ever fetched. Every error is a
JSON body in OpenAI's shape (`{"error": {"message", "type", "code"}}`), never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request  # at module level: FastAPI resolves the endpoints' (string) annotations here

from geovlm.data.images import DEFAULT_MAX_PIXELS, ImageLoadError
from geovlm.serve.batching import Batcher, Job, QueueFull, ShuttingDown
from geovlm.serve.chat import BadQuestion, conversation, prepare_image

log = logging.getLogger("geovlm.serve")


@dataclass
class ServeSettings:
    model_name: str = "geovlm"
    api_key: str | None = None
    max_body_bytes: int = 20 * 2**20
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_tokens_limit: int = 1024  # the most `max_tokens` a request may ask for
    default_max_tokens: int = 512
    max_batch: int = 8
    max_queue: int = 64
    gather_seconds: float = 0.02  # how long the worker waits for requests arriving together
    local_images: str | None = None  # a folder whose files requests may name as images; None: none


class RequestError(Exception):
    """A request the server refuses: HTTP status, one-line message, OpenAI error type."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# ---------------------------------------------------------------------- request parsing
def read_image(url: Any, settings: ServeSettings) -> Any:
    """A PIL image from a data URL, or from a local file under `settings.local_images`."""
    if not isinstance(url, str) or not url:
        raise RequestError(400, "image_url.url must be a non-empty string")
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.endswith(";base64") or not payload:
            raise RequestError(400, "an image data URL must be base64: data:image/png;base64,...")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, "the image data URL is not valid base64") from None
        source: Any = data
    elif url.startswith(("http://", "https://", "ftp://")):
        raise RequestError(400, "image URLs are not fetched: send the image as a data URL (data:image/png;base64,...)")
    else:
        if settings.local_images is None:
            raise RequestError(400, "local image files are not allowed (start the server with --allow-local-images "
                                    "DIR); send the image as a data URL")
        path = url[len("file://"):] if url.startswith("file://") else url
        root = Path(settings.local_images).resolve()
        target = (root / path).resolve() if not os.path.isabs(path) else Path(path).resolve()
        if root not in target.parents or not target.is_file():
            raise RequestError(400, f"image {path!r} is not a file under the allowed folder")
        source = str(target)
    try:
        return prepare_image(source, max_pixels=settings.max_image_pixels)
    except ImageLoadError as err:
        if err.reason == "too_large":
            raise RequestError(413, f"the image is too large ({err.detail or 'too many pixels'}); "
                                    f"at most {settings.max_image_pixels:,} pixels", code="image_too_large") from None
        raise RequestError(400, f"cannot read the image: {err.reason.replace('_', ' ')}") from None


def _content_parts(content: Any, role: str, settings: ServeSettings) -> tuple[str, list[Any]]:
    """A message's text and images (OpenAI content: a string or a list of text / image_url parts)."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise RequestError(400, f"a {role} message's content must be a string or a list of parts")
    texts, images = [], []
    for part in content:
        if not isinstance(part, dict):
            raise RequestError(400, "each content part must be an object with a 'type'")
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RequestError(400, "a text part needs a string 'text'")
            texts.append(part["text"])
        elif kind == "image_url":
            if role != "user":
                raise RequestError(400, "only user messages may hold images")
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            images.append(read_image(url, settings))
        else:
            raise RequestError(400, f"content part type {kind!r} is not supported (text, image_url)")
    return "\n".join(texts), images


def parse_chat_request(body: Any, settings: ServeSettings) -> dict[str, Any]:
    """The conversation and options of a chat-completion request, or `RequestError`."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise RequestError(400, "'model' is required (GET /v1/models lists it)")
    if model != settings.model_name:
        raise RequestError(404, f"model {model!r} does not exist here; this server serves {settings.model_name!r}",
                           code="model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list")
    if body.get("n") not in (None, 1):
        raise RequestError(400, "only n=1 is supported")
    for name in ("tools", "functions", "logprobs", "response_format"):
        if body.get(name) not in (None, False, [], {"type": "text"}):
            raise RequestError(400, f"{name!r} is not supported")
    stop = body.get("stop")
    if stop not in (None, [], ""):
        raise RequestError(400, "'stop' is not supported; replies end at the model's end of turn or max_tokens")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = min(settings.default_max_tokens, settings.max_tokens_limit)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestError(400, "'max_tokens' must be a positive integer")
    if max_tokens > settings.max_tokens_limit:
        raise RequestError(400, f"max_tokens={max_tokens} is over this server's limit of {settings.max_tokens_limit}",
                           code="max_tokens_too_large")
    temperature = body.get("temperature", 0.0)
    top_p = body.get("top_p")
    if temperature is None:
        temperature = 0.0
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
        raise RequestError(400, "'temperature' must be a number from 0 to 2 (0 = greedy)")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise RequestError(400, "'top_p' must be in (0, 1]")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, "'stream' must be true or false")

    system_prompt: Any = ...
    turns: list[dict[str, str]] = []
    images: list[Any] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant"):
            raise RequestError(400, f"messages[{i}] must be an object with role system, user or assistant")
        role = "system" if message["role"] == "developer" else message["role"]
        text, found = _content_parts(message.get("content"), role, settings)
        images += found
        if role == "system":
            if i != 0:
                raise RequestError(400, "a system message may only come first")
            system_prompt = text
            continue
        turns.append({"role": role, "content": text})
    if not turns or turns[-1]["role"] != "user":
        raise RequestError(400, "the last message must be the user's question")
    for earlier, later in zip(turns, turns[1:], strict=False):
        if earlier["role"] == later["role"]:
            raise RequestError(400, "user and assistant messages must alternate")
    if len(images) > 1:
        raise RequestError(400, f"the request holds {len(images)} images; GeoVLM answers about one image per "
                                "conversation")
    image = images[0] if images else None
    return {"turns": turns, "image": image, "system_prompt": system_prompt, "max_tokens": max_tokens,
            "temperature": float(temperature), "top_p": top_p, "stream": stream}


# ---------------------------------------------------------------------- the app
def create_app(model: Any, processor: Any, settings: ServeSettings) -> Any:
    """The FastAPI app; its lifespan starts and stops the batching worker (`app.state.batcher`)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    batcher = Batcher(model, processor, max_batch=settings.max_batch, max_queue=settings.max_queue,
                      gather_seconds=settings.gather_seconds)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: Any):
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="GeoVLM", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher

    def refuse(err: RequestError) -> Any:
        return JSONResponse(error_body(err.message, err.kind, err.code), status_code=err.status)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> Any:
        return refuse(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> Any:
        return JSONResponse(error_body(str(err.detail), "invalid_request_error"), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> Any:
        log.exception("unexpected error")  # the traceback stays in the server's log
        return JSONResponse(error_body("internal error (see the server log)", "server_error"), status_code=500)

    @app.middleware("http")
    async def check_key(request: Request, call_next: Any) -> Any:
        if settings.api_key is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
                return JSONResponse(error_body("missing or wrong API key (Authorization: Bearer KEY)",
                                               "authentication_error", "invalid_api_key"), status_code=401)
        return await call_next(request)

    async def read_body(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > settings.max_body_bytes):
            raise RequestError(413, f"the request body is over {settings.max_body_bytes:,} bytes",
                               code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise RequestError(413, f"the request body is over {settings.max_body_bytes:,} bytes",
                                   code="request_too_large")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as err:
            raise RequestError(400, f"the request body is not valid JSON ({err})") from None

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> Any:
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": created,
                                            "owned_by": "geovlm"}]}

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str) -> Any:
        if name != settings.model_name:
            raise RequestError(404, f"model {name!r} does not exist here", code="model_not_found")
        return {"id": name, "object": "model", "created": created, "owned_by": "geovlm"}

    @app.get("/v1/stats")
    async def stats() -> Any:
        """How the worker batched: requests, batches, largest batch, batches per size."""
        return dict(batcher.stats)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body = await read_body(request)
        parsed = parse_chat_request(body, settings)
        events: asyncio.Queue = asyncio.Queue()
        job = await asyncio.to_thread(make_job, parsed, asyncio.get_running_loop(), events)
        try:
            batcher.submit(job)
        except QueueFull as err:
            raise RequestError(429, str(err), "rate_limit_error", "queue_full") from None
        except ShuttingDown as err:
            raise RequestError(503, str(err), "server_error") from None
        rid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if parsed["stream"]:
            return StreamingResponse(stream_events(job, events, rid, now), media_type="text/event-stream")
        text, reason = [], None
        try:
            while True:
                kind, value = await events.get()
                if kind == "delta":
                    text.append(value)
                elif kind == "done":
                    reason = value
                    break
                else:
                    raise RequestError(503 if "shutting down" in value else 500, value, "server_error")
        finally:
            job.cancelled.set()  # a client gone while waiting frees its row
        return {"id": rid, "object": "chat.completion", "created": now, "model": settings.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                             "finish_reason": reason}],
                "usage": {"prompt_tokens": job.prompt_tokens, "completion_tokens": len(job.tokens),
                          "total_tokens": job.prompt_tokens + len(job.tokens)}}

    def make_job(parsed: dict[str, Any], loop: Any, events: asyncio.Queue) -> Job:
        """Checks that need the processor (control tokens, context), off the event loop."""
        turns, image = parsed["turns"], parsed["image"]
        from geovlm.processing.conversation import prompt_text

        with batcher.tokenizer_lock:
            try:
                messages = conversation(processor, turns[-1]["content"], turns[:-1], with_image=image is not None,
                                        system_prompt=parsed["system_prompt"])
            except BadQuestion as err:
                raise RequestError(400, str(err), code="bad_question") from None
            text = prompt_text(processor, messages, parsed["system_prompt"])
            ids = processor(images=[image] if image is not None else None, text=[text])["input_ids"][0]
        prompt_tokens = len(ids)
        if prompt_tokens + parsed["max_tokens"] > batcher.context:
            raise RequestError(400, f"the prompt takes {prompt_tokens} tokens; with max_tokens={parsed['max_tokens']} "
                                    f"that exceeds the model's context of {batcher.context} tokens",
                               code="context_length_exceeded")
        def emit(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (kind, value))

        job = Job(messages=messages, image=image, system_prompt=parsed["system_prompt"],
                  max_new_tokens=parsed["max_tokens"], prompt_tokens=prompt_tokens, emit=emit,
                  temperature=parsed["temperature"], top_p=parsed["top_p"])
        return job

    async def stream_events(job: Job, events: asyncio.Queue, rid: str, now: int) -> Any:
        def chunk(delta: dict[str, Any], reason: str | None = None) -> str:
            payload = {"id": rid, "object": "chat.completion.chunk", "created": now, "model": settings.model_name,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                kind, value = await events.get()
                if kind == "delta":
                    yield chunk({"content": value})
                elif kind == "done":
                    yield chunk({}, value)
                    break
                else:
                    yield f"data: {json.dumps(error_body(value, 'server_error'))}\n\n"
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # a client that hung up stops its row at the next token

    return app
