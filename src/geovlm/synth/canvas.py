"""Drawing at SUPERSAMPLE x the target size with Pillow, and what a label must keep clear of.

:class:`Canvas` draws lines, arcs, dots and text into a supersampled greyscale image and remembers, in
final pixels, every line, point and label drawn, so that :meth:`Canvas.place` can put a label where it
overlaps the fewest of them. :class:`Style` is one random drawing style (line width, fonts, ink).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from . import fonts

SUPERSAMPLE = 3
Vec = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Style:
    rotation: float
    mirror: bool
    fill: float  # share of the canvas the figure's bounding box may take
    line: float  # line width, px
    font_px: float
    ink: int
    point_face: str | None
    value_face: str | None
    dots: bool
    arc_radius: float  # px


def sample_style(rng: random.Random, size: int, line_scale: float = 1.0) -> Style:
    k = size / 224
    faces = fonts.faces()
    return Style(
        rotation=0.0 if rng.random() < 0.2 else rng.uniform(0, 360),
        mirror=rng.random() < 0.5,
        fill=rng.uniform(0.72, 0.9),
        line=k * rng.uniform(1.2, 2.3) * line_scale,  # scaled after sampling: same layout for every scale
        font_px=k * rng.uniform(12.5, 15.5),
        ink=rng.randint(0, 45),
        point_face=rng.choice(faces),
        value_face=rng.choice(faces),
        dots=rng.random() < 0.5,
        arc_radius=k * rng.uniform(11, 16),
    )


# --- small vector helpers in pixel space ---------------------------------------------------------
def sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1])


def unit(a: Vec) -> Vec:
    n = math.hypot(*a) or 1.0
    return (a[0] / n, a[1] / n)


def on(a: Vec, d: Vec, t: float) -> Vec:
    return (a[0] + d[0] * t, a[1] + d[1] * t)


def _clip_length(p: Vec, q: Vec, box: Box) -> float:
    """Length of segment pq inside the box (Liang-Barsky)."""
    x0, y0, x1, y1 = box
    dx, dy = q[0] - p[0], q[1] - p[1]
    t0, t1 = 0.0, 1.0
    for pk, qk in ((-dx, p[0] - x0), (dx, x1 - p[0]), (-dy, p[1] - y0), (dy, y1 - p[1])):
        if pk == 0:
            if qk < 0:
                return 0.0
            continue
        t = qk / pk
        if pk < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return 0.0
    return (t1 - t0) * math.hypot(dx, dy)


def _overlap(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


class Canvas:
    """The supersampled drawing plus what the label placer must keep clear of (in final pixels)."""

    def __init__(self, size: int, style: Style) -> None:
        self.size, self.style = size, style
        self.image = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 255)
        self.draw = ImageDraw.Draw(self.image)
        self.lines: list[tuple[Vec, Vec]] = []
        self.boxes: list[Box] = []
        self.dots: list[Vec] = []

    @staticmethod
    def big(p: Vec) -> Vec:
        """A final-pixel position on the supersampled drawing."""
        return (p[0] * SUPERSAMPLE, p[1] * SUPERSAMPLE)

    def line(
        self, p: Vec, q: Vec, width: float | None = None, dashed: bool = False, obstacle: bool = True
    ) -> None:
        w = (width or self.style.line) * SUPERSAMPLE
        pieces = [(p, q)]
        if dashed:
            d, total = unit(sub(q, p)), math.dist(p, q)
            dash, gap = 4 * self.style.line, 3 * self.style.line
            pieces, t = [], 0.0
            while t < total:
                pieces.append((on(p, d, t), on(p, d, min(t + dash, total))))
                t += dash + gap
        for a, b in pieces:
            self.draw.line([self.big(a), self.big(b)], fill=self.style.ink, width=max(1, round(w)))
            for end in (a, b):  # round caps hide the notches where segments meet
                x, y = self.big(end)
                self.draw.ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=self.style.ink)
        if obstacle:
            self.lines.append((p, q))

    def polyline(self, pts: list[Vec], width: float | None = None) -> None:
        for a, b in zip(pts, pts[1:], strict=False):
            self.line(a, b, width)

    def circle(self, c: Vec, r: float) -> None:
        x, y = self.big(c)
        rs = r * SUPERSAMPLE
        w = max(1, round(self.style.line * SUPERSAMPLE))
        self.draw.ellipse([x - rs, y - rs, x + rs, y + rs], outline=self.style.ink, width=w)
        n = 48
        ring = [
            (c[0] + r * math.cos(2 * math.pi * i / n), c[1] + r * math.sin(2 * math.pi * i / n))
            for i in range(n + 1)
        ]
        self.lines += list(zip(ring, ring[1:], strict=False))

    def arc(self, v: Vec, r: float, start: float, end: float) -> None:
        x, y = self.big(v)
        rs = r * SUPERSAMPLE
        w = max(1, round(self.style.line * 0.85 * SUPERSAMPLE))
        self.draw.arc([x - rs, y - rs, x + rs, y + rs], start, end, fill=self.style.ink, width=w)
        sweep = (end - start) % 360
        pts = [
            (
                v[0] + r * math.cos(math.radians(start + sweep * i / 6)),
                v[1] + r * math.sin(math.radians(start + sweep * i / 6)),
            )
            for i in range(7)
        ]
        self.lines += list(zip(pts, pts[1:], strict=False))

    def dot(self, p: Vec, r: float) -> None:
        x, y = self.big(p)
        rs = r * SUPERSAMPLE
        self.draw.ellipse([x - rs, y - rs, x + rs, y + rs], fill=self.style.ink)

    def text_box(self, text: str, face: str | None, px: float, center: Vec) -> Box:
        f = fonts.font(face, max(6, round(px * SUPERSAMPLE)))
        left, top, right, bottom = f.getbbox(fonts.drawable(face, text), anchor="mm")
        s = SUPERSAMPLE
        return (center[0] + left / s, center[1] + top / s, center[0] + right / s, center[1] + bottom / s)

    def text(self, text: str, face: str | None, px: float, center: Vec) -> None:
        f = fonts.font(face, max(6, round(px * SUPERSAMPLE)))
        self.draw.text(self.big(center), fonts.drawable(face, text), font=f, fill=self.style.ink, anchor="mm")

    # --- label placement ------------------------------------------------------------------------
    def cost(self, box: Box, extra: float, own: Vec | None) -> float:
        """How bad a label box is: off the canvas, on other labels, across lines, on other points."""
        pad = 1.0
        grown = (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)
        area = max((box[2] - box[0]) * (box[3] - box[1]), 1.0)
        diag = math.hypot(box[2] - box[0], box[3] - box[1])
        cost = extra
        edge = max(0.0, 2 - box[0], 2 - box[1], box[2] - self.size + 2, box[3] - self.size + 2)
        cost += 100 * edge
        for other in self.boxes:
            cost += 60 * _overlap(grown, other) / area
        for p, q in self.lines:
            cost += 25 * _clip_length(p, q, grown) / diag
        for d in self.dots:
            if own is not None and d == own:
                continue
            if grown[0] - 2 <= d[0] <= grown[2] + 2 and grown[1] - 2 <= d[1] <= grown[3] + 2:
                cost += 40
        return cost

    def place(
        self,
        text: str,
        face: str | None,
        px: float,
        candidates: list[tuple[Vec, float]],
        own: Vec | None = None,
    ) -> None:
        """Draw the label at the cheapest candidate centre; each candidate carries its own penalty
        (how far it is from where a textbook would put the label)."""
        best, best_cost = None, math.inf
        for c, extra in candidates:
            box = self.text_box(text, face, px, c)
            cost = self.cost(box, extra, own)
            if cost < best_cost:
                best, best_cost = (c, box), cost
        assert best is not None
        self.boxes.append(best[1])
        self.text(text, face, px, best[0])


def support(box: Box, d: Vec) -> float:
    """How far a box centred at the origin reaches in direction d."""
    w, h = box[2] - box[0], box[3] - box[1]
    return abs(d[0]) * w / 2 + abs(d[1]) * h / 2
