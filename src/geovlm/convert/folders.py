"""A checkpoint folder read without building anything: its `config.json`, and its weights' names and shapes
from the files' headers (no tensor is loaded). A folder whose config and weights disagree is refused from
these, before a model of the config's size is allocated: a config that lost its text config describes a
7B-size Qwen2, which would be allocated in full before transformers compared a single shape."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
# Buffers that older transformers releases saved and that models now rebuild: never a disagreement.
REBUILT_BUFFERS = re.compile(r"(\.position_ids|\.inv_freq)$")


def read_config_json(folder: str | os.PathLike) -> dict[str, Any]:
    """`folder/config.json` as a dict. FileNotFoundError when there is none (the callers differ on what that
    means); ValueError, naming the file, when it cannot be read or holds no JSON object."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON
        raise ValueError(f"{path} cannot be read: {err}; restore the config.json saved with the model") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not a config object; "
                         "restore the config.json saved with the model")
    return config


@dataclass(frozen=True)
class StoredTensor:
    """A tensor as a weights file describes it."""

    name: str  # as the file names it
    shape: tuple[int, ...]
    file: str  # the file's name inside its folder


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The files that hold a folder's weights: `model.safetensors`, the shards its safetensors index lists,
    or `pytorch_model.bin`; empty when it has none of these. ValueError, naming the index, when the index
    cannot be read or lists a shard that is not there."""
    folder = Path(folder)
    if (folder / SAFETENSORS).is_file():
        return [folder / SAFETENSORS]
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{index} cannot be read ({type(err).__name__}: {err}); it should map each tensor "
                             "to its shard under 'weight_map': restore the file saved with the weights") from None
        for shard in shards:
            if not (folder / shard).is_file():
                raise ValueError(f"{folder}: the shard {shard} listed in {SAFETENSORS_INDEX} is not there; "
                                 "copy the whole folder again")
        return [folder / shard for shard in shards]
    if (folder / TORCH_BIN).is_file():
        return [folder / TORCH_BIN]
    return []


def stored_tensors(folder: str | os.PathLike) -> dict[str, StoredTensor]:
    """Every tensor of a folder's weights, by the name its file gives it, read from the headers: safetensors
    keep names and shapes in a JSON header; a `.bin` is memory-mapped, so no tensor data is read either.
    Empty when the folder has no weights file this knows. ValueError, naming the file, if one cannot be read
    (truncated, or not a weights file)."""
    from safetensors import SafetensorError, safe_open

    stored: dict[str, StoredTensor] = {}
    for path in weight_files(folder):
        try:
            if path.suffix == ".safetensors":
                # safe_open also checks that the header covers the whole file (a truncated copy fails here).
                with safe_open(path, framework="pt") as handle:
                    names = handle.keys()  # a safe_open handle is not iterable
                    shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in names}
            else:
                state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
                shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
        except (SafetensorError, OSError, RuntimeError, ValueError, EOFError, AttributeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{path} cannot be read ({first}): it is truncated or not a weights file; "
                             "copy it again") from None
        stored |= {name: StoredTensor(name, shape, path.name) for name, shape in shapes.items()}
    return stored


def load_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights from `model.safetensors`, a sharded safetensors index, or `pytorch_model.bin`."""
    from safetensors.torch import load_file

    files = weight_files(folder)
    if not files:
        raise FileNotFoundError(f"no {SAFETENSORS}, safetensors index or {TORCH_BIN} in {folder}")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        if path.suffix == ".safetensors":
            state.update(load_file(path))
        else:
            state.update(torch.load(path, map_location="cpu", weights_only=True))
    return state


def model_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor a GeoVLM of `config` holds, from a model built on the meta device
    (no memory, a fraction of a second even for a 7B-size config)."""
    from geovlm.modeling import GeoVLM

    with torch.device("meta"):
        model = GeoVLM(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_weights_fit(
    folder: str | os.PathLike,
    config: Any,
    stored: Mapping[str, StoredTensor],
    *,
    described_by: str,
    fix: str,
    name_in_file: Callable[[str], str] = lambda name: name,
) -> None:
    """ValueError, in one line naming a tensor, its file and `fix`, unless the weights in `stored` (keyed by
    the model's names for them) are exactly those a GeoVLM of `config` holds, shape for shape. A tied
    `lm_head` may be absent; `name_in_file` names a missing tensor as the folder's files would."""
    expected = model_shapes(config)
    files = ", ".join(sorted({tensor.file for tensor in stored.values()})) or "the weights"

    def more(problems: list[Any]) -> str:
        return f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""

    wrong = [(name, tensor) for name, tensor in sorted(stored.items())
             if name in expected and tensor.shape != expected[name]]
    if wrong:
        name, tensor = wrong[0]
        raise ValueError(f"{folder}: {tensor.name} is {list(tensor.shape)} in {tensor.file} but "
                         f"{list(expected[name])} by {described_by}{more(wrong)}; {fix}")
    may_lack = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = [name for name in sorted(expected) if name not in stored and name not in may_lack]
    if missing:
        raise ValueError(f"{folder}: {files} has no {name_in_file(missing[0])}{more(missing)}, expected by "
                         f"{described_by}; {fix}")
    unexpected = [tensor for name, tensor in sorted(stored.items())
                  if name not in expected and not REBUILT_BUFFERS.search(name)]
    if unexpected:
        raise ValueError(f"{folder}: {unexpected[0].name} in {unexpected[0].file}{more(unexpected)} has no "
                         f"place in the model of {described_by}; {fix}")
