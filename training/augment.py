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
from torchvision.transforms.v2 import functional as F

from catalog.photolike import CutOut, shopper_photo
from embedding.architectures import IMAGENET_MEAN, IMAGENET_STD, WHITE, architecture

# torchvision's ImageNet statistics, the ResNets' (Lite models scale as TensorFlow did: their
# own architecture says so, and training normalises as the embedder will).
MEAN, STD = IMAGENET_MEAN, IMAGENET_STD


def eval_transform(model: str, image_size: int):
    """Exactly the preprocessing `vectorstore.load_embedder` gives a weights file that records
    `image_size` (the architecture's framing and normalisation at that size)."""
    return architecture(model).transform(image_size)


def to_normalised_tensor(image: Image.Image, mean=MEAN, std=STD) -> torch.Tensor:
    tensor = F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)
    return F.normalize(tensor, mean, std)


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
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD
    pad_square: bool = False       # frame clean shots as the embedder does: padded to a square on white

    @classmethod
    def for_settings(cls, settings) -> ShopperAugment:
        """The views a fine-tuning run's `FinetuneSettings` ask for."""
        # A grey view would teach a wrong colour when colour is a target.
        grey = 0.0 if "baseColour" in settings.targets else cls.grey_probability
        arch = architecture(settings.model)
        return cls(settings.image_size, settings.photo_probability, crop_scale=(settings.crop_min, 1.0),
                   grey_probability=grey, mean=arch.mean, std=arch.std, pad_square=arch.framing == "pad")

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
        elif self.pad_square:
            side = max(image.size)
            image = ImageOps.pad(image, (side, side), color=WHITE)
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
        return to_normalised_tensor(self.view(image, rng, cut), self.mean, self.std)


__all__ = ["MEAN", "STD", "eval_transform", "to_normalised_tensor", "ShopperAugment"]
