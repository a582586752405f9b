"""Tests for geovlm.data.images: mode conversion, EXIF, padding, and the classification of broken files."""

from __future__ import annotations

import io
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from geovlm.data.images import (
    IMAGE_SKIP_REASONS,
    MISSING,
    TOO_LARGE,
    TRUNCATED,
    UNREADABLE,
    ImageLoadError,
    expand_to_square,
    load_image,
    probe_image,
    resolve_image_path,
    to_rgb,
)

WHITE = (255, 255, 255)


def save(image: Image.Image, path: Path, fmt: str | None = None, **params) -> Path:
    image.save(path, fmt, **params)
    return path


def noise_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def reason_of(path: Path, **kwargs) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(path, **kwargs)
    assert info.value.path == os.fspath(path)
    return info.value.reason


# --- every mode comes out RGB ----------------------------------------------------------------------------


def _mode_fixtures(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Write one 30x20 file per mode; returns {name: (path, mode Pillow reopens it as)}."""
    size = (30, 20)
    grey16 = np.full((20, 30), 32768, dtype=np.uint16)
    palette = Image.new("P", size, 1)
    palette.putpalette([0, 0, 0, 200, 30, 40, 0, 0, 255])
    files = {
        "1": save(Image.new("1", size, 1), tmp / "one.png"),
        "L": save(Image.new("L", size, 100), tmp / "l.png"),
        "LA": save(Image.new("LA", size, (100, 255)), tmp / "la.png"),
        "P": save(palette, tmp / "p.png"),
        "P-gif": save(palette, tmp / "p.gif"),
        "RGB": save(Image.new("RGB", size, (200, 30, 40)), tmp / "rgb.png"),
        "RGB-jpeg": save(Image.new("RGB", size, (200, 30, 40)), tmp / "rgb.jpg", quality=95),
        "RGBA": save(Image.new("RGBA", size, (200, 30, 40, 255)), tmp / "rgba.png"),
        "CMYK": save(Image.new("CMYK", size, (0, 255, 255, 0)), tmp / "cmyk.jpg", quality=95),
        "CMYK-tiff": save(Image.new("CMYK", size, (0, 255, 255, 0)), tmp / "cmyk.tif"),
        # LZW: Pillow 12 cannot read back its own uncompressed YCbCr TIFF (it reports it truncated).
        "YCbCr": save(Image.new("RGB", size, (200, 30, 40)).convert("YCbCr"), tmp / "ycc.tif",
                      compression="tiff_lzw"),
        "LAB": save(Image.new("RGB", size, (200, 30, 40)).convert("LAB"), tmp / "lab.tif"),
        "I": save(Image.fromarray(grey16.astype(np.int32)), tmp / "i.tif"),
        "I;16": save(Image.fromarray(grey16), tmp / "i16.png"),
        "I;16-tiff": save(Image.fromarray(grey16), tmp / "i16.tif"),
        "F": save(Image.fromarray(np.full((20, 30), 100.0, dtype=np.float32)), tmp / "f.tif"),
    }
    return {name: (path, Image.open(path).mode) for name, path in files.items()}


# (expected RGB of a pixel, tolerance); the JPEG and colour-space round trips are lossy.
EXPECTED_COLOUR = {
    "1": (WHITE, 0),
    "L": ((100, 100, 100), 0),
    "LA": ((100, 100, 100), 0),
    "P": ((200, 30, 40), 0),
    "P-gif": ((200, 30, 40), 0),
    "RGB": ((200, 30, 40), 0),
    "RGB-jpeg": ((200, 30, 40), 6),
    "RGBA": ((200, 30, 40), 0),
    "CMYK": ((255, 0, 0), 6),
    "CMYK-tiff": ((255, 0, 0), 0),
    "YCbCr": ((200, 30, 40), 3),
    "LAB": ((200, 30, 40), 3),
    "I": ((128, 128, 128), 0),
    "I;16": ((128, 128, 128), 0),
    "I;16-tiff": ((128, 128, 128), 0),
    "F": ((100, 100, 100), 0),
}


def test_fixtures_cover_the_modes_we_claim(tmp_path: Path) -> None:
    modes = {mode for _, mode in _mode_fixtures(tmp_path).values()}
    # Pillow 12 hands YCbCr TIFFs over already converted to RGB; Pillow 13 keeps YCbCr. Either way
    # the file loads (test below), and the YCbCr conversion itself is tested in memory.
    assert {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "LAB", "I", "I;16", "F"} <= modes


@pytest.mark.parametrize("name", sorted(EXPECTED_COLOUR))
def test_every_file_mode_loads_as_rgb(tmp_path: Path, name: str) -> None:
    path, _ = _mode_fixtures(tmp_path)[name]
    image = load_image(path, pad_to_square=False)
    assert image.mode == "RGB"
    assert image.size == (30, 20)
    expected, tolerance = EXPECTED_COLOUR[name]
    got = image.getpixel((15, 10))
    assert all(abs(g - e) <= tolerance for g, e in zip(got, expected, strict=True)), (name, got)

    squared = load_image(path)
    assert squared.mode == "RGB" and squared.size == (30, 30)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("PA", (1, 128), None),  # palette + alpha: half-transparent entry 1 over white
        ("La", (100, 128), None),  # premultiplied grey + alpha
        ("RGBa", (100, 50, 0, 128), None),  # premultiplied RGB + alpha
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("YCbCr", (76, 85, 255), (254, 0, 0)),  # pure red in JPEG's YCbCr
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
        ("I;16B", 65535, WHITE),
        ("I;16L", 0, (0, 0, 0)),
    ],
)
def test_in_memory_only_modes_convert(mode: str, value, expected) -> None:
    # No file format writes these modes, so check the conversion directly.
    image = Image.new(mode, (4, 3), value)
    if mode == "PA":
        image.putpalette([0, 0, 0, 0, 0, 0])
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (4, 3)
    if expected is not None:
        assert rgb.getpixel((0, 0)) == expected
    else:
        # half transparent on white lies strictly between the colour and white
        assert all(c > 100 for c in rgb.getpixel((0, 0)))


@pytest.fixture(scope="module")
def mode_files(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return _mode_fixtures(tmp_path_factory.mktemp("modes"))


@pytest.fixture(scope="module")
def shipped_processor(tokenizer):
    from geovlm import build_tiny

    return build_tiny()[1]


@pytest.mark.parametrize("name", list(EXPECTED_COLOUR))
@pytest.mark.parametrize("pad_to_square", [True, False])
def test_the_shipped_processor_sees_every_mode_as_training_does(mode_files, shipped_processor, name: str,
                                                                 pad_to_square: bool) -> None:
    # AutoProcessor/pipeline users hand the processor an opened file; training decodes with load_image.
    # Both must give the model the same pixels (a 16-bit mid-grey once came out white one way, grey the other).
    processor = shipped_processor
    processor.pad_to_square = pad_to_square
    path, _ = mode_files[name]
    with Image.open(path) as opened:
        through_processor = processor(images=[opened], text="<image>", return_tensors="pt")["pixel_values"]
    trained = load_image(path, pad_to_square=pad_to_square)
    as_training = processor(images=[trained], text="<image>", return_tensors="pt")["pixel_values"]
    assert np.array_equal(through_processor.numpy(), as_training.numpy())


def test_transparent_pixels_come_out_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.putpixel((5, 5), (0, 0, 0, 255))
    la = Image.new("LA", (10, 10), (0, 0))
    la.putpixel((5, 5), (0, 255))
    for path in (save(rgba, tmp_path / "rgba.png"), save(la, tmp_path / "la.png")):
        image = load_image(path)
        assert image.getpixel((0, 0)) == WHITE, path
        assert image.getpixel((5, 5)) == (0, 0, 0), path


def test_half_transparent_pixels_blend_with_white(tmp_path: Path) -> None:
    path = save(Image.new("RGBA", (4, 4), (0, 0, 0, 128)), tmp_path / "half.png")
    assert load_image(path).getpixel((0, 0)) == (127, 127, 127)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparent_index_is_white(tmp_path: Path, fmt: str) -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 10, 200, 10])
    image.putpixel((0, 0), 0)
    path = save(image, tmp_path / f"p.{fmt.lower()}", fmt, transparency=0)
    reopened = Image.open(path)
    assert reopened.mode == "P" and "transparency" in reopened.info
    out = load_image(path)
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((4, 4)) == (10, 200, 10)


@pytest.mark.parametrize(
    ("mode", "key", "colour"),
    [("L", 7, 7), ("RGB", (1, 2, 3), (1, 2, 3)), ("I;16", 1000, 1000)],
)
def test_colour_key_transparency_is_white(tmp_path: Path, mode: str, key, colour) -> None:
    if mode == "I;16":
        pixels = np.full((6, 6), 40000, dtype=np.uint16)
        pixels[0, 0] = colour
        image = Image.fromarray(pixels)
    else:
        image = Image.new(mode, (6, 6), 200 if mode == "L" else (200, 200, 200))
        image.putpixel((0, 0), colour)
    path = save(image, tmp_path / "key.png", transparency=key)
    out = load_image(path)
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((3, 3)) != WHITE


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(ramp), tmp_path / "ramp16.png")
    assert Image.open(path).mode == "I;16"
    out = load_image(path, pad_to_square=False)
    assert [out.getpixel((x, 0))[0] for x in range(4)] == [0, 1, 128, 255]


# --- EXIF and padding ----------------------------------------------------------------------------------


def test_exif_orientation_6_rotates(tmp_path: Path) -> None:
    # 40x20 stored: left half red, right half blue. Orientation 6 means "rotate 90 degrees clockwise to
    # display", so the displayed image is 20x40 with red on top.
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(stored, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)

    out = load_image(path, pad_to_square=False)
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 50
    assert bottom[2] > 200 and bottom[0] < 50
    assert probe_image(path) == (40, 20)  # the probe reports the header size, before rotation


def test_pad_to_square_centres_content_with_white_bars(tmp_path: Path) -> None:
    wide = load_image(save(Image.new("RGB", (41, 20), (0, 0, 0)), tmp_path / "wide.png"))
    assert wide.size == (41, 41)
    column = [wide.getpixel((20, y)) for y in range(41)]
    # (41 - 20) // 2 = 10 rows of white above, 11 below
    assert column == [WHITE] * 10 + [(0, 0, 0)] * 20 + [WHITE] * 11

    tall = load_image(save(Image.new("RGB", (10, 30), (0, 0, 0)), tmp_path / "tall.png"))
    row = [tall.getpixel((x, 15)) for x in range(30)]
    assert row == [WHITE] * 10 + [(0, 0, 0)] * 10 + [WHITE] * 10


def test_expand_to_square_custom_background_and_square_noop() -> None:
    square = Image.new("RGB", (5, 5), (1, 2, 3))
    assert expand_to_square(square) is square
    padded = expand_to_square(Image.new("RGB", (2, 4)), background=(9, 9, 9))
    assert padded.getpixel((0, 0)) == (9, 9, 9)


def test_bad_background_is_rejected(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (2, 2)), tmp_path / "x.png")
    with pytest.raises(ValueError):
        load_image(path, background=(255, 255))
    with pytest.raises(ValueError):
        load_image(path, background=(0, 0, 256))


# --- broken files ----------------------------------------------------------------------------------------


def _cut(path: Path, out: Path, keep: int | None = None) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2 if keep is None else keep])
    return out


@pytest.mark.parametrize("fmt", ["png", "jpg", "gif", "bmp", "tif"])
def test_file_cut_in_half_is_truncated(tmp_path: Path, fmt: str) -> None:
    whole = save(noise_rgb(64, 64), tmp_path / f"whole.{fmt}")
    assert load_image(whole).size == (64, 64)
    assert reason_of(_cut(whole, tmp_path / f"half.{fmt}")) == TRUNCATED


@pytest.mark.parametrize(
    ("fmt", "keep", "expected"),
    [
        ("png", 8, UNREADABLE),  # only the signature: no format can be identified
        ("png", 20, TRUNCATED),  # inside IHDR: Pillow reports "Truncated File Read"
        ("png", 40, UNREADABLE),  # after IHDR, before the next chunk header: cannot identify
        ("png", 60, TRUNCATED),  # inside IDAT: decoder runs out of data
        ("jpg", 100, TRUNCATED),  # inside the JPEG header segments: "Truncated File Read"
        ("webp", 200, UNREADABLE),  # libwebp only says "could not create decoder object"
    ],
)
def test_early_cuts_are_classified_deliberately(tmp_path: Path, fmt: str, keep: int, expected: str) -> None:
    whole = save(noise_rgb(64, 64), tmp_path / f"whole.{fmt}")
    assert reason_of(_cut(whole, tmp_path / f"cut.{fmt}", keep)) == expected


def test_zero_byte_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert reason_of(path) == UNREADABLE


def test_random_bytes_are_unreadable_even_when_named_truncated(tmp_path: Path) -> None:
    # The "cannot identify" message contains the file name; it must not be mistaken for truncation.
    path = tmp_path / "truncated.png"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert reason_of(path) == UNREADABLE


def test_missing_file(tmp_path: Path) -> None:
    assert reason_of(tmp_path / "nope.png") == MISSING


def test_directory_is_unreadable(tmp_path: Path) -> None:
    assert reason_of(tmp_path) == UNREADABLE


def test_unsupported_format_is_unreadable(tmp_path: Path) -> None:
    # EPS would run Ghostscript; it is outside IMAGE_FORMATS.
    path = tmp_path / "x.eps"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    assert reason_of(path) == UNREADABLE


def test_corrupt_png_chunk_is_unreadable(tmp_path: Path) -> None:
    data = bytearray(save(noise_rgb(32, 32), tmp_path / "ok.png").read_bytes())
    data[20] ^= 0xFF  # inside IHDR: its CRC no longer matches
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    assert reason_of(path) == UNREADABLE


def test_over_max_pixels_is_too_large_without_decoding(tmp_path: Path) -> None:
    big = save(Image.new("RGB", (3000, 3000)), tmp_path / "big.png")
    assert reason_of(big, max_pixels=1_000_000) == TOO_LARGE
    # Keep only the header: had the pixels been decoded first this would be "truncated".
    header_only = _cut(big, tmp_path / "big_header.png", keep=100)
    assert reason_of(header_only, max_pixels=1_000_000) == TOO_LARGE
    with pytest.raises(ImageLoadError) as info:
        probe_image(header_only, 1_000_000)
    assert info.value.reason == TOO_LARGE
    assert load_image(big, max_pixels=9_000_000).size == (3000, 3000)


def test_pillow_decompression_bomb_guard_counts_as_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    filters_before = list(warnings.filters)
    warn_size = save(Image.new("RGB", (40, 40)), tmp_path / "warn.png")  # 1600 > 1000: Pillow warns
    error_size = save(Image.new("RGB", (100, 100)), tmp_path / "err.png")  # > 2000: Pillow raises
    assert reason_of(warn_size) == TOO_LARGE
    assert reason_of(error_size) == TOO_LARGE
    assert Image.MAX_IMAGE_PIXELS == 1000
    assert warnings.filters == filters_before


def test_pillow_globals_are_left_alone(tmp_path: Path) -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    whole = save(noise_rgb(64, 64), tmp_path / "whole.png")
    load_image(whole)
    for path, kwargs in [
        (_cut(whole, tmp_path / "half.png"), {}),
        (save(Image.new("RGB", (300, 300)), tmp_path / "big.png"), {"max_pixels": 1000}),
    ]:
        with pytest.raises(ImageLoadError):
            load_image(path, **kwargs)
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


def test_truncated_still_rejected_when_other_code_enabled_load_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    half = _cut(save(noise_rgb(64, 64), tmp_path / "whole.jpg"), tmp_path / "half.jpg")
    assert reason_of(half) == TRUNCATED
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for the code that set it


def test_probe_reads_header_only_unless_verify(tmp_path: Path) -> None:
    whole = save(noise_rgb(64, 48), tmp_path / "whole.png")
    assert probe_image(whole) == (64, 48)
    half = _cut(whole, tmp_path / "half.png")
    assert probe_image(half) == (64, 48)
    with pytest.raises(ImageLoadError) as info:
        probe_image(half, verify=True)
    assert info.value.reason == TRUNCATED
    with pytest.raises(ImageLoadError) as info:
        probe_image(tmp_path / "nope.png")
    assert info.value.reason == MISSING


def test_image_load_error_fields_and_pickle(tmp_path: Path) -> None:
    err = ImageLoadError(tmp_path / "a.png", TRUNCATED, "cut")
    assert (err.path, err.reason, err.detail) == (str(tmp_path / "a.png"), TRUNCATED, "cut")
    assert "truncated" in str(err) and "a.png" in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.reason, copy.detail) == (err.path, err.reason, err.detail)
    with pytest.raises(ValueError):
        ImageLoadError("a.png", "gone", "")


# --- resolve_image_path ----------------------------------------------------------------------------------


def test_resolve_image_path_joins_inside_root(tmp_path: Path) -> None:
    assert resolve_image_path(tmp_path, "geo3k/train/1/img.png") == tmp_path / "geo3k/train/1/img.png"
    assert resolve_image_path(tmp_path, "a/../b.png") == tmp_path / "b.png"
    assert resolve_image_path(str(tmp_path), Path("x.png")) == tmp_path / "x.png"


@pytest.mark.parametrize("bad", ["../x.png", "a/../../x.png", "/etc/passwd", "", ".", "a/..", "x\x00.png"])
def test_resolve_image_path_refuses_escapes(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        resolve_image_path(tmp_path, bad)


# --- property tests: nothing but an RGB square or an ImageLoadError ---------------------------------------

FUZZ = settings(
    max_examples=200,
    deadline=None,  # shared CPUs make per-example timing noisy
    database=None,  # no .hypothesis directory in the repository
    suppress_health_check=[HealthCheck.too_slow],
)
FUZZ_MAX_PIXELS = 1_000_000  # keeps a corrupted header from asking for a large allocation

SAVABLE = [
    ("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("P", "GIF"), ("RGB", "PNG"), ("RGB", "JPEG"),
    ("RGBA", "PNG"), ("RGBA", "WEBP"), ("RGB", "BMP"), ("CMYK", "JPEG"), ("CMYK", "TIFF"),
    ("LAB", "TIFF"), ("I", "TIFF"), ("I;16", "PNG"), ("F", "TIFF"), ("L", "PPM"), ("RGBA", "TGA"),
]  # fmt: skip


def _check_outcome(path: Path) -> None:
    try:
        image = load_image(path, max_pixels=FUZZ_MAX_PIXELS)
    except ImageLoadError as err:
        assert err.reason in IMAGE_SKIP_REASONS
        return
    assert image.mode == "RGB"
    assert image.width == image.height > 0


def _random_image(data: st.DataObject) -> tuple[Image.Image, str]:
    mode, fmt = data.draw(st.sampled_from(SAVABLE))
    width = data.draw(st.integers(1, 48))
    height = data.draw(st.integers(1, 48))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rgba = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8))
    if mode in ("I", "I;16", "F"):
        grey = np.asarray(rgba)[..., 0].astype(np.uint16) * 257
        image = Image.fromarray(
            {"I": grey.astype(np.int32), "I;16": grey, "F": grey.astype(np.float32)}[mode]
        )
    elif mode == "P":
        image = rgba.convert("RGB").convert("P")
    else:
        image = rgba.convert(mode)
    return image, fmt


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(blob=st.binary(max_size=4096))
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_property_random_bytes(fuzz_dir: Path, blob: bytes) -> None:
    path = fuzz_dir / "blob.img"
    path.write_bytes(blob)
    _check_outcome(path)


@pytest.mark.integration  # a hypothesis search (seconds): make test runs it
@FUZZ
@given(data=st.data())
def test_property_random_valid_images_load(fuzz_dir: Path, data: st.DataObject) -> None:
    image, fmt = _random_image(data)
    path = fuzz_dir / f"valid.{fmt.lower()}"
    image.save(path, fmt)
    out = load_image(path)  # a valid file must load, whatever its mode
    assert out.mode == "RGB"
    assert out.size == (max(image.size),) * 2


@FUZZ
@given(data=st.data())
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_property_corrupted_valid_images(fuzz_dir: Path, data: st.DataObject) -> None:
    image, fmt = _random_image(data)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    blob = bytearray(buffer.getvalue())
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 255)), max_size=8))
    for position, value in edits:
        blob[position] = value
    keep = data.draw(st.integers(0, len(blob)))
    path = fuzz_dir / f"corrupt.{fmt.lower()}"
    path.write_bytes(bytes(blob[:keep]))
    _check_outcome(path)


def test_every_reason_is_reachable(tmp_path: Path) -> None:
    # Guard against a fuzz test that passes because everything is classified the same way.
    whole = save(noise_rgb(64, 64), tmp_path / "whole.png")
    reasons = {
        reason_of(_cut(whole, tmp_path / "a.png")),
        reason_of(_cut(whole, tmp_path / "b.png", keep=0)),
        reason_of(whole, max_pixels=100),
        reason_of(tmp_path / "none.png"),
    }
    assert reasons == set(IMAGE_SKIP_REASONS)
