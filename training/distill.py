"""Distillation from a frozen ImageNet network: the student learns, beside the catalog's
labels, to carry what the teacher's embedding knows about how products look.

Label training keeps what separates articleTypes and throws the rest away (colour agreement
fell from 0.43 to 0.24 when ResNet-18 learned articleType alone). The teacher's features, from
ImageNet, still hold colour, texture and shape; the student's pooled features are mapped by a
linear layer (used in training only, never exported) onto the teacher's, and the loss is one
minus their cosine, on the very view the labels are learned from, clean or shopper-photo.
"""
from __future__ import annotations

import torch
from torch import nn

from embedding.architectures import architecture
from embedding.embedders import load_embedder


class Teacher(nn.Module):
    """A frozen ImageNet embedder that reads the student's input tensors.

    The student's batch is normalised with the student's statistics; one per-channel affine
    map turns it into the teacher's normalisation, so both see the same pixels."""

    def __init__(self, name: str, student: str):
        super().__init__()
        embedder = load_embedder(name, "imagenet")
        self.name, self.dim, self.weights_id = name, embedder.dim, embedder.weights_id
        self.network = embedder.network.eval().requires_grad_(False)
        theirs, ours = architecture(name), architecture(student)
        std_s, mean_s = torch.tensor(ours.std), torch.tensor(ours.mean)
        std_t, mean_t = torch.tensor(theirs.std), torch.tensor(theirs.mean)
        self.register_buffer("scale", (std_s / std_t).view(1, 3, 1, 1))
        self.register_buffer("shift", ((mean_s - mean_t) / std_t).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # frozen, batch-norm statistics included

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return nn.functional.normalize(self.network(images * self.scale + self.shift).float(), dim=1)


def distill_cosine(mapped: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-image cosine between the mapped student features and the teacher's unit vectors."""
    return nn.functional.cosine_similarity(mapped.float(), teacher, dim=1)


__all__ = ["Teacher", "distill_cosine"]
