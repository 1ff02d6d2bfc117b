"""Photo-like versions of catalog product shots: what a shopper's photo of the same product
might look like.

Catalog images are studio shots: the product centred on white, evenly lit, sharp. A shopper's
photo shows the product smaller, somewhere in the frame, a little tilted, on a bed, a floor or
a table, under other light, slightly blurred and JPEG-compressed by a phone or a messenger.
`shopper_photo` imitates that so an evaluation can ask how a model copes with the gap, and so
training can use it as an augmentation.

Everything random comes from the `random.Random` passed in (numpy draws are seeded from it),
so the same image and the same seed give the same photo in any process. Pure PIL and numpy;
imports nothing of the project.
"""
from __future__ import annotations

import colorsys
import io
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from catalog.errors import UserError

BACKGROUNDS = ("gradient", "clouds", "stripes", "tiles")


@dataclass(frozen=True)
class PhotoLikeSettings:
    """Ranges the transformations are drawn from (uniformly, unless said otherwise)."""
    # Product size: its fitted size in the frame times this factor.
    scale: tuple[float, float] = (0.45, 0.85)
    max_rotation: float = 12.0            # degrees, either way
    brightness: tuple[float, float] = (0.65, 1.2)
    contrast: tuple[float, float] = (0.7, 1.15)
    colour_cast: float = 0.12             # per-channel gain within 1 +- this (warm/cool light)
    uneven_light: float = 0.25            # strength of a light falloff across the frame
    shadow_probability: float = 0.5
    blur: tuple[float, float] = (0.0, 1.4)  # Gaussian radius in pixels
    noise: tuple[float, float] = (0.0, 6.0)  # sensor noise, standard deviation in grey levels
    jpeg_probability: float = 0.7
    jpeg_quality: tuple[int, int] = (35, 85)
    # Studio backdrop: a pixel is backdrop when every channel is within this (or three times
    # the backdrop's own noise, if more) of the backdrop colour fitted along the border.
    white_tolerance: int = 8
    mask_softness: float = 1.2            # Gaussian radius of the mask's edge
    size: tuple[int, int] | None = None   # output (width, height); None keeps the input's


def _border_connected(free: np.ndarray) -> np.ndarray:
    """The `free` pixels reachable from the image border through free pixels (4-neighbours):
    a flood fill by repeated one-pixel growth, vectorised (PIL's floodfill is pure Python)."""
    reached = np.zeros_like(free)
    reached[0, :], reached[-1, :], reached[:, 0], reached[:, -1] = free[0, :], free[-1, :], free[:, 0], free[:, -1]
    while True:
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= free
        if np.array_equal(grown, reached):
            return reached
        reached = grown


