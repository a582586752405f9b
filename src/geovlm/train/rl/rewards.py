"""Verifiable rewards for GRPO: a reply is scored against the record's exact gold answer.

Each function has TRL's reward signature, `(completions, **columns) -> list[float]`: `completions` are
the generated replies (strings, or conversational `[{"role": "assistant", "content": ...}]` lists) and
the dataset's columns arrive as keyword lists, one entry per completion (`answer` holds the gold letter
or exact value, `answer_type` "choice" or "number"). Correctness uses exactly the extraction and
comparison of `geovlm score` (G-LLaVA's letter procedure; `--mode number`'s value comparison), so a
reward of 1 is a point on the scoreboard. A reward never raises: malformed, empty or adversarial text
scores 0.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from geovlm.eval.score import is_correct

logger = logging.getLogger(__name__)

RewardFunction = Callable[..., list[float]]
# A final line "Answer:X" (no space, as Geo170K writes it) or "Answer: <value>" for free answers.
_FINAL_CHOICE = re.compile(r"(?:^|\n)Answer:([A-D])\s*\Z")
_FINAL_VALUE = re.compile(r"(?:^|\n)Answer:\s*(\S[^\n]{0,60})\s*\Z")
MAX_REPLY_CHARS = 20_000  # longer replies score 0 without being parsed


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as is, a conversational message list's last content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # content blocks
            return "".join(b.get("text", "") for b in content if isinstance(b, dict))
        return content if isinstance(content, str) else ""
    return ""


def _safe(score: Callable[[str, Any, str], float]) -> RewardFunction:
    """Apply `score(text, gold, answer_type)` to each completion; anything that raises scores 0."""

    def reward(completions: Sequence[Any], answer: Sequence[Any] | None = None,
               answer_type: Sequence[str] | None = None, **_: Any) -> list[float]:
        golds = list(answer) if answer is not None else [None] * len(completions)
        kinds = list(answer_type) if answer_type is not None else ["choice"] * len(completions)
        out = []
        for completion, gold, kind in zip(completions, golds, kinds, strict=True):
            try:
                text = completion_text(completion)
                out.append(0.0 if gold is None or len(text) > MAX_REPLY_CHARS else float(score(text, gold, kind)))
            except Exception as err:  # a reward must never stop a run
                logger.warning("reward %s scored 0 after %s: %s", score.__name__, type(err).__name__, err)
                out.append(0.0)
        return out

    reward.__name__ = score.__name__.strip("_")
    return reward


def _correct(text: str, gold: Any, kind: str) -> float:
    return float(is_correct(text, gold, kind))  # `geovlm score`'s own decision (an unknown kind raises: 0)


def _format(text: str, gold: Any, kind: str) -> float:
    pattern = _FINAL_CHOICE if kind == "choice" else _FINAL_VALUE
    return float(pattern.search(text.rstrip()) is not None)


accuracy_reward = _safe(_correct)
accuracy_reward.__doc__ = "1 when the reply's answer is the gold one (as `geovlm score` decides), else 0."
format_reward = _safe(_format)
format_reward.__doc__ = "1 when the reply ends with `Answer:X` (choice) or `Answer: <value>` (number), else 0."

REWARDS: dict[str, RewardFunction] = {"accuracy": accuracy_reward, "format": format_reward}


def reward_functions(weights: dict[str, float]) -> tuple[list[RewardFunction], list[float]]:
    """The rewards with non-zero weights, and their weights, in TRL's `reward_funcs` / `reward_weights`
    form. A name is one of `REWARDS` or `module:function` for a reward of one's own (TRL's signature)."""
    chosen = [(_resolve(name), float(w)) for name, w in weights.items() if w]
    if not chosen:
        raise ValueError("every reward weight is 0: nothing to learn from")
    return [f for f, _ in chosen], [w for _, w in chosen]


def _resolve(name: str) -> RewardFunction:
    if name in REWARDS:
        return REWARDS[name]
    module, _, attribute = name.partition(":")
    if not module or not attribute:
        raise ValueError(f"unknown reward {name!r}; choose from {sorted(REWARDS)} or give module:function")
    try:
        function = getattr(importlib.import_module(module), attribute)
    except Exception as err:  # the user's module may raise anything while it is imported
        raise ValueError(f"reward {name!r} cannot be imported: {type(err).__name__}: {err}") from None
    if not callable(function):
        raise ValueError(f"reward {name!r} is not a function")
    return function
