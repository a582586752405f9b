"""What a problem family returns, and the small helpers the families share."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..exact import Exact, Rational, exact
from ..figure import Figure, Given, Measure

ONE_STEP = "one_step"
MULTI_STEP = "multi_step"
PERCEPTION = "perception"

# Letters for point names: no I or J (they read like lines), no O (kept for centres and intersections).
ALPHABET = "ABCDEFGHKLMNPQRSTUVWXYZ"


@dataclass
class Construction:
    """One solved construction: the figure, what is given, what is asked and how to get it.

    Every string here except `steps` is free of numbers, so that a "diagram" question can be
    written from `setup` and `ask` without giving anything away.
    """

    kind: str
    figure: Figure
    setup: str  # "in △ABC, AB = AC": context and facts, no values
    description: str  # for captions: "an isosceles triangle ABC with AB = AC"
    givens: list[Given]
    target: Measure
    target_name: str  # "∠C", "AD"
    ask: str  # "the degree of ∠C"; the question ends "then <ask> is ()"
    value: Exact
    steps: list[str]  # the reasoning, values written out
    mistakes: list[Exact] = field(default_factory=list)  # answers of typical slips
    upper: float | None = None  # an exclusive upper bound for every choice (e.g. 180 for angles)
    mark_target: bool = True  # whether the figure may put a "?" on the target
    diagram_setup: str | None = None  # replaces `setup` in "diagram" questions when setup tells too much
    reading: str = ""  # what a "diagram" solution reads off the figure besides the given values


@dataclass(frozen=True)
class Family:
    name: str
    title: str  # a few words for previews and docs
    build: Callable[[random.Random, str], Construction]
    difficulties: tuple[str, ...] = (PERCEPTION, ONE_STEP, MULTI_STEP)
    in_default_mix: bool = True  # drawn when no family is named


def letters(rng: random.Random, n: int) -> list[str]:
    """n point names: usually A, B, C, ..., sometimes a run from elsewhere in the alphabet."""
    if rng.random() < 0.6:
        return list(ALPHABET[:n])
    start = rng.randrange(len(ALPHABET) - n + 1)
    return list(ALPHABET[start : start + n])


def triangle_word(rng: random.Random) -> str:
    """GeoQA writes both "△ABC" and "triangle ABC"."""
    return "△" if rng.random() < 0.5 else "triangle "


def nice_int(rng: random.Random, lo: int, hi: int) -> int:
    """An integer in [lo, hi], a multiple of 5 half of the time (as textbook values are)."""
    fives = [v for v in range(lo, hi + 1) if v % 5 == 0]
    if fives and rng.random() < 0.5:
        return rng.choice(fives)
    return rng.randint(lo, hi)


def fmt(value: Rational | Exact, unit: str) -> str:
    """A value with its unit: "50°", "6cm", "(12+4√2)cm", "25πcm²", "2/5"."""
    v = exact(value)
    if not unit:
        return str(v)
    if unit == "°":
        return f"{v}°"
    # "(12+4√2)cm", "(27/4)cm": bracket what would otherwise read ambiguously before the unit.
    compound = len(v.terms) > 1 or any(c.denominator != 1 for _, c in v.terms)
    return f"({v}){unit}" if compound else f"{v}{unit}"


def deg(value: Rational | Exact) -> str:
    return fmt(value, "°")


def cm(value: Rational | Exact) -> str:
    return fmt(value, "cm")
