import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from catalog import ImageError, ImageLimits, open_image


def _bytes(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def test_formats_open_as_rgb():
    base = Image.new("RGB", (30, 40), (10, 200, 30))
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "GIF"):
        image = open_image(_bytes(base, fmt))
        assert image.mode == "RGB" and image.size == (30, 40)


def test_transparency_goes_on_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert open_image(_bytes(rgba, "PNG")).getpixel((5, 5)) == (255, 255, 255)
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert open_image(_bytes(palette, "PNG", transparency=0)).getpixel((5, 5)) == (255, 255, 255)


def test_exif_orientation_is_honoured():
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    assert open_image(_bytes(image, "JPEG", exif=exif)).size == (20, 40)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    red = open_image(buf.getvalue()).getpixel((4, 4))
    assert red[0] > 200 and red[2] < 50


def test_sixteen_bit_png_is_scaled_not_clipped():
    array = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    image = open_image(_bytes(Image.fromarray(array), "PNG"))
    values = np.asarray(image)[..., 0]
    assert values.min() == 0 and 240 <= values.max() <= 255 and len(np.unique(values)) > 30


def test_cmyk_jpeg():
    image = open_image(_bytes(Image.new("CMYK", (10, 10), (0, 255, 255, 0)), "JPEG"))
    r, g, b = image.getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"hello, this is text", "not an image"),
    (b"<html><script>alert(1)</script></html>", "not an image"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "not an image"),
])
def test_non_images_get_a_clear_message(data, message):
    with pytest.raises(ImageError, match=message):
        open_image(data)


def test_truncated_jpeg():
    data = _bytes(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageError, match="damaged or truncated"):
        open_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    # A valid PNG header declaring 30000x30000 pixels, with almost no data behind it.
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    with pytest.raises(ImageError, match="pixels"):
        open_image(png)


def test_size_limit(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_bytes(Image.effect_noise((300, 300), 90).convert("RGB"), "PNG"))
    with pytest.raises(ImageError, match="limit"):
        open_image(path, ImageLimits(max_bytes=1000))


def test_extreme_shapes_open():
    assert open_image(_bytes(Image.new("RGB", (1, 1)), "PNG")).size == (1, 1)
    # a 50:1 banner opens, shrunk and padded to 4:1 (see the aspect-ratio test below)
    assert open_image(_bytes(Image.new("RGB", (10000, 200)), "PNG")).size == (2048, 512)


@pytest.mark.parametrize("size", [(10799, 1), (1, 10799), (40000, 1), (5000, 3), (450, 100), (400, 100), (100, 400)])
def test_extreme_aspect_ratios_are_bounded_by_the_output_size(size, embedders):
    """Issue 13: the model's resize scales the short side up; a strip is padded first."""
    limits = ImageLimits()
    image = open_image(_bytes(Image.new("RGB", size, (200, 40, 40)), "PNG"))
    long, short = max(image.size), min(image.size)
    assert long <= limits.max_aspect * short + 1
    if max(size) <= limits.max_aspect * min(size):
        assert image.size == size  # ordinary shapes are untouched
    else:
        assert long <= limits.max_padded_side
        middle = [image.getpixel((image.width // 2, y)) for y in range(image.height)] if image.width >= image.height \
            else [image.getpixel((x, image.height // 2)) for x in range(image.width)]
        assert (200, 40, 40) in middle and middle[0] == middle[-1] == (255, 255, 255)  # kept, padded on white
    assert tuple(embedders["resnet18"].preprocess(image).shape) == (3, 224, 224)
