"""Tests for the offline Qwen2.5 tokenizer: exact agreement with tiktoken, special tokens, chat template, cache."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pytest
import tiktoken
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from geovlm.processing import tokenizer as tokenizer_mod
from geovlm.processing.tokenizer import (
    CHATML_TEMPLATE,
    IMAGE_PAD_TOKEN,
    QWEN_PRETOKENIZE_REGEX,
    QWEN_SPECIAL_TOKENS,
    QWEN_VOCAB_SIZE,
    VISION_END_TOKEN,
    VISION_START_TOKEN,
    load_bpe_ranks,
    load_qwen_tokenizer,
)

# The regex from Qwen2.5's tokenizer.json, written out independently of the module under test.
QWEN2_PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CORPUS = [
    "",
    "Hello world",
    "The quick brown fox jumps over the lazy dog. It's 3:45pm; we'll see what they've done.",
    "DON'T STOP! I'M HERE, YOU'LL SEE, SHE'D GO, THEY'RE LATE, WE'VE WON, IT'S 'S 'T 'RE",
    # (?i:'s|'t|...) must split a capital contraction off the letters after it: "'S" + "up", not "'" + "Sup".
    "'Sup, said O'MALLEY'S friend. Rock'Mon and Mister'Mr DON'Tcha",
    "在三角形ABC中，∠A=60°，AB=3，AC=4，求BC的长度。解：由余弦定理得",
    "日本語のテキスト、한국어 텍스트, русский текст, ελληνικά, العربية",
    "Numbers: 0 7 42 1234567890 3.14159265358979 -273.15 6.022e23 100,000,000 2024-01-31",
    "Angles: 30°, 45°, 90°; √2 ≈ 1.414, π ≈ 3.14159; ∠ABC = ∠DEF, △ABC ≅ △DEF, AB ⊥ CD, AB ∥ EF",
    r"\frac{a}{b} + \sqrt{x^2 + y^2} = r, \angle A = \frac{\pi}{3}, S_{\triangle ABC} = \tfrac{1}{2}bh",
    r"$$\cos^2\theta + \sin^2\theta = 1 \quad \text{and} \quad a_{n+1} = a_n + d$$",
    "a  b   c    d\t\te\n\nf\r\n g \n\n\n   \t  end   ",
    "   leading spaces",
    "trailing spaces   \n",
    "\n\n \t \n",
    "Great job 👍🏽! 🎉🎉 Family: 👨‍👩‍👧‍👦, flags 🇨🇳🇺🇸, math 🧮📐",
    'def area(a: float, b: float) -> float:\n    """Half base times height."""\n    return 0.5 * a * b  # m²\n\n'
    'if __name__ == "__main__":\n\tprint(area(3, 4))  # -> 6.0\n',
    "Ünïcödé café naïve résumé — “quotes” ‘single’ … ½ ¾ × ÷ ± x² a₁ <b>html</b> &amp; {json: [1, 2]}",
]


@pytest.fixture(scope="session")
def qwen_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qwen-tokenizer-cache")


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen_cache_dir: Path) -> PreTrainedTokenizerFast:
    """Built once per session into a temp cache, so tests never depend on the user's home."""
    return load_qwen_tokenizer(qwen_cache_dir)


@pytest.fixture(scope="session")
def tiktoken_enc() -> tiktoken.Encoding:
    """The reference: tiktoken with Qwen's ranks and regex, no special tokens."""
    return tiktoken.Encoding(
        name="qwen2.5-reference",
        pat_str=QWEN2_PAT_STR,
        mergeable_ranks=load_bpe_ranks(),
        special_tokens={},
    )


