"""Exact numbers for geometry answers: sums of rational multiples of √m·π^k.

Every answer the engine produces is built from integers with +, -, ×, ÷ by rationals, square roots
and π, so a dict {(m, k): Fraction} with m square-free is closed under what the families need and
prints the way a textbook does ("4√3", "25π-48", "3√2/2"). No sympy: this is small and fast.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import total_ordering

Rational = int | Fraction
Key = tuple[int, int]  # (square-free radicand m ≥ 1, power of π k ≥ 0)


def split_square(n: int) -> tuple[int, int]:
    """Write n ≥ 1 as k²·m with m square-free and return (k, m)."""
    if n < 1:
        raise ValueError(f"need a positive integer, got {n}")
    k, m, d = 1, n, 2
    while d * d <= m:
        while m % (d * d) == 0:
            m //= d * d
            k *= d
        d += 1
    return k, m


@total_ordering
class Exact:
    """An exact real number Σ c·√m·π^k with rational c; immutable and hashable."""

    __slots__ = ("_terms",)

    def __init__(self, value: Rational | Exact = 0) -> None:
        if isinstance(value, Exact):
            self._terms: tuple[tuple[Key, Fraction], ...] = value._terms
        else:
            frac = Fraction(value)
            self._terms = (((1, 0), frac),) if frac else ()

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def _from_dict(cls, terms: dict[Key, Fraction]) -> Exact:
        out = cls()
        out._terms = tuple(sorted((key, c) for key, c in terms.items() if c != 0))
        return out

    @classmethod
    def sqrt(cls, value: Rational) -> Exact:
        """√value for a non-negative rational, simplified (√(p/q) = √(pq)/q)."""
        frac = Fraction(value)
        if frac < 0:
            raise ValueError(f"square root of a negative number: {frac}")
        if frac == 0:
            return cls()
        k, m = split_square(frac.numerator * frac.denominator)
        return cls._from_dict({(m, 0): Fraction(k, frac.denominator)})

    @classmethod
    def pi(cls, coeff: Rational = 1) -> Exact:
        return cls._from_dict({(1, 1): Fraction(coeff)})

    # --- inspection ---------------------------------------------------------------------------
    @property
    def terms(self) -> tuple[tuple[Key, Fraction], ...]:
        return self._terms

    def is_rational(self) -> bool:
        return all(key == (1, 0) for key, _ in self._terms)

    def is_integer(self) -> bool:
        return self.is_rational() and all(c.denominator == 1 for _, c in self._terms)

    def as_fraction(self) -> Fraction:
        if not self.is_rational():
            raise ValueError(f"{self} is not rational")
        return self._terms[0][1] if self._terms else Fraction(0)

    def form(self) -> tuple[bool, bool, bool, bool]:
        """What kind of number this is: (is a sum, has a root, has π, integral coefficients).

        Choices of one question share a form so that no choice stands out by its notation.
        """
        return (
            len(self._terms) > 1,
            any(m > 1 for (m, _), _ in self._terms),
            any(k > 0 for (_, k), _ in self._terms),
            all(c.denominator == 1 for _, c in self._terms),
        )

    def main_key(self) -> Key:
        """The basis term with the largest absolute float value (what a distractor varies)."""
        if not self._terms:
            return (1, 0)
        return max(self._terms, key=lambda t: abs(float(t[1]) * math.sqrt(t[0][0]) * math.pi ** t[0][1]))[0]

    def coeff(self, key: Key) -> Fraction:
        return dict(self._terms).get(key, Fraction(0))

    def with_coeff(self, key: Key, value: Rational) -> Exact:
        terms = dict(self._terms)
        terms[key] = Fraction(value)
        return Exact._from_dict(terms)

    # --- arithmetic ---------------------------------------------------------------------------
    @staticmethod
    def _coerce(other: object) -> Exact | None:
        if isinstance(other, Exact):
            return other
        if isinstance(other, int | Fraction):
            return Exact(other)
        return None

    def __add__(self, other: object) -> Exact:
        o = self._coerce(other)
        if o is None:
            return NotImplemented
        terms = dict(self._terms)
        for key, c in o._terms:
            terms[key] = terms.get(key, Fraction(0)) + c
        return Exact._from_dict(terms)

    __radd__ = __add__

    def __neg__(self) -> Exact:
        return Exact._from_dict({key: -c for key, c in self._terms})

    def __sub__(self, other: object) -> Exact:
        o = self._coerce(other)
        if o is None:
            return NotImplemented
        return self + (-o)

    def __rsub__(self, other: object) -> Exact:
        o = self._coerce(other)
        if o is None:
            return NotImplemented
        return o + (-self)

    def __mul__(self, other: object) -> Exact:
        o = self._coerce(other)
        if o is None:
            return NotImplemented
        terms: dict[Key, Fraction] = {}
        for (m1, k1), c1 in self._terms:
            for (m2, k2), c2 in o._terms:
                # √m1·√m2 = g·√(m1·m2/g²) with g = gcd, both square-free.
                g = math.gcd(m1, m2)
                key = (m1 // g * (m2 // g), k1 + k2)
                terms[key] = terms.get(key, Fraction(0)) + c1 * c2 * g
        return Exact._from_dict(terms)

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> Exact:
        o = self._coerce(other)
        if o is None:
            return NotImplemented
        if len(o._terms) != 1 or o._terms[0][0][1] != 0:
            raise ZeroDivisionError if not o._terms else ValueError(f"can only divide by c·√m, not {o}")
        (m, _), c = o._terms[0]
        # x / (c√m) = x·√m / (c·m)
        return self * Exact._from_dict({(m, 0): 1 / (c * m)})

    def __pow__(self, n: int) -> Exact:
        out = Exact(1)
        for _ in range(n):
            out = out * self
        return out

    # --- comparison and conversion ------------------------------------------------------------
    def __float__(self) -> float:
        return math.fsum(float(c) * math.sqrt(m) * math.pi**k for (m, k), c in self._terms)

    def __eq__(self, other: object) -> bool:
        o = self._coerce(other)
        return o is not None and self._terms == o._terms

    def __hash__(self) -> int:
        return hash(self._terms)

    def __lt__(self, other: object) -> bool:
        o = self._coerce(other)
        if o is None:
            return NotImplemented
        return float(self) < float(o)

    def __repr__(self) -> str:
        return f"Exact({str(self)!r})"

    def __str__(self) -> str:
        if not self._terms:
            return "0"
        # Positive terms first so that "25π-48" reads as a textbook writes it.
        ordered = sorted(self._terms, key=lambda t: (t[1] < 0, t[0]))
        out = ""
        for i, ((m, k), c) in enumerate(ordered):
            body = (f"√{m}" if m > 1 else "") + ("π" if k == 1 else f"π^{k}" if k > 1 else "")
            num = abs(c.numerator)
            text = (str(num) if num != 1 or not body else "") + body
            if c.denominator != 1:
                text += f"/{c.denominator}"
            sign = "-" if c < 0 else ("+" if i else "")
            out += sign + text
        return out

    def paren(self) -> str:
        """str() with parentheses when the number is a sum, for use before a unit or a factor."""
        s = str(self)
        return f"({s})" if len(self._terms) > 1 else s


def exact(value: Rational | Exact) -> Exact:
    return value if isinstance(value, Exact) else Exact(value)
