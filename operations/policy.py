"""One policy for what may be asked: which models, how many results, how large a photo. The
chat, the API and the command line all check against the same object (app.py builds it once)."""
from __future__ import annotations

from dataclasses import dataclass

from catalog import ImageLimits
from catalog.errors import UserError
from embedding.registry import DEFAULT_MODELS, model_label
from operations.errors import Refused

MB = 1024 * 1024


@dataclass(frozen=True)
class SearchPolicy:
    models: tuple[str, ...] = DEFAULT_MODELS
    default_model: str = DEFAULT_MODELS[0]
    k: int = 5
    max_k: int = 50
    # Phone photos run 3-8 MB; larger files are refused before they are decoded.
    max_upload_bytes: int = 10 * MB
    max_pixels: int = 40_000_000

    def __post_init__(self):
        if not self.models:
            raise UserError("SearchPolicy.models is empty: offer at least one model")
        if self.default_model not in self.models:
            raise UserError(f"the default model {self.default_model!r} is not among the models offered "
                             f"({', '.join(self.models)})")
        if not 1 <= self.k <= self.max_k:
            raise UserError(f"k must be between 1 and {self.max_k}, not {self.k}")

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_upload_bytes, max_pixels=self.max_pixels)

    def model(self, model: str | None) -> str:
        """The model asked for (None: the default), or `Refused("unknown_model")`."""
        model = model or self.default_model
        if model not in self.models:
            # the label for a person, the name for a program (and for "use resnet18" in the chat)
            offered = ", ".join(f"{model_label(m)} ({m})" for m in self.models)
            raise Refused("unknown_model", f"{model_label(model)} is not offered here; choose one of {offered}.",
                          model=model, models=list(self.models))
        return model

    def count(self, k: int | None) -> int:
        """How many results (None: the default), or `Refused("bad_k")` outside 1..max_k."""
        if k is None:
            return self.k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_k:
            raise Refused("bad_k", f"the number of results must be between 1 and {self.max_k}, not {k!r}",
                          min=1, max=self.max_k)
        return k

    def clamp(self, k: int) -> int:
        """For the chat's words ("show 100"): the nearest allowed count instead of a refusal."""
        return min(self.max_k, max(1, k))
