"""Circle theorems: inscribed and central angles, the angle in a semicircle, tangents."""

from __future__ import annotations

import math
import random

from ..exact import Exact
from ..figure import AngleMark, Circle, Figure, Given, Segment, angle
from ..geometry import add, mul, perp, polar
from .base import MULTI_STEP, Construction, Family, deg, letters, nice_int

NAME = "circle_theorems"


def _radius(rng: random.Random) -> float:
    return rng.uniform(2.8, 3.6)


def _inscribed(rng: random.Random) -> Construction:
    a, b, c, d = letters(rng, 4)
    r = _radius(rng)
    y = nice_int(rng, 20, 80)
    t0 = rng.uniform(0, 360)
    pts = {"O": (0.0, 0.0), a: polar(r, t0), b: polar(r, t0 + 2 * y)}
    major = 360 - 2 * y  # C (and D) sit on the major arc, so ∠ACB = ∠AOB / 2
    pts[c] = polar(r, t0 + 2 * y + rng.uniform(35, major - 35))
    roll = rng.random()
    circle = [Circle("O", r)]
    setup = f"{a}, {b} and {c} are points on circle O"
    if roll < 0.35 or roll >= 0.7:
        find_inscribed = roll < 0.35
        central, inscribed = (
            Given(f"∠{a}O{b}", angle(a, "O", b), Exact(2 * y)),
            Given(f"∠{a}{c}{b}", angle(a, c, b), Exact(y)),
        )
        given, target = (central, inscribed) if find_inscribed else (inscribed, central)
        return Construction(
            kind="inscribed_angle" if find_inscribed else "central_angle",
            figure=Figure(
                pts,
                [a, b, c, "O"],
                [Segment("O", a), Segment("O", b), Segment(c, a), Segment(c, b)],
                circles=circle,
            ),
            setup=setup,
            description=f"circle O with points {a}, {b}, {c} on it, the radii O{a}, O{b} and the chords {c}{a}, {c}{b}",
            givens=[given],
            target=target.measure,
            target_name=target.name,
            ask=f"the degree of {target.name}",
            value=target.value,
            steps=[
                f"∠{a}{c}{b} and ∠{a}O{b} stand on the same arc {a}{b}, so ∠{a}{c}{b} = ∠{a}O{b} / 2.",
                f"So ∠{a}{c}{b} = {deg(2 * y)} / 2 = {deg(y)}."
                if find_inscribed
                else f"So ∠{a}O{b} = 2 × {deg(y)} = {deg(2 * y)}.",
            ],
            mistakes=[Exact(4 * y) if find_inscribed else Exact(y), Exact(180 - y)],
            upper=180,
        )
    pts[d] = polar(r, t0 + 2 * y + rng.uniform(35, major - 35))
    while math.dist(pts[c], pts[d]) < r * 0.6:
        pts[d] = polar(r, t0 + 2 * y + rng.uniform(35, major - 35))
    return Construction(
        kind="same_arc",
        figure=Figure(
            pts,
            [a, b, c, d, "O"],
            [Segment(c, a), Segment(c, b), Segment(d, a), Segment(d, b)],
            circles=circle,
        ),
        setup=f"{a}, {b}, {c} and {d} are points on circle O",
        description=f"circle O with points {a}, {b}, {c}, {d} on it and the chords {c}{a}, {c}{b}, {d}{a}, {d}{b}",
        givens=[Given(f"∠{a}{c}{b}", angle(a, c, b), Exact(y))],
        target=angle(a, d, b),
        target_name=f"∠{a}{d}{b}",
        ask=f"the degree of ∠{a}{d}{b}",
        value=Exact(y),
        steps=[
            f"∠{a}{d}{b} and ∠{a}{c}{b} stand on the same arc {a}{b}, so ∠{a}{d}{b} = ∠{a}{c}{b} = {deg(y)}."
        ],
        mistakes=[Exact(2 * y), Exact(180 - y)],
        upper=180,
    )


def _semicircle(rng: random.Random) -> Construction:
    a, b, c = letters(rng, 3)
    r = _radius(rng)
    x = nice_int(rng, 20, 70)
    while x == 45:
        x = nice_int(rng, 20, 70)
    t0 = rng.uniform(0, 360)
    pts = {"O": (0.0, 0.0), a: polar(r, t0 + 180), b: polar(r, t0), c: polar(r, t0 + 2 * x)}
    return Construction(
        kind="semicircle",
        figure=Figure(
            pts,
            [a, b, c, "O"],
            [Segment(a, b), Segment(a, c), Segment(c, b)],
            circles=[Circle("O", r)],
            angles=[AngleMark(a, c, b, right=True)] if rng.random() < 0.5 else [],
        ),
        setup=f"{a}{b} is a diameter of circle O and {c} is a point on the circle",
        description=f"circle O with the diameter {a}{b} and a point {c} on the circle joined to {a} and {b}",
        givens=[Given(f"∠{b}{a}{c}", angle(b, a, c), Exact(x))],
        target=angle(a, b, c),
        target_name=f"∠{a}{b}{c}",
        ask=f"the degree of ∠{a}{b}{c}",
        value=Exact(90 - x),
        steps=[
            f"{a}{b} is a diameter, so ∠{a}{c}{b} = 90°.",
            f"∠{a}{b}{c} = 90° - ∠{b}{a}{c} = 90° - {deg(x)} = {deg(90 - x)}.",
        ],
        mistakes=[Exact(180 - 2 * x), Exact(90 + x)],
        upper=180,
    )


