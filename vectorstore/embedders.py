"""Image embedders: torchvision ResNets whose pooled penultimate features, L2-normalised,
are the product vectors. One `Embedder` per model name; `load_embedder` builds one from a
weights choice (ImageNet through torchvision's weights API, a local file, or seeded random)."""
from __future__ import annotations

import hashlib
import warnings
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import models
from tqdm.auto import tqdm

MODEL_NAMES = ("resnet18", "resnet34", "resnet50")
_BUILDERS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights, 512),
    "resnet34": (models.resnet34, models.ResNet34_Weights, 512),
    "resnet50": (models.resnet50, models.ResNet50_Weights, 2048),
}
RANDOM_SEED = 0


class WeightsError(ValueError):
    """The requested weights cannot be had or do not fit the model; the message says what to do."""


@dataclass(frozen=True)
class WeightsChoice:
    """`imagenet`, `random[:SEED]` or a path to a local file, as typed on the command line."""
    kind: str
    path: Path | None = None
    seed: int = RANDOM_SEED

    @classmethod
    def parse(cls, text: str) -> "WeightsChoice":
        if text == "imagenet":
            return cls("imagenet")
        if text == "random" or text.startswith("random:"):
            seed = text.split(":", 1)[1] if ":" in text else str(RANDOM_SEED)
            if not seed.isdigit():
                raise WeightsError(f"--weights {text}: the seed after 'random:' must be a number")
            return cls("random", seed=int(seed))
        path = Path(text).expanduser()
        if not path.is_file():
            raise WeightsError(f"--weights {text}: expected 'imagenet', 'random' or a weights "
                               "file, and no such file exists")
        return cls("file", path=path)


def check_model_name(name: str) -> str:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return name


def model_dim(name: str) -> int:
    return _BUILDERS[check_model_name(name)][2]


def _l2_normalise(features: torch.Tensor) -> np.ndarray:
    return nn.functional.normalize(features.float(), dim=1).cpu().numpy().astype(np.float32)


