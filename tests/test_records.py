"""Tests for geovlm.data.records: parsing, validation and reading of LLaVA conversation records."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from geovlm.data.records import (
    IMAGE_TAG,
    Record,
    RecordError,
    Turn,
    normalize_image_tag,
    parse_record,
    read_records,
    read_records_lenient,
)


def conv(*pairs: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"from": role, "value": value} for role, value in pairs]


def good(rid: str = "r1", **overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": rid,
        "image": "geo3k/1.png",
        "conversations": conv(("human", "<image>\nFind x."), ("gpt", "x = 3")),
    }
    obj.update(overrides)
    return obj


def parse(obj: Any, index: int = 0) -> Record:
    return parse_record(obj, source="qa.json", index=index)


# --- valid records ---------------------------------------------------------------------------------------


def test_single_turn_record() -> None:
    record = parse(good(family="triangle", style="clean"), index=4)
    assert record == Record(
        id="r1",
        image="geo3k/1.png",
        turns=(Turn("user", "<image>\nFind x."), Turn("assistant", "x = 3")),
        source="qa.json",
        index=4,
        extra={"family": "triangle", "style": "clean"},
    )
    hash(record)  # frozen records stay hashable despite the extra dict


def test_multi_turn_record_with_system_and_role_aliases() -> None:
    obj = good(
        conversations=conv(
            ("system", "You solve geometry problems."),
            ("Human", "<image>\nWhat is AB?"),
            ("GPT", "AB = 5"),
            ("user", "And BC?"),
            (" Assistant ", "BC = 7"),
        )
    )
    record = parse(obj)
    assert [t.role for t in record.turns] == ["system", "user", "assistant", "user", "assistant"]
    assert record.turns[3].content == "And BC?"


def test_text_only_record_and_default_id() -> None:
    record = parse({"conversations": conv(("human", "1+1?"), ("gpt", "2"))}, index=7)
    assert record.id == "qa.json:7"
    assert record.image is None
    assert IMAGE_TAG not in record.turns[0].content


def test_integer_id_and_single_item_image_list() -> None:
    record = parse(good(rid=12, image=["geoqa_plus/3.png"]))  # type: ignore[arg-type]
    assert record.id == "12"
    assert record.image == "geoqa_plus/3.png"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<image>\nWhat is x?", "<image>\nWhat is x?"),
        ("What is x?\n<image>", "What is x?\n<image>"),
        ("<image>What is x?", "<image>\nWhat is x?"),
        ("What is x?", "<image>\nWhat is x?"),  # no tag: LLaVA puts one at the front
        ("  <image> \n\n What is x?", "<image>\nWhat is x?"),
        ("What is x? <image>", "What is x?\n<image>"),
    ],
)
def test_image_tag_variants_give_one_tag_in_first_user_turn(value: str, expected: str) -> None:
    record = parse(
        good(conversations=conv(("human", value), ("gpt", "3"), ("human", "why?"), ("gpt", "because")))
    )
    assert record.turns[0].content == expected
    assert sum(t.content.count(IMAGE_TAG) for t in record.turns) == 1


def test_tag_in_a_later_user_turn_is_kept_there() -> None:
    record = parse(
        good(conversations=conv(("human", "Hi"), ("gpt", "Hello"), ("human", "<image> x?"), ("gpt", "3")))
    )
    assert record.turns[0].content == "Hi"
    assert record.turns[2].content == "<image>\nx?"


def test_untagged_image_record_with_system_turn_tags_first_user_turn() -> None:
    record = parse(good(conversations=conv(("system", "S"), ("human", "Q"), ("gpt", "A"))))
    assert record.turns[0].content == "S"
    assert record.turns[1].content == "<image>\nQ"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no tag  here ", "no tag  here "),
        ("<image>", "<image>"),
        (" \n<image>\n ", "<image>"),
        ("A <image> B", "A\n<image>\nB"),
        ("<image>\n\nQ", "<image>\nQ"),
        ("Q\n\n<image>", "Q\n<image>"),
    ],
)
def test_normalize_image_tag(text: str, expected: str) -> None:
    assert normalize_image_tag(text) == expected
    assert normalize_image_tag(expected) == expected  # idempotent


# --- malformed records -----------------------------------------------------------------------------------

MALFORMED = [
    # (case, record, id expected in message, fragment of the reason, code)
    ("not a dict", ["x"], "qa.json:3", "expected a JSON object", "not_object"),
    ("no conversations", {"id": "r1", "image": "a.png"}, "r1", "no 'conversations'", "no_conversations"),
    ("conversations not a list", good(conversations="hi"), "r1", "must be a list", "bad_conversations"),
    ("empty conversations", good(conversations=[]), "r1", "'conversations' is empty", "empty_conversations"),
    ("turn not a dict", good(conversations=["hi", "there"]), "r1", "turn 0 must be an object", "bad_turn"),
    ("unknown role", good(conversations=conv(("human", "Q"), ("bot", "A"))), "r1", "unknown role 'bot'",
     "unknown_role"),
    ("missing from", good(conversations=[{"value": "Q"}]), "r1", "'from' must be a string", "bad_turn"),
    ("non-string value", good(conversations=conv(("human", "<image>Q"), ("gpt", 3))), "r1",
     "'value' must be a string", "bad_turn"),
    ("no gpt turn", good(conversations=conv(("human", "<image>Q"))), "r1", "no assistant", "no_assistant"),
    ("only system turn", good(conversations=conv(("system", "S"))), "r1", "no assistant", "no_assistant"),
    ("two image tags", good(conversations=conv(("human", "<image>Q<image>"), ("gpt", "A"))), "r1",
     "2 <image> tags", "too_many_image_tags"),
    ("tags across turns", good(conversations=conv(("human", "<image>Q"), ("gpt", "A"), ("human", "<image>"),
                                                  ("gpt", "B"))), "r1", "2 <image> tags", "too_many_image_tags"),
    ("tag without image", {"id": "r2", "conversations": conv(("human", "<image>\nQ"), ("gpt", "A"))}, "r2",
     "no 'image' field", "image_tag_without_image"),
    ("tag in gpt turn", good(conversations=conv(("human", "Q"), ("gpt", "<image> A"))), "r1",
     "only appear in user turns (turn 1 is assistant)", "misplaced_image_tag"),
    ("gpt first", good(conversations=conv(("gpt", "A"), ("human", "Q"))), "r1", "turn 0 is assistant",
     "bad_turn_order"),
    ("two user turns", good(conversations=conv(("human", "Q"), ("human", "Q2"), ("gpt", "A"))), "r1",
     "turn 1 is user, expected assistant", "bad_turn_order"),
    ("system in the middle", good(conversations=conv(("human", "Q"), ("gpt", "A"), ("system", "S"))), "r1",
     "turn 2 is system", "bad_turn_order"),
    ("unanswered last turn", good(conversations=conv(("human", "Q"), ("gpt", "A"), ("human", "Q2"))), "r1",
     "unanswered user turn", "bad_turn_order"),
    ("empty answer", good(conversations=conv(("human", "Q"), ("gpt", "  "))), "r1", "turn 1 (assistant) is empty",
     "empty_turn"),
    ("two images", good(image=["a.png", "b.png"]), "r1", "exactly one path", "bad_image"),
    ("image not a string", good(image=5), "r1", "non-empty string path", "bad_image"),
    ("id of wrong type", good(rid=["x"]), "qa.json:3", "'id' must be a string or integer", "bad_id"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "obj", "rid", "fragment", "code"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_records_raise_specific_errors(
    case: str, obj: Any, rid: str, fragment: str, code: str
) -> None:
    with pytest.raises(RecordError) as info:
        parse(obj, index=3)
    err = info.value
    message = str(err)
    assert "qa.json" in message and "record 3" in message
    assert repr(rid) in message
    assert fragment in message
    assert (err.code, err.record_id, err.index, err.source) == (code, rid, 3, "qa.json")
    assert isinstance(err, ValueError)


def test_record_error_pickles() -> None:
    with pytest.raises(RecordError) as info:
        parse({"id": "z"}, index=1)
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert (copy.code, copy.record_id, copy.index) == ("no_conversations", "z", 1)


# --- reading files ---------------------------------------------------------------------------------------


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_json_list(tmp_path: Path) -> None:
    path = tmp_path / "alignment.json"
    path.write_text(
        json.dumps([good("a"), good("b", image=None, conversations=conv(("human", "Q"), ("gpt", "A")))])
    )
    records = list(read_records(path))
    assert [(r.id, r.source, r.index, r.image) for r in records] == [
        ("a", "alignment.json", 0, "geo3k/1.png"),
        ("b", "alignment.json", 1, None),
    ]


def test_read_jsonl_skips_blank_lines_and_counts_records(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "synth.jsonl", [json.dumps(good("a")), "", "   ", json.dumps({"conversations":
                       conv(("human", "Q"), ("gpt", "A"))})])  # fmt: skip
    records = list(read_records(path))
    assert [r.id for r in records] == ["a", "synth.jsonl:1"]
    assert [r.index for r in records] == [0, 1]


def test_read_jsonl_is_streamed(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [json.dumps(good("a")), "{broken"])
    it = read_records(path)
    assert next(it).id == "a"  # the first record arrives before the bad line is reached
    with pytest.raises(RecordError):
        next(it)


def test_malformed_jsonl_line_names_its_line_number(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "s.jsonl", [json.dumps(good("a")), "", '{"id": "b", "conversations": [', "x"]
    )
    with pytest.raises(RecordError) as info:
        list(read_records(path))
    assert "s.jsonl, line 3" in str(info.value)
    assert "invalid JSON" in str(info.value)
    assert (info.value.line, info.value.index, info.value.code) == (3, 1, "bad_json")


def test_invalid_record_in_jsonl_names_line_and_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", ["", json.dumps({"id": "q9", "conversations": []})])
    with pytest.raises(RecordError) as info:
        list(read_records(path))
    assert "s.jsonl, line 2, record 0 (id='q9')" in str(info.value)


def test_lenient_reader_returns_good_records_and_errors(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            json.dumps(good("a")),
            "not json",
            json.dumps({"id": "c", "conversations": conv(("gpt", "A"))}),
            json.dumps(good("d")),
        ],
    )
    (tmp_path / "bad_utf8.jsonl").write_bytes(json.dumps(good("a")).encode() + b"\n\xff\xfe\n")
    records, errors = read_records_lenient(path)
    assert [r.id for r in records] == ["a", "d"]
    assert [(e.line, e.code) for e in errors] == [(2, "bad_json"), (3, "bad_turn_order")]
    assert errors[1].record_id == "c"

    records, errors = read_records_lenient(tmp_path / "bad_utf8.jsonl")
    assert [r.id for r in records] == ["a"] and [e.line for e in errors] == [2]


def test_lenient_reader_on_json_list(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([good("a"), 5, good("c", conversations=[])]))
    records, errors = read_records_lenient(path)
    assert [r.id for r in records] == ["a"]
    assert [(e.index, e.code) for e in errors] == [(1, "not_object"), (2, "empty_conversations")]


def test_whole_file_problems_raise_even_when_lenient(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"id": "a",\n  oops\n]')
    with pytest.raises(RecordError) as info:
        read_records_lenient(broken)
    assert "broken.json, line 3" in str(info.value)

    not_list = tmp_path / "obj.json"
    not_list.write_text(json.dumps(good("a")))
    with pytest.raises(RecordError, match="expected a JSON list"):
        read_records_lenient(not_list)

    with pytest.raises(RecordError, match="unsupported file type"):
        list(read_records(tmp_path / "data.csv"))


def test_json_with_byte_order_mark(tmp_path: Path) -> None:
    for name in ("bom.json", "bom.jsonl"):
        path = tmp_path / name
        body = json.dumps([good("a")]) if name.endswith(".json") else json.dumps(good("a"))
        path.write_bytes(b"\xef\xbb\xbf" + body.encode())
        assert [r.id for r in read_records(path)] == ["a"]


# --- the one JSON/JSONL reader (corpora, questions, answers, predictions) ---------------------------------


def test_json_items_read_lists_and_lines_alike_with_their_locations(tmp_path: Path) -> None:
    from geovlm.data.jsonfile import iter_json_items, read_json_objects

    listing = tmp_path / "a.json"
    listing.write_text('\ufeff [{"x": 1}, {"x": 2}]', encoding="utf-8")
    lines = tmp_path / "a.jsonl"
    lines.write_bytes(b'\xef\xbb\xbf{"x": 1}\n\n{"x": 2}\n')
    for path in (listing, lines, tmp_path / "lines-named.json"):
        if path.name == "lines-named.json":  # JSONL content under a .json name: `auto` looks inside
            path.write_bytes(lines.read_bytes())
        assert [v["x"] for _, v in read_json_objects(path)] == [1, 2]
    assert [i.where(listing) for i in iter_json_items(listing)] == [f"{listing}: item 1", f"{listing}: item 2"]
    assert [i.where(lines) for i in iter_json_items(lines)] == [f"{lines}:1", f"{lines}:3"]


def test_a_bad_line_is_one_bad_item_and_the_rest_is_read(tmp_path: Path) -> None:
    from geovlm.data.jsonfile import JSONFileError, iter_json_items, read_json_objects

    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"x": 1}\n{"x": \n\xff\xfe\n{"x": 4}\n[1]\n')
    items = list(iter_json_items(path))
    assert [(i.line, i.error is None) for i in items] == [(1, True), (2, False), (3, False), (4, True), (5, True)]
    assert "invalid JSON" in items[1].error and "not UTF-8" in items[2].error
    with pytest.raises(ValueError, match=rf"^{path}:2: invalid JSON"):
        read_json_objects(path)
    path.write_text('{"x": 1}\n[1]\n')
    with pytest.raises(ValueError, match=rf"^{path}:2: expected a JSON object, got list"):
        read_json_objects(path)
    broken = tmp_path / "b.json"
    broken.write_text('[{"x": 1},')
    with pytest.raises(JSONFileError, match="invalid JSON"):
        list(iter_json_items(broken))
