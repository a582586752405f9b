"""`generate_problem` and `iter_problems`: every problem is a pure function of (seed, index).

Each problem draws from its own `random.Random`, seeded by a string made of the seed, the index
and a purpose ("select", "build", "render"), so that the n-th problem is the same whatever else
is generated, in whichever order or process, and rendering never changes the problem.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache

from .caption import caption, caption_prompt
from .choices import numeric_choices
from .exact import Exact
from .families import FAMILIES
from .families.base import PERCEPTION, fmt
from .perception import perceive
from .problem import DIFFICULTIES, LETTERS, STYLES, Problem
from .questions import decorate, question_text, solution_text

DEFAULT_DIFFICULTY = {"perception": 0.25, "one_step": 0.45, "multi_step": 0.30}
POOL_SIZE = 300  # constructions sampled per (family, difficulty) to learn each kind's answers
Choice = str | Sequence[str] | Mapping[str, float] | None


def weights(
    choice: Choice, allowed: Sequence[str], default: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Normalise a name, a list of names or a {name: weight} map into weights over `allowed`."""
    if choice is None:
        out = dict(default) if default else {name: 1.0 for name in allowed}
    elif isinstance(choice, str):
        out = {choice: 1.0}
    elif isinstance(choice, Mapping):
        out = {k: float(v) for k, v in choice.items()}
    else:
        out = {name: 1.0 for name in choice}
    unknown = sorted(set(out) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    if not out or sum(out.values()) <= 0:
        raise ValueError("nothing to choose from")
    return out


def family_weights(family: Choice) -> dict[str, float]:
    """`weights` over the families; None means every family of the default mix."""
    default = {name: 1.0 for name, f in FAMILIES.items() if f.in_default_mix}
    return weights(family, list(FAMILIES), default)


@lru_cache(maxsize=64)
def answer_pool(family: str, difficulty: str) -> dict[str, tuple[Exact, ...]]:
    """Answers of POOL_SIZE fixed-seed constructions, by kind: the prior that "prior" distractors
    are drawn from. Fixed seeds keep it the same in every process, so output stays deterministic."""
    pool: dict[str, list[Exact]] = {}
    build = FAMILIES[family].build
    for i in range(POOL_SIZE):
        c = build(random.Random(f"geovlm.synth/pool/{family}/{difficulty}/{i}"), difficulty)
        pool.setdefault(c.kind, []).append(c.value)
    return {kind: tuple(values) for kind, values in pool.items()}


def _pick(rng: random.Random, w: Mapping[str, float]) -> str:
    names = list(w)
    return rng.choices(names, [w[n] for n in names])[0]


def select(
    seed: int, index: int, family: Choice = None, difficulty: Choice = None, style: Choice = None
) -> tuple[str, str, str]:
    """(family, difficulty, style) of problem `index`: drawn from its own seeded generator."""
    rng = random.Random(f"geovlm.synth/{seed}/{index}/select")
    fam_w = {f: w for f, w in family_weights(family).items() if w > 0}
    diff_w = weights(difficulty, DIFFICULTIES, DEFAULT_DIFFICULTY)
    # Only difficulties some chosen family offers (the shapes family is perception only).
    diff_w = {d: w for d, w in diff_w.items() if w > 0 and any(d in FAMILIES[f].difficulties for f in fam_w)}
    if not diff_w:
        raise ValueError("none of the chosen families offers the chosen difficulty")
    diff = _pick(rng, diff_w)
    fam = _pick(rng, {f: w for f, w in fam_w.items() if diff in FAMILIES[f].difficulties})
    sty = _pick(rng, weights(style, STYLES))
    # Perception answers live only in the diagram, whatever style was asked for.
    return fam, diff, "diagram" if diff == PERCEPTION else sty


def generate_problem(
    seed: int, index: int, family: Choice = None, difficulty: Choice = None, style: Choice = None
) -> Problem:
    """Problem number `index` of the stream `seed`; family, difficulty and style may be fixed or mixed.

    Each of them is a name, a list of names or a {name: weight} map (None: all, with the default
    weights). Perception problems are always "diagram" style. Nothing is rendered here: call
    `problem.render(size)` for the image.
    """
    fam, diff, sty = select(seed, index, family, difficulty, style)
    rng = random.Random(f"geovlm.synth/{seed}/{index}/build")
    pid = f"synth-{seed}-{index:07d}"
    if diff == PERCEPTION:
        p = perceive(fam, rng)
        letter = LETTERS[p.answer_index]
        choices = [fmt(v, p.unit) if isinstance(v, Exact) else v for v in p.choice_values]
        return Problem(
            id=pid,
            seed=seed,
            index=index,
            family=fam,
            kind=p.kind,
            difficulty=diff,
            style=sty,
            question=p.question,
            choices=choices,
            choice_values=p.choice_values,
            answer=letter,
            value=p.value,
            unit=p.unit,
            solution=" ".join([*p.steps, f"Therefore, the answer is: {letter}."]) + f"\nAnswer:{letter}",
            caption=caption(p.figure, p.description),
            caption_prompt=caption_prompt(rng),
            figure=p.figure,
            givens=p.givens,
            target=p.target,
        )
    c = FAMILIES[fam].build(rng, diff)
    figure = decorate(c, sty, rng)
    unit = c.target.unit
    pool = answer_pool(fam, diff).get(c.kind, ())
    values, index_ = numeric_choices(
        rng, c.value, unit, style=sty, mistakes=c.mistakes, upper=c.upper, pool=pool
    )
    letter = LETTERS[index_]
    return Problem(
        id=pid,
        seed=seed,
        index=index,
        family=fam,
        kind=c.kind,
        difficulty=diff,
        style=sty,
        question=question_text(c, sty, rng),
        choices=[fmt(v, unit) for v in values],
        choice_values=list(values),
        answer=letter,
        value=c.value,
        unit=unit,
        solution=solution_text(c, sty, letter),
        caption=caption(figure, c.description),
        caption_prompt=caption_prompt(rng),
        figure=figure,
        givens=list(c.givens),
        target=c.target,
    )


def iter_problems(
    seed: int = 0,
    n: int | None = None,
    *,
    start: int = 0,
    family: Choice = None,
    difficulty: Choice = None,
    style: Choice = None,
) -> Iterator[Problem]:
    """Problems start, start + 1, ... of the stream `seed` (forever when n is None)."""
    indices = itertools.count(start) if n is None else range(start, start + n)
    for index in indices:
        yield generate_problem(seed, index, family, difficulty, style)
