"""The inference sections: `GeoVLM.generate` against the seed's loop, and batched evaluation."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from geovlm.bench.common import CpuLoad, Settings, load_average, log, median, timed
from geovlm.bench.seed_style import seed_generate
from geovlm.bench.workloads import build_model, tokenizer


# ---------------------------------------------------------------------- prompts and images
def synth_problems(n: int, seed: int = 0) -> list[Any]:
    from geovlm.synth import generate_problem

    return [generate_problem(seed, i) for i in range(n)]


def question_of_length(n_tokens: int, seed: int = 0) -> str:
    """Synthetic geometry question text cut to about `n_tokens` tokens."""
    tok = tokenizer()
    text, i = "", 0
    while len(tok.encode(text, add_special_tokens=False)) < n_tokens:
        text += ("\n" if text else "") + synth_problems(1, seed + i)[0].prompt
        i += 1
    return tok.decode(tok.encode(text, add_special_tokens=False)[:n_tokens])


# Models shared by the generation and eval sections of one process (built once, freed by `release`).
_MODELS: dict[tuple, tuple[Any, Any]] = {}


def shared_model(settings: Settings, preset: str) -> tuple[Any, Any]:
    """A random model for inference: sequential merge (the seed's `view(b, -1, 4d)`, so both
    generation methods compute the same function) and an untied, sharpened head (clear greedy winners,
    varied text)."""
    key = (preset, settings.device)
    if key not in _MODELS:
        model, processor = build_model(preset, seed=settings.seed, merge_mode="sequential", head_std=0.5)
        _MODELS[key] = (model.to(settings.device).eval(), processor)
    return _MODELS[key]


def release_models() -> None:
    _MODELS.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------- generation
def generation(settings: Settings) -> dict[str, Any]:
    """Tokens/s of `GeoVLM.generate` (image encoded once, KV cache) against the seed's no-cache loop,
    batch 1, `gen_new_tokens` new tokens after one image and a `gen_question_tokens`-token question.

    Both produce exactly `gen_new_tokens` tokens (eos suppressed alike: `min_new_tokens` in one, -inf
    eos logits in the other) and their greedy outputs must agree token for token. The agreement is
    compared in fp32, where both compute the same function up to rounding far below the logit gaps;
    in a bf16 run the fp32 check runs first and the bf16 outputs' agreement is reported.
    """
    from geovlm.processing.conversation import question_messages
    from geovlm.serve.chat import prepare_image, prompt_batch

    device, n = settings.device, settings.gen_new_tokens
    model, processor = shared_model(settings, settings.preset)
    problem = synth_problems(1, settings.seed)[0]
    question = question_of_length(settings.gen_question_tokens, settings.seed)
    batch = prompt_batch(model, processor, [question_messages(question)], [prepare_image(problem.render(224))], ..., n)
    ids, pixels = batch["input_ids"], batch["pixel_values"]
    eos = model.generation_config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])

    def geo(tokens: int) -> torch.Tensor:
        output = model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        return output[:, ids.shape[1] :]

    def seed(tokens: int, step_times: list[float] | None = None) -> torch.Tensor:
        return seed_generate(model, ids, pixels, tokens, suppress_ids=eos_ids, step_times=step_times)

    result: dict[str, Any] = {"prompt_tokens": int(ids.shape[1]), "new_tokens": n, "batch_size": 1,
                              "dtype": settings.dtype}  # fmt: skip
    fp32_agree = None
    if settings.dtype != "fp32":  # the comparison runs in fp32 first, untimed
        model.float()
        with strict_fp32():
            fp32_agree = bool(torch.equal(geo(n), seed(n)))
        model.to(settings.torch_dtype)  # `get_image_features` / `seed_logits` cast the pixels to match

    log(f"generation: prompt {ids.shape[1]} tokens, {n} new; warm-up")
    first_token = [timed(lambda: geo(1), device)[0] for _ in range(2)][-1]  # image + prefill + 1 token
    geo(min(4, n))  # (the seed loop's first step has the same shapes as this prefill: warm as well)
    # Alternated (GeoVLM, seed, GeoVLM, ...) so that background load falls on both.
    geo_run, seed_run = _Timings("geovlm", settings.gen_reps), _Timings("seed loop", settings.seed_gen_reps)
    with strict_fp32() if settings.dtype == "fp32" else contextlib.nullcontext():
        for r in range(max(geo_run.reps, seed_run.reps)):
            geo_run.rep(r, device, lambda _steps: geo(n))
            seed_run.rep(r, device, lambda steps: seed(n, steps))
    geo_out, seed_out, seed_steps = geo_run.output, seed_run.output, seed_run.steps
    agree = bool(torch.equal(geo_out, seed_out))
    result.update(
        geovlm={**geo_run.summary(n), "first_token_seconds": first_token},
        seed={**seed_run.summary(n), "first_token_seconds": seed_steps[0], "median_token_seconds": median(seed_steps),
              "last_token_seconds": seed_steps[-1]},
        speedup=median(seed_run.times) / median(geo_run.times),
        speedup_min=min(seed_run.times) / min(geo_run.times),  # least-disturbed runs of each
        greedy_agree=agree if fp32_agree is None else fp32_agree,  # compared in fp32
        agreement_checked=True,
        agreement_dtype="fp32",
        agree_in_run_dtype=agree,
        first_divergence=_first_divergence(geo_out, seed_out),
        output_ids=geo_out[0].tolist(),
        distinct_output_tokens=len(set(geo_out[0].tolist())),
        load_average=load_average(),
    )  # fmt: skip
    return result


@dataclass
class _Timings:
    """Repeated timed runs of one generation loop, with the other processes' CPU use during each."""

    name: str
    reps: int
    times: list[float] = field(default_factory=list)
    others_cores: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)  # per-token times of the last rep, when recorded
    output: Any = None

    def rep(self, r: int, device: str, run: Any) -> None:
        if r >= self.reps:
            return
        steps: list[float] = []
        with CpuLoad() as load:
            seconds, self.output = timed(lambda: run(steps), device)
        self.times.append(seconds)
        self.others_cores.append(load.others_cores)
        self.steps = steps
        log(f"generation {self.name}: rep {r + 1}/{self.reps} {seconds:.2f} s "
            f"(other processes used {load.others_cores} cores)")  # fmt: skip

    def summary(self, new_tokens: int) -> dict[str, Any]:
        return {"seconds": median(self.times), "min_seconds": min(self.times), "times": self.times,
                "others_cores": self.others_cores, "tokens_per_s": new_tokens / median(self.times)}


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """No TF32 on CUDA while outputs are compared: both methods then round alike (to fp32)."""
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _first_divergence(a: torch.Tensor, b: torch.Tensor) -> int | None:
    diff = (a != b).nonzero()
    return int(diff[0, -1]) if len(diff) else None


