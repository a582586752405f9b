"""`lmms-eval --model geovlm`: a GeoVLM folder answering lmms-eval's `generate_until` requests.

Each request is one question: the task's text (`doc_to_text`) and its images (`doc_to_visual`). They are
answered in batches by `geovlm.serve.chat.answer`, the function `geovlm eval` calls: the same chat
template and system prompt (`question_messages` puts the image before the text, as in training), the
same image preparation, left-padded batches through the model's standard `generate`, greedy unless the
task asks for a temperature above 0. So a greedy lmms-eval reply equals `geovlm eval`'s for the same
question text and image.

What GeoVLM cannot serve is refused with an error, never answered with a made-up value: log-likelihood
requests (multiple-choice scoring by likelihood), multi-round generation, videos, audio, more than one
image in a question.

Data parallelism: under `accelerate launch --num_processes N -m lmms_eval ...` (or torchrun) each
process loads the model on its own device and answers the share of the documents lmms-eval gives it;
lmms-eval gathers the results.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm.auto import tqdm

from geovlm.eval.lmms import MODEL_NAME

# Generation options a task's `generation_kwargs` may set that reach `generate` (through the same
# `generation_options` as `geovlm eval`); `until` is applied to the decoded text; the rest is logged and ignored.
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty",
                   "length_penalty", "min_new_tokens", "no_repeat_ngram_size")
IGNORED_KEYS = ("do_sample", "until", "image_aspect_ratio", "use_cache")  # handled or meaningless here
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class UnsupportedRequest(NotImplementedError):
    """A request GeoVLM cannot answer (log-likelihood, multi-round, video, audio, several images)."""


def _logger() -> Any:
    from loguru import logger  # lmms-eval's logger

    return logger


def parse_batch_size(value: Any) -> int:
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{MODEL_NAME}: batch_size must be a positive integer, got {value!r} "
                         "(automatic batch sizes are not supported)") from None
    if size < 1:
        raise ValueError(f"{MODEL_NAME}: batch_size must be a positive integer, got {value!r}")
    return size


def inference_dtype(dtype: str | None, device: torch.device) -> torch.dtype | None:
    """`auto` (the default) chooses as `geovlm eval` does (`default_inference_dtype`: bf16 on a CUDA device
    or CPU that runs it natively, else the folder's own dtype, with `default_quantize`'s weights); or a named
    dtype."""
    if dtype in (None, "", "auto"):
        from geovlm.precision import default_inference_dtype

        return default_inference_dtype(device)
    if dtype not in DTYPES:
        raise ValueError(f"{MODEL_NAME}: dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def split_generation_kwargs(gen_kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """A task's generation kwargs → (options for `answer`, stop strings, ignored keys).

    `do_sample: false` means greedy whatever the temperature; `do_sample: true` without a temperature
    samples at temperature 1 (transformers' default)."""
    options = {key: gen_kwargs[key] for key in GENERATION_KEYS if gen_kwargs.get(key) is not None}
    do_sample = gen_kwargs.get("do_sample")
    if do_sample is False:
        options.pop("temperature", None)
    elif do_sample and not options.get("temperature"):
        options["temperature"] = 1.0
    if options.get("num_beams") == 1:
        options.pop("num_beams")  # the default; keeps greedy options identical to geovlm eval's
    until = gen_kwargs.get("until") or []
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, list) or not all(isinstance(stop, str) for stop in until):
        raise ValueError(f"{MODEL_NAME}: generation kwarg `until` must be a string or a list of strings, got {until!r}")
    ignored = sorted(key for key in gen_kwargs if key not in GENERATION_KEYS and key not in IGNORED_KEYS)
    return options, [stop for stop in until if stop], ignored


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string (lmms-eval's `until`)."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


def check_visuals(visuals: Sequence[Any], where: str) -> Image.Image | None:
    """The one image of a question, None for a text-only question; anything else is refused."""
    flat: list[Any] = []
    for item in visuals or []:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    flat = [item for item in flat if item is not None]
    for item in flat:
        if not isinstance(item, Image.Image):
            kind = "a video" if isinstance(item, str) else "audio" if isinstance(item, dict) else type(item).__name__
            raise UnsupportedRequest(f"{MODEL_NAME} reads images only; {where} gives {kind} ({str(item)[:80]!r})")
    if len(flat) > 1:
        raise UnsupportedRequest(f"{MODEL_NAME} answers questions with at most one image; {where} has {len(flat)}")
    return flat[0] if flat else None


class GeoVLMLmms(lmms):
    """lmms-eval model `geovlm`; model_args: pretrained=DIR (a GeoVLM folder, hub id, LoRA adapter or
    seed-code checkpoint folder, anything `geovlm eval` loads), batch_size=N (default 1),
    device=cuda|cuda:1|cpu (default: the accelerator's), dtype=auto|float32|bfloat16|float16."""

    is_simple = True

    def __init__(self, pretrained: str, device: str | None = None, batch_size: int | str = 1,
                 dtype: str | None = "auto", max_batch_size: Any = None, **kwargs: Any) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(f"{MODEL_NAME}: unknown model_args {', '.join(sorted(kwargs))}; "
                             "expected pretrained, batch_size, device, dtype")
        from accelerate import Accelerator

        from geovlm.loading import load_pretrained

        self.batch_size_per_device = parse_batch_size(batch_size)
        accelerator = Accelerator()
        if device is None:
            target = accelerator.device
        elif accelerator.num_processes > 1 and device == "cuda":
            target = torch.device(f"cuda:{accelerator.local_process_index}")  # one GPU per process
        else:
            target = torch.device(device)
        self.accelerator = accelerator
        self._rank = accelerator.process_index
        self._world_size = accelerator.num_processes
        self._device = target
        self.pretrained = pretrained
        quantize = None
        if dtype in (None, "", "auto"):  # chosen as `geovlm eval` chooses for its batch size
            from geovlm.precision import default_quantize

            quantize = default_quantize(target, self.batch_size_per_device)
        self.model, self.processor = load_pretrained(pretrained, dtype=inference_dtype(dtype, target), device=target,
                                                     quantize=quantize)
        self._warned: set[str] = set()

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> GeoVLMLmms:
        """As lmms' own, except that `--model_args batch_size=8,device=cuda` win over the command line's
        `--batch_size`/`--device` (lmms-eval always passes a batch size, 1 by default, which would
        otherwise clash with one given in model_args)."""
        from lmms_eval import utils

        args = utils.simple_parse_args_string(arg_string)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

    # lmms-eval reads these
    @property
    def batch_size(self) -> int:
        return self.batch_size_per_device

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    # ------------------------------------------------------------------ requests GeoVLM cannot serve
    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise UnsupportedRequest(
            f"{MODEL_NAME} answers generate_until tasks only; {len(requests)} loglikelihood request(s) "
            f"(task {_task_of(requests)}) were refused. Choose a task with output_type: generate_until.")

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        raise UnsupportedRequest(
            f"{MODEL_NAME} answers single-round generate_until tasks only; {len(requests)} multi-round "
            f"request(s) (task {_task_of(requests)}) were refused.")

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests: list[Any]) -> list[str]:
        """One reply per request, in request order; batches of `batch_size` requests that share a task,
        split and generation kwargs."""
        from geovlm.serve.chat import answer

        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            _, gen_kwargs, _, _, task, split = request.args
            key = json.dumps([task, split, gen_kwargs], sort_keys=True, default=repr)
            groups.setdefault(key, []).append(i)
        replies: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="geovlm", unit="q", disable=self.rank != 0)
        for indices in groups.values():
            _, gen_kwargs, _, _, task, split = requests[indices[0]].args
            options, stops, ignored = split_generation_kwargs(dict(gen_kwargs))
            self._warn_ignored(task, ignored)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                questions, images = [], []
                for i in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args
                    visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
                    images.append(check_visuals(visuals, f"task {task}, document {doc_id}"))
                    questions.append(context)
                texts = answer(self.model, self.processor, images, questions, batch_size=len(chunk), **options)
                for i, context, text in zip(chunk, questions, texts, strict=True):
                    replies[i] = cut_at_stops(text, stops)
                    self.cache_hook.add_partial("generate_until", (context, gen_kwargs), replies[i])
                bar.update(len(chunk))
        bar.close()
        return replies  # type: ignore[return-value]

    def _warn_ignored(self, task: str, keys: list[str]) -> None:
        new = [key for key in keys if f"{task}:{key}" not in self._warned]
        if new:
            self._warned.update(f"{task}:{key}" for key in new)
            _logger().warning(f"{MODEL_NAME}: task {task}'s generation kwargs {', '.join(new)} are ignored "
                              f"(used: {', '.join(GENERATION_KEYS)}, until, do_sample)")


def _task_of(requests: Sequence[Any]) -> str:
    tasks = sorted({str(request.args[-2]) for request in requests if len(request.args) >= 2})
    return ", ".join(tasks) or "unknown"


__all__ = ["GeoVLMLmms", "UnsupportedRequest", "check_visuals", "cut_at_stops", "split_generation_kwargs"]
