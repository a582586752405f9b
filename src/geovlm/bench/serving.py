"""The serving sections: generation in fp32 / bf16 / int8 weights (`precision`), and concurrent requests
through a live `geovlm serve` against one request at a time (`serve`)."""

from __future__ import annotations

import base64
import copy
import io
import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from geovlm.bench.common import CpuLoad, Settings, load_average, log, median, timed, weight_bytes
from geovlm.bench.inference import question_of_length, shared_model, synth_problems


# ---------------------------------------------------------------------- fp32 / bf16 / int8
def precision(settings: Settings) -> dict[str, Any]:
    """Tokens/s of `GeoVLM.generate` (batch 1, greedy, exactly `precision_new_tokens` tokens) with fp32
    weights (`--dtype bf16`: the whole model in bf16), int8 weights (`--quantize int8`: torchao's int8
    weight-only quantization of the linear layers, the config it passes to `from_pretrained`, and bf16
    vocabulary tables) and bf16 weights computing in fp32 (`--quantize bf16`), alive together and their runs
    alternated; each variant's greedy tokens and first-step logits against fp32's."""
    from geovlm.precision import cpu_flags, quantization_config, quantize_in_place
    from geovlm.processing.conversation import question_messages
    from geovlm.serve.chat import prepare_image, prompt_batch

    n = settings.precision_new_tokens
    model, processor = shared_model(settings, settings.preset)
    model.float()
    problem = synth_problems(1, settings.seed)[0]
    question = question_of_length(settings.gen_question_tokens, settings.seed)
    batch = prompt_batch(model, processor, [question_messages(question)], [prepare_image(problem.render(224))], ..., n)
    variants: dict[str, Any] = {"fp32": model}
    skipped: dict[str, str] = {}
    variants["bf16"] = copy.deepcopy(model).to(torch.bfloat16)
    variants["bf16 weights"] = copy.deepcopy(model)
    quantize_in_place(variants["bf16 weights"], "bf16")
    try:
        quantization_config("int8")
        int8 = copy.deepcopy(model)
        quantize_in_place(int8, "int8")
        variants["int8"] = int8
    except (ValueError, ImportError) as err:
        skipped["int8"] = str(err)

    def inputs_for(m: Any) -> dict[str, Any]:
        return {k: (v.to(m.dtype) if v.is_floating_point() else v) for k, v in batch.items()}

    def run(m: Any, tokens: int) -> torch.Tensor:
        with torch.inference_mode():
            out = m.generate(**inputs_for(m), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        return out[:, batch["input_ids"].shape[1]:]

    with torch.inference_mode():
        logits = {name: m(**inputs_for(m)).logits[0, -1].float() for name, m in variants.items()}
    for m in variants.values():
        run(m, min(4, n))  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    prompt_times: dict[str, list[float]] = {name: [] for name in variants}  # the prompt and one new token
    others: dict[str, list[Any]] = {name: [] for name in variants}
    outputs: dict[str, torch.Tensor] = {}
    order = list(variants)
    for r in range(settings.precision_reps):
        for name in order if r % 2 == 0 else order[::-1]:
            with CpuLoad() as load:
                seconds, outputs[name] = timed(lambda m=variants[name]: run(m, n), settings.device)
            prompt_times[name].append(timed(lambda m=variants[name]: run(m, 1), settings.device)[0])
            times[name].append(seconds)
            others[name].append(load.others_cores)
            log(f"precision {name}: rep {r + 1}/{settings.precision_reps} {seconds:.2f} s")
    fp32_ids = outputs["fp32"][0]
    rows = {}
    for name in variants:
        ids = outputs[name][0]
        diff = (ids != fp32_ids).nonzero()
        rows[name] = {
            "seconds": median(times[name]), "times": times[name], "others_cores": others[name],
            "tokens_per_s": n / median(times[name]),
            "prompt_seconds": median(prompt_times[name]),
            "step_ms": 1000 * (median(times[name]) - median(prompt_times[name])) / max(n - 1, 1),
            "greedy_equal_to_fp32": bool(torch.equal(ids, fp32_ids)),
            "first_divergence": int(diff[0, 0]) if len(diff) else None,
            "max_abs_logit_diff": float((logits[name] - logits["fp32"]).abs().max()),
            "weight_bytes": weight_bytes(variants[name]),
            "logit_scale": float(logits["fp32"].abs().max()),
        }  # fmt: skip
    for row in rows.values():
        row["vs_fp32"] = row["tokens_per_s"] / rows["fp32"]["tokens_per_s"]
        row["memory_vs_fp32"] = row["weight_bytes"] / rows["fp32"]["weight_bytes"]
    notes = [f"{name} generates at {row['vs_fp32']:.2f}x fp32's speed on this CPU: slower, so fp32 stays the default"
             for name, row in rows.items() if name != "fp32" and row["vs_fp32"] < 1]
    for note in notes:
        log(note)
    del variants
    return {"preset": settings.preset, "new_tokens": n, "prompt_tokens": int(batch["input_ids"].shape[1]),
            "cpu_flags": cpu_flags(), "rows": rows, "skipped": skipped, "notes": notes,
            "load_average": load_average()}  # fmt: skip


# ---------------------------------------------------------------------- concurrent requests
def _data_url(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def concurrency(settings: Settings) -> dict[str, Any]:
    """`serve_requests` different questions (each with its own diagram) answered with `serve_new_tokens`
    tokens at most: one at a time through `chat` (what `geovlm ask` runs, no HTTP), then all at once as
    concurrent HTTP requests to a live `geovlm serve` (uvicorn in a thread, its batching worker). Reports
    generated tokens/s of both, the batch sizes the server ran, and whether every server answer equals
    `chat`'s greedy answer."""
    try:
        import uvicorn

        from geovlm.serve.server import ServeSettings, create_app
    except ImportError as err:
        return {"skipped": f"needs the serve extra (fastapi, uvicorn): {err}"}
    from geovlm.serve.chat import conversation, generation_options, prepare_image, prompt_batch

    k, n = settings.serve_requests, settings.serve_new_tokens
    model, processor = shared_model(settings, settings.preset)
    model.float()
    problems = synth_problems(k, settings.seed + 7)
    images = [prepare_image(p.render(224)) for p in problems]
    questions = [p.prompt for p in problems]

    eos = model.generation_config.eos_token_id
    eos_ids = {eos} if isinstance(eos, int) else set(eos or [])

    def one(image: Any, question: str, tokens: int) -> tuple[str, int]:
        """`chat`'s reply (the same calls; `geovlm ask` streams the same generation) and its token count."""
        messages = conversation(processor, question, with_image=True)
        batch = prompt_batch(model, processor, [messages], [image], ..., tokens)
        with torch.inference_mode():
            out = model.generate(**batch, **generation_options(max_new_tokens=tokens))[0, batch["input_ids"].shape[1]:]
        ids = out.tolist()
        count = next((i for i, t in enumerate(ids) if t in eos_ids), len(ids))
        return processor.decode(out, skip_special_tokens=True), count

    one(images[0], questions[0], 2)  # warm-up
    singles, single_tokens = [], 0
    start = time.perf_counter()
    with CpuLoad() as load_single:
        for image, question in zip(images, questions, strict=True):
            reply, count = one(image, question, n)
            singles.append(reply)
            single_tokens += count
    single_seconds = time.perf_counter() - start

    app = create_app(model, processor, ServeSettings(model_name="bench", max_batch=k, max_tokens_limit=max(n, 16),
                                                     gather_seconds=0.1))  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]

    def ask(i: int, tokens: int = n) -> dict[str, Any]:
        body = {"model": "bench", "max_tokens": tokens, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": _data_url(images[i])}}, {"type": "text", "text": questions[i]}]}]}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=3600) as response:
            return json.loads(response.read())

    try:
        ask(0, 2)  # warm-up through the server
        batcher = app.state.batcher
        before = dict(batcher.stats["batch_sizes"])
        start = time.perf_counter()
        with CpuLoad() as load_many, ThreadPoolExecutor(k) as pool:
            replies = list(pool.map(ask, range(k)))
        many_seconds = time.perf_counter() - start
        sizes = {size: count - before.get(size, 0) for size, count in batcher.stats["batch_sizes"].items()
                 if count - before.get(size, 0)}  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(60)
    texts = [r["choices"][0]["message"]["content"] for r in replies]
    many_tokens = sum(r["usage"]["completion_tokens"] for r in replies)
    single_rate, many_rate = single_tokens / single_seconds, many_tokens / many_seconds
    result = {
        "preset": settings.preset, "requests": k, "max_tokens": n,
        "one_at_a_time": {"seconds": single_seconds, "tokens": single_tokens, "tokens_per_s": single_rate,
                          "others_cores": load_single.others_cores},
        "concurrent": {"seconds": many_seconds, "tokens": many_tokens, "tokens_per_s": many_rate,
                       "batch_sizes": sizes, "others_cores": load_many.others_cores},
        "speedup": many_rate / single_rate,
        "answers_equal": texts == singles,
        "unequal": [i for i, (a, b) in enumerate(zip(texts, singles, strict=True)) if a != b],
        "load_average": load_average(),
    }  # fmt: skip
    log(f"serve: one at a time {single_rate:.2f} tokens/s, {k} concurrent {many_rate:.2f} tokens/s "
        f"({result['speedup']:.2f}x), batches {sizes}, answers equal: {result['answers_equal']}")
    return result

