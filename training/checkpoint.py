"""Checkpoints after every epoch (the weights file a run produces: embedding/weights_file.py).

A checkpoint holds what resuming needs (model, optimizer, epoch, the random generators'
states, the history, the settings it was made with); it is written to a temporary name and
renamed, so a run killed while saving leaves the previous checkpoint whole. Everything in it
is plain data and tensors, loadable with `weights_only=True`.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from catalog.errors import UserError
from embedding.weights_file import save_atomically as atomic_save


class CheckpointMismatch(UserError):
    """A checkpoint exists for this output but was made with other settings."""


def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path, identity: dict, defaults: dict | None = None) -> dict | None:
    """The checkpoint at `path` if there is one, checked against this run's settings.

    A setting the checkpoint does not mention was added after it was made: it trained with
    that setting's default (`defaults`), so only a run asking for another value differs."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointMismatch(f"{path}: cannot read this checkpoint ({exc}); delete it to start over") from exc
    theirs = dict(state.get("identity", {}))
    for key, value in (defaults or {}).items():
        if key in identity:
            theirs.setdefault(key, value)
    differing = sorted(k for k in set(theirs) | set(identity) if theirs.get(k) != identity.get(k))
    if differing:
        detail = ", ".join(f"{k}: {theirs.get(k)!r} there, {identity.get(k)!r} now" for k in differing[:4])
        raise CheckpointMismatch(f"{path} was made by a run with other settings ({detail}); run the same "
                                 "command to resume it, or delete it (or pass another --out) to start over")
    return state


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


__all__ = ["CheckpointMismatch", "rng_state", "set_rng_state", "atomic_save", "load_checkpoint", "cpu_state"]
