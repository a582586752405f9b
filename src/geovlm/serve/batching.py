"""Concurrent requests batched: one background worker takes the pending requests (up to a maximum batch),
builds one left-padded batch through the same prompt code as `geovlm.serve.chat`, runs the model's
batched `generate` once for all of them, and streams each row's text back to its own request.

Under greedy decoding each reply equals `chat`'s for the same conversation (left-padded batched
generation equals one-by-one; tests/test_serve_api.py checks it through the server). Requests are
batched together only when they decode alike (greedy, or the same temperature and top-p) and their
longest prompt plus the most tokens any of them asks for fits the context; a row stops at its own
`max_tokens` or end of turn, and the batch ends when every row has stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from geovlm.processing.conversation import Message, prompt_text


class QueueFull(RuntimeError):
    """More requests are waiting than the server's queue holds."""


class ShuttingDown(RuntimeError):
    """The server is stopping and takes no more work."""


@dataclass
class Job:
    """One request: its conversation, image, options, and where its text goes (`emit(kind, value)` from the
    worker thread: ("delta", text), then ("done", finish_reason) or ("error", message))."""

    messages: list[Message]
    image: Image.Image | None
    system_prompt: Any
    max_new_tokens: int
    prompt_tokens: int
    emit: Callable[[str, Any], None]
    temperature: float = 0.0
    top_p: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    finished: bool = False

    @property
    def sampling(self) -> tuple[bool, float, float | None]:
        greedy = not self.temperature or self.temperature <= 0
        return (greedy, 0.0 if greedy else self.temperature, None if greedy else self.top_p)


class Batcher:
    """The background worker and its queue. `submit` never blocks on the model."""

    def __init__(self, model: Any, processor: Any, *, max_batch: int = 8, max_queue: int = 64,
                 gather_seconds: float = 0.02) -> None:
        self.model, self.processor = model, processor
        self.max_batch, self.max_queue, self.gather_seconds = max_batch, max_queue, gather_seconds
        self.context = model.config.text_config.max_position_embeddings
        eos = model.generation_config.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        # The fast tokenizer is one Rust object: padding a batch while another thread encodes can fail
        # ("Already borrowed"), so every use of the processor by the server holds this lock.
        self.tokenizer_lock = threading.Lock()
        self._pending: list[Job] = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0, "batch_sizes": {}, "generated_tokens": 0}

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="geovlm-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new work, end the running batch at its next token, fail what waits, join the worker."""
        self._stopping.set()
        with self._cond:
            waiting, self._pending = self._pending, []
            self._cond.notify_all()
        for job in waiting:
            job.emit("error", "the server is shutting down")
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        if self._stopping.is_set():
            raise ShuttingDown("the server is shutting down")
        with self._cond:
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are already waiting (the queue holds "
                                f"{self.max_queue}); retry later")
            self._pending.append(job)
            self.stats["requests"] += 1
            self._cond.notify()

    # ------------------------------------------------------------------ the worker
    def _take(self) -> list[Job]:
        """The oldest pending job and every later one that can share its batch (up to `max_batch`), after a
        short wait for requests arriving together."""
        with self._cond:
            while not self._pending and not self._stopping.is_set():
                self._cond.wait(0.5)
            if self._stopping.is_set():
                return []
        deadline = time.monotonic() + self.gather_seconds
        with self._cond:
            while len(self._pending) < self.max_batch and not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._pending = [job for job in self._pending if not job.cancelled.is_set()]
            if not self._pending:
                return []
            first = self._pending[0]
            chosen = [first]
            longest, most = first.prompt_tokens, first.max_new_tokens
            for job in self._pending[1:]:
                if len(chosen) == self.max_batch:
                    break
                if job.sampling != first.sampling:
                    continue
                if max(longest, job.prompt_tokens) + max(most, job.max_new_tokens) > self.context:
                    continue
                chosen.append(job)
                longest, most = max(longest, job.prompt_tokens), max(most, job.max_new_tokens)
            taken = {id(job) for job in chosen}
            self._pending = [job for job in self._pending if id(job) not in taken]
            return chosen

    def _loop(self) -> None:
        while not self._stopping.is_set():
            jobs = self._take()
            if not jobs:
                continue
            try:
                self.run(jobs)
            except Exception as err:  # noqa: BLE001 - reported to every request of the batch, the worker goes on
                message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                for job in jobs:
                    if not job.finished:
                        job.finished = True
                        job.emit("error", f"generation failed: {message}")

    def run(self, jobs: Sequence[Job]) -> None:
        """One batched `generate` for `jobs` (also used directly by the benchmark)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        with self.tokenizer_lock:
            texts = [prompt_text(self.processor, job.messages, job.system_prompt) for job in jobs]
            images = [job.image for job in jobs if job.image is not None]
            batch = self.processor(images=images or None, text=texts, return_tensors="pt", padding=True)
        batch = batch.to(self.model.device)
        if "pixel_values" in batch and batch["pixel_values"].is_floating_point():
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        greedy, temperature, top_p = jobs[0].sampling
        options: dict[str, Any] = {"max_new_tokens": max(job.max_new_tokens for job in jobs), "do_sample": not greedy}
        if not greedy:
            options["temperature"] = temperature
            if top_p is not None:
                options["top_p"] = top_p
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        sizes = self.stats["batch_sizes"]
        sizes[len(jobs)] = sizes.get(len(jobs), 0) + 1
        tokenizer, stopping = self.processor.tokenizer, self._stopping
        batcher = self

        class RowStreamer(BaseStreamer):
            """Each step's new token of every row, to that row's request as text."""

            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: torch.Tensor) -> None:
                if not self.prompt_seen:  # generate's first call hands over the prompt
                    self.prompt_seen = True
                    return
                for job, token in zip(jobs, value.reshape(len(jobs), -1)[:, -1].tolist(), strict=True):
                    batcher._advance(job, int(token), tokenizer)

            def end(self) -> None:
                for job in jobs:
                    batcher._finish(job, "length")

        class RowsDone(StoppingCriteria):
            def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
                done = [job.finished or job.cancelled.is_set() or stopping.is_set() for job in jobs]
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        with torch.inference_mode():
            self.model.generate(**batch, streamer=RowStreamer(), stopping_criteria=StoppingCriteriaList([RowsDone()]),
                                **options)

    def _advance(self, job: Job, token: int, tokenizer: Any) -> None:
        if job.finished:
            return
        if token in self.eos_ids:
            self._finish(job, "stop")
            return
        job.tokens.append(token)
        self.stats["generated_tokens"] += 1
        with self.tokenizer_lock:
            text = tokenizer.decode(job.tokens, skip_special_tokens=True)
        # (a character still split across tokens waits for its rest)
        if not text.endswith("\ufffd") and text.startswith(job.sent) and len(text) > len(job.sent):
            job.emit("delta", text[len(job.sent):])
            job.sent = text
        if len(job.tokens) >= job.max_new_tokens:
            self._finish(job, "length")

    def _finish(self, job: Job, reason: str) -> None:
        if job.finished:
            return
        job.finished = True
        with self.tokenizer_lock:
            text = self.processor.tokenizer.decode(job.tokens, skip_special_tokens=True)
        if text.startswith(job.sent) and len(text) > len(job.sent):
            job.emit("delta", text[len(job.sent):])
        job.sent = text
        job.emit("done", reason)
