"""Four choices per question: the answer plus three rule-based distractors.

A distractor set must not give the answer away to a reader who never looks at the diagram, so
each rule builds a *symmetric* set in which the answer takes a random role:

- progression: v + (i - j)·step for i = 0..3, the answer at a random rank j (neighbouring values,
  arithmetic slips);
- pairs: {v, f(v), w, f(w)} with f the supplement, the complement, double or half and w a
  neighbour of v, so every choice has a partner and none is the "centre" the others derive from;
- mistakes: {v, m, v + d, m + d} with m the answer of a typical slip (wrong rule, wrong side);
- prior: three answers of other problems of the same kind (what this answer could have been),
  which makes the four choices exchangeable for a reader who cannot see the given values.

All four choices share the answer's form (integer, fraction, surd, multiple of π, sum), lie in
the range the question allows, and are distinct as printed. The answer's letter is drawn
uniformly, the other three fill the remaining letters in random order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from fractions import Fraction

from .exact import Exact, Key

LETTERS = "ABCD"

# Structure weights. Diagram questions lean on the prior, the structure that leaks nothing to a
# blind reader; text questions use more of the textbook slips.
WEIGHTS = {
    "text": {"prior": 0.25, "progression": 0.3, "pair": 0.25, "mistake": 0.2},
    "diagram": {"prior": 0.65, "progression": 0.2, "pair": 0.1, "mistake": 0.05},
}


def _steps(coeff: Fraction, unit: str) -> list[Fraction]:
    """Plausible gaps between neighbouring choices for a coefficient of this size."""
    if coeff.denominator != 1:
        base = Fraction(1, coeff.denominator)
        return [base, 2 * base, 3 * base] if abs(coeff) < 2 else [2 * base, 1, 2]
    m = abs(coeff)
    if unit == "°":
        return [Fraction(s) for s in ((5, 10, 10, 15, 20) if m % 5 == 0 else (1, 2, 3, 5, 10))]
    if m <= 6:
        return [Fraction(1), Fraction(1), Fraction(2)]
    if m <= 20:
        return [Fraction(s) for s in (1, 2, 3)]
    if m <= 60:
        return [Fraction(s) for s in (2, 4, 5, 10)]
    return [Fraction(s) for s in (5, 10, 20)]


def _shift(v: Exact, key: Key, delta: Fraction) -> Exact:
    return v.with_coeff(key, v.coeff(key) + delta)


def progression(rng: random.Random, v: Exact, unit: str) -> list[Exact]:
    """Four values a step apart along v's main term, v at a random rank."""
    key = v.main_key()
    step = rng.choice(_steps(v.coeff(key), unit))
    j = rng.randrange(4)
    return [_shift(v, key, (i - j) * step) for i in range(4)]


def _neighbour(rng: random.Random, v: Exact, unit: str) -> Exact:
    key = v.main_key()
    return _shift(v, key, rng.choice((-1, 1)) * rng.choice(_steps(v.coeff(key), unit)))


def pair(rng: random.Random, v: Exact, unit: str) -> list[Exact]:
    """{v, f(v), w, f(w)}: f the supplement or complement (angles), double or half (the rest)."""
    rules: list[Callable[[Exact], Exact]] = []
    if unit == "°":
        rules += [lambda x: 180 - x] * 2
        if float(v) < 90:
            rules.append(lambda x: 90 - x)
    else:
        rules += [lambda x: x * 2, lambda x: x / 2]
    f = rng.choice(rules)
    w = _neighbour(rng, v, unit)
    return [v, f(v), w, f(w)]


def mistake(rng: random.Random, v: Exact, unit: str, mistakes: Sequence[Exact]) -> list[Exact] | None:
    """{v, m, v + d, m + d} for a slip's answer m, so that v and m play the same role."""
    usable = [m for m in mistakes if m != v and m.form() == v.form()]
    if not usable:
        return None
    m = rng.choice(usable)
    key = v.main_key()
    if m.main_key() != key:  # both must move along the same term (e.g. both multiples of π)
        return None
    delta = rng.choice((-1, 1)) * rng.choice(_steps(v.coeff(key), unit))
    return [v, m, _shift(v, key, delta), _shift(m, key, delta)]


def prior(rng: random.Random, v: Exact, pool: Sequence[Exact]) -> list[Exact] | None:
    """v and three other answers drawn (by frequency) from `pool`, answers of the same kind."""
    form = v.form()
    usable = [x for x in pool if x != v and x.form() == form]
    picked: list[Exact] = []
    for _ in range(40):
        if len(picked) == 3 or not usable:
            break
        x = rng.choice(usable)
        if x not in picked:
            picked.append(x)
    return [v, *picked] if len(picked) == 3 else None


def _valid(values: Sequence[Exact] | None, v: Exact, unit: str, upper: float | None) -> bool:
    if values is None or len(set(values)) != 4 or len({str(x) for x in values}) != 4:
        return False
    form = v.form()
    for x in values:
        fx = float(x)
        if x.form() != form or fx <= 1e-9 or (upper is not None and fx >= upper - 1e-9):
            return False
        if unit == "°" and fx >= 180 - 1e-9:
            return False
    return True


def numeric_choices(
    rng: random.Random,
    v: Exact,
    unit: str,
    *,
    style: str = "text",
    mistakes: Sequence[Exact] = (),
    upper: float | None = None,
    pool: Sequence[Exact] = (),
) -> tuple[list[Exact], int]:
    """Four distinct values in letter order and the index of the answer among them.

    `mistakes` are answers of typical slips, `pool` answers of other problems of the same kind.
    """
    weights = WEIGHTS["diagram" if style == "diagram" else "text"]
    names = list(weights)
    values: list[Exact] | None = None
    for _ in range(12):
        kind = rng.choices(names, [weights[n] for n in names])[0]
        if kind == "prior":
            values = prior(rng, v, pool)
        elif kind == "progression":
            values = progression(rng, v, unit)
        elif kind == "pair":
            values = pair(rng, v, unit)
        else:
            values = mistake(rng, v, unit, mistakes)
        if _valid(values, v, unit, upper):
            break
    else:
        values = _fallback(rng, v, unit, upper)
    assert values is not None
    return place(rng, v, [x for x in values if x != v])


def _fallback(rng: random.Random, v: Exact, unit: str, upper: float | None) -> list[Exact]:
    """Small steps, upwards or downwards from the answer: always possible for a positive answer."""
    key = v.main_key()
    coeff = v.coeff(key)
    base = Fraction(1, coeff.denominator)
    for step in (base, base / 2, base / 4, base / 8):
        for j in rng.sample(range(4), 4):
            values = [_shift(v, key, (i - j) * step) for i in range(4)]
            if _valid(values, v, unit, upper):
                return values
    raise ValueError(f"cannot find four choices around {v} (unit {unit!r}, upper {upper})")


def place(rng: random.Random, answer, others: list) -> tuple[list, int]:
    """Put the answer at a uniformly drawn letter and the others, shuffled, around it."""
    index = rng.randrange(4)
    rest = list(others)[:3]
    rng.shuffle(rest)
    rest.insert(index, answer)
    return rest, index


def categorical_choices(rng: random.Random, answer: str, pool: Sequence[str]) -> tuple[list[str], int]:
    """The answer and three other names from `pool`, at a uniformly drawn letter."""
    others = rng.sample([p for p in pool if p != answer], 3)
    return place(rng, answer, others)
