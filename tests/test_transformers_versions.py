"""A saved folder under the transformers versions that vLLM accepts, with geovlm not importable.

vLLM 0.34 (the latest release) pins `transformers>=5.16.1,<5.23`, while geovlm's own environment has a
newer one; a vLLM user points vLLM at the folder's remote code (`auto_map`), so that code must load and
answer the same under the oldest and the newest version of that range. Each version is installed once with
`pip install --target` into the GeoVLM cache (~/.cache/geovlm/transformers-envs, ~270 MB each with its
own huggingface_hub, tokenizers, numpy, ...), and the folder runs in `python -S`: no site-packages, so
neither geovlm nor this environment's transformers is on the path; only PyTorch, Pillow and Jinja are
lent from here, as a vLLM environment has its own."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geovlm import build_tiny, load_pretrained
from geovlm.cache import cache_root
from geovlm.serve.chat import chat
from test_standard_shapes import QUESTION, WITHOUT_GEOVLM, diagram

pytestmark = pytest.mark.integration

# The oldest and the newest release that vLLM 0.34 accepts (transformers 5.22.2 is the last 5.22.x on PyPI).
VLLM_TRANSFORMERS = ("5.16.1", "5.22.2")
# What the folder needs beyond transformers' own requirements: PyTorch (and what it imports), Pillow for
# images, Jinja for the chat template.
LENT_MODULES = ("torch", "torchgen", "functorch", "sympy", "mpmath", "networkx", "PIL", "jinja2", "markupsafe")


def pinned_transformers(version: str) -> Path:
    """A folder holding transformers==version and its requirements, installed once (atomically: a pip run
    that fails or is killed leaves no half-filled folder behind)."""
    target = cache_root() / "transformers-envs" / version
    if (target / "transformers").is_dir():
        return target
    partial = target.with_name(f"{version}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--no-warn-conflicts", "--target", str(partial), f"transformers=={version}"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"pip could not install transformers=={version}:\n{proc.stderr[-3000:]}"
    if target.exists():  # another process finished first
        shutil.rmtree(partial)
    else:
        partial.replace(target)
    return target


def lent_from_here(root: Path) -> Path:
    """A folder of links to this environment's PyTorch, Pillow and Jinja (and nothing else of it)."""
    lent = root / "lent"
    lent.mkdir()
    for name in LENT_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            (lent / name).symlink_to(Path(spec.origin).parent, target_is_directory=True)
    return lent


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A saved tiny model whose untied, sharpened head makes varied (random) text."""
    torch.manual_seed(3)
    model, processor = build_tiny(head_std=0.5)
    path = tmp_path_factory.mktemp("geovlm") / "model"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    diagram().save(path.parent / "diagram.png")
    return path


@pytest.fixture(scope="module")
def reply_here(folder) -> str:
    model, processor = load_pretrained(folder)
    reply = chat(model, processor, diagram(), QUESTION, max_new_tokens=12)
    assert len(set(reply.split())) > 2, "degenerate reply: the comparison would not catch a difference"
    return reply


@pytest.mark.parametrize("version", VLLM_TRANSFORMERS)
def test_folder_answers_alike_under_the_transformers_vllm_pins(version, folder, reply_here, tmp_path):
    site = pinned_transformers(version)
    report = "import json, transformers; print(json.dumps({'transformers': transformers.__version__}))\n"
    # The processor's own rule, not only newer transformers': as many images as placeholders.
    refuses = ("try:\n    processor(images=[image, image], text='<image> Hi')\nexcept ValueError as err:\n"
               "    print(json.dumps({'refused': str(err)}))\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(lent_from_here(tmp_path))]), HF_HUB_OFFLINE="1",
               HF_MODULES_CACHE=str(tmp_path / "modules"))
    proc = subprocess.run([sys.executable, "-S", "-c", report + WITHOUT_GEOVLM + refuses, str(folder),
                           str(folder.parent / "diagram.png"), QUESTION],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines[0]["transformers"] == version
    result, refused = lines[-2], lines[-1]
    assert "number of images" in refused["refused"]
    assert result["geovlm_modules"] == [] and result["model_class"].startswith("transformers_modules.")
    assert result["generate"] == reply_here
    assert result["pipeline"] == reply_here
