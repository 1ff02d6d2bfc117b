"""A second kind of shopper photo, made otherwise than `catalog/photolike.py` makes its own.

`shopper_photo` is also what fine-tuning trains on, so an evaluation that only asks with it
cannot tell learning shoppers' photos from learning that generator. `handheld_photo` shares
none of its steps: the shot is not cut out (the studio backdrop stays, as in a photo of a
screen or of a product on a white shelf), it is held at an angle (a perspective warp, not a
rotation of a cut-out), further away on a flat wall colour, with torchvision's colour jitter
and blur. Same image and same `rng` state, same photo.
"""
from __future__ import annotations

import random

from PIL import Image, ImageFilter
from torchvision.transforms.v2 import functional as F

WALLS = ((128, 128, 128), (60, 60, 70), (200, 190, 170), (90, 110, 90), (150, 120, 100))


def handheld_photo(image: Image.Image, rng: random.Random, *, zoom_out: tuple[float, float] = (1.2, 1.8),
                   tilt: float = 0.3, max_rotation: float = 15.0) -> Image.Image:
    """The catalog shot placed smaller on a wall colour, warped as if photographed at an angle,
    rotated, with its brightness, contrast, saturation and hue moved and slightly blurred."""
    image = image.convert("RGB")
    wall = rng.choice(WALLS)
    scale = rng.uniform(*zoom_out)
    canvas = Image.new("RGB", (round(image.width * scale), round(image.height * scale)), wall)
    canvas.paste(image, (rng.randint(0, canvas.width - image.width), rng.randint(0, canvas.height - image.height)))
    canvas = F.perspective(canvas, *_corners(canvas.size, tilt, rng), fill=list(wall))
    canvas = F.rotate(canvas, rng.uniform(-max_rotation, max_rotation), fill=list(wall))
    canvas = F.adjust_brightness(canvas, rng.uniform(0.7, 1.3))
    canvas = F.adjust_contrast(canvas, rng.uniform(0.7, 1.3))
    canvas = F.adjust_saturation(canvas, rng.uniform(0.7, 1.3))
    canvas = F.adjust_hue(canvas, rng.uniform(-0.03, 0.03))
    return canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))


def _corners(size: tuple[int, int], tilt: float, rng: random.Random) -> tuple[list, list]:
    """Start and end corners of a perspective warp: each corner moves inwards by up to `tilt`
    of half the side (torchvision's RandomPerspective, drawn from `rng`)."""
    width, height = size
    dx, dy = int(tilt * width / 2), int(tilt * height / 2)
    start = [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]
    end = [[rng.randint(0, dx), rng.randint(0, dy)],
           [width - 1 - rng.randint(0, dx), rng.randint(0, dy)],
           [width - 1 - rng.randint(0, dx), height - 1 - rng.randint(0, dy)],
           [rng.randint(0, dx), height - 1 - rng.randint(0, dy)]]
    return start, end


__all__ = ["handheld_photo"]