def _ids(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


# --- fidelity -------------------------------------------------------------------------------------------


def test_module_regex_is_qwen2s() -> None:
    assert QWEN_PRETOKENIZE_REGEX == QWEN2_PAT_STR


@pytest.mark.parametrize("text", CORPUS, ids=[f"corpus{i}" for i in range(len(CORPUS))])
def test_ids_match_tiktoken(qwen_tokenizer, tiktoken_enc, text: str) -> None:
    # The HF tokenizer NFC-normalizes and tiktoken does not, so the comparison is only exact on NFC text.
    assert unicodedata.is_normalized("NFC", text)
    assert _ids(qwen_tokenizer, text) == tiktoken_enc.encode_ordinary(text)


def test_ids_match_tiktoken_on_whole_corpus(qwen_tokenizer, tiktoken_enc) -> None:
    text = "\n".join(CORPUS) * 3
    ids = _ids(qwen_tokenizer, text)
    assert ids == tiktoken_enc.encode_ordinary(text)
    assert len(ids) > 500


@pytest.mark.parametrize("text", CORPUS, ids=[f"corpus{i}" for i in range(len(CORPUS))])
def test_decode_round_trips(qwen_tokenizer, text: str) -> None:
    assert qwen_tokenizer.decode(_ids(qwen_tokenizer, text)) == text


def test_hello_world_known_ids(qwen_tokenizer, tiktoken_enc) -> None:
    # Qwen2.5 encodes "Hello world" as [9707, 1879]; check the reference agrees before trusting the constant.
    assert tiktoken_enc.encode_ordinary("Hello world") == [9707, 1879]
    assert _ids(qwen_tokenizer, "Hello world") == [9707, 1879]
    assert qwen_tokenizer("Hello world")["input_ids"] == [9707, 1879]  # no BOS/EOS added by default


def test_every_vocab_entry_decodes_to_its_bytes(qwen_tokenizer) -> None:
    ranks = load_bpe_ranks()
    backend = qwen_tokenizer.backend_tokenizer
    assert backend.get_vocab_size(with_added_tokens=False) == len(ranks) == 151643
    by_id = sorted(ranks, key=ranks.__getitem__)
    decoded = backend.decode_batch([[i] for i in range(len(by_id))])
    # Tokens that are not whole UTF-8 on their own decode with U+FFFD, like bytes.decode(errors="replace").
    assert decoded == [token.decode("utf-8", errors="replace") for token in by_id]


def test_derive_merges_replays_ranks() -> None:
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"bc": 3, b"ab": 4, b"abc": 5, b"abcab": 6}
    # "abc" under ranks < 5: "bc" (3) beats "ab" (4), so it ends as a + bc; "abcab" ends as abc + ab.
    assert tokenizer_mod._derive_merges(ranks) == [(b"b", b"c"), (b"a", b"b"), (b"a", b"bc"), (b"abc", b"ab")]
    with pytest.raises(ValueError, match="not reachable"):
        tokenizer_mod._derive_merges({b"a": 0, b"b": 1, b"c": 2, b"abc": 3})


# --- special tokens -------------------------------------------------------------------------------------


def test_special_token_table() -> None:
    assert len(QWEN_SPECIAL_TOKENS) == 22
    assert list(QWEN_SPECIAL_TOKENS.values()) == list(range(151643, 151665))
    assert QWEN_SPECIAL_TOKENS["<|endoftext|>"] == 151643
    assert QWEN_SPECIAL_TOKENS["<|im_start|>"] == 151644
    assert QWEN_SPECIAL_TOKENS["<|im_end|>"] == 151645
    assert QWEN_SPECIAL_TOKENS[VISION_START_TOKEN] == 151652
    assert QWEN_SPECIAL_TOKENS[VISION_END_TOKEN] == 151653
    assert QWEN_SPECIAL_TOKENS[IMAGE_PAD_TOKEN] == 151655
    assert QWEN_SPECIAL_TOKENS["<|file_sep|>"] == 151664
    assert QWEN_VOCAB_SIZE == 151936


@pytest.mark.parametrize("name", list(QWEN_SPECIAL_TOKENS))
def test_each_added_token_is_one_id(qwen_tokenizer, name: str) -> None:
    assert _ids(qwen_tokenizer, name) == [QWEN_SPECIAL_TOKENS[name]]
    assert qwen_tokenizer.convert_ids_to_tokens(QWEN_SPECIAL_TOKENS[name]) == name


def test_tokenizer_size_and_config(qwen_tokenizer) -> None:
    assert len(qwen_tokenizer) == 151665 < QWEN_VOCAB_SIZE
    assert qwen_tokenizer.eos_token == "<|im_end|>" and qwen_tokenizer.eos_token_id == 151645
    assert qwen_tokenizer.pad_token == "<|endoftext|>" and qwen_tokenizer.pad_token_id == 151643
    assert qwen_tokenizer.bos_token is None
    assert qwen_tokenizer.model_max_length == 32768
    assert qwen_tokenizer.padding_side == "right"


