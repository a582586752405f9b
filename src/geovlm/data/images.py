"""Image loading for training and evaluation that never silently fakes data.

Every image goes through :func:`load_image`: open, check the header size against a pixel budget, decode
fully, apply the EXIF orientation, convert whatever mode the file has to RGB composited on white, and
(optionally) pad to a square on white, centred, the way LLaVA's ``expand2square`` does.

A file that cannot be used raises :class:`ImageLoadError` with a ``reason`` from
:data:`IMAGE_SKIP_REASONS`; the dataset skips, counts and logs such records and ``geovlm data check``
finds them before a run. Nothing here ever returns a blank or partially decoded stand-in.

How broken files are classified (deliberately, see ``_classify``):

* ``missing``    -- the path does not exist.
* ``too_large``  -- the header announces more than ``max_pixels`` pixels, or Pillow's own
  decompression-bomb guard fires. Checked before any pixel is decoded.
* ``truncated``  -- the data stops early. Pillow signals this with an ``OSError`` whose message says
  "truncated" ("image file is truncated", "Truncated File Read" for a cut JPEG header) or an
  ``EOFError``; a cut PNG, JPEG, GIF, BMP or TIFF lands here.
* ``unreadable`` -- everything else: zero bytes, not an image, an unsupported format, corrupt data,
  a decoder error, a directory or a permission error. A file cut so early that no format can even be
  identified is ``unreadable``: with no header there is no way to tell it from garbage. Cut WebP files
  also land here because libwebp reports only "could not create decoder object".

Pillow's global settings are never changed for good: the pixel budget is checked locally, and
``ImageFile.LOAD_TRUNCATED_IMAGES`` (which would make Pillow pad a cut file with grey) is only forced
back to ``False`` for the duration of our decode if some other code has switched it on.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageFile, UnidentifiedImageError

# One rule for training and for the processor that ships in saved folders (so they cannot disagree).
from geovlm.modeling.processing_geovlm import (  # noqa: F401 (to_rgb, expand_to_square: re-exported)
    WHITE,
    check_background,
    expand_to_square,
    square_on_white,
    to_rgb,
)

logger = logging.getLogger(__name__)

MISSING = "missing"
UNREADABLE = "unreadable"
TRUNCATED = "truncated"
TOO_LARGE = "too_large"
IMAGE_SKIP_REASONS: tuple[str, ...] = (MISSING, UNREADABLE, TRUNCATED, TOO_LARGE)

DEFAULT_MAX_PIXELS = 40_000_000

# Formats we let Pillow try. Restricting them keeps untrusted corpus files away from plugins that
# shell out (EPS runs Ghostscript) or that only exist for scientific formats; every format a
# web-scraped or rendered diagram corpus uses is here.
IMAGE_FORMATS: tuple[str, ...] = (
    "PNG", "JPEG", "MPO", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM", "TGA", "ICO", "JPEG2000", "AVIF",
)  # fmt: skip

_truncation_lock = threading.Lock()
_warned_truncation_flag = False


class ImageLoadError(Exception):
    """An image that cannot be used. ``reason`` is one of :data:`IMAGE_SKIP_REASONS`."""

    def __init__(self, path: str | os.PathLike[str], reason: str, detail: str = "") -> None:
        if reason not in IMAGE_SKIP_REASONS:
            raise ValueError(f"unknown image skip reason {reason!r}; expected one of {IMAGE_SKIP_REASONS}")
        self.path = os.fspath(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep it picklable across DataLoader worker processes (the default uses only args[0]).
        return (type(self), (self.path, self.reason, self.detail))


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pad_to_square: bool = True,
    background: Sequence[int] = WHITE,
) -> Image.Image:
    """Load ``path`` as a fully decoded RGB image, EXIF-transposed, optionally padded to a square.

    Transparent pixels are composited on ``background`` (white by default). Raises
    :class:`ImageLoadError` for a missing, unreadable, truncated or too large file.
    """
    bg = check_background(background)  # a caller's mistake, before any file is blamed
    with _open_checked(path, max_pixels) as image, _decode_errors(path):
        image.load()  # full decode here, so a cut file fails now rather than in the collator
        _check_size(path, image.size, max_pixels)  # a few plugins settle the size only on load
        return square_on_white(image, pad_to_square, bg)


def probe_image(
    path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS, *, verify: bool = False
) -> tuple[int, int]:
    """Return ``(width, height)`` as stored in the header (before any EXIF rotation).

    Reads only the header unless ``verify`` is true, in which case the pixel data is decoded as well, so
    that a truncated or corrupt body is caught. Raises :class:`ImageLoadError` like :func:`load_image`.
    """
    with _open_checked(path, max_pixels) as image:
        size = image.size
        if verify:
            with _decode_errors(path):
                image.load()
    return size


def resolve_image_path(image_root: str | os.PathLike[str], relative: str | os.PathLike[str]) -> Path:
    """Join a record's image path onto ``image_root``, refusing paths that would leave the root.

    Absolute paths and paths whose ``..`` components climb above the root raise ``ValueError``. The check
    is lexical on purpose: symlinks inside the root (an ``images`` link to a bigger disk) stay allowed.
    """
    rel = os.fspath(relative)
    if not isinstance(rel, str):
        raise ValueError(f"image path must be text, got {rel!r}")
    if not rel or "\x00" in rel:
        raise ValueError(f"invalid image path {rel!r}")
    if os.path.isabs(rel) or os.path.splitdrive(rel)[0]:
        raise ValueError(f"image path {rel!r} is absolute; expected a path relative to {image_root}")
    normalized = os.path.normpath(rel)
    if normalized in (os.curdir, os.pardir) or normalized.startswith(os.pardir + os.sep):
        raise ValueError(f"image path {rel!r} escapes the image root {image_root}")
    return Path(image_root) / normalized


# --- internals ---------------------------------------------------------------------------------------


@contextmanager
def _open_checked(path: str | os.PathLike[str], max_pixels: int) -> Iterator[ImageFile.ImageFile]:
    """Open ``path``, read the header and check its size; the file stays open inside the block."""
    if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    try:
        fp: IO[bytes] = open(path, "rb")  # noqa: SIM115 -- closed by the with-block below
    except FileNotFoundError as exc:
        raise ImageLoadError(path, MISSING, "no such file") from exc
    except OSError as exc:  # a directory, no permission, ...
        raise ImageLoadError(path, UNREADABLE, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    with fp:
        with _decode_errors(path):
            image = Image.open(fp, formats=_allowed_formats())
        _check_size(path, image.size, max_pixels)
        yield image


@contextmanager
def _decode_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn anything Pillow raises for a bad file into an ImageLoadError with a deliberate reason."""
    try:
        with warnings.catch_warnings(), _strict_truncation():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; treat the warning as the
            # error it stands for. (catch_warnings is process-wide; decoding runs in worker
            # processes, not threads, in our loaders.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageLoadError:
        raise
    except MemoryError:
        raise  # a host problem, not a property of the file
    except Exception as exc:
        raise ImageLoadError(path, _classify(exc), f"{type(exc).__name__}: {exc}") from exc


