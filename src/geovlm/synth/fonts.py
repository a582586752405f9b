"""Fonts that work offline: common system TrueType faces, else Pillow's own scalable font.

Pillow ≥ 10.1 ships a scalable default (`ImageFont.load_default(size=...)`, Aileron), which has
° but not √ or π; DejaVu has all three. Text that a face cannot draw is spelled out in ASCII
("sqrt", "pi") rather than shown as empty boxes.
"""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

# Faces tried by file name (Pillow searches the system font folders); None is Pillow's default.
FACE_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Italic.ttf",
    "LiberationSans-Regular.ttf",
    "LiberationSerif-Italic.ttf",
)
SPELLED = {"√": "sqrt", "π": "pi", "°": " deg", "∠": "angle ", "²": "^2"}


@lru_cache(maxsize=1)
def faces() -> tuple[str | None, ...]:
    """The faces available here, system faces first; always at least Pillow's default."""
    found: list[str | None] = []
    for name in FACE_FILES:
        try:
            ImageFont.truetype(name, 12)
        except OSError:
            continue
        found.append(name)
    found.append(None)
    return tuple(found)


@lru_cache(maxsize=256)
def font(face: str | None, px: int) -> Font:
    if face is not None:
        return ImageFont.truetype(face, px)
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


@lru_cache(maxsize=512)
def has_glyph(face: str | None, char: str) -> bool:
    """Whether `face` draws `char` as something other than its missing-glyph box."""
    f = font(face, 24)

    def ink(text: str) -> bytes:
        im = Image.new("L", (48, 48), 0)
        ImageDraw.Draw(im).text((8, 8), text, font=f, fill=255)
        return im.tobytes()

    return ink(char) != ink("\uffff") and any(ink(char))


def drawable(face: str | None, text: str) -> str:
    """`text` with every character the face lacks spelled out in ASCII."""
    return "".join(c if c.isascii() or has_glyph(face, c) else SPELLED.get(c, "?") for c in text)
