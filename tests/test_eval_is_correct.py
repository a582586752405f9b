"""One decision of correctness (issue #23): `geovlm score`, `geovlm eval` and the GRPO accuracy reward all
call `geovlm.eval.score.is_correct`, so a reward of 1 is exactly a point on the scoreboard."""

from __future__ import annotations

import pytest

from geovlm.eval import score as score_module
from geovlm.eval.score import is_correct, score
from geovlm.train.rl import rewards

# (reply, gold, mode, correct)
TABLE = [
    ("∠C = 70°.\nAnswer:B", "B", "choice", True),
    ("the correct answer is option B", "B", "choice", True),
    ("Answer: B", "B", "choice", False),  # G-LLaVA's procedure: no space after the colon
    ("answer:b", "B", "choice", False),
    ("Answer:BC", "B", "choice", True),  # no word boundary, as G-LLaVA
    ("B", "B", "choice", False),
    ("It is C.", "C", "choice", True),
    ("It is C", "C", "choice", False),  # no period: their sentences[-2] raises, unparsed
    ("Answer:A", "B", "choice", False),
    ("Answer:E", "E", "choice", False),  # not a choice letter
    ("", "A", "choice", False),
    ("So the answer is" + "\n" * 3000, "A", "choice", False),
    ("Answer: 60°", "60", "number", True),
    ("Answer: 60°", "60°", "number", True),
    ("x = 2*sqrt(3)", "2√3", "number", True),
    ("x = 3.464", "2*sqrt(3)", "number", True),  # equal up to rounding
    ("x = 3.46", "2√3", "number", False),
    ("so it is 4π.", "4*pi", "number", True),
    ("Answer: 0.75", "3/4", "number", True),
    ("Answer: 3/5", "3/4", "number", False),
    ("Answer: 6.75 cm", "(27/4)cm", "number", True),
    ("no number here", "5", "number", False),
    ("Answer: 5", "not a number", "number", False),
    ("Answer: 1/0", "1", "number", False),
]


@pytest.mark.parametrize(("reply", "gold", "mode", "correct"), TABLE)
def test_score_eval_and_reward_decide_alike(reply, gold, mode, correct):
    assert is_correct(reply, gold, mode) is correct
    # the GRPO reward
    assert rewards.accuracy_reward([reply], answer=[gold], answer_type=[mode]) == [float(correct)]
    # `geovlm score` (and `geovlm eval`, which scores through it); a gold it cannot use is an error there
    field = "text" if mode == "choice" else "value"
    usable = gold in "ABCD" if mode == "choice" else gold != "not a number"
    if usable:
        report = score([{"question_id": 1, field: gold}], [{"question_id": 1, "text": reply}], mode=mode)
        assert report.correct == int(correct)


def test_there_is_one_function():
    # The reward module holds no decision of its own: it calls the scorer's.
    assert rewards.is_correct is score_module.is_correct
    assert not hasattr(rewards, "extract_choice") and not hasattr(rewards, "numbers_match")


def test_unknown_mode_is_an_error_and_scores_zero_as_a_reward():
    with pytest.raises(ValueError, match="unknown mode"):
        is_correct("Answer:A", "A", "letters")
    assert rewards.accuracy_reward(["Answer:A"], answer=["A"], answer_type=["letters"]) == [0.0]


def test_number_gold_may_be_a_number():
    assert is_correct("x = 2√3", 2 * 3**0.5, "number")
    assert is_correct("Answer: 60", 60, "number") and not is_correct("Answer: 61", 60, "number")
