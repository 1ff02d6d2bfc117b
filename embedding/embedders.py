"""Image embedders: pooled penultimate features, L2-normalised, are the product vectors. One
`Embedder` per model name; `load_embedder` builds one from a weights choice (`auto`, ImageNet,
a local file, or seeded random); `load_embedders` builds several and leaves out, with a line
each, the models `auto` finds no real weights for."""
from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from embedding.architectures import MODEL_NAMES, ArchitectureError, architecture, load_imagenet
from embedding.classifiers import Classifiers
from embedding.weights import DEFAULT_WEIGHTS_DIR, WeightsChoice, resolve
from embedding.weights_file import WeightsError, weights_contents, weights_file_id


def check_model_name(name: str) -> str:
    return architecture(name).name


def model_dim(name: str) -> int:
    return architecture(name).dim


def _l2_normalise(features: torch.Tensor) -> np.ndarray:
    return nn.functional.normalize(features.float(), dim=1).cpu().numpy().astype(np.float32)


class Embedder:
    """Turns images into unit vectors with one model.

    `weights_id` names exactly what the vectors were made with; a collection records it so that
    a search with other weights can be refused instead of returning nonsense.
    """

    def __init__(self, name: str, network: nn.Module, transform: Callable[[Image.Image], torch.Tensor],
                 weights_id: str, dim: int, device: str = "cpu", preprocessing: str = "", image_size: int = 224,
                 classifiers: Classifiers | None = None):
        self.name = name
        self.network = network.eval().to(device)
        self.transform = transform
        self.weights_id = weights_id
        self.dim = dim
        self.device = device
        self.preprocessing = preprocessing or str(transform)
        self.image_size = image_size
        # The classifiers a fine-tune trained on these features (None for ImageNet or random
        # weights): what a search reorders its candidates by.
        self.classifiers = classifiers
        self._compiled: nn.Module | None = None
        # Which runtime computes the features ("eager": PyTorch fp32, the reference); a collection
        # records it. embedding/runtime.py swaps in a faster forward with `use_runtime`.
        self.runtime = "eager"
        self._fast_forward: Callable[[np.ndarray], np.ndarray] | None = None

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def _runner(self) -> nn.Module:
        if self._compiled is None:
            self._compiled = self.network
            if self.device == "cpu":
                # Freezing folds batch norm into the convolutions and lets oneDNN fuse
                # conv+relu: the same numbers, noticeably less time per image on a CPU.
                try:
                    # The input size the transform gives: 'same' padding is traced as constants.
                    example = torch.zeros(1, 3, self.image_size, self.image_size)
                    with torch.inference_mode(), warnings.catch_warnings():
                        warnings.simplefilter("ignore", FutureWarning)
                        traced = torch.jit.trace(self.network, example, check_trace=False)
                        self._compiled = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
                        self._compiled(example)
                except Exception:  # an exotic head that does not trace: eager still works
                    self._compiled = self.network
        return self._compiled

    def use_runtime(self, name: str, forward: Callable[[np.ndarray], np.ndarray] | None) -> None:
        """Compute features with `forward` (float32 NCHW batch -> pooled features) and call that
        runtime `name`; `None` goes back to PyTorch."""
        self.runtime = name if forward is not None else "eager"
        self._fast_forward = forward

    def embed_preprocessed(self, batch: torch.Tensor) -> np.ndarray:
        """Unit vectors for a batch already preprocessed with `preprocess`."""
        if self._fast_forward is not None:
            features = self._fast_forward(batch.detach().cpu().float().contiguous().numpy())
            return _l2_normalise(torch.from_numpy(features))
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
            out[start:start + len(chunk)] = self.embed_preprocessed(batch)
        return out

    def warm_up(self) -> float:
        started = time.perf_counter()
        self.embed_preprocessed(torch.zeros(1, 3, self.image_size, self.image_size))
        return time.perf_counter() - started