def _classify(exc: BaseException) -> str:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return TOO_LARGE
    if isinstance(exc, UnidentifiedImageError):
        return UNREADABLE  # its message holds the file name, which may itself contain "truncated"
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return TRUNCATED
    return UNREADABLE


@contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make sure Pillow refuses truncated data for our decode without changing the setting for good.

    Normally the flag is already False and nothing is touched. If other code switched it on, it is
    switched off for this decode only, under a lock, and restored afterwards.
    """
    global _warned_truncation_flag
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    with _truncation_lock:
        saved = ImageFile.LOAD_TRUNCATED_IMAGES
        if not _warned_truncation_flag:
            _warned_truncation_flag = True
            logger.warning(
                "PIL.ImageFile.LOAD_TRUNCATED_IMAGES was switched on by other code; geovlm still rejects "
                "truncated images (the flag is restored after each load)"
            )
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _check_size(path: str | os.PathLike[str], size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageLoadError(path, UNREADABLE, f"empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageLoadError(
            path, TOO_LARGE, f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}"
        )


_allowed: tuple[str, ...] | None = None


def _allowed_formats() -> tuple[str, ...]:
    # Image.open raises KeyError for a format name whose plugin is not registered, so keep only
    # those this Pillow build knows.
    global _allowed
    if _allowed is None:
        Image.init()
        _allowed = tuple(f for f in IMAGE_FORMATS if f in Image.OPEN)
    return _allowed
