"""Draw a `Figure` with Pillow: anti-aliased, randomly placed, labels kept clear of the lines.

Everything is drawn at SUPERSAMPLE× the target size and reduced with a box filter, which gives
anti-aliased lines and text without any other dependency. Randomness (rotation, mirror, scale,
position, line width, font and size, dots, label sides) comes from the generator passed in, so a
problem always renders the same way.

Labels are placed greedily: angle values first, then point names, then side lengths. Each label
tries a list of candidate positions (the widest free direction around its point, the bisector of
its angle, either side of its segment) and takes the one that overlaps the fewest lines, labels
and points.
"""

from __future__ import annotations

import math
import random

from PIL import Image

from .canvas import SUPERSAMPLE, Canvas, Style, Vec, on, sample_style, sub, support, unit
from .figure import AngleMark, Figure


def _transform(fig: Figure, size: int, style: Style, rng: random.Random):
    """A similarity (rotation, optional mirror, scale, shift) that fits the figure in the canvas."""
    cos_t, sin_t = math.cos(math.radians(style.rotation)), math.sin(math.radians(style.rotation))
    sx = -1.0 if style.mirror else 1.0

    def rot(p: Vec) -> Vec:
        x, y = p[0] * sx, p[1]
        # y is flipped because image rows grow downwards.
        return (x * cos_t - y * sin_t, -(x * sin_t + y * cos_t))

    pts = [rot(p) for p in fig.points.values()]
    for c in fig.circles:
        cx, cy = rot(fig.points[c.center])
        pts += [(cx - c.radius, cy - c.radius), (cx + c.radius, cy + c.radius)]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    w, h = max(xs) - min(xs), max(ys) - min(ys)
    margin = 1.9 * style.font_px
    scale = (size - 2 * margin) * style.fill / max(w, h, 1e-9)
    slack_x, slack_y = size - 2 * margin - w * scale, size - 2 * margin - h * scale
    ox = margin + rng.uniform(0, max(slack_x, 0)) - min(xs) * scale
    oy = margin + rng.uniform(0, max(slack_y, 0)) - min(ys) * scale

    def to_px(p: Vec) -> Vec:
        x, y = rot(p)
        return (x * scale + ox, y * scale + oy)

    return to_px, scale


def _angle_geometry(mark: AngleMark, px: dict[str, Vec]) -> tuple[Vec, float, float, Vec, float]:
    """(vertex, start°, end°, bisector, opening°) with start→end the clockwise non-reflex sweep."""
    v = px[mark.v]
    a1 = math.degrees(math.atan2(px[mark.p][1] - v[1], px[mark.p][0] - v[0]))
    a2 = math.degrees(math.atan2(px[mark.q][1] - v[1], px[mark.q][0] - v[0]))
    sweep = (a2 - a1) % 360
    start, end = (a1, a2) if sweep <= 180 else (a2, a1)
    opening = min(sweep, 360 - sweep)
    mid = math.radians(start + opening / 2)
    return v, start, start + opening, (math.cos(mid), math.sin(mid)), opening


