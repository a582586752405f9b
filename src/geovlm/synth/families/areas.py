"""Perimeter and area of triangles, rectangles, trapezoids and circles (π kept exact)."""

from __future__ import annotations

import random

from ..exact import Exact
from ..figure import AngleMark, Circle, Figure, Fill, Given, Measure, Segment, Tick, area, length, perimeter
from ..geometry import foot, polar
from .base import MULTI_STEP, Construction, Family, cm, fmt, letters, triangle_word
from .right_triangles import triple

NAME = "perimeter_area"


def cm2(value: Exact | int) -> str:
    return fmt(value, "cm²")


def _rectangle(rng: random.Random) -> Construction:
    a, b, c, d = letters(rng, 4)
    w, h = rng.randint(2, 15), rng.randint(2, 12)
    while w == h or max(w, h) > 3 * min(w, h):  # a square or a sliver is not the rectangle asked for
        w, h = rng.randint(2, 15), rng.randint(2, 12)
    pts = {a: (0.0, float(h)), b: (0.0, 0.0), c: (float(w), 0.0), d: (float(w), float(h))}
    name = f"{a}{b}{c}{d}"
    fig = Figure(
        pts,
        [a, b, c, d],
        [Segment(a, b), Segment(b, c), Segment(c, d), Segment(d, a)],
        angles=[AngleMark(a, b, c, right=True)] if rng.random() < 0.5 else [],
        polygon=(a, b, c, d),
    )
    givens = [Given(f"{b}{c}", length(b, c), Exact(w)), Given(f"{a}{b}", length(a, b), Exact(h))]
    if rng.random() < 0.5:
        return Construction(
            kind="rectangle_area",
            figure=fig,
            setup=f"{name} is a rectangle",
            description=f"rectangle {name}",
            givens=givens,
            target=area(a, b, c, d),
            target_name=f"the area of rectangle {name}",
            ask=f"the area of rectangle {name}",
            value=Exact(w * h),
            steps=[f"The area of rectangle {name} is {b}{c} × {a}{b} = {w} × {h} = {cm2(w * h)}."],
            mistakes=[Exact(2 * (w + h)), Exact(w * h // 2) if w * h % 2 == 0 else Exact(w * h + w)],
            mark_target=False,
        )
    return Construction(
        kind="rectangle_perimeter",
        figure=fig,
        setup=f"{name} is a rectangle",
        description=f"rectangle {name}",
        givens=givens,
        target=perimeter(a, b, c, d),
        target_name=f"the perimeter of rectangle {name}",
        ask=f"the perimeter of rectangle {name}",
        value=Exact(2 * (w + h)),
        steps=[f"The perimeter of rectangle {name} is 2 × ({w} + {h}) = {cm(2 * (w + h))}."],
        mistakes=[Exact(w + h), Exact(w * h)],
        mark_target=False,
    )


def _triangle_area(rng: random.Random) -> Construction:
    a, b, c, d = letters(rng, 4)
    base = rng.randint(3, 16)
    height = rng.randint(max(2, -(-3 * base // 10)), min(14, base + 2))  # 0.3·base ≤ height: no sliver
    if base * height % 2 and rng.random() < 0.7:
        base += 1  # textbook areas are mostly whole numbers
    foot_x = rng.uniform(0.15, 0.85) * base
    pts = {b: (0.0, 0.0), c: (float(base), 0.0), a: (foot_x, float(height)), d: (foot_x, 0.0)}
    tri = f"{triangle_word(rng)}{a}{b}{c}"
    value = Exact(base * height) / 2
    return Construction(
        kind="triangle_area",
        figure=Figure(
            pts,
            [a, b, c, d],
            [Segment(a, b), Segment(b, c), Segment(c, a), Segment(a, d, dashed=rng.random() < 0.5)],
            angles=[AngleMark(a, d, c, right=True)],
        ),
        setup=f"in {tri}, {a}{d} ⊥ {b}{c} at {d}",
        description=f"triangle {a}{b}{c} with the height {a}{d} on {b}{c}",
        givens=[Given(f"{b}{c}", length(b, c), Exact(base)), Given(f"{a}{d}", length(a, d), Exact(height))],
        target=area(a, b, c),
        target_name=f"the area of {tri}",
        ask=f"the area of {tri}",
        value=value,
        steps=[f"The area of {tri} is {b}{c} × {a}{d} / 2 = {base} × {height} / 2 = {cm2(value)}."],
        mistakes=[Exact(base * height), value + base],
        mark_target=False,
    )


def _trapezoid(rng: random.Random) -> Construction:
    a, b, c, d, e = letters(rng, 5)
    bottom = rng.randint(4, 16)
    top = rng.randint(2, bottom - 1)
    height = rng.randint(max(2, -(-3 * bottom // 10)), min(12, bottom))  # neither flat nor tall
    if (top + bottom) * height % 2 and rng.random() < 0.7:
        height += 1
    # The foot E of the height must fall inside BC, away from B so that their labels do not clash.
    shift = rng.uniform(0.15, 0.6) * bottom
    pts = {
        b: (0.0, 0.0),
        c: (float(bottom), 0.0),
        a: (shift, float(height)),
        d: (shift + top, float(height)),
    }
    pts[e] = foot(pts[a], pts[b], pts[c])
    value = Exact((top + bottom) * height) / 2
    name = f"{a}{b}{c}{d}"
    return Construction(
        kind="trapezoid_area",
        figure=Figure(
            pts,
            [a, b, c, d, e],
            [
                Segment(a, b),
                Segment(b, c),
                Segment(c, d),
                Segment(d, a),
                Segment(a, e, dashed=rng.random() < 0.5),
            ],
            angles=[AngleMark(a, e, c, right=True)],
        ),
        setup=f"in trapezoid {name}, {a}{d} ∥ {b}{c} and {a}{e} ⊥ {b}{c} at {e}",
        description=f"trapezoid {name} with {a}{d} parallel to {b}{c} and the height {a}{e}",
        givens=[
            Given(f"{a}{d}", length(a, d), Exact(top)),
            Given(f"{b}{c}", length(b, c), Exact(bottom)),
            Given(f"{a}{e}", length(a, e), Exact(height)),
        ],
        target=area(a, b, c, d),
        target_name=f"the area of trapezoid {name}",
        ask=f"the area of trapezoid {name}",
        value=value,
        steps=[
            f"The area of trapezoid {name} is ({a}{d} + {b}{c}) × {a}{e} / 2 = "
            f"({top} + {bottom}) × {height} / 2 = {cm2(value)}."
        ],
        mistakes=[Exact((top + bottom) * height), Exact(bottom * height)],
        mark_target=False,
    )


def _circle(rng: random.Random, diameter: bool) -> Construction:
    a, b = letters(rng, 2)
    r = rng.randint(1, 12) if not diameter else rng.randint(1, 10)
    size = 2 * r if diameter else r
    t0 = rng.uniform(0, 360)
    pts = {"O": (0.0, 0.0), a: polar(float(r), t0), b: polar(float(r), t0 + 180)}
    want_area = rng.random() < 0.5
    if diameter:
        given = Given(f"{a}{b}", length(a, b), Exact(size))
        segs, labelled = [Segment(a, b)], [a, b, "O"]
        first = [f"The radius is {a}{b} / 2 = {cm(size)} / 2 = {cm(r)}."]
    else:
        given = Given(f"O{a}", length("O", a), Exact(r))
        segs, labelled = [Segment("O", a)], [a, "O"]
        first = []
    value = Exact.pi(r * r) if want_area else Exact.pi(2 * r)
    what = "area" if want_area else "circumference"
    formula = f"π × {r}² = {cm2(value)}" if want_area else f"2π × {r} = {cm(value)}"
    return Construction(
        kind=("circle_diameter_" if diameter else "circle_") + what,
        figure=Figure(
            {k: v for k, v in pts.items() if k in labelled}, labelled, segs, circles=[Circle("O", r)]
        ),
        setup=f"{a}{b} is a diameter of circle O" if diameter else f"O{a} is a radius of circle O",
        description=f"circle O with the diameter {a}{b}" if diameter else f"circle O with the radius O{a}",
        givens=[given],
        target=Measure("circle_area" if want_area else "circumference", ("O", a)),
        target_name=f"the {what} of circle O",
        ask=f"the {what} of circle O",
        value=value,
        steps=[*first, f"The {what} of circle O is {formula}."],
        mistakes=[
            Exact.pi(2 * r) if want_area else Exact.pi(r * r),
            Exact.pi(size * size if diameter else r),
        ],
        mark_target=False,
    )


def _right_triangle_area(rng: random.Random) -> Construction:
    a, b, c = letters(rng, 3)
    leg1, leg2, hyp = triple(rng, limit=26)
    pts = {c: (0.0, 0.0), a: (float(leg1), 0.0), b: (0.0, float(leg2))}
    tri = f"{triangle_word(rng)}{a}{b}{c}"
    value = Exact(leg1 * leg2) / 2
    return Construction(
        kind="right_triangle_area",
        figure=Figure(
            pts,
            [a, b, c],
            [Segment(a, b), Segment(b, c), Segment(c, a)],
            angles=[AngleMark(a, c, b, right=True)],
        ),
        setup=f"in {tri}, ∠{c} is a right angle",
        description=f"right triangle {a}{b}{c} with the right angle at {c}",
        givens=[Given(f"{a}{b}", length(a, b), Exact(hyp)), Given(f"{a}{c}", length(a, c), Exact(leg1))],
        target=area(a, b, c),
        target_name=f"the area of {tri}",
        ask=f"the area of {tri}",
        value=value,
        steps=[
            f"{b}{c} = √({a}{b}² - {a}{c}²) = √({hyp}² - {leg1}²) = {cm(leg2)}.",
            f"The area of {tri} is {a}{c} × {b}{c} / 2 = {leg1} × {leg2} / 2 = {cm2(value)}.",
        ],
        mistakes=[Exact(leg1 * hyp) / 2, Exact(leg1 * leg2)],
        mark_target=False,
    )


def _rectangle_diagonal(rng: random.Random) -> Construction:
    a, b, c, d = letters(rng, 4)
    w, h, diag = triple(rng, limit=26)
    pts = {a: (0.0, float(h)), b: (0.0, 0.0), c: (float(w), 0.0), d: (float(w), float(h))}
    name = f"{a}{b}{c}{d}"
    want_area = rng.random() < 0.5
    value = Exact(w * h) if want_area else Exact(2 * (w + h))
    last = (
        f"The area of rectangle {name} is {w} × {h} = {cm2(value)}."
        if want_area
        else f"The perimeter of rectangle {name} is 2 × ({w} + {h}) = {cm(value)}."
    )
    what = "area" if want_area else "perimeter"
    return Construction(
        kind=f"rectangle_diagonal_{what}",
        figure=Figure(
            pts,
            [a, b, c, d],
            [Segment(a, b), Segment(b, c), Segment(c, d), Segment(d, a), Segment(a, c)],
            angles=[AngleMark(a, b, c, right=True)] if rng.random() < 0.5 else [],
        ),
        setup=f"{name} is a rectangle with the diagonal {a}{c}",
        description=f"rectangle {name} with the diagonal {a}{c}",
        givens=[Given(f"{a}{c}", length(a, c), Exact(diag)), Given(f"{b}{c}", length(b, c), Exact(w))],
        target=area(a, b, c, d) if want_area else perimeter(a, b, c, d),
        target_name=f"the {what} of rectangle {name}",
        ask=f"the {what} of rectangle {name}",
        value=value,
        steps=[f"In right △{a}{b}{c}, {a}{b} = √({diag}² - {w}²) = {cm(h)}.", last],
        mistakes=[Exact(diag * w), Exact(2 * (w + diag))]
        if want_area
        else [Exact(2 * (w + diag)), Exact(w * h)],
        mark_target=False,
    )


def _shaded(rng: random.Random) -> Construction:
    a, b, c, d = letters(rng, 4)
    s = 2 * rng.randint(1, 6)
    t0 = rng.uniform(0, 90)
    square_in_circle = rng.random() < 0.5
    name = f"{a}{b}{c}{d}"
    if square_in_circle:
        # Square inscribed in the circle: r = s√2/2, shaded = πr² - s² = πs²/2 - s².
        r = s / 2**0.5
        pts = {"O": (0.0, 0.0), **{n: polar(r, t0 + 90 * i) for i, n in enumerate((a, b, c, d))}}
        value = Exact.pi(s * s // 2) - s * s
        fills = [Fill(center="O", radius=r), Fill(points=(a, b, c, d), shade=255)]
        target = Measure("difference", parts=(Measure("circle_area", ("O", a)), area(a, b, c, d)))
        setup = f"square {name} is inscribed in circle O"
        steps = [
            f"The diagonal {a}{c} is a diameter: {a}{c} = √2 × {cm(s)}, so the radius is {cm(Exact(s) * Exact.sqrt(2) / 2)}.",
            f"The circle's area is π × ({Exact(s) * Exact.sqrt(2) / 2})² = {cm2(Exact.pi(s * s // 2))}, "
            f"and the square's area is {s}² = {cm2(s * s)}.",
            f"The shaded area is {cm2(Exact.pi(s * s // 2))} - {cm2(s * s)} = {cm2(value)}.",
        ]
        circle = Circle("O", r)
        mistakes = [Exact.pi(s * s) - s * s, Exact.pi(s * s // 4) - s * s // 2 if s > 2 else Exact.pi(1) + 1]
        desc = f"square {name} inscribed in circle O, with the region between them shaded"
        givens = [Given(f"{a}{b}", length(a, b), Exact(s))]
        labelled = [a, b, c, d, "O"]
        segs = [Segment(a, b), Segment(b, c), Segment(c, d), Segment(d, a)]
    else:
        # Circle inscribed in the square: r = s/2, shaded = s² - πs²/4.
        h = s / 2
        corners = [(-h, h), (-h, -h), (h, -h), (h, h)]
        pts = {"O": (0.0, 0.0), **dict(zip((a, b, c, d), corners, strict=True))}
        value = Exact(s * s) - Exact.pi(s * s // 4)
        fills = [Fill(points=(a, b, c, d)), Fill(center="O", radius=h, shade=255)]
        target = Measure("difference", parts=(area(a, b, c, d), Measure("circle_area", ("O", "_T"))))
        pts["_T"] = (0.0, -h)  # an unlabelled helper where the circle touches BC: its radius is O_T
        setup = f"circle O is inscribed in square {name}"
        steps = [
            f"The circle's diameter equals the side, so its radius is {cm(s)} / 2 = {cm(s // 2)}.",
            f"The square's area is {s}² = {cm2(s * s)} and the circle's area is π × {s // 2}² = {cm2(Exact.pi(s * s // 4))}.",
            f"The shaded area is {cm2(s * s)} - {cm2(Exact.pi(s * s // 4))} = {cm2(value)}.",
        ]
        circle = Circle("O", h)
        mistakes = [Exact(s * s) - Exact.pi(s * s), Exact(s * s) - Exact.pi(s * s // 2)]
        desc = f"circle O inscribed in square {name}, with the corners outside the circle shaded"
        givens = [Given(f"{a}{b}", length(a, b), Exact(s))]
        labelled = [a, b, c, d, "O"]
        segs = [Segment(a, b), Segment(b, c), Segment(c, d), Segment(d, a)]
    return Construction(
        kind="shaded_square_in_circle" if square_in_circle else "shaded_circle_in_square",
        figure=Figure(pts, labelled, segs, circles=[circle], fills=fills, ticks=[]),
        setup=setup,
        description=desc,
        givens=givens,
        target=target,
        target_name="the area of the shaded region",
        ask="the area of the shaded region",
        value=value,
        steps=steps,
        mistakes=[m for m in mistakes if float(m) > 0],
        mark_target=False,
    )


def _triangle_perimeter(rng: random.Random) -> Construction:
    from ..geometry import triangle_from_sides

    a, b, c = letters(rng, 3)
    while True:
        sa, sb, sc = (rng.randint(3, 14) for _ in range(3))
        if sa + sb > sc + 1 and sb + sc > sa + 1 and sa + sc > sb + 1:
            break
    pa, pb, pc = triangle_from_sides(sa, sb, sc)
    tri = f"{triangle_word(rng)}{a}{b}{c}"
    total = sa + sb + sc
    ticks = [Tick(b, c), Tick(c, a)] if sa == sb else []
    return Construction(
        kind="triangle_perimeter",
        figure=Figure(
            {a: pa, b: pb, c: pc}, [a, b, c], [Segment(a, b), Segment(b, c), Segment(c, a)], ticks=ticks
        ),
        setup=f"in {tri}",
        description=f"triangle {a}{b}{c}",
        givens=[
            Given(f"{b}{c}", length(b, c), Exact(sa)),
            Given(f"{c}{a}", length(c, a), Exact(sb)),
            Given(f"{a}{b}", length(a, b), Exact(sc)),
        ],
        target=perimeter(a, b, c),
        target_name=f"the perimeter of {tri}",
        ask=f"the perimeter of {tri}",
        value=Exact(total),
        steps=[f"The perimeter of {tri} is {sa} + {sb} + {sc} = {cm(total)}."],
        mistakes=[Exact(2 * total), Exact(total - min(sa, sb, sc))],
        mark_target=False,
    )


def build(rng: random.Random, difficulty: str) -> Construction:
    if difficulty == MULTI_STEP:
        return rng.choice(
            [_right_triangle_area, _rectangle_diagonal, _shaded, lambda r: _circle(r, diameter=True)]
        )(rng)
    return rng.choice(
        [_rectangle, _triangle_area, _trapezoid, _triangle_perimeter, lambda r: _circle(r, diameter=False)]
    )(rng)


FAMILY = Family(NAME, "perimeter and area", build)
