"""Right triangles: Pythagoras with integer or simple-surd sides, chains of right triangles."""

from __future__ import annotations

import random

from ..exact import Exact, split_square
from ..figure import AngleMark, Figure, Given, Segment, length
from ..geometry import add, foot, mul, perp, polar, sub, unit
from .base import MULTI_STEP, Construction, Family, cm, letters, triangle_word

NAME = "right_triangle"

TRIPLES = [(3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25), (20, 21, 29), (9, 40, 41)]
MAX_RADICAND = 30  # "simple surd": k·√m with m at most this


def simple_root(n: int) -> Exact | None:
    """√n when it is an integer or a simple surd, else None."""
    k, m = split_square(n)
    return Exact.sqrt(n) if m <= MAX_RADICAND and k <= 12 else None


def triple(rng: random.Random, limit: int = 30) -> tuple[int, int, int]:
    base = rng.choice([t for t in TRIPLES if t[2] <= limit])
    k = rng.randint(1, max(1, limit // base[2]))
    a, b, c = (k * v for v in base)
    return (a, b, c) if rng.random() < 0.5 else (b, a, c)


def _legs(rng: random.Random) -> tuple[int, int, Exact]:
    if rng.random() < 0.5:
        a, b, c = triple(rng)
        return a, b, Exact(c)
    while True:
        a, b = rng.randint(1, 12), rng.randint(1, 12)
        c = simple_root(a * a + b * b)
        if c is not None:
            return a, b, c


def _hyp_and_leg(rng: random.Random) -> tuple[int, int, Exact]:
    """(hypotenuse, leg, other leg) with integer hypotenuse and leg."""
    if rng.random() < 0.5:
        a, b, c = triple(rng)
        return c, a, Exact(b)
    while True:
        c = rng.randint(3, 20)
        a = rng.randint(1, c - 1)
        b = simple_root(c * c - a * a)
        if b is not None:
            return c, a, b


def _right_triangle(rng: random.Random, leg_r_p: float, leg_r_q: float) -> tuple[list[str], dict, str]:
    """Names (right-angle vertex first) and coordinates of a right triangle; the letters are shuffled."""
    names = letters(rng, 3)
    order = names[:]
    rng.shuffle(order)  # which letter carries the right angle varies
    r, p, q = order
    pts = {r: (0.0, 0.0), p: (leg_r_p, 0.0), q: (0.0, leg_r_q)}
    return [r, p, q], pts, f"{triangle_word(rng)}{''.join(names)}"


def _one_step(rng: random.Random) -> Construction:
    find_hyp = rng.random() < 0.5
    if find_hyp:
        a, b, c = _legs(rng)
        (r, p, q), pts, tri = _right_triangle(rng, a, b)
        givens = [Given(f"{r}{p}", length(r, p), Exact(a)), Given(f"{r}{q}", length(r, q), Exact(b))]
        target, tname, value = length(p, q), f"{p}{q}", c
        steps = [
            f"In right {tri}, ∠{r} = 90°, so {p}{q}² = {r}{p}² + {r}{q}² = {a}² + {b}² = {a * a + b * b}.",
            f"So {p}{q} = √{a * a + b * b} = {cm(c)}." if not c.is_integer() else f"So {p}{q} = {cm(c)}.",
        ]
        mistakes = [Exact(a + b), Exact.sqrt(abs(a * a - b * b)) if a != b else Exact(2 * a)]
    else:
        c_len, a, b = _hyp_and_leg(rng)
        (r, p, q), pts, tri = _right_triangle(rng, a, float(b))
        givens = [Given(f"{p}{q}", length(p, q), Exact(c_len)), Given(f"{r}{p}", length(r, p), Exact(a))]
        target, tname, value = length(r, q), f"{r}{q}", b
        sq = c_len * c_len - a * a
        steps = [
            f"In right {tri}, ∠{r} = 90°, so {r}{q}² = {p}{q}² - {r}{p}² = {c_len}² - {a}² = {sq}.",
            f"So {r}{q} = √{sq} = {cm(b)}." if not b.is_integer() else f"So {r}{q} = {cm(b)}.",
        ]
        mistakes = [Exact.sqrt(c_len * c_len + a * a), Exact(c_len - a)]
    return Construction(
        kind="hypotenuse" if find_hyp else "leg",
        figure=Figure(
            pts,
            [r, p, q],
            [Segment(r, p), Segment(p, q), Segment(q, r)],
            angles=[AngleMark(p, r, q, right=True)],
        ),
        setup=f"in {tri}, ∠{r} is a right angle",
        description=f"right triangle {tri.removeprefix('△').removeprefix('triangle ')} with the right angle at {r}",
        givens=givens,
        target=target,
        target_name=tname,
        ask=f"the length of {tname}",
        value=value,
        steps=steps,
        mistakes=mistakes,
    )


def _chain(rng: random.Random) -> Construction:
    """A GeomVerse-style chain: each right triangle is built on the previous hypotenuse."""
    depth = 2 if rng.random() < 0.7 else 3
    while True:
        legs = [rng.randint(1, 9) for _ in range(depth + 1)]
        answer = simple_root(sum(v * v for v in legs))
        # Legs of similar size keep every triangle of the chain visible.
        if answer is not None and max(legs) <= 3 * min(legs):
            break
    names = letters(rng, depth + 2)
    apex, chain = names[0], names[1:]
    turn = rng.choice([-1, 1])
    pts = {apex: (0.0, 0.0), chain[0]: polar(legs[0], rng.uniform(0, 360))}
    segments = [Segment(apex, chain[0])]
    marks, givens, steps = [], [Given(f"{apex}{chain[0]}", length(apex, chain[0]), Exact(legs[0]))], []
    square = legs[0] ** 2
    for i in range(1, depth + 1):
        prev, cur = chain[i - 1], chain[i]
        # The new leg stands at right angles on the previous hypotenuse apex→prev.
        pts[cur] = add(pts[prev], mul(perp(unit(sub(pts[prev], pts[apex]))), turn * legs[i]))
        segments += [Segment(prev, cur), Segment(apex, cur)]
        marks.append(AngleMark(apex, prev, cur, right=True))
        givens.append(Given(f"{prev}{cur}", length(prev, cur), Exact(legs[i])))
        new = square + legs[i] ** 2
        known = f"{legs[0]}²" if i == 1 else str(square)
        steps.append(
            f"In right △{apex}{prev}{cur}, {apex}{cur}² = {apex}{prev}² + {prev}{cur}² = {known} + {legs[i]}² = {new}."
        )
        square = new
    last = f"{apex}{chain[-1]}"
    steps.append(
        f"So {last} = √{square} = {cm(answer)}." if not answer.is_integer() else f"So {last} = {cm(answer)}."
    )
    perps = ", ".join(f"{apex}{chain[i - 1]} ⊥ {chain[i - 1]}{chain[i]}" for i in range(1, depth + 1))
    return Construction(
        kind=f"chain_{depth}",
        figure=Figure(pts, names, segments, angles=marks),
        setup=f"{perps}",
        description=f"a chain of {('two' if depth == 2 else 'three')} right triangles sharing the vertex {apex}",
        givens=givens,
        target=length(apex, chain[-1]),
        target_name=last,
        ask=f"the length of {last}",
        value=answer,
        steps=steps,
        mistakes=[Exact(sum(legs)), Exact.sqrt(legs[-1] ** 2 + legs[-2] ** 2)],
        mark_target=False,
    )


def _altitude(rng: random.Random) -> Construction:
    a_len, b_len, c_len = triple(rng, limit=26)
    names = letters(rng, 4)
    a, b, c, d = names
    pts = {c: (0.0, 0.0), a: (float(a_len), 0.0), b: (0.0, float(b_len))}
    pts[d] = foot(pts[c], pts[a], pts[b])
    value = Exact(a_len * b_len) / c_len
    tri = f"{triangle_word(rng)}{a}{b}{c}"
    return Construction(
        kind="altitude_to_hypotenuse",
        figure=Figure(
            pts,
            names,
            [Segment(a, b), Segment(b, c), Segment(c, a), Segment(c, d)],
            angles=[AngleMark(a, c, b, right=True), AngleMark(c, d, b, right=True)],
        ),
        setup=f"in {tri}, ∠{c} is a right angle and {c}{d} ⊥ {a}{b} at {d}",
        description=f"right triangle {a}{b}{c} with the right angle at {c} and the height {c}{d} to the hypotenuse",
        givens=[Given(f"{a}{c}", length(a, c), Exact(a_len)), Given(f"{b}{c}", length(b, c), Exact(b_len))],
        target=length(c, d),
        target_name=f"{c}{d}",
        ask=f"the length of {c}{d}",
        value=value,
        steps=[
            f"{a}{b} = √({a_len}² + {b_len}²) = {cm(c_len)}.",
            f"The area of {tri} is {a}{c} × {b}{c} / 2 = {a}{b} × {c}{d} / 2.",
            f"So {c}{d} = {a_len} × {b_len} / {c_len} = {cm(value)}.",
        ],
        mistakes=[Exact(a_len * b_len) / 2 / c_len, Exact(a_len * a_len) / c_len],
        mark_target=False,
    )


def build(rng: random.Random, difficulty: str) -> Construction:
    if difficulty == MULTI_STEP:
        return _chain(rng) if rng.random() < 0.6 else _altitude(rng)
    return _one_step(rng)


FAMILY = Family(NAME, "right triangles (Pythagoras)", build)