class Embedder:
    """Turns images into unit vectors with one model.

    `weights_id` names exactly what the vectors were made with; a collection records it so that
    a search with other weights can be refused instead of returning nonsense.
    """

    def __init__(self, name: str, network: nn.Module, transform: Callable[[Image.Image], torch.Tensor],
                 weights_id: str, dim: int, device: str = "cpu", preprocessing: str = ""):
        self.name = name
        self.network = network.eval().to(device)
        self.transform = transform
        self.weights_id = weights_id
        self.dim = dim
        self.device = device
        self.preprocessing = preprocessing or str(transform)
        self._compiled: nn.Module | None = None

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def _runner(self) -> nn.Module:
        if self._compiled is None:
            self._compiled = self.network
            if self.device == "cpu":
                # Freezing folds batch norm into the convolutions and lets oneDNN fuse
                # conv+relu: the same numbers, noticeably less time per image on a CPU.
                try:
                    example = torch.zeros(1, 3, 224, 224)
                    with torch.inference_mode(), warnings.catch_warnings():
                        warnings.simplefilter("ignore", FutureWarning)
                        traced = torch.jit.trace(self.network, example, check_trace=False)
                        self._compiled = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
                        self._compiled(example)
                except Exception:  # an exotic head that does not trace: eager still works
                    self._compiled = self.network
        return self._compiled

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Unit vectors for a batch already preprocessed with `preprocess`."""
        with torch.inference_mode():
            return _l2_normalise(self._runner()(batch.to(self.device)))

    def embed(self, images: Sequence[Image.Image], batch_size: int = 32,
              show_progress_bar: bool = False) -> np.ndarray:
        """Unit float32 rows, one per image, in order."""
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc=f"embed {self.name}", unit="batch", disable=not show_progress_bar):
            chunk = images[start:start + batch_size]
            batch = torch.stack([self.preprocess(im) for im in chunk])
            out[start:start + len(chunk)] = self.embed_tensors(batch)
        return out

    def warm_up(self) -> float:
        started = time.perf_counter()
        self.embed_tensors(torch.zeros(1, 3, 224, 224))
        return time.perf_counter() - started


def _backbone(name: str, weights=None) -> nn.Module:
    builder = _BUILDERS[name][0]
    network = builder(weights=weights)
    network.fc = nn.Identity()
    return network


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _offline_message(name: str, weights_enum) -> str:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return (f"ImageNet weights for {name} are not in torchvision's cache ({hub}) and could not be "
            f"downloaded (no internet?). Download {weights_enum.url} on a connected machine and "
            f"either copy it into {hub}/ or pass it with --weights /path/to/{Path(weights_enum.url).name}; "
            "or use --weights random for an offline trial.")


def load_embedder(name: str, weights: str | WeightsChoice = "imagenet", device: str = "cpu") -> Embedder:
    """Build the embedder for `name` with the chosen weights.

    Preprocessing always comes from torchvision's weights transforms for that model (resize,
    centre crop, ImageNet normalisation); a fine-tuned file may carry its own image size.
    """
    name = check_model_name(name)
    choice = weights if isinstance(weights, WeightsChoice) else WeightsChoice.parse(weights)
    _, weights_cls, dim = _BUILDERS[name]
    default = weights_cls.DEFAULT
    transform = default.transforms()
    head: nn.Module | None = None

    if choice.kind == "imagenet":
        try:
            network = _backbone(name, default)
        except Exception as exc:  # urllib, ssl, socket and hash errors all mean "could not get it"
            raise WeightsError(_offline_message(name, default)) from exc
        weights_id = f"imagenet:{default.name}"
    elif choice.kind == "random":
        # Seed a private RNG state so two processes build the same network, and the caller's
        # global RNG is left alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(choice.seed)
            network = _backbone(name)
        weights_id = f"random:{choice.seed}"
    else:
        network = _backbone(name)
        payload = _read_weights_file(choice.path)
        state = payload
        if isinstance(payload, dict) and "state_dict" in payload:
            made_for = payload.get("model")
            if made_for and made_for != name:
                raise WeightsError(f"{choice.path} holds weights for {made_for}, not {name}; "
                                   f"use it with --model {made_for}")
            state = payload["state_dict"]
            if payload.get("image_size"):
                size = int(payload["image_size"])
                transform = default.transforms(crop_size=size, resize_size=round(size * 256 / 224))
            if payload.get("head"):
                head = _head_from_state(payload["head"])
        if not isinstance(state, dict):
            raise WeightsError(f"{choice.path}: expected a state dict of {name}")
        state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
        try:
            result = network.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise WeightsError(f"{choice.path} does not fit {name}: its tensors have other shapes; "
                               "is it for another model?") from exc
        if result.missing_keys:
            raise WeightsError(f"{choice.path} does not fit {name}: {len(result.missing_keys)} "
                               f"weights missing (e.g. {result.missing_keys[0]}); is it for another model?")
        weights_id = f"file:{choice.path.name}:{_file_digest(choice.path)}"

    if head is not None:
        network = nn.Sequential(network, head)
        dim = head[-1].out_features if isinstance(head, nn.Sequential) else head.out_features
    embedder = Embedder(name, network, transform, weights_id, dim, device=device,
                        preprocessing=_describe(transform))
    return embedder


def _read_weights_file(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a PyTorch weights file ({exc})") from exc


def held_out_ids(path: str | Path) -> tuple[str, ...]:
    """The products a `finetune` output file records as held out from its training (its
    validation split), so they can be queried as products the weights have never seen."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    payload = _read_weights_file(path)
    ids = payload.get("validation_ids") if isinstance(payload, dict) else None
    if not ids:
        raise WeightsError(f"{path} records no held-out products; only a file written by "
                           "`app.py finetune` knows which products its training left out")
    return tuple(str(i) for i in ids)


def _head_from_state(state: dict[str, torch.Tensor]) -> nn.Module:
    weight = state["weight"]
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in state)
    layer.load_state_dict(state)
    return layer


def _describe(transform) -> str:
    parts = []
    for key in ("resize_size", "crop_size", "mean", "std", "interpolation"):
        if hasattr(transform, key):
            value = getattr(transform, key)
            parts.append(f"{key}={getattr(value, 'value', value)}")
    return ", ".join(parts) or str(transform)