def test_special_flags_match_qwen(qwen_tokenizer) -> None:
    special = set(qwen_tokenizer.all_special_tokens)
    assert {"<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_PAD_TOKEN, VISION_START_TOKEN} <= special
    # Tool-call and FIM tokens are added but not special in Qwen2.5, so skip_special_tokens keeps them.
    assert "<tool_call>" not in special and "<|fim_prefix|>" not in special
    ids = _ids(qwen_tokenizer, "<tool_call>x</tool_call><|im_end|>")
    assert qwen_tokenizer.decode(ids, skip_special_tokens=True) == "<tool_call>x</tool_call>"


def test_special_tokens_split_from_text(qwen_tokenizer, tiktoken_enc) -> None:
    enc = tiktoken_enc.encode_ordinary
    assert _ids(qwen_tokenizer, "<|im_start|>user\nHi<|im_end|>\n") == [
        151644,
        *enc("user\nHi"),
        151645,
        *enc("\n"),
    ]
    text = f"{VISION_START_TOKEN}{IMAGE_PAD_TOKEN * 3}{VISION_END_TOKEN}\nFind ∠ABC."
    assert _ids(qwen_tokenizer, text) == [151652, 151655, 151655, 151655, 151653, *enc("\nFind ∠ABC.")]
    # No space is swallowed or invented around added tokens.
    assert _ids(qwen_tokenizer, "a <|im_end|> b") == [*enc("a "), 151645, *enc(" b")]


def test_padding(qwen_tokenizer) -> None:
    batch = qwen_tokenizer(["Hello world", "Hi"], padding=True)
    assert batch["input_ids"][1][-1] == 151643 and batch["attention_mask"][1][-1] == 0


# --- chat template --------------------------------------------------------------------------------------


def test_chat_template_ids(qwen_tokenizer, tiktoken_enc) -> None:
    enc = tiktoken_enc.encode_ordinary
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hi"},
    ]
    expected = (
        [151644, *enc("system\nYou are a helpful assistant."), 151645, *enc("\n")]
        + [151644, *enc("user\nHi"), 151645, *enc("\n")]
        + [151644, *enc("assistant\n")]
    )
    ids = qwen_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert ids == expected


def test_chat_template_text_without_default_system(qwen_tokenizer) -> None:
    messages = [{"role": "user", "content": "Find x."}, {"role": "assistant", "content": "x = 3"}]
    text = qwen_tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == "<|im_start|>user\nFind x.<|im_end|>\n<|im_start|>assistant\nx = 3<|im_end|>\n"
    prompt = qwen_tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nFind x.<|im_end|>\n<|im_start|>assistant\n"
    assert qwen_tokenizer.chat_template == CHATML_TEMPLATE


# --- cache ----------------------------------------------------------------------------------------------


def test_cache_is_written_and_reloaded_from_disk(qwen_tokenizer, qwen_cache_dir, monkeypatch) -> None:
    folder = Path(qwen_tokenizer.name_or_path)
    assert folder.parent == qwen_cache_dir and (folder / "tokenizer.json").is_file()
    assert "v" in folder.name  # the format version is part of the folder name
    assert not [p for p in qwen_cache_dir.iterdir() if p != folder]  # no temp folders left behind

    def no_build():
        raise AssertionError("the second load must come from the cache, not a rebuild")

    monkeypatch.setattr(tokenizer_mod, "build_qwen_tokenizer", no_build)
    again = load_qwen_tokenizer(qwen_cache_dir)
    text = "\n".join(CORPUS)
    assert again.encode(text) == qwen_tokenizer.encode(text)
    assert again is not qwen_tokenizer  # a fresh instance: padding_side changes must not leak
    again.padding_side = "left"
    assert load_qwen_tokenizer(qwen_cache_dir).padding_side == "right"


def test_cache_loads_with_auto_tokenizer(qwen_tokenizer) -> None:
    auto = AutoTokenizer.from_pretrained(qwen_tokenizer.name_or_path, local_files_only=True)
    text = "<|im_start|>user\n" + CORPUS[4] + "<|im_end|>"
    assert auto.encode(text) == qwen_tokenizer.encode(text)
    assert auto.eos_token_id == 151645 and auto.chat_template == CHATML_TEMPLATE


def test_failed_build_leaves_no_cache(tmp_path, monkeypatch) -> None:
    def broken_build():
        raise RuntimeError("interrupted")

    monkeypatch.setattr(tokenizer_mod, "build_qwen_tokenizer", broken_build)
    with pytest.raises(RuntimeError, match="interrupted"):
        load_qwen_tokenizer(tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither a half-written cache nor a temp folder


def test_concurrent_build_keeps_the_first_cache(qwen_tokenizer, tmp_path, monkeypatch) -> None:
    finished = Path(qwen_tokenizer.name_or_path)

    def build_while_another_process_finishes():
        # Another process renames its complete cache into place while we are still building.
        shutil.copytree(finished, tmp_path / finished.name)
        (tmp_path / finished.name / "winner").touch()
        return PreTrainedTokenizerFast.from_pretrained(str(finished), local_files_only=True)

    monkeypatch.setattr(tokenizer_mod, "build_qwen_tokenizer", build_while_another_process_finishes)
    loser = load_qwen_tokenizer(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [finished.name]  # our temp folder was cleaned up
    assert (tmp_path / finished.name / "winner").exists()  # the winner's cache was kept, not overwritten
    assert loser.encode("Hello world") == [9707, 1879]
