"""Fuzzing the upload path: whatever bytes arrive, the answer is an RGB image or an ImageError."""
import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from catalog import ImageError, ImageLimits, open_image

LIMITS = ImageLimits(max_bytes=200_000, max_pixels=1_000_000)


def _seed_files() -> list[bytes]:
    out = []
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
        buf = io.BytesIO()
        Image.effect_noise((16, 12), 60).convert("RGB").save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_files()


def _check(data: bytes) -> None:
    try:
        image = open_image(data, LIMITS)
    except ImageError as exc:
        assert str(exc)
        return
    assert image.mode == "RGB" and image.width * image.height <= LIMITS.max_pixels
    # whatever the input's shape, what a model resizes is at most max_aspect:1 (issue 13)
    assert max(image.size) <= LIMITS.max_aspect * min(image.size) + 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    _check(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=12),
       st.integers(0, 10_000))
def test_mutated_images(seed, flips, cut):
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    _check(bytes(data[: max(1, len(data) - cut % len(data))]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 20_000), st.integers(1, 60), st.sampled_from(["PNG", "GIF", "BMP"]), st.booleans())
def test_any_shape(long, short, fmt, tall):
    buf = io.BytesIO()
    Image.new("RGB", (short, long) if tall else (long, short), (90, 30, 200)).save(buf, fmt)
    _check(buf.getvalue())
