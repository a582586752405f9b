"""Rendering: fonts that draw what the labels need, and a visible diagram for every family."""

from __future__ import annotations

import numpy as np
import pytest

from geovlm.synth import FAMILIES, fonts, generate_problem

COMBOS = [(f, d) for f, fam in FAMILIES.items() for d in fam.difficulties]


def test_every_face_draws_or_spells_out_the_symbols() -> None:
    assert fonts.faces()[-1] is None  # Pillow's own scalable font is always the last resort
    for face in fonts.faces():
        text = fonts.drawable(face, "∠A = 50°, AB = 3√2 cm, S = 25π cm²")
        assert all(c.isascii() or fonts.has_glyph(face, c) for c in text), (face, text)


def test_default_font_scales() -> None:
    small, large = fonts.font(None, 10), fonts.font(None, 40)
    assert large.getbbox("A")[3] > 2 * small.getbbox("A")[3]


@pytest.mark.parametrize(("family", "difficulty"), COMBOS)
def test_every_family_draws_a_visible_diagram(family: str, difficulty: str) -> None:
    p = generate_problem(0, 17, family=family, difficulty=difficulty)
    for size in (224, 320):
        gray = np.asarray(p.render(size).convert("L"))
        assert gray.shape == (size, size)
        dark = gray < 128
        assert dark.mean() > 0.003 and np.median(gray) == 255
        # The drawing keeps off the very edge: labels are placed inside the canvas.
        assert not dark[0].any() and not dark[-1].any() and not dark[:, 0].any() and not dark[:, -1].any()
