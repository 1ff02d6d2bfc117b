"""The models: the registry (what each model is), their weights, the embedders that turn images
into unit vectors (PyTorch or int8 ONNX Runtime), and a fine-tune's classifiers. May import
`catalog`.

Exports load on first use, so that `embedding.registry` (no torch) stays cheap to import."""
from importlib import import_module

_EXPORTS = {
    "MODEL_NAMES": "registry", "DEFAULT_MODELS": "registry", "Architecture": "registry", "architecture": "registry",
    "model_label": "registry", "Classifiers": "classifiers", "Embedder": "embedders", "best_model": "embedders",
    "load_embedder": "embedders", "load_embedders": "embedders", "model_dim": "embedders",
    "WeightsChoice": "weights", "resolve_weights": "weights", "tuned_file": "weights",
    "WeightsError": "weights_file", "held_out_ids": "weights_file",
}
_RENAMED = {"resolve_weights": "resolve"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'embedding' has no attribute {name!r}")
    value = getattr(import_module(f"embedding.{_EXPORTS[name]}"), _RENAMED.get(name, name))
    globals()[name] = value
    return value
