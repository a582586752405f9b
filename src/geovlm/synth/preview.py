"""A contact sheet: a grid of diagrams captioned with family, difficulty, style and answer."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from . import fonts
from .problem import Problem


def pick_for_preview(problems: Sequence[Problem], count: int = 12) -> list[Problem]:
    """One problem per family first (in stream order), then the next ones, up to `count`."""
    picked: list[Problem] = []
    families: set[str] = set()
    for p in problems:
        if p.family not in families:
            picked.append(p)
            families.add(p.family)
    for p in problems:
        if len(picked) >= count:
            break
        if p not in picked:
            picked.append(p)
    return picked[:count]


def contact_sheet(problems: Sequence[Problem], size: int = 224, columns: int = 4) -> Image.Image:
    face = fonts.faces()[0]
    small = fonts.font(face, 12)
    bold = fonts.font(face, 13)
    pad, text_h = 8, 44
    rows = max(1, -(-len(problems) // columns))
    sheet = Image.new(
        "RGB", (columns * (size + pad) + pad, rows * (size + text_h + pad) + pad), (236, 236, 236)
    )
    draw = ImageDraw.Draw(sheet)
    for i, p in enumerate(problems):
        x = pad + (i % columns) * (size + pad)
        y = pad + (i // columns) * (size + text_h + pad)
        sheet.paste(p.render(size), (x, y))
        draw.rectangle([x - 1, y - 1, x + size, y + size], outline=(160, 160, 160))
        answer = f"answer {p.answer} = {p.choices['ABCD'.index(p.answer)]}"
        draw.text((x, y + size + 3), fonts.drawable(face, p.family), font=bold, fill=(0, 0, 0))
        draw.text(
            (x, y + size + 18),
            fonts.drawable(face, f"{p.difficulty} · {p.style} · {p.kind}"),
            font=small,
            fill=(60, 60, 60),
        )
        draw.text((x, y + size + 31), fonts.drawable(face, answer), font=small, fill=(60, 60, 60))
    return sheet