def _backdrop(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The studio backdrop as a smooth colour field over the frame, and its noise level.

    Most shots are on white, some on light grey with a vignette: a quadratic surface per
    channel, fitted to the border pixels, covers both. Where the product touches the border
    (legs, a shoe's toe) those pixels are outliers and are trimmed from the fit.
    """
    height, width, _ = rgb.shape
    ys, xs = np.mgrid[0:height, 0:width]
    edge = np.zeros((height, width), dtype=bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True

    def design(y, x):
        y, x = y / height - 0.5, x / width - 0.5
        return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)

    points, colours = design(ys[edge], xs[edge]), rgb[edge].astype(np.float64)
    keep = np.ones(len(points), dtype=bool)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(points[keep], colours[keep], rcond=None)
        residual = np.abs(points @ coef - colours).max(axis=1)
        typical = float(np.median(residual[keep]))
        keep = residual <= max(3 * typical, 6.0)
        if keep.sum() < 12:  # the product fills the border: call the backdrop white
            return np.full(rgb.shape, 255.0), 0.0
    field = design(ys, xs) @ coef
    return field, float(np.median(residual[keep]))


def product_mask(image: Image.Image, white_tolerance: int = 8, softness: float = 1.2,
                 closing: int = 5) -> Image.Image:
    """An "L" mask of the product (255) against the plain studio backdrop (0), softened.

    Only backdrop connected to the image border counts as background, so a white shirt's body
    inside its own outline stays product. An image that is all backdrop is all product.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    backdrop, spread = _backdrop(rgb)
    ink = np.abs(rgb - backdrop).max(axis=2) > max(white_tolerance, 3 * spread)
    if not ink.any():
        return Image.new("L", image.size, 255)
    mask = Image.fromarray(np.where(ink, 255, 0).astype(np.uint8), "L")
    # Close hairline gaps in the outline of pale garments before the background leaks in.
    closed = np.asarray(mask.filter(ImageFilter.MaxFilter(closing))) > 0
    outside = _border_connected(~closed)
    solid = Image.fromarray(np.where(outside, 0, 255).astype(np.uint8), "L")
    solid = solid.filter(ImageFilter.MinFilter(closing))  # give back what the closing added
    if softness > 0:
        # Pull the edge in a pixel first, so the softened rim blends product into the new
        # background rather than dragging a halo of studio white along.
        solid = solid.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.GaussianBlur(softness))
    return solid


def _bleed_edges(image: Image.Image, mask: Image.Image, radius: float = 3.0) -> Image.Image:
    """The image with its rim pixels (mask below full) recoloured from the nearby solid
    product, so the soft edge blends product colour, not the studio white, into the new
    background (a light halo otherwise gives every cut-out away)."""
    alpha = np.asarray(mask)
    solid = np.where(alpha == 255, 255, 0).astype(np.uint8)
    if not solid.any():
        return image
    pixels = np.asarray(image, dtype=np.float32)
    kept = Image.fromarray((pixels * (solid[..., None] / 255)).astype(np.uint8), "RGB")
    spread = np.asarray(kept.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
    weight = np.asarray(Image.fromarray(solid, "L").filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
    bled = spread / np.maximum(weight, 1.0)[..., None] * 255
    rim = (alpha < 255) & (weight > 2)
    pixels[rim] = bled[rim]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def _colour(rng: random.Random, value: tuple[float, float] = (0.25, 0.9)) -> np.ndarray:
    # Rooms are mostly muted: low to mid saturation, any hue.
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.55), rng.uniform(*value))
    return np.array([r, g, b], dtype=np.float32) * 255


def _ramp(width: int, height: int, angle: float) -> np.ndarray:
    """0..1 across the frame along `angle` (radians)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xs * np.cos(angle) + ys * np.sin(angle)
    span = t.max() - t.min()
    return (t - t.min()) / span if span else np.zeros_like(t)


def background(size: tuple[int, int], rng: random.Random, kind: str | None = None) -> Image.Image:
    """A textured surface: a gradient, soft clouds, stripes (fabric, wood) or tiles, with grain."""
    width, height = size
    kind = kind or rng.choice(BACKGROUNDS)
    if kind not in BACKGROUNDS:
        raise UserError(f"unknown background {kind!r}; choose one of {', '.join(BACKGROUNDS)}")
    noise = np.random.default_rng(rng.getrandbits(64))
    first, second = _colour(rng), _colour(rng)
    if kind == "gradient":
        t = _ramp(width, height, rng.uniform(0, 2 * np.pi))
    elif kind == "clouds":
        # Low-frequency noise: a coarse random grid scaled up smoothly.
        cells = (rng.randint(3, 8), rng.randint(3, 8))
        coarse = Image.fromarray((noise.random(cells[::-1]) * 255).astype(np.uint8), "L")
        t = np.asarray(coarse.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255
    elif kind == "stripes":
        period = rng.uniform(6, max(8.0, width / 3))
        along = _ramp(width, height, rng.uniform(0, np.pi)) * np.hypot(width, height)
        wobble = noise.normal(0, 0.6, size=(height, width)).cumsum(axis=1) * rng.uniform(0, 0.3)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (along + wobble) / period)
    else:  # tiles: a floor or a tablecloth check
        cell = rng.randint(max(4, width // 12), max(6, width // 3))
        ys, xs = np.mgrid[0:height, 0:width]
        t = (((xs // cell) + (ys // cell)) % 2).astype(np.float32)
        grout = ((xs % cell) < 1) | ((ys % cell) < 1)
        t = np.where(grout, 0.5, t)
    pixels = first + (second - first) * t[..., None]
    pixels += noise.normal(0, rng.uniform(2, 10), size=pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def _light(image: Image.Image, rng: random.Random, settings: PhotoLikeSettings) -> Image.Image:
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(*settings.brightness))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(*settings.contrast))
    pixels = np.asarray(image, dtype=np.float32)
    gains = np.array([1 + rng.uniform(-settings.colour_cast, settings.colour_cast) for _ in range(3)],
                     dtype=np.float32)
    # A window on one side: light falls off across the frame.
    falloff = 1 - settings.uneven_light * rng.random() * _ramp(image.width, image.height,
                                                               rng.uniform(0, 2 * np.pi))
    pixels = pixels * gains * falloff[..., None]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


@dataclass(frozen=True)
class CutOut:
    """A product lifted off its studio backdrop: its pixels (RGB, rim recoloured from the
    product) and its soft mask, both cropped to the product, plus the shot's size. It needs
    no randomness, so a training run computes it once per product and stages it anew on
    every epoch: the mask is half the cost of a photo."""
    product: Image.Image
    alpha: Image.Image
    size: tuple[int, int]


def cut_out(image: Image.Image, settings: PhotoLikeSettings = PhotoLikeSettings()) -> CutOut:
    image = image.convert("RGB")
    mask = product_mask(image, settings.white_tolerance, settings.mask_softness)
    box = mask.getbbox() or (0, 0, image.width, image.height)
    return CutOut(_bleed_edges(image, mask).crop(box), mask.crop(box), image.size)


def shopper_photo(image: Image.Image | CutOut, rng: random.Random,
                  settings: PhotoLikeSettings = PhotoLikeSettings()) -> Image.Image:
    """A shopper-like photo of the product in a catalog shot (or its `cut_out`): cut out
    from its white background, scaled down, placed at a random position on a textured
    background, slightly rotated, relit, blurred, noisy and maybe JPEG-recompressed.
    Same `rng` state, same photo."""
    piece = image if isinstance(image, CutOut) else cut_out(image, settings)
    width, height = settings.size or piece.size
    product, alpha = piece.product, piece.alpha

    angle = rng.uniform(-settings.max_rotation, settings.max_rotation)
    product = product.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255))
    alpha = alpha.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=0)

    fit = min(width / product.width, height / product.height) * rng.uniform(*settings.scale)
    new_size = (max(1, round(product.width * fit)), max(1, round(product.height * fit)))
    product = product.resize(new_size, Image.Resampling.LANCZOS)
    alpha = alpha.resize(new_size, Image.Resampling.BILINEAR)
    x = rng.randint(0, max(0, width - new_size[0]))
    y = rng.randint(0, max(0, height - new_size[1]))

    canvas = background((width, height), rng)
    if rng.random() < settings.shadow_probability:
        # A soft contact shadow, offset as if lit from above and to one side.
        shadow = Image.new("L", (width, height), 0)
        dx, dy = rng.randint(-6, 6), rng.randint(2, 8)
        shadow.paste(alpha, (x + dx, y + dy))
        shadow = shadow.filter(ImageFilter.GaussianBlur(rng.uniform(3, 7)))
        strength = rng.uniform(0.25, 0.5)
        shadow = shadow.point(lambda v: int(v * strength))
        canvas = Image.composite(Image.new("RGB", (width, height), (0, 0, 0)), canvas, shadow)
    canvas.paste(product, (x, y), alpha)

    photo = _light(canvas, rng, settings)
    radius = rng.uniform(*settings.blur)
    if radius > 0.05:
        photo = photo.filter(ImageFilter.GaussianBlur(radius))
    sigma = rng.uniform(*settings.noise)
    if sigma > 0:
        grain = np.random.default_rng(rng.getrandbits(64)).normal(0, sigma, (height, width, 1))
        pixels = np.asarray(photo, dtype=np.float32) + grain
        photo = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    if rng.random() < settings.jpeg_probability:
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=rng.randint(*settings.jpeg_quality))
        photo = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return photo


__all__ = ["PhotoLikeSettings", "BACKGROUNDS", "CutOut", "background", "cut_out", "product_mask", "shopper_photo"]