# ---------------------------------------------------------------------- batched evaluation
def evaluation(settings: Settings) -> list[dict[str, Any]]:
    """Questions/s of `geovlm.serve.chat.answer` (processor + left-padded `GeoVLM.generate`) with
    every question answered with exactly `eval_new_tokens` tokens (eos suppressed by `min_new_tokens`:
    a random model would otherwise stop at random points)."""
    from geovlm.serve.chat import answer

    rows = []
    problems = synth_problems(max(settings.eval_tiny_questions, *settings.eval_batches), settings.seed + 1)
    images = [p.render(224) for p in problems]
    questions = [p.prompt for p in problems]
    plans = [("tiny", b, max(b, settings.eval_tiny_questions)) for b in settings.eval_tiny_batches]
    if settings.preset != "tiny" or not settings.quick:
        plans += [(settings.preset, b, b) for b in settings.eval_batches]
    else:  # quick mode: the "real size" rows run on the tiny model too, so the code path is exercised
        plans += [("tiny", b, b) for b in settings.eval_batches]
    for preset, batch_size, n_questions in plans:
        model, processor = shared_model(settings, preset)
        if settings.dtype != "fp32":
            model.to(settings.torch_dtype)
        nt = settings.eval_new_tokens

        def run(k: int, tokens: int, model: Any = model, processor: Any = processor, bs: int = batch_size) -> list[str]:
            return answer(model, processor, images[:k], questions[:k], batch_size=bs,
                          max_new_tokens=tokens, min_new_tokens=tokens)  # fmt: skip

        run(batch_size, 2)  # warm-up
        times, others = [], []
        for _ in range(settings.eval_reps):
            with CpuLoad() as load:
                times.append(timed(lambda k=n_questions, t=nt: run(k, t), settings.device)[0])
            others.append(load.others_cores)
        row = {"preset": preset, "batch_size": batch_size, "questions": n_questions, "new_tokens": nt,
               "seconds": median(times), "times": times, "others_cores": others,
               "questions_per_s": n_questions / median(times), "new_tokens_per_s": n_questions * nt / median(times),
               "load_average": load_average()}  # fmt: skip
        log(f"eval {preset} batch {batch_size}: {row['questions_per_s']:.2f} questions/s")
        rows.append(row)
    return rows
