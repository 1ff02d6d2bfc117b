"""The one way to build embedders: the weights choice resolved once per model, the runtime
(PyTorch or int8 ONNX Runtime) given at construction, the same for indexing, serving, search
and evaluation. A `Searcher` takes the builder itself as its factory."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from embedding.embedders import Embedder, load_embedder, load_embedders
from embedding.runtime import RuntimeSettings, apply_runtime
from embedding.weights import DEFAULT_WEIGHTS_DIR


@dataclass(frozen=True)
class EmbedderBuilder:
    """`weights`: auto, imagenet, random[:SEED] or a file; `runtime`: None keeps PyTorch
    (what the Ray actors and the study's preprocessing experiments need); `input_size` and
    `framing`: the study's preprocessing variants (None: each model's own)."""
    weights: str = "auto"
    weights_dir: Path = DEFAULT_WEIGHTS_DIR
    device: str = "cpu"
    runtime: RuntimeSettings | None = field(default_factory=RuntimeSettings)
    input_size: int | None = None
    framing: str | None = None

    def build(self, name: str) -> Embedder:
        """One model's embedder (raises when its weights cannot be had)."""
        embedder = load_embedder(name, self.weights, device=self.device, weights_dir=self.weights_dir,
                                 input_size=self.input_size, framing=self.framing)
        return self._on_runtime(embedder)

    def build_all(self, models: Sequence[str]) -> dict[str, Embedder]:
        """Every model's embedder; under `auto`, those without real weights here are left out
        with a line each (load_embedders)."""
        built = load_embedders(models, self.weights, device=self.device, weights_dir=self.weights_dir,
                               input_size=self.input_size, framing=self.framing)
        return {name: self._on_runtime(embedder) for name, embedder in built.items()}

    def __call__(self, name: str) -> Embedder:
        """As `build`: the builder is the Searcher's factory."""
        return self.build(name)

    def _on_runtime(self, embedder: Embedder) -> Embedder:
        if self.runtime is not None:
            apply_runtime(embedder, self.runtime)
        return embedder


__all__ = ["EmbedderBuilder"]
