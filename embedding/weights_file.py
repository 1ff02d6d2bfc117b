"""The weights file `finetune` writes and every command reads (`--weights FILE`, or `auto`'s
data/weights/MODEL.pt): one format, written and read here only.

A file is either a bare state dict of the model, or a dict with:
    model           the model name it was trained for
    state_dict      the backbone, without its classifier
    image_size      the input size embedders use (finetune's --serve-size, else its training size)
    train_size      the input size it was trained at (files from before serve sizes: image_size)
    head            the projection applied after pooling (a Linear's state dict), if any
    classifiers     per label its training learned: {"labels": [...], "centres": classes x dim
                    tensor, "scale": float}, the cosine classifiers behind `Classifiers`
    labels          the label vocabulary of its training
    start           the weights it started from
    history         per-epoch figures
    validation_ids  the products held out of its training (`evaluate --held-out`)
    settings        the recipe that made it
Everything is plain data and tensors, loadable with `weights_only=True`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from catalog.digests import file_digest
from catalog.errors import UserError


class WeightsError(UserError):
    """The requested weights cannot be had or do not fit the model; the message says what to do."""


@dataclass(frozen=True)
class WeightsFileContents:
    state_dict: dict
    image_size: int | None = None
    head: dict | None = None
    classifiers: dict | None = None


def weights_payload(model: str, state_dict: dict, *, image_size: int, train_size: int | None = None,
                    head: dict | None = None, classifiers: dict | None = None,
                    labels: dict | None = None, start: str = "", history: list | None = None,
                    validation_ids: list[str] | None = None, settings: dict | None = None) -> dict:
    payload = {
        "model": model,
        "state_dict": {k: v for k, v in state_dict.items() if not k.startswith("fc.")},
        "image_size": int(image_size),
        "train_size": int(train_size or image_size),
        "labels": labels or {},
        "start": start,
        "history": history or [],
        "validation_ids": list(validation_ids or []),
        "settings": settings or {},
    }
    if head is not None:
        payload["head"] = head
    if classifiers:
        payload["classifiers"] = classifiers
    return payload


def save_atomically(payload: dict, path: Path) -> None:
    """Written to a temporary name and renamed: a run killed while saving leaves the previous
    file whole (weights files, and the training checkpoints too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def read_weights_file(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a PyTorch weights file ({exc})") from exc


def weights_contents(model: str, path: Path) -> WeightsFileContents:
    """The backbone state dict, input size, projection head and classifiers of a file for `model`."""
    payload = read_weights_file(path)
    if isinstance(payload, dict) and "state_dict" in payload:
        made_for = payload.get("model")
        if made_for and made_for != model:
            raise WeightsError(f"{path} holds weights for {made_for}, not {model}; use it with --model {made_for}")
        state = payload["state_dict"]
        if not isinstance(state, dict):
            raise WeightsError(f"{path}: expected a state dict of {model}")
        return WeightsFileContents(state, int(payload["image_size"]) if payload.get("image_size") else None,
                                   payload.get("head") or None, payload.get("classifiers") or None)
    if not isinstance(payload, dict):
        raise WeightsError(f"{path}: expected a state dict of {model}")
    return WeightsFileContents(payload)


def weights_file_id(path: Path) -> str:
    """The identity a collection records for vectors made with this file: its name and content."""
    return f"file:{path.name}:{file_digest(path, 'sha256')[:16]}"


def held_out_ids(path: str | Path) -> tuple[str, ...]:
    """The products a `finetune` output file records as held out from its training (its
    validation split), so they can be queried as products the weights have never seen."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    payload = read_weights_file(path)
    ids = payload.get("validation_ids") if isinstance(payload, dict) else None
    if not ids:
        raise WeightsError(f"{path} records no held-out products; only a file written by "
                           "`app.py finetune` knows which products its training left out")
    return tuple(str(i) for i in ids)
