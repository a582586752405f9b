"""The exact number type behind every synthetic answer."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geovlm.synth.exact import Exact, split_square


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, (1, 1)), (8, (2, 2)), (12, (2, 3)), (50, (5, 2)), (72, (6, 2)), (97, (1, 97)), (144, (12, 1))],
)
def test_split_square(n: int, expected: tuple[int, int]) -> None:
    assert split_square(n) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Exact.sqrt(8), "2√2"),
        (Exact.sqrt(Fraction(1, 2)), "√2/2"),
        (Exact.sqrt(49), "7"),
        (Exact.pi(25) - 48, "25π-48"),
        (48 - Exact.pi(25), "48-25π"),
        (Exact(12) + 4 * Exact.sqrt(2), "12+4√2"),
        (Exact(3) * Exact.sqrt(2) / 2, "3√2/2"),
        (Exact.sqrt(3) / Exact.sqrt(2), "√6/2"),
        (Exact.pi(Fraction(25, 4)), "25π/4"),
        (Exact(Fraction(7, 2)), "7/2"),
        (Exact(0), "0"),
    ],
)
def test_prints_like_a_textbook(value: Exact, text: str) -> None:
    assert str(value) == text


def test_surds_multiply_and_cancel() -> None:
    assert Exact.sqrt(2) * Exact.sqrt(2) == 2
    assert Exact.sqrt(6) * Exact.sqrt(3) == 3 * Exact.sqrt(2)
    assert (Exact.sqrt(12) - 2 * Exact.sqrt(3)) == 0
    assert (Exact.sqrt(5) ** 2).is_integer()


def test_form_tells_kinds_of_number_apart() -> None:
    assert Exact(70).form() == Exact(40).form()
    assert Exact.sqrt(13).form() == (2 * Exact.sqrt(5)).form()
    assert Exact(70).form() != Exact(Fraction(7, 2)).form()
    assert Exact.sqrt(2).form() != Exact.pi(2).form()
    assert (Exact.pi(8) - 16).form() != Exact.pi(8).form()


rationals = st.fractions(min_value=-50, max_value=50, max_denominator=12)
radicands = st.integers(min_value=0, max_value=200)


@settings(max_examples=200, deadline=None)
@given(a=rationals, b=rationals, m=radicands, n=radicands, k=st.integers(min_value=0, max_value=2))
def test_arithmetic_agrees_with_floats(a: Fraction, b: Fraction, m: int, n: int, k: int) -> None:
    x = Exact(a) * Exact.sqrt(m) + Exact.pi(b) * k
    y = Exact(b) * Exact.sqrt(n) - a
    fx = float(a) * math.sqrt(m) + math.pi * float(b) * k
    fy = float(b) * math.sqrt(n) - float(a)
    assert math.isclose(float(x), fx, abs_tol=1e-9)
    assert math.isclose(float(x + y), fx + fy, abs_tol=1e-9)
    assert math.isclose(float(x - y), fx - fy, abs_tol=1e-9)
    assert math.isclose(float(x * y), fx * fy, rel_tol=1e-9, abs_tol=1e-6)
    if b != 0 and n > 0:
        d = Exact(b) * Exact.sqrt(n)
        assert math.isclose(float(x / d), fx / (float(b) * math.sqrt(n)), rel_tol=1e-9, abs_tol=1e-9)
    # Equal values are equal objects: the representation is canonical.
    assert (x + y) - y == x