def load_embedder(name: str, weights: str | WeightsChoice = "auto", device: str = "cpu",
                  weights_dir: Path = DEFAULT_WEIGHTS_DIR, *, input_size: int | None = None,
                  framing: str | None = None) -> Embedder:
    """Build the embedder for `name` with the chosen weights.

    Preprocessing is the architecture's own (torchvision's weights transforms for ResNets, pad
    to square for Lite); a fine-tuned file may carry its own image size. `input_size` and
    `framing` override both, for the study of preprocessing: the weights id then names the
    override, so an index of other preprocessing is rebuilt rather than mixed."""
    arch = architecture(name)
    resolved = resolve(name, weights, weights_dir)
    if resolved.choice is None:
        raise WeightsError(resolved.line)
    choice = resolved.choice
    image_size = arch.image_size
    head: nn.Module | None = None
    classifiers: Classifiers | None = None
    dim = arch.dim

    if choice.kind == "imagenet":
        network = arch.backbone()
        try:
            weights_id = load_imagenet(arch, network)
        except ArchitectureError as exc:
            raise WeightsError(str(exc)) from exc
        except Exception as exc:  # urllib, ssl, socket and hash errors all mean "could not get it"
            raise WeightsError(_offline_message(name)) from exc
    elif choice.kind == "random":
        # Seed a private RNG state so two processes build the same network, and the caller's
        # global RNG is left alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(choice.seed)
            network = arch.backbone()
        weights_id = f"random:{choice.seed}"
    else:
        network = arch.backbone()
        contents = weights_contents(name, choice.path)
        _load_state(network, contents.state_dict, name, choice.path)
        image_size = contents.image_size or image_size
        head = _head_from_state(contents.head) if contents.head else None
        classifiers = _classifiers_from(contents.classifiers, choice.path)
        weights_id = weights_file_id(choice.path)

    if head is not None:
        network = nn.Sequential(network, head)
        dim = head[-1].out_features if isinstance(head, nn.Sequential) else head.out_features
    if input_size or framing:
        # Named whether or not it equals the default, so the id says what the study asked for.
        image_size = input_size or image_size
        weights_id += f"|{framing or arch.framing}@{image_size}"
    transform = arch.transform(image_size, framing)
    return Embedder(name, network, transform, weights_id, dim, device=device,
                    preprocessing=_describe(transform), image_size=image_size, classifiers=classifiers)


def load_embedders(models: Sequence[str], weights: str | WeightsChoice = "auto", device: str = "cpu",
                   weights_dir: Path = DEFAULT_WEIGHTS_DIR, log=None, *, input_size: int | None = None,
                   framing: str | None = None) -> dict[str, Embedder]:
    """One embedder per model, in order; under `auto`, models with no real weights on this
    machine are left out, and every model gets one line saying what it uses or how to add
    weights. Raises when no model is left. `input_size`, `framing`: as `load_embedder`."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    built: dict[str, Embedder] = {}
    lines = []
    for model in models:
        resolved = resolve(model, weights, weights_dir)
        lines.append(resolved.line)
        if resolved.available:
            built[model] = load_embedder(model, resolved.choice, device=device, weights_dir=weights_dir,
                                         input_size=input_size, framing=framing)
        if str(weights) == "auto":
            log(resolved.line)
    if not built:
        raise WeightsError("no model has real weights on this machine:\n  " + "\n  ".join(lines))
    return built


def best_model(embedders: Mapping[str, Embedder]) -> str:
    """The model to select at start: a fine-tuned one first (the shop trained it for its own
    catalog), then the best by measurement."""
    def rank(name: str) -> tuple[int, int]:
        tuned = embedders[name].weights_id.startswith("file:")
        return (0 if tuned else 1, MODEL_NAMES.index(name) if name in MODEL_NAMES else len(MODEL_NAMES))
    return min(embedders, key=rank)


def _load_state(network: nn.Module, state: dict, name: str, path: Path) -> None:
    state = {k.removeprefix("module."): v for k, v in state.items()
             if not k.startswith(("fc.", "classifier."))}
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not fit {name}: its tensors have other shapes; "
                           "is it for another model?") from exc
    if result.missing_keys:
        raise WeightsError(f"{path} does not fit {name}: {len(result.missing_keys)} "
                           f"weights missing (e.g. {result.missing_keys[0]}); is it for another model?")


def _offline_message(name: str) -> str:
    from torchvision import models
    enum = models.get_model_weights(name).DEFAULT
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return (f"ImageNet weights for {name} are not in torchvision's cache ({hub}) and could not be "
            f"downloaded (no internet?). Download {enum.url} on a connected machine and "
            f"either copy it into {hub}/ or pass it with --weights /path/to/{Path(enum.url).name}; "
            "or leave --weights at auto, which uses the models this machine has weights for.")


def _classifiers_from(classifiers: dict | None, path: Path) -> Classifiers | None:
    if not classifiers:
        return None
    try:
        return Classifiers(classifiers)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: its classifiers do not fit together ({exc})") from exc


def _head_from_state(state: dict[str, torch.Tensor]) -> nn.Module:
    weight = state["weight"]
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in state)
    layer.load_state_dict(state)
    return layer


def _describe(transform) -> str:
    parts = []
    for key in ("framing", "resize_size", "crop_size", "mean", "std", "interpolation"):
        if hasattr(transform, key):
            value = getattr(transform, key)
            parts.append(f"{key}={getattr(value, 'value', value)}")
    return ", ".join(parts) or str(transform)