def _tangent(rng: random.Random) -> Construction:
    a, p = letters(rng, 2)
    r = rng.uniform(2.0, 2.8)
    x = nice_int(rng, 25, 65)
    while x == 45:
        x = nice_int(rng, 25, 65)
    t0 = rng.uniform(0, 360)
    pa = polar(r, t0)
    side = rng.choice([-1, 1])
    pp = add(pa, mul(perp(polar(1.0, t0)), side * r / math.tan(math.radians(x))))
    find_o = rng.random() < 0.5
    g = (
        Given(f"∠{a}{p}O", angle(a, p, "O"), Exact(x))
        if find_o
        else Given(f"∠{a}O{p}", angle(a, "O", p), Exact(90 - x))
    )
    t = (
        Given(f"∠{a}O{p}", angle(a, "O", p), Exact(90 - x))
        if find_o
        else Given(f"∠{a}{p}O", angle(a, p, "O"), Exact(x))
    )
    return Construction(
        kind="tangent_radius",
        figure=Figure(
            {"O": (0.0, 0.0), a: pa, p: pp},
            [a, p, "O"],
            [Segment("O", a), Segment(p, a), Segment(p, "O")],
            circles=[Circle("O", r)],
            angles=[AngleMark("O", a, p, right=True)] if rng.random() < 0.5 else [],
        ),
        setup=f"{p}{a} is tangent to circle O at {a}",
        description=f"circle O with the tangent {p}{a} touching it at {a}, and the segments O{a} and O{p}",
        givens=[g],
        target=t.measure,
        target_name=t.name,
        ask=f"the degree of {t.name}",
        value=t.value,
        steps=[
            f"{p}{a} is tangent to circle O at {a}, so O{a} ⊥ {p}{a} and ∠O{a}{p} = 90°.",
            f"{t.name} = 90° - {g.name} = 90° - {deg(g.value)} = {deg(t.value)}.",
        ],
        mistakes=[Exact(180) - g.value, Exact(180) - 2 * t.value if t.value < 90 else Exact(2) * g.value],
        upper=180,
    )


def _isosceles_radius(rng: random.Random) -> Construction:
    a, b, c = letters(rng, 3)
    r = _radius(rng)
    x = nice_int(rng, 15, 70)
    t0 = rng.uniform(0, 360)
    central = 180 - 2 * x
    pts = {"O": (0.0, 0.0), a: polar(r, t0), b: polar(r, t0 + central)}
    pts[c] = polar(r, t0 + central + rng.uniform(40, 360 - central - 40))
    find_inscribed = rng.random() < 0.6
    oab = Given(f"∠O{a}{b}", angle("O", a, b), Exact(x))
    acb = Given(f"∠{a}{c}{b}", angle(a, c, b), Exact(90 - x))
    g, t = (oab, acb) if find_inscribed else (acb, oab)
    steps = (
        [
            f"O{a} = O{b}, so ∠O{b}{a} = ∠O{a}{b} = {deg(x)}.",
            f"∠{a}O{b} = 180° - 2 × {deg(x)} = {deg(central)}.",
            f"∠{a}{c}{b} = ∠{a}O{b} / 2 = {deg(90 - x)}.",
        ]
        if find_inscribed
        else [
            f"∠{a}O{b} = 2∠{a}{c}{b} = 2 × {deg(90 - x)} = {deg(central)}.",
            f"O{a} = O{b}, so ∠O{a}{b} = (180° - {deg(central)}) / 2 = {deg(x)}.",
        ]
    )
    return Construction(
        kind="isosceles_radius",
        figure=Figure(
            pts,
            [a, b, c, "O"],
            [Segment("O", a), Segment("O", b), Segment(a, b), Segment(c, a), Segment(c, b)],
            circles=[Circle("O", r)],
        ),
        setup=f"{a}, {b} and {c} are points on circle O",
        description=f"circle O with the triangle {a}{b}{c} inscribed and the radii O{a}, O{b}",
        givens=[g],
        target=t.measure,
        target_name=t.name,
        ask=f"the degree of {t.name}",
        value=t.value,
        steps=steps,
        mistakes=[Exact(central), Exact(90 + x) if find_inscribed else Exact(2 * x)],
        upper=180,
    )


