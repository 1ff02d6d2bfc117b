"""Training views that make catalog shots look like shopper photos, and the evaluation view.

The photo-like part (cut-out, smaller, pasted on a textured background, tilted, relit,
blurred, recompressed) is `catalog.photolike.shopper_photo`, the same synthesis the
evaluation uses for its photo-like queries; here it is one branch among the usual crops,
flips and colour changes. All randomness comes from the `random.Random` handed in.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision import models
from torchvision.transforms.v2 import functional as F

from catalog.photolike import CutOut, shopper_photo
from training.data import short_side_size

# torchvision's ImageNet statistics: the embedder's preprocessing normalises with them whatever
# the weights, so training must too.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def eval_transform(model: str, image_size: int):
    """Exactly the preprocessing `vectorstore.load_embedder` gives a weights file that records
    `image_size`: resize the short side, centre crop, ImageNet normalisation."""
    default = models.get_model_weights(model).DEFAULT
    return default.transforms(crop_size=image_size, resize_size=short_side_size(image_size))


def to_normalised_tensor(image: Image.Image) -> torch.Tensor:
    tensor = F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)
    return F.normalize(tensor, MEAN, STD)


@dataclass(frozen=True)
class ShopperAugment:
    image_size: int
    photo_probability: float = 0.5
    crop_scale: tuple[float, float] = (0.35, 1.0)     # share of the image area kept by a crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.4
    grey_probability: float = 0.05

    @classmethod
    def for_settings(cls, settings) -> "ShopperAugment":
        """The views a fine-tuning run's `FinetuneSettings` ask for."""
        # A grey view would teach a wrong colour when colour is a target.
        grey = 0.0 if "baseColour" in settings.targets else cls.grey_probability
        return cls(settings.image_size, settings.photo_probability, crop_scale=(settings.crop_min, 1.0),
                   grey_probability=grey)

    def _crop_box(self, width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
        area = width * height
        for _ in range(10):
            target = area * rng.uniform(*self.crop_scale)
            ratio = math.exp(rng.uniform(math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])))
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                x, y = rng.randint(0, width - w), rng.randint(0, height - h)
                return x, y, x + w, y + h
        side = min(width, height)  # the evaluation's framing, as a fallback
        x, y = (width - side) // 2, (height - side) // 2
        return x, y, x + side, y + side

    def view(self, image: Image.Image, rng: random.Random, cut: CutOut | None = None) -> Image.Image:
        """The augmented picture, before tensor conversion (for looking at). `cut` is the
        image's `cut_out`, when the caller keeps one: the same picture, at half the cost."""
        if rng.random() < self.photo_probability:
            image = shopper_photo(cut or image, rng)
        box = self._crop_box(image.width, image.height, rng)
        image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR, box=box)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(1 - self.brightness, 1 + self.brightness))
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(1 - self.contrast, 1 + self.contrast))
        image = ImageEnhance.Color(image).enhance(rng.uniform(1 - self.saturation, 1 + self.saturation))
        if rng.random() < self.grey_probability:
            image = ImageOps.grayscale(image).convert("RGB")
        return image

    def __call__(self, image: Image.Image, rng: random.Random, cut: CutOut | None = None) -> torch.Tensor:
        return to_normalised_tensor(self.view(image, rng, cut))


__all__ = ["MEAN", "STD", "eval_transform", "to_normalised_tensor", "ShopperAugment"]
