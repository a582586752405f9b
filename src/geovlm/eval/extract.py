"""Answer extraction from model generations.

`extract_choice` reproduces the decision procedure of G-LLaVA's scorer
(pipilurj/G-LLaVA, scripts/geo_acc_calculate.py, function `extract_choice`) exactly, quirks
included, so that our GeoQA numbers are comparable with the published ones.
`extract_choice_lenient` adds forms that scorer misses; it is reported separately, never
instead. `extract_number` is for problems without choices.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "CHOICES",
    "LENIENT_RULES",
    "STRICT_RULES",
    "extract_choice",
    "extract_choice_lenient",
    "extract_choice_lenient_rule",
    "extract_choice_rule",
    "extract_number",
    "numbers_match",
    "parse_number",
]

CHOICES = ("A", "B", "C", "D")

# ---------------------------------------------------------------------------------------------
# Strict (G-LLaVA-compatible) letter extraction
# ---------------------------------------------------------------------------------------------
# The rules of their `extract_choice`, in their order. Line numbers refer to that file at commit
# 838e2643a52018f5d3eeee7ed3ebd6dc411c818b.
STRICT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # pattern0 (their line 7): no space allowed after the colon, no word boundary on either
    # side ("Final Answer:B" gives B, "Answer:Cat" gives C).
    ("answer_colon", re.compile(r"Answer:([A-D])")),
    # pattern1..4 (their lines 13, 19, 25, 31): lowercase "the"/"option" only, one literal space
    # between words, so a sentence-initial "The answer is (C)" is not caught by these.
    ("correct_answer_is_option", re.compile(r"the correct answer is option ([A-D])")),
    ("option_is_selected", re.compile(r"option ([A-D]) is selected")),
    ("answer_is_option", re.compile(r"the answer is option ([A-D])")),
    ("answer_is_paren", re.compile(r"the answer is \(([A-D])\)")),
)
# pattern5 (their line 42): "is X" with a literal single space and no word boundaries, so
# "This is Because" gives B and "basis C" gives C, while "is (C)" and "is  C" do not match.
_LAST_SENTENCE_IS = re.compile(r"is ([A-D])")
LAST_SENTENCE_RULE = "last_sentence_is"


def extract_choice_rule(text: str) -> tuple[str | None, str | None]:
    """(letter, name of the rule that produced it) under G-LLaVA's procedure; (None, None) if
    unparsed. The rule name is for debugging and tests."""
    for name, pattern in STRICT_RULES:
        match = pattern.search(text)
        if match:
            return match.group(1), name
    # pattern5 looks only at sentences[-2] of text.split(".") (their lines 37-42):
    # - a plain ASCII "." splits, including decimal points ("2.5") and "..." (which yields an
    #   empty sentence, so "It is C..." is unparsed); other terminators ("!", "?", "。") do not;
    # - with a trailing period, sentences[-2] is the last sentence ("It is C." gives C, and so
    #   does "It is C.\n", because sentences[-1] is just the whitespace after the period);
    # - without one, the text after the last period is ignored ("It is A. So it is B" gives A);
    # - with no period at all, sentences[-2] raises IndexError, which their bare `except:` turns
    #   into None ("It is B" is unparsed).
    sentences = text.split(".")
    if len(sentences) < 2:
        return None, None
    # They strip the sentence first; that cannot change what "is X" finds, so we skip it.
    match = _LAST_SENTENCE_IS.search(sentences[-2])
    return (match.group(1), LAST_SENTENCE_RULE) if match else (None, None)


def extract_choice(text: str) -> str | None:
    """Return the chosen letter (A-D) exactly as G-LLaVA's scorer would, or None.

    The rules are tried in order and the first RULE that matches anywhere wins, wherever its
    match is (an early "Answer:A" beats a final "the correct answer is option B"); within a rule
    the FIRST occurrence wins. Everything is case-sensitive ("answer:C", "is c" do not count)."""
    return extract_choice_rule(text)[0]


# ---------------------------------------------------------------------------------------------
# Lenient letter extraction (ours, reported separately)
# ---------------------------------------------------------------------------------------------
# Keywords are case-insensitive (scoped "(?i:...)"), the letter mostly is not: a lowercase "a" is too
# often the article. The one exception is a lowercase letter that is all there is after "answer:" on
# its line ("answer:d", "Answer: (d)."), which no sentence produces. "(?![A-Za-z0-9])" keeps words such
# as "Centimetres" from counting as C.
#
# Linear time: no two neighbouring parts of a pattern may match the same characters, or a reply such as
# "the answer is" + 100,000 newlines backtracks through every way of sharing the whitespace between them
# (three `\s*` in a row took 31 s on 2,500 newlines). So "\s*[*(\[]*\s*" is written "\s*(?:[*(\[]+\s*)?"
# and "\s*[:：]?\s*" is written "\s*(?:[:：]\s*)?": the same strings, one way to match each.
_NOT_WORD = r"(?![A-Za-z0-9])"
_OPENERS = r"(?:[*(\[]+\s*)?"  # "(", "**", "[" (each run followed by optional space) before the letter
LENIENT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # "Answer: C", "answer:C", "ANSWER - (C)", "Answer：C" (full-width colon), "Answer: **C**"
    (
        "lenient_answer_colon",
        re.compile(r"(?i:answer)\s*(?:[:：]|-)\s*" + _OPENERS + r"([A-D])" + _NOT_WORD),
    ),
    # "answer:d", "Answer: d", "ANSWER: (b)." -- a lowercase letter only when nothing but closing
    # marks follows it on its line ("answer: a triangle" stays unparsed)
    (
        "lenient_answer_colon_lowercase",
        re.compile(r"(?i:answer)\s*(?:[:：]|-)\s*" + _OPENERS + r"([a-d])[*)\]]*[.。!]?[ \t]*$", re.MULTILINE),
    ),
    # "the answer is C", "The correct answer is option C", "answer is (C)", "answer is: **C**"
    (
        "lenient_answer_is",
        re.compile(
            r"(?i:answer\s+(?:should\s+be|is)\s*(?:[:：]\s*)?(?:(?:option|choice)\s+)?)" + _OPENERS + r"([A-D])"
            + _NOT_WORD
        ),
    ),
    # "Option C is selected/correct", "choice C is the answer"
    (
        "lenient_option_is",
        re.compile(r"(?i:option|choice)\s+\(?([A-D])\)?\s+(?i:is\s+(?:selected|correct|the\s+answer))"),
    ),
    # "**C**", "**(C)**", "**C.**"
    ("lenient_bold", re.compile(r"\*\*\s*\(?([A-D])\)?[.:]?\s*\*\*")),
)
# "(C)" at the very end, allowing trailing punctuation or markup.
_PAREN_AT_END = re.compile(r"\(([A-D])\)[\s.。!*]*$")
# The whole generation is one letter, possibly decorated: "C", "C.", "[C]", "$C$".
_LONE_LETTER = re.compile(r"^[\s*(\[$]*([A-D])[\s*)\].。:$]*$")
_ANCHORED_RULES = (("lenient_paren_at_end", _PAREN_AT_END), ("lenient_lone_letter", _LONE_LETTER))


def extract_choice_lenient_rule(text: str) -> tuple[str | None, str | None]:
    """Like `extract_choice_rule`, for `extract_choice_lenient`."""
    letter, rule = extract_choice_rule(text)
    if letter is not None:
        return letter, rule
    for name, pattern in LENIENT_RULES:
        matches = pattern.findall(text)
        if matches:
            return matches[-1].upper(), name
    for name, pattern in _ANCHORED_RULES:
        match = pattern.search(text)
        if match:
            return match.group(1), name
    return None, None


def extract_choice_lenient(text: str) -> str | None:
    """Strict extraction first; then forms G-LLaVA misses. The LAST occurrence of each extra form
    wins, since models tend to restate the final answer at the end."""
    return extract_choice_lenient_rule(text)[0]


# ---------------------------------------------------------------------------------------------
# Numeric extraction
# ---------------------------------------------------------------------------------------------
# LaTeX and unicode are first rewritten into a small expression language over digits, "√", "π",
# "(", ")", "^" and the operators + - * /; the text is then scanned for expression spans and the
# last one that evaluates is the answer.

_BRACED = r"\{([^{}]*)\}"  # innermost braces only; rewriting loops until nothing changes
_LATEX_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\\(?:left|right|displaystyle)\b"), ""),
    (re.compile(r"\\(?:text|mathrm|textrm|mathbf|operatorname)\s*" + _BRACED), r" \1 "),
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree"), " "),
    (re.compile(r"\\[dt]?frac\s*" + _BRACED + r"\s*" + _BRACED), r"((\1)/(\2))"),
    (re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)"), r"((\1)/(\2))"),  # \frac34
    # The index starts with a non-space (so `\s*` and it cannot share spaces) and holds no "[" (so a run
    # of unclosed "\sqrt[" is read once, not once per "\sqrt[": linear time).
    (re.compile(r"\\sqrt\s*\[\s*((?:[^\s\[\]][^\[\]]*)?)\]\s*" + _BRACED), r"((\2)^(1/(\1)))"),
    (re.compile(r"\\sqrt\s*" + _BRACED), r"√(\1)"),
    (re.compile(r"\^\s*" + _BRACED), r"^(\1)"),
)
_SIMPLE_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    ("\\sqrt", "√"),  # "\sqrt3" and "\sqrt 3"
    ("\\pi", "π"),
    ("\\cdot", "*"),
    ("\\times", "*"),
    ("\\div", "/"),
    ("−", "-"),  # unicode minus
    ("–", "-"),
    ("×", "*"),
    ("·", "*"),
    ("÷", "/"),
    ("°", " "),
)
_LATEX_SPACING = re.compile(r"\\[,;:! ]|\\[()\[\]]|\$")
# Not \b: "2pi" and "2sqrt(3)" have no word boundary before the name.
_WORD_SQRT = re.compile(r"(?<![A-Za-z])sqrt(?![A-Za-z])", re.IGNORECASE)
_WORD_PI = re.compile(r"(?<![A-Za-z])pi(?![A-Za-z])", re.IGNORECASE)
_ROOT_SPACE = re.compile(r"√\s+")
# "1,000" and "12,345,678" but not "3,4" (a list) and not digits of a decimal.
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])")

# A chunk is a run of expression characters holding no space; a decimal point must be followed
# by a digit, so a sentence-final "." is not taken. Chunks may be joined by spaced operators.
_CHUNK = r"(?:[\d√π()^]|\.(?=\d))+"
_SPAN = re.compile(
    # "P1", "x2", "A1B1" are labels, not answers; digits and "." are excluded too so that a span
    # cannot start in the middle of "P12".
    r"(?<![A-Za-z_\d.])"
    r"(?:-\s*)?" + _CHUNK + r"(?:\s*[-+*/]\s*-?" + _CHUNK + r")*"
)
_HAS_VALUE = re.compile(r"[\dπ]")
_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")


def _normalize(text: str) -> str:
    text = _LATEX_SPACING.sub(" ", text)
    for _ in range(20):  # bounded: each pass removes one level of braces
        before = text
        for pattern, repl in _LATEX_RULES:
            text = pattern.sub(repl, text)
        if text == before:
            break
    for old, new in _SIMPLE_REPLACEMENTS:
        text = text.replace(old, new)
    text = text.replace("{", "(").replace("}", ")")
    text = _WORD_SQRT.sub("√", text)
    text = _WORD_PI.sub("π", text)
    text = _ROOT_SPACE.sub("√", text)
    return _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)


_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+|[√π()^*/+-])")


def _is_number(token: str) -> bool:
    return token[0] in "0123456789."


class _ParseError(Exception):
    pass


class _Parser:
    """Recursive descent over: expr := term (+|- term)*; term := juxt (*|/ juxt)*;
    juxt := unary unary*  (implicit product binds tighter than "/", so "3π/2" = (3π)/2 and
    "1/2π" = 1/(2π)); unary := -unary | power; power := primary (^ unary)?;
    primary := number | π | √primary | ( expr )."""

    def __init__(self, source: str) -> None:
        self.tokens: list[str] = []
        pos = 0
        source = source.strip()
        while pos < len(source):
            match = _TOKEN.match(source, pos)
            if not match:
                raise _ParseError(source[pos:])
            self.tokens.append(match.group(1))
            pos = match.end()
            while pos < len(source) and source[pos].isspace():
                pos += 1
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise _ParseError("unexpected end")
        self.i += 1
        return token

    def parse(self) -> float:
        value = self.expr()
        if self.peek() is not None:
            raise _ParseError(f"trailing {self.peek()!r}")
        return value

    def expr(self) -> float:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self) -> float:
        value = self.juxt()
        while self.peek() in ("*", "/"):
            if self.take() == "*":
                value *= self.juxt()
            else:
                divisor = self.juxt()
                if divisor == 0:
                    raise _ParseError("division by zero")
                value /= divisor
        return value

    def juxt(self) -> float:
        value = self.unary()
        while self._starts_factor():
            value *= self.power()
        return value

    def _starts_factor(self) -> bool:
        token = self.peek()
        if token is None:
            return False
        if token in ("√", "π", "("):
            return True
        # a number may follow ")" or "π" ("(1+√2)2" is odd but unambiguous), never a number
        return _is_number(token) and not _is_number(self.tokens[self.i - 1])

    def unary(self) -> float:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        return self.power()

    def power(self) -> float:
        base = self.primary()
        if self.peek() == "^":
            self.take()
            exponent = self.unary()
            try:
                result = base**exponent
            except (OverflowError, ZeroDivisionError) as err:
                raise _ParseError(str(err)) from err
            if isinstance(result, complex):  # e.g. (-8) ** (1/3)
                raise _ParseError("complex result")
            return result
        return base

    def primary(self) -> float:
        token = self.take()
        if token == "π":
            return math.pi
        if token == "√":
            radicand = self.primary()
            if radicand < 0:
                raise _ParseError("square root of a negative number")
            return math.sqrt(radicand)
        if token == "(":
            value = self.expr()
            if self.take() != ")":
                raise _ParseError("unbalanced parenthesis")
            return value
        if _is_number(token):
            return float(token)
        raise _ParseError(f"unexpected {token!r}")


def _evaluate(source: str) -> float | None:
    try:
        value = _Parser(source).parse()
    except (_ParseError, RecursionError):
        return None
    return value if math.isfinite(value) else None


def _trim_parens(span: str) -> str:
    """Drop unmatched brackets at the edges: "(5" -> "5", "2√3)" -> "2√3"."""
    excess = span.count("(") - span.count(")")  # counted once: spans can be long
    if excess > 0:
        stripped = span.lstrip("(")
        span = "(" * max(0, len(span) - len(stripped) - excess) + stripped
    elif excess < 0:
        stripped = span.rstrip(")")
        span = stripped + ")" * max(0, len(span) - len(stripped) + excess)
    return span


def extract_number(text: str) -> float | None:
    """The value of the final number (or simple expression such as 2√3, 3π/2, \\frac{3}{4}) in
    `text`, or None when there is none."""
    normalized = _normalize(text)
    spans = [m.group(0) for m in _SPAN.finditer(normalized) if _HAS_VALUE.search(m.group(0))]
    for span in reversed(spans):
        for candidate in (span, _trim_parens(span)):
            value = _evaluate(candidate)
            if value is not None:
                return value
        # An expression we cannot evaluate ("x^2" fragments, "1/0"): its last plain number.
        plain = _PLAIN_NUMBER.findall(span)
        if plain:
            return float(plain[-1])
    return None


def parse_number(text: str) -> float | None:
    """Parse a whole string as an exact value ("60", "2*sqrt(3)", "4*pi", "3/4", "60°"); if it is
    not one expression, fall back to the final number in it, as `extract_number` does."""
    value = _evaluate(_normalize(text))
    return value if value is not None else extract_number(text)


def numbers_match(pred: float, gold: float, rel_tol: float = 1e-3, abs_tol: float = 1e-6) -> bool:
    """Whether a predicted value equals the gold one up to rounding (e.g. 3.464 vs 2√3)."""
    if not (math.isfinite(pred) and math.isfinite(gold)):
        return False
    return math.isclose(pred, gold, rel_tol=rel_tol, abs_tol=abs_tol)
