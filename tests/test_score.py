"""Tests for GeoQA scoring: G-LLaVA-compatible letter extraction, lenient and numeric extraction,
the readers, `score`, and the `geovlm score` command.

Strict expectations come from reading G-LLaVA's scorer, pipilurj/G-LLaVA
scripts/geo_acc_calculate.py (commit 838e2643a52018f5d3eeee7ed3ebd6dc411c818b), `extract_choice`;
"L7" etc. below are its line numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

try:
    import geovlm  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from geovlm.eval import cli as eval_cli
from geovlm.eval.extract import (
    LAST_SENTENCE_RULE,
    LENIENT_RULES,
    STRICT_RULES,
    extract_choice,
    extract_choice_lenient,
    extract_choice_lenient_rule,
    extract_choice_rule,
    extract_number,
    numbers_match,
    parse_number,
)
from geovlm.eval.score import (
    AnswerRecord,
    PredictionRecord,
    read_answers,
    read_predictions,
    score,
)

FIXTURES = Path(__file__).parent / "fixtures" / "score"

# (text, strict letter, lenient letter)
STRICT_CASES = [
    # L7 pattern0 r"Answer:([A-D])"
    pytest.param("Answer:C", "C", "C", id="p0-plain"),
    # L7: no word boundary before "Answer", so a prefix still matches
    pytest.param("So the angle is 40°. Final Answer:B", "B", "B", id="p0-prefixed"),
    # L8 re.search: the first occurrence of pattern0 wins
    pytest.param("Answer:A\nAnswer:D", "A", "A", id="p0-first-occurrence"),
    # L7-10 run before L13: pattern0 wins over a later pattern1 match
    pytest.param("Answer:B. Therefore, the correct answer is option D.", "B", "B", id="p0-beats-p1"),
    # L7: no boundary after the letter either
    pytest.param("Answer:Cat", "C", "C", id="p0-no-boundary-after"),
    # L7 [A-D] is case-sensitive: "Answer:c" is skipped, the later "Answer:D" found
    pytest.param("Answer:c, no wait. Answer:D", "D", "D", id="p0-lowercase-letter-skipped"),
    # L7: a space after the colon defeats pattern0; only the later no-space form counts
    pytest.param("Answer: A first, then Answer:B", "B", "B", id="p0-space-then-nospace"),
    # L13 pattern1
    pytest.param("Therefore, the correct answer is option D.", "D", "D", id="p1"),
    # L13 lowercase "the": a capital "The" misses pattern1, and L42 finds no "is X" ("is option")
    pytest.param("The correct answer is option D.", None, "D", id="p1-capital-the"),
    # L19 pattern2
    pytest.param("Therefore, option A is selected.", "A", "A", id="p2"),
    # L19 lowercase "option"; no period, so L39 raises IndexError -> None (L40-41)
    pytest.param("Option A is selected", None, "A", id="p2-capital-option"),
    # L19 runs before the last-sentence rule (L42), whose "is B" would say otherwise
    pytest.param("Therefore, option A is selected. The answer is B.", "A", "A", id="p2-beats-p5"),
    # L25 pattern3
    pytest.param("Therefore, the answer is option B.", "B", "B", id="p3"),
    # L31 pattern4
    pytest.param("Therefore, the answer is (C).", "C", "C", id="p4"),
    # L31 lowercase "the" (although their own L30 comment shows "The answer is (D) 14."); L42's
    # "is ([A-D])" cannot match "is (C)"
    pytest.param("The answer is (C).", None, "C", id="p4-capital-the"),
    # L37-42 pattern5: "is X" in the sentence before the final period
    pytest.param("AB = 5, so the answer is D.", "D", "D", id="p5"),
    # L39: with a trailing period plus whitespace, sentences[-1] is "\n" and [-2] the last sentence
    pytest.param("It is C.\n", "C", "C", id="p5-trailing-newline"),
    # L39: without a trailing period, the text after the last period is ignored
    pytest.param("It is A. So it is B", "A", "A", id="p5-no-final-period"),
    # L39-41: no period at all -> IndexError -> None
    pytest.param("It is B", None, None, id="p5-no-period"),
    # L39: only the last sentence is read; "is A" in an earlier one does not count
    pytest.param("The answer is A. Then the angle sum is 180 degrees.", None, "A", id="p5-earlier-sentence"),
    # L42: no word boundaries, "is Because" reads as B
    pytest.param("This is Because the angles are equal.", "B", "B", id="p5-word-prefix"),
    # L37: split(".") splits decimals, so "2.5" makes "...is B, and AB = 2" the last sentence
    pytest.param("So the choice is B, and AB = 2.5", "B", "B", id="p5-decimal-split"),
    # L39: "..." leaves an empty sentences[-2]
    pytest.param("It is C...", None, None, id="p5-ellipsis"),
    # L37 splits on ASCII "." only; a full-width "。" is not a period
    pytest.param("It is C。", None, None, id="p5-fullwidth-period"),
    # L42 [A-D] is case-sensitive
    pytest.param("The answer is c.", None, None, id="p5-lowercase-letter"),
    # L42 needs exactly one space
    pytest.param("So it is  B.", None, None, id="p5-two-spaces"),
    pytest.param("", None, None, id="empty"),
    # --- forms only the lenient extractor knows
    pytest.param("Answer: C", None, "C", id="lenient-answer-space"),
    pytest.param("answer:C", None, "C", id="lenient-answer-lowercase"),
    pytest.param("Answer：C", None, "C", id="lenient-fullwidth-colon"),
    pytest.param("So the answer is C", None, "C", id="lenient-answer-is"),
    pytest.param("We get **C**", None, "C", id="lenient-bold"),
    pytest.param("Hence we choose (C)", None, "C", id="lenient-paren-at-end"),
    pytest.param("C", None, "C", id="lenient-lone-letter"),
    pytest.param("B.", None, "B", id="lenient-lone-letter-period"),
    # lenient extra forms: the LAST occurrence wins
    pytest.param("Answer: A ... on reflection, Answer: D", None, "D", id="lenient-last-occurrence"),
    # lenient reads a lowercase letter only when it is all that follows "answer:" on its line
    pytest.param("answer:d", None, "D", id="lenient-lowercase-answer-lowercase-letter"),
    pytest.param("Answer: d", None, "D", id="lenient-lowercase-letter-after-space"),
    pytest.param("So the final answer: (b).\n", None, "B", id="lenient-lowercase-letter-paren"),
    pytest.param(
        "Answer:c\nbecause the angles sum to 180", None, "C", id="lenient-lowercase-letter-own-line"
    ),
    pytest.param("answer: a triangle", None, None, id="lenient-lowercase-letter"),
    pytest.param("The answer: a, b or c", None, None, id="lenient-lowercase-letter-list"),
    pytest.param("the answer is d", None, None, id="lenient-lowercase-answer-is"),
]


@pytest.mark.parametrize(("text", "strict", "lenient"), STRICT_CASES)
def test_extract_choice_cases(text: str, strict: str | None, lenient: str | None) -> None:
    assert extract_choice(text) == strict
    assert extract_choice_lenient(text) == lenient


def test_rule_order_matches_g_llava() -> None:
    assert [pattern.pattern for _, pattern in STRICT_RULES] == [
        r"Answer:([A-D])",  # L7
        r"the correct answer is option ([A-D])",  # L13
        r"option ([A-D]) is selected",  # L19
        r"the answer is option ([A-D])",  # L25
        r"the answer is \(([A-D])\)",  # L31
    ]


# ---------------------------------------------------------------------------------------------
# Fixture files: crafted predictions covering every rule
# ---------------------------------------------------------------------------------------------


def test_fixture_predictions_hit_every_rule() -> None:
    texts = [p.text for p in read_predictions(FIXTURES / "predictions.jsonl")]
    strict_rules = {extract_choice_rule(t)[1] for t in texts}
    lenient_rules = {extract_choice_lenient_rule(t)[1] for t in texts}
    assert {name for name, _ in STRICT_RULES} | {LAST_SENTENCE_RULE} <= strict_rules
    expected_lenient = {name for name, _ in LENIENT_RULES} | {"lenient_paren_at_end", "lenient_lone_letter"}
    # (the lowercase-letter rule, added later, is covered by STRICT_CASES and
    # test_cli_lenient_reads_lowercase_answer_letters, leaving the fixture's counts as published)
    expected_lenient -= {"lenient_answer_colon_lowercase"}
    assert expected_lenient <= lenient_rules
    assert None in strict_rules and None in lenient_rules  # some stay unparsed in both modes


def test_score_fixture_counts() -> None:
    report = score(FIXTURES / "answers.jsonl", FIXTURES / "predictions.jsonl", lenient=True)
    # 36 gold questions, 34 predictions (ids 35 and 36 missing)
    assert (report.total, report.missing) == (36, 2)
    # correct: ids 1 2 5 6 7 9 11 12 14 15 20
    assert report.correct == 11
    assert report.accuracy == pytest.approx(100 * 11 / 36)
    # unparsed: ids 8 10 13 17 18 21 22 23 24 25 26 27 28 29 31 32 34
    assert report.unparsed == 17
    # lenient rescues 8 10 13 18 22 23 25 26 27 28 29 32
    assert report.lenient_correct == 23
    assert report.lenient_accuracy == pytest.approx(100 * 23 / 36)

    family = {
        label: (g.total, g.correct, g.unparsed, g.missing, g.lenient_correct)
        for label, g in report.breakdowns["family"].items()
    }
    assert family == {"angle": (11, 4, 4, 1, 7), "length": (12, 4, 7, 1, 11), "area": (13, 3, 6, 0, 5)}
    difficulty = {label: g.total for label, g in report.breakdowns["difficulty"].items()}
    assert difficulty == {"easy": 11, "hard": 11, "(none)": 14}
    assert "style" not in report.breakdowns  # no answer carries it

    data = report.to_dict()
    json.dumps(data)  # serialisable
    assert data["correct"] == 11 and data["breakdowns"]["family"]["area"]["total"] == 13


def test_score_strict_only_has_no_lenient_numbers() -> None:
    report = score(FIXTURES / "answers.jsonl", FIXTURES / "predictions.jsonl")
    assert report.correct == 11
    assert report.lenient_correct is None and report.lenient_accuracy is None
    assert "Lenient" not in report.format_table()


def test_json_list_predictions() -> None:
    # first five fixture predictions as one JSON list: ids 1 2 5 correct, 3 4 wrong, 31 missing
    report = score(FIXTURES / "answers.jsonl", FIXTURES / "predictions_list.json")
    assert (report.correct, report.missing, report.unparsed) == (3, 31, 0)


def test_format_table_is_aligned() -> None:
    table = score(FIXTURES / "answers.jsonl", FIXTURES / "predictions.jsonl", lenient=True).format_table()
    lines = table.splitlines()
    assert lines[0] == "Accuracy: 30.56% (11/36, choice mode)"
    assert lines[1].startswith("Lenient accuracy: 63.89% (23/36")
    header = lines[2]
    assert header.split() == ["group", "total", "correct", "acc%", "unparsed", "missing", "lenient%"]
    rows = lines[3:]
    assert rows[0].split() == ["overall", "36", "11", "30.56", "17", "2", "63.89"]
    assert any(row.startswith("family=area") for row in rows)
    assert len({len(row) for row in [header, *rows]}) == 1  # right-aligned columns end together


# ---------------------------------------------------------------------------------------------
# Readers and errors
# ---------------------------------------------------------------------------------------------


def test_malformed_answers_names_line() -> None:
    with pytest.raises(ValueError, match=r"answers_malformed\.jsonl:3: invalid JSON"):
        read_answers(FIXTURES / "answers_malformed.jsonl")


def test_unknown_prediction_id(tmp_path: Path) -> None:
    preds = tmp_path / "preds.jsonl"
    preds.write_text('{"question_id": 1, "text": "Answer:C"}\n{"question_id": "1", "text": "x"}\n')
    with pytest.raises(ValueError, match=r"preds\.jsonl:2: question_id '1' is not in the answers.*type"):
        score(FIXTURES / "answers.jsonl", preds)


def test_duplicate_prediction_id(tmp_path: Path) -> None:
    preds = tmp_path / "preds.jsonl"
    preds.write_text('{"question_id": 1, "text": "Answer:C"}\n\n{"question_id": 1, "text": "Answer:D"}\n')
    with pytest.raises(
        ValueError, match=r"preds\.jsonl:3: duplicate prediction .* \(first at .*preds\.jsonl:1\)"
    ):
        read_predictions(preds)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "A"}', "missing 'question_id'"),
        ('{"question_id": true, "text": "A"}', "'question_id' must be"),
        ("[1, 2]", "expected a JSON object"),
        ('{"question_id": 9, "text": 3}', "'text' must be a string"),
    ],
)
def test_answers_field_errors(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": 8, "text": "A"}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"answers\.jsonl:2: .*{message}"):
        read_answers(path)


def test_gold_letter_must_be_a_choice() -> None:
    with pytest.raises(ValueError, match="gold letter A-D"):
        score([{"question_id": 1, "text": "E"}], [])


def test_in_memory_records() -> None:
    answers = [AnswerRecord(1, "A"), AnswerRecord(2, "B")]
    report = score(answers, [PredictionRecord(1, "Answer:A"), PredictionRecord(2, "It is A.")])
    assert (report.total, report.correct, report.accuracy) == (2, 1, 50.0)


def test_lenient_rejected_in_number_mode() -> None:
    with pytest.raises(ValueError, match="choice mode only"):
        score([{"question_id": 1, "value": "3"}], [], mode="number", lenient=True)


# ---------------------------------------------------------------------------------------------
# Numeric mode
# ---------------------------------------------------------------------------------------------

SQRT3 = math.sqrt(3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So the angle is 60°.", 60.0),
        ("The angle measures 60 degrees", 60.0),
        ("$\\angle ABC = 60^{\\circ}$", 60.0),
        ("$60^\\circ$", 60.0),
        ("AB = 2√3", 2 * SQRT3),
        ("AB = √2.", math.sqrt(2)),
        ("The circumference is 4π", 4 * math.pi),
        ("The arc is 3π/2.", 1.5 * math.pi),
        ("The ratio is 3/4.", 0.75),
        ("The ratio is 0.75", 0.75),
        ("x = -5", -5.0),
        ("The area is 1,000 square units.", 1000.0),
        ("So $\\frac{3}{4}$", 0.75),
        ("So $\\dfrac{\\sqrt{3}}{2}$", SQRT3 / 2),
        ("Hence $AB = 2\\sqrt{3}$.", 2 * SQRT3),
        ("AB = 4 and BC = 6, so AC = 8.", 8.0),  # the final number
        ("Point P1 lies on AB = 7", 7.0),  # labels such as P1 are not numbers
        ("**5**", 5.0),
        ("No number here.", None),
    ],
)
def test_extract_number(text: str, expected: float | None) -> None:
    value = extract_number(text)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("60", 60.0),
        ("2*sqrt(3)", 2 * SQRT3),
        ("4*pi", 4 * math.pi),
        ("3/4", 0.75),
        ("-5", -5.0),
        ("60°", 60.0),
    ],
)
def test_parse_number_gold_values(value: str, expected: float) -> None:
    assert parse_number(value) == pytest.approx(expected)


def test_numbers_match() -> None:
    assert numbers_match(3.464, 2 * SQRT3)  # rounded to 3 decimals, within rel_tol=1e-3
    assert not numbers_match(3.4, 2 * SQRT3)
    assert numbers_match(0.0, 1e-9)
    assert not numbers_match(float("nan"), float("nan"))


def test_score_number_mode() -> None:
    report = score(FIXTURES / "answers_number.jsonl", FIXTURES / "predictions_number.jsonl", mode="number")
    # ids 1-11 right, 12 wrong (50 vs 60), 13 has no number, 14 has no prediction
    assert (report.total, report.correct, report.unparsed, report.missing) == (14, 11, 1, 1)
    assert report.breakdowns["family"]["ratio"].correct == 3


def test_number_mode_needs_value() -> None:
    with pytest.raises(ValueError, match="needs a 'value'"):
        score([{"question_id": 1, "text": "A"}], [], mode="number")


# ---------------------------------------------------------------------------------------------
# `geovlm score`
# ---------------------------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="geovlm")
    eval_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_score_prints_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report" / "score.json"
    args = _parse(
        [
            "score",
            "--answers", str(FIXTURES / "answers.jsonl"),
            "--predictions", str(FIXTURES / "predictions.jsonl"),
            "--lenient",
            "--json", str(out),
        ]
    )  # fmt: skip
    assert args.func is eval_cli.run_score
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "Accuracy: 30.56%" in printed
    assert "Lenient accuracy: 63.89%" in printed
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(100 * 11 / 36)


def test_cli_score_number_mode(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(
        [
            "score",
            "--answers", str(FIXTURES / "answers_number.jsonl"),
            "--predictions", str(FIXTURES / "predictions_number.jsonl"),
            "--mode", "number",
        ]
    )  # fmt: skip
    assert eval_cli.run_score(args) == 0
    assert "Accuracy: 78.57% (11/14, number mode)" in capsys.readouterr().out


def test_cli_malformed_answers_raises_cli_error() -> None:
    from geovlm.errors import CLIError

    args = _parse(
        [
            "score",
            "--answers", str(FIXTURES / "answers_malformed.jsonl"),
            "--predictions", str(FIXTURES / "predictions.jsonl"),
        ]
    )  # fmt: skip
    with pytest.raises(CLIError, match=r"answers_malformed\.jsonl:3") as info:
        eval_cli.run_score(args)
    assert "\n" not in str(info.value)


def test_cli_missing_file_raises_cli_error(tmp_path: Path) -> None:
    from geovlm.errors import CLIError

    args = _parse(
        ["score", "--answers", str(tmp_path / "nope.jsonl"), "--predictions", str(tmp_path / "p.jsonl")]
    )
    with pytest.raises(CLIError, match="no such file"):
        eval_cli.run_score(args)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

# Text biased towards the scorer's vocabulary so the rules actually fire.
_WORDS = st.sampled_from(
    ["Answer:", "Answer: ", "answer", "the correct answer is option ", "option ", " is selected",
     "the answer is ", "is ", "(", ")", ".", ". ", "...", "**", "：", "A", "B", "C", "D", "a", "E",
     " ", "\n", "2.5", "√3", "π", "。"]
)  # fmt: skip
_TEXT = st.one_of(st.text(), st.lists(st.one_of(_WORDS, st.text(max_size=3)), max_size=20).map("".join))


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_extract_choice_total(text: str) -> None:
    strict = extract_choice(text)
    assert strict is None or strict in ("A", "B", "C", "D")
    lenient = extract_choice_lenient(text)
    assert lenient is None or lenient in ("A", "B", "C", "D")
    # lenient only adds: whenever strict decides, lenient agrees
    if strict is not None:
        assert lenient == strict


@settings(max_examples=200, deadline=None)
@example("x = 1/0")  # division by zero
@example("(-8)^(1/3)")  # complex power
@example("9^9^9^9")  # overflow
@example("√(-4)")  # negative radicand
@example("((((((((((((((((((((((((1")  # unbalanced
@given(
    st.one_of(st.text(), st.lists(st.sampled_from(list("0123456789.,-+*/^()√π° ")), max_size=30).map("".join))
)
def test_extract_number_total(text: str) -> None:
    value = extract_number(text)
    assert value is None or math.isfinite(value)


# ---------------------------------------------------------------------------------------------
# Hostile input: empty files, a closed pipe, lowercase letters (docs/HOSTILE_INPUTS.md)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "\n\n", "[]"], ids=["empty", "blank-lines", "empty-list"])
@pytest.mark.parametrize("which", ["predictions", "answers"])
def test_cli_empty_file_is_an_error_not_zero_percent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str, content: str
) -> None:
    from geovlm.cli import main

    files = {"answers": FIXTURES / "answers.jsonl", "predictions": FIXTURES / "predictions.jsonl"}
    files[which] = tmp_path / f"{which}.jsonl"
    files[which].write_text(content)
    assert (
        main(["score", "--answers", str(files["answers"]), "--predictions", str(files["predictions"])]) == 2
    )
    captured = capsys.readouterr()
    assert "Accuracy" not in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geovlm score: error:") and f"no {which}" in lines[0]


def test_read_predictions_rejects_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("")
    with pytest.raises(ValueError, match=r"p\.jsonl: no predictions"):
        read_predictions(path)


def test_cli_lenient_reads_lowercase_answer_letters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers, predictions = tmp_path / "a.jsonl", tmp_path / "p.jsonl"
    answers.write_text("".join(json.dumps({"question_id": i, "text": x}) + "\n" for i, x in enumerate("DDB")))
    texts = ["So ∠C = 40°.\nanswer:d", "Answer: d", "The answer: (b)."]
    predictions.write_text(
        "".join(json.dumps({"question_id": i, "text": t}) + "\n" for i, t in enumerate(texts))
    )
    assert eval_cli.run_score(_parse(["score", "--answers", str(answers), "--predictions", str(predictions),
                                      "--lenient"])) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "Accuracy: 0.00% (0/3" in printed and "Lenient accuracy: 100.00% (3/3" in printed


def test_cli_score_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`geovlm score ... | head -1`: when the reader has gone, no BrokenPipeError traceback, no
    "Exception ignored" at exit; exit status 141 (128 + SIGPIPE) as coreutils report it."""
    import os
    import subprocess

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: every write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from geovlm.cli import main; sys.exit(main())", "score",
             "--answers", str(FIXTURES / "answers.jsonl"), "--predictions", str(FIXTURES / "predictions.jsonl"),
             "--json", str(tmp_path / "r.json")],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.stderr == "" and done.returncode == 141
    assert json.loads((tmp_path / "r.json").read_text())["total"] == 36  # the JSON report is still written


def test_cli_score_piped_to_head_prints_no_traceback() -> None:
    import shlex
    import subprocess

    command = shlex.join([sys.executable, "-c", "import sys; from geovlm.cli import main; sys.exit(main())",
                          "score", "--answers", str(FIXTURES / "answers.jsonl"),
                          "--predictions", str(FIXTURES / "predictions.jsonl")])  # fmt: skip
    done = subprocess.run(["bash", "-c", f"{command} | head -1"], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("Accuracy: 30.56%") and len(done.stdout.splitlines()) == 1
    assert done.stderr == "" and done.returncode == 0