def _two_tangents(rng: random.Random) -> Construction:
    a, b, c, p = letters(rng, 4)
    r = rng.uniform(2.0, 2.6)
    x = 2 * rng.randint(18, 60)
    phi = rng.uniform(0, 360)
    spread = 90 - x / 2
    pts = {
        "O": (0.0, 0.0),
        p: polar(r / math.sin(math.radians(x / 2)), phi),
        a: polar(r, phi + spread),
        b: polar(r, phi - spread),
    }
    central = 180 - x
    to_inscribed = rng.random() < 0.6
    if to_inscribed:
        pts[c] = polar(r, phi + spread + rng.uniform(40, 360 - 2 * spread - 40))
    steps = [
        f"{p}{a} and {p}{b} are tangents, so ∠O{a}{p} = ∠O{b}{p} = 90°.",
        f"In quadrilateral {a}O{b}{p}, ∠{a}O{b} = 360° - 90° - 90° - {deg(x)} = {deg(central)}.",
    ]
    if to_inscribed:
        steps.append(f"∠{a}{c}{b} = ∠{a}O{b} / 2 = {deg(central // 2)}.")
    marks = [AngleMark("O", a, p, right=True), AngleMark("O", b, p, right=True)] if rng.random() < 0.5 else []
    return Construction(
        kind="two_tangents",
        figure=Figure(
            pts,
            [a, b, c, p, "O"] if to_inscribed else [a, b, p, "O"],
            [Segment(p, a), Segment(p, b), Segment("O", a), Segment("O", b)]
            + ([Segment(c, a), Segment(c, b)] if to_inscribed else []),
            circles=[Circle("O", r)],
            angles=marks,
        ),
        setup=f"{p}{a} and {p}{b} are tangent to circle O at {a} and {b}"
        + (f", and {c} is a point on the circle" if to_inscribed else ""),
        description=f"circle O with two tangents {p}{a} and {p}{b} from the point {p}",
        givens=[Given(f"∠{a}{p}{b}", angle(a, p, b), Exact(x))],
        target=angle(a, c, b) if to_inscribed else angle(a, "O", b),
        target_name=f"∠{a}{c}{b}" if to_inscribed else f"∠{a}O{b}",
        ask=f"the degree of ∠{a}{c}{b}" if to_inscribed else f"the degree of ∠{a}O{b}",
        value=Exact(central // 2 if to_inscribed else central),
        steps=steps,
        mistakes=[Exact(central), Exact(x // 2)] if to_inscribed else [Exact(x), Exact(central // 2)],
        upper=180,
    )


def _diameter_same_arc(rng: random.Random) -> Construction:
    a, b, c, d = letters(rng, 4)
    r = _radius(rng)
    x = nice_int(rng, 20, 70)
    while x == 45:
        x = nice_int(rng, 20, 70)
    beta = 90 - x  # ∠BAC
    t0 = rng.uniform(0, 360)
    pts = {
        "O": (0.0, 0.0),
        a: polar(r, t0 + 180),
        b: polar(r, t0),
        c: polar(r, t0 + 2 * beta),
        d: polar(r, t0 + 180 + rng.uniform(35, 145)),
    }
    return Construction(
        kind="diameter_same_arc",
        figure=Figure(
            pts,
            [a, b, c, d, "O"],
            [Segment(a, b), Segment(a, c), Segment(b, c), Segment(d, b), Segment(d, c)],
            circles=[Circle("O", r)],
        ),
        setup=f"{a}{b} is a diameter of circle O, and {c} and {d} are points on the circle",
        description=f"circle O with the diameter {a}{b}, points {c} and {d} on the circle and the chords {a}{c}, {b}{c}, {d}{b}, {d}{c}",
        givens=[Given(f"∠{a}{b}{c}", angle(a, b, c), Exact(x))],
        target=angle(b, d, c),
        target_name=f"∠{b}{d}{c}",
        ask=f"the degree of ∠{b}{d}{c}",
        value=Exact(beta),
        steps=[
            f"{a}{b} is a diameter, so ∠{a}{c}{b} = 90° and ∠{b}{a}{c} = 90° - {deg(x)} = {deg(beta)}.",
            f"∠{b}{d}{c} and ∠{b}{a}{c} stand on the same arc {b}{c}, so ∠{b}{d}{c} = {deg(beta)}.",
        ],
        mistakes=[Exact(x), Exact(180 - beta)],
        upper=180,
    )


def build(rng: random.Random, difficulty: str) -> Construction:
    if difficulty == MULTI_STEP:
        return rng.choice([_isosceles_radius, _two_tangents, _diameter_same_arc])(rng)
    return rng.choice([_inscribed, _semicircle, _tangent])(rng)


FAMILY = Family(NAME, "circle theorems", build)