def render_figure(fig: Figure, size: int, rng: random.Random, line_scale: float = 1.0) -> Image.Image:
    style = sample_style(rng, size, line_scale)
    to_px, scale = _transform(fig, size, style, rng)
    px = {name: to_px(p) for name, p in fig.points.items()}
    cv = Canvas(size, style)
    lw = style.line

    for f in fig.fills:
        shade = 255 if f.shade == 255 else min(255, f.shade + rng.randint(-15, 20))
        if f.points:
            cv.draw.polygon([cv.big(px[p]) for p in f.points], fill=shade)
        else:
            x, y = cv.big(px[f.center])
            r = f.radius * scale * SUPERSAMPLE
            cv.draw.ellipse([x - r, y - r, x + r, y + r], fill=shade)
    for s in fig.segments:
        cv.line(px[s.p], px[s.q], dashed=s.dashed)
    for c in fig.circles:
        cv.circle(px[c.center], c.radius * scale)

    # Angle marks: arcs and right-angle squares, sized to the shorter arm.
    labels_to_place: list[tuple[str, Vec, Vec, float, float, bool]] = []
    degree = {name: len(_rays(name, fig, px, marks=False)) for name in fig.points}
    for m in fig.angles:
        v, start, end, bis, opening = _angle_geometry(m, px)
        arm = min(math.dist(v, px[m.p]), math.dist(v, px[m.q]))
        if m.right:
            k = min(0.55 * style.font_px, 0.35 * arm)
            u1, u2 = unit(sub(px[m.p], v)), unit(sub(px[m.q], v))
            corner = (v[0] + (u1[0] + u2[0]) * k, v[1] + (u1[1] + u2[1]) * k)
            cv.polyline([on(v, u1, k), corner, on(v, u2, k)], width=lw * 0.85)
            r = k
        else:
            r = min(style.arc_radius * (1.25 if opening < 35 else 1.0), 0.45 * arm)
            for i in range(m.arcs):
                cv.arc(v, r + i * 0.22 * style.font_px, start, end)
            r += (m.arcs - 1) * 0.22 * style.font_px
        if m.label:
            labels_to_place.append((m.label, v, bis, r, opening, degree[m.v] == 2))

    for t in fig.ticks:
        p, q = px[t.p], px[t.q]
        d = unit(sub(q, p))
        n = (-d[1], d[0])
        mid = ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)
        h = 0.38 * style.font_px
        for i in range(t.count):
            c = on(mid, d, (i - (t.count - 1) / 2) * 0.28 * style.font_px)
            cv.line(on(c, n, -h), on(c, n, h), width=lw * 0.85, obstacle=False)
    for pm in fig.parallels:
        p, q = px[pm.p], px[pm.q]
        d = unit(sub(q, p))
        n = (-d[1], d[0])
        mid = ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)
        h = 0.3 * style.font_px
        for i in range(pm.count):
            tip = on(mid, d, (i - (pm.count - 1) / 2) * 0.35 * style.font_px + h / 2)
            back = on(tip, d, -h)
            cv.polyline([on(back, n, h), tip, on(back, n, -h)], width=lw * 0.85)

    centres = {c.center for c in fig.circles}
    for name in fig.labelled:
        if style.dots or name in centres:
            cv.dot(px[name], max(lw * 1.25, 1.6))
        cv.dots.append(px[name])

    # Angle values first: they have few good spots (inside their angle), point names have many.
    for text, v, bis, r, opening, lone in labels_to_place:
        _place_angle_label(cv, text, v, bis, r, opening, lone)
    _place_point_labels(cv, fig, px)
    for s in fig.side_labels:
        _place_side_label(cv, s.text, px[s.p], px[s.q], fig, px)
    return cv.image.reduce(SUPERSAMPLE).convert("RGB")


def _rays(name: str, fig: Figure, px: dict[str, Vec], marks: bool = True) -> list[float]:
    """Directions (degrees) of everything drawn that leaves the point, to find free space for its label."""
    p = px[name]
    out: list[float] = []

    def add(q: Vec) -> None:
        if math.dist(p, q) > 1e-6:
            out.append(math.degrees(math.atan2(q[1] - p[1], q[0] - p[0])))

    for s in fig.segments:
        a, b = px[s.p], px[s.q]
        if s.p == name:
            add(b)
        elif s.q == name:
            add(a)
        else:
            ab = math.dist(a, b)
            if ab > 0 and abs(math.dist(a, p) + math.dist(p, b) - ab) < 1e-6 * max(ab, 1):
                add(a)
                add(b)
    for c in fig.circles:
        on_circle = abs(math.dist(fig.points[c.center], fig.points[name]) - c.radius) < 1e-6 * max(
            c.radius, 1
        )
        if c.center != name and on_circle:
            # The circle leaves along both tangents; the inside is taken by the chords: look outwards.
            inward = unit(sub(px[c.center], p))
            add(on(p, inward, 10))
            add(on(p, (-inward[1], inward[0]), 10))
            add(on(p, (inward[1], -inward[0]), 10))
    for m in fig.angles if marks else ():
        if m.v == name:
            _, _, _, bis, _ = _angle_geometry(m, px)
            add(on(p, bis, 10))
    return out


