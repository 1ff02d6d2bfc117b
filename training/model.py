"""The network being trained: the embedder's backbone (pooled features, as indexing uses
them), an optional projection head, and one classifier per target label."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from catalog.errors import UserError
from embedding.architectures import architecture
from embedding.embedders import load_embedder, model_dim
from embedding.weights import WeightsError, resolve

# Logits are this times a cosine: large enough that a confident softmax is reachable (cosines
# live in [-1, 1]), small enough that early gradients do not vanish.
COSINE_SCALE = 16.0


class CosineClassifier(nn.Module):
    """Logits = scale x cosine(feature, class centre).

    The index ranks products by cosine similarity, so the classifier judges features by the
    same measure: what it learns to separate is what the index will separate.
    """

    def __init__(self, dim: int, classes: int, scale: float = COSINE_SCALE):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * dim ** -0.5)
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * nn.functional.normalize(features.float(), dim=1) @ \
            nn.functional.normalize(self.weight, dim=1).t()


def identity_linear(dim: int) -> nn.Linear:
    """A projection that starts as the identity, so epoch 0 of --head-only is the backbone."""
    layer = nn.Linear(dim, dim)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim))
        layer.bias.zero_()
    return layer


def early_layers(backbone: nn.Module, model: str, stages: int) -> list[nn.Module]:
    """The stem and the first `stages` stages of a backbone (none for 0): the generic edge and
    texture detectors that ImageNet already taught well, and at full resolution the costliest
    layers to train."""
    if stages <= 0:
        return []
    if architecture(model).family == "resnet":
        stem = [backbone.conv1, backbone.bn1]
        blocks = [backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
    else:
        stem = [backbone.conv_stem, backbone.bn1]
        blocks = list(backbone.blocks)
    if stages > len(blocks):
        raise UserError(f"--freeze {stages}: {model} has {len(blocks)} stages")
    return stem + blocks[:stages]


class RetrievalNet(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int, classes: Mapping[str, int], projection: bool = False,
                 frozen: list[nn.Module] | None = None, distill_dim: int | None = None):
        super().__init__()
        self.backbone = backbone
        # Maps the features onto a teacher's, for distillation; trained, never exported.
        self.distill = nn.Linear(dim, distill_dim, bias=False) if distill_dim else None
        self.projection = identity_linear(dim) if projection else None
        self.heads = nn.ModuleDict({target: CosineClassifier(dim, n) for target, n in classes.items()})
        # A plain list, not a ModuleList: these are already registered under the backbone.
        self._frozen = list(frozen or [])
        for module in self._frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> RetrievalNet:
        super().train(mode)
        for module in self._frozen:
            module.eval()  # frozen layers keep ImageNet's batch-norm statistics too
        return self

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.projection(pooled) if self.projection is not None else pooled

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """What the exported embedder computes before its L2 normalisation."""
        return self.project(self.backbone(images))

    def classify(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {target: head(features) for target, head in self.heads.items()}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classify(self.features(images))

    def classifiers(self, vocabulary: Mapping[str, list[str]]) -> dict[str, dict]:
        """Every head as the weights file keeps it: its labels, class centres and scale, so
        that a search can ask what the query most likely is (search/reorder.py)."""
        return {target: {"labels": list(vocabulary[target]),
                         "centres": head.weight.detach().to("cpu", torch.float32).clone(),
                         "scale": float(head.scale)}
                for target, head in self.heads.items()}


def starting_backbone(model: str, weights: str) -> tuple[nn.Module, int, str]:
    """The backbone `load_embedder` builds for these weights (so the start is exactly what
    `index --weights ...` would embed with), its feature size, and the kind of start.

    A weights file with a projection head gives its backbone only: the head's space is not
    the one the new classifiers are trained in.
    """
    choice = resolve(model, weights).choice
    if choice is None:
        raise WeightsError(resolve(model, weights, download=False).line)
    network = load_embedder(model, choice).network
    if isinstance(network, nn.Sequential):
        network = network[0]
    return network, model_dim(model), choice.kind


__all__ = ["COSINE_SCALE", "CosineClassifier", "identity_linear", "early_layers", "RetrievalNet", "starting_backbone"]
