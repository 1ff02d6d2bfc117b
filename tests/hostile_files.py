"""The hostile uploads of issue 7, made at run time: name -> bytes."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_bomb(width=30000, height=30000) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def hostile_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, what must happen: "error", "results", or "nothing": decoded, but it shows
    no product (one colour, a few pixels, a sliver), which is said rather than answered)."""
    photo = Image.effect_noise((64, 80), 40).convert("RGB")
    jpeg = _save(photo, "JPEG")
    palette = Image.new("P", (40, 40), 1)
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0, 0, 0] * 254)
    frames = [Image.new("RGB", (30, 30), c) for c in ((255, 0, 0), (0, 255, 0))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 8
    return {
        "zero-bytes.jpg": (b"", "error"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "error"),
        "text.jpg": (b"just some text, not a photo\n" * 10, "error"),
        "page.jpg": (b"<html><body><script>alert(1)</script></body></html>", "error"),
        "vector.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>', "error"),
        "bomb.png": (_png_bomb(), "error"),
        "sixteen-bit.png": (_save(Image.fromarray(np.arange(4800, dtype=np.uint16).reshape(60, 80) * 13), "PNG"), "results"),
        "cmyk.jpg": (_save(Image.new("CMYK", (40, 50), (0, 200, 200, 10)), "JPEG"), "nothing"),
        "palette-transparent.png": (_save(palette, "PNG", transparency=0), "nothing"),
        "animated.gif": (gif.getvalue(), "nothing"),
        "one-pixel.png": (_save(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "nothing"),
        "wide-10000x200.png": (_save(Image.new("RGB", (10000, 200), (30, 60, 90)), "PNG"), "nothing"),
        "exif-rotated.jpg": (_save(photo, "JPEG", exif=exif), "results"),
        **aspect_files(),
    }


# Extreme aspect ratios (issue 13): a 220-byte strip must not cost the resize gigabytes.
ASPECTS = {"strip-10799x1.gif": (10799, 1), "strip-1x10799.png": (1, 10799), "strip-40000x1.png": (40000, 1),
           "strip-5000x3.bmp": (5000, 3), "wide-4.5x1.jpg": (450, 100)}


def aspect_files() -> dict[str, tuple[bytes, str]]:
    formats = {"gif": "GIF", "png": "PNG", "bmp": "BMP", "jpg": "JPEG"}
    # A plain strip shows no product; 4.5:1 is a photo's shape, padded and searched.
    return {name: (_save(Image.new("RGB", size, (200, 40, 40)), formats[name.rsplit(".", 1)[1]]),
                   "results" if name.startswith("wide-") else "nothing")
            for name, size in ASPECTS.items()}
