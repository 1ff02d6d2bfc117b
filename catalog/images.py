"""Opening an upload or a catalog file as an RGB image, safely.

Anything a shopper can send ends here: limits are checked from the header before any pixel
is decoded, so a decompression bomb costs nothing, and every failure is one `ImageError`
whose message can be shown to a person as is.
"""
from __future__ import annotations

import io
import math
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from catalog.errors import UserError
from catalog.memory import return_freed_memory
from catalog.text import clipped  # a file's name is the sender's choice

SUPPORTED = "JPEG, PNG, WebP, GIF or BMP"


class ImageError(UserError):
    """The input is not an image this product can use; the message says why, for a person."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    # Our own check runs before decoding; Pillow's bomb guard is kept as a second line.
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "MPO")
    # Every model resizes the short side to a fixed size, so a 10799x1 strip would be upscaled
    # to gigabytes. Images longer than max_aspect:1 are shrunk to max_padded_side and padded on
    # white to max_aspect:1, which bounds the work by the output size whatever the input.
    max_aspect: float = 4.0
    max_padded_side: int = 2048
    # A decoded photo larger than this is reduced at once (by a whole factor: a box filter, no
    # copy at full size beyond the decode itself): the models see 224-300 px and the parser
    # 512, so nothing downstream needs more, and every later copy is small.
    max_working_pixels: int = 12_000_000


class DecodeGate:
    """Pixels being decoded at once, across the whole process (the shop's API threads, the
    chat's queue and the crop panel alike): a decode waits until its pixels, counted from the
    header, fit under `budget`; a photo larger than the budget decodes alone. After a burst
    the freed memory goes back to the system."""

    def __init__(self, budget: int = 48_000_000):
        self.budget = budget
        self.in_use = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int):
        cost = min(max(1, pixels), self.budget)
        with self._cond:
            self._cond.wait_for(lambda: self.in_use + cost <= self.budget)
            self.in_use += cost
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= cost
                idle = self.in_use == 0
                self._cond.notify_all()
            if idle and cost >= 4_000_000:
                return_freed_memory()


# One gate per process: every decode of a photo or catalog image goes through it.
DECODE_GATE = DecodeGate()


def _reduce(image: Image.Image, limits: ImageLimits) -> Image.Image:
    """A decoded image over `max_working_pixels`, reduced by the smallest whole factor that
    brings it under."""
    pixels = image.width * image.height
    if pixels <= limits.max_working_pixels:
        return image
    factor = math.ceil(math.sqrt(pixels / limits.max_working_pixels))
    return image.reduce(factor)


def too_large(name: str, size: int, limits: ImageLimits) -> ImageError:
    """The one wording for a file over the size limit, wherever it is caught (here, or in the
    browser before the upload)."""
    return ImageError(f"{clipped(name)} is {size / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.0f} MB")


def _read_bytes(source: str | Path | bytes | BinaryIO, limits: ImageLimits) -> bytes:
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    elif isinstance(source, str | Path):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ImageError(f"cannot read {clipped(path.name)}: {exc.strerror or exc}") from exc
        if size > limits.max_bytes:
            raise too_large(path.name, size, limits)
        data = path.read_bytes()
    else:
        data = source.read(limits.max_bytes + 1)
    if len(data) == 0:
        raise ImageError("the file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageError(f"the file is over the {limits.max_bytes / 1e6:.0f} MB limit")
    return data


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of letting convert() clip to white.
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray((array * (255.0 / peak)).clip(0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _bound_aspect(image: Image.Image, limits: ImageLimits) -> Image.Image:
    """Pad an extreme strip (after shrinking it) to max_aspect:1 on white, centered."""
    width, height = image.size
    long, short = max(width, height), min(width, height)
    if long <= limits.max_aspect * short:
        return image
    # The padded result keeps within the pixel limit too.
    max_side = min(limits.max_padded_side, math.isqrt(int(limits.max_pixels * limits.max_aspect)))
    while max_side > 1 and max_side * math.ceil(max_side / limits.max_aspect) > limits.max_pixels:
        max_side -= 1
    if long > max_side:
        scale = max_side / long
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        width, height = image.size
        long = max(width, height)
    side = max(1, math.ceil(long / limits.max_aspect))
    canvas = Image.new("RGB", (width, side) if width >= height else (side, height), (255, 255, 255))
    canvas.paste(image, ((canvas.width - width) // 2, (canvas.height - height) // 2))
    return canvas


def _draft(image: Image.Image, limits: ImageLimits) -> None:
    """A JPEG over the working size decodes at 1/2, 1/4 or 1/8 scale straight away (libjpeg's
    DCT scaling): the full-size pixels are never held."""
    if image.format not in ("JPEG", "MPO") or image.width * image.height <= limits.max_working_pixels:
        return
    scale = math.sqrt(limits.max_working_pixels / (image.width * image.height))
    image.draft(image.mode, (max(1, int(image.width * scale)), max(1, int(image.height * scale))))


def open_image(source: str | Path | bytes | BinaryIO, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Return an RGB image with EXIF orientation applied, transparency on white and the
    first frame of an animation, or raise `ImageError` with a reason a shopper can read."""
    data = _read_bytes(source, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=None)
            if image.format not in limits.formats:
                raise ImageError(f"{image.format} images are not supported; send {SUPPORTED}")
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageError("the image has no pixels")
            if width * height > limits.max_pixels:
                raise ImageError(f"the image is {width}x{height} pixels; the limit is "
                                 f"{limits.max_pixels / 1e6:.0f} megapixels")
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            with DECODE_GATE.hold(width * height):
                _draft(image, limits)
                image.load()
                image = _reduce(image, limits)
                image = ImageOps.exif_transpose(image) or image
                return _bound_aspect(_to_rgb(image), limits)
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise ImageError(f"this is not an image we can read; send {SUPPORTED}") from exc
        raise ImageError(f"the image declares too many pixels to open safely (limit "
                         f"{limits.max_pixels / 1e6:.0f} megapixels)") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"the image is damaged or truncated and cannot be decoded ({exc})") from exc