def _place_point_labels(cv: Canvas, fig: Figure, px: dict[str, Vec]) -> None:
    style = cv.style
    for name in fig.labelled:
        p = px[name]
        rays = sorted(_rays(name, fig, px))
        dirs: list[float] = []
        if rays:
            gaps = []
            for i, a in enumerate(rays):
                b = rays[(i + 1) % len(rays)] + (360 if i == len(rays) - 1 else 0)
                gaps.append((b - a, a + (b - a) / 2))
            gaps.sort(key=lambda g: -g[0])
            dirs += [g[1] for g in gaps[:3]]
            # Two more tries inside the widest gap, for labels that crowd its middle.
            dirs += [gaps[0][1] - gaps[0][0] / 4, gaps[0][1] + gaps[0][0] / 4]
        main = dirs[0] if dirs else -90.0
        dirs += sorted((main + 45 * k for k in range(8)), key=lambda d: abs(((d - main + 180) % 360) - 180))
        box0 = cv.text_box(name, style.point_face, style.font_px, (0.0, 0.0))
        gap = 0.3 * style.font_px + style.line
        candidates = []
        for rank, d in enumerate(dirs):
            u = (math.cos(math.radians(d)), math.sin(math.radians(d)))
            candidates.append((on(p, u, gap + support(box0, u)), 0.4 * rank))
        for rank, d in enumerate(dirs[:3]):
            u = (math.cos(math.radians(d)), math.sin(math.radians(d)))
            candidates.append((on(p, u, 1.8 * gap + support(box0, u)), 2.0 + 0.4 * rank))
        cv.place(name, style.point_face, style.font_px, candidates, own=p)


def _place_angle_label(cv: Canvas, text: str, v: Vec, bis: Vec, r: float, opening: float, lone: bool) -> None:
    """Inside the angle along its bisector, nearest first; behind the vertex as a last resort when
    the vertex has no other angle there (a flat triangle leaves no room inside its wide apex)."""
    style = cv.style
    px_size = style.font_px * 0.92
    box0 = cv.text_box(text, style.value_face, px_size, (0.0, 0.0))
    candidates = []
    spread = min(opening / 4, 20.0)
    base = math.degrees(math.atan2(bis[1], bis[0]))
    for i, k in enumerate((1.0, 1.5, 2.1, 2.8)):
        for off in (0.0, -spread, spread):
            t = math.radians(base + off)
            u = (math.cos(t), math.sin(t))
            candidates.append(
                (on(v, u, r * k + 0.25 * style.font_px + support(box0, u)), 5.0 * i + (0.5 if off else 0.0))
            )
    # In a narrow angle the label must go out until the arms are wide enough for its box.
    half_diag = math.hypot(box0[2] - box0[0], box0[3] - box0[1]) / 2
    fit = half_diag / max(math.sin(math.radians(opening / 2)), 0.05)
    u = (math.cos(math.radians(base)), math.sin(math.radians(base)))
    for i, k in enumerate((1.0, 1.3, 1.7)):
        candidates.append(
            (on(v, u, max(r + 0.25 * style.font_px + support(box0, u), fit * k)), 1.0 + 2.0 * i)
        )
    if lone:
        for off in (0.0, -30.0, 30.0):
            t = math.radians(base + 180 + off)
            u = (math.cos(t), math.sin(t))
            candidates.append(
                (on(v, u, 0.45 * style.font_px + support(box0, u)), 8.0 + (1.0 if off else 0.0))
            )
    cv.place(text, style.value_face, px_size, candidates)


def _place_side_label(cv: Canvas, text: str, p: Vec, q: Vec, fig: Figure, px: dict[str, Vec]) -> None:
    style = cv.style
    px_size = style.font_px * 0.92
    box0 = cv.text_box(text, style.value_face, px_size, (0.0, 0.0))
    d = unit(sub(q, p))
    n = (-d[1], d[0])
    # Prefer the side away from the figure's centre, where labels usually go.
    cx = sum(v[0] for v in px.values()) / len(px)
    cy = sum(v[1] for v in px.values()) / len(px)
    mid = ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)
    if (mid[0] - cx) * n[0] + (mid[1] - cy) * n[1] < 0:
        n = (-n[0], -n[1])
    length = math.dist(p, q)
    candidates = []
    for penalty, side in ((0.0, n), (1.5, (-n[0], -n[1]))):
        for t in (0.5, 0.38, 0.62, 0.27, 0.73):
            base = on(p, d, length * t)
            extra = penalty + 4 * abs(t - 0.5)
            candidates.append((on(base, side, 0.3 * style.font_px + support(box0, side)), extra))
    cv.place(text, style.value_face, px_size, candidates)
