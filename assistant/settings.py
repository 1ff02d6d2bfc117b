"""Settings of the chat assistant, passed explicitly from app.py (or a test) to the UI and the chat."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from catalog.errors import UserError
from operations.policy import SearchPolicy, model_label


@dataclass(frozen=True)
class AssistantSettings:
    # Models offered (each needs its own collection), k and the photo limits: the same policy
    # as the shop's API and the command line.
    policy: SearchPolicy = field(default_factory=SearchPolicy)
    # A photo over the policy's limit gets a chat message saying so (the page answers before
    # uploading it). Gradio's own limit (checked in gradio_client and on the server with a 413)
    # is set higher, so that only absurd files from elsewhere meet its bare answer.
    upload_hard_limit_bytes: int = 50 * 1024 * 1024
    # Shown in the chat when a model has no collection yet: the exact command that builds it.
    index_hint: str = "python app.py index --catalog DIR"
    # Searches that may run at once; the embedder serialises forward passes itself, so more
    # than a few only adds queueing inside the process.
    concurrency: int = 4
    queue_size: int = 64
    # Folders the chat may show product images from (the catalog's images folder); each is shown
    # as a copy, Gradio itself serves no folder. Empty: wherever the index says they are.
    allowed_paths: tuple[Path, ...] = field(default_factory=tuple)
    chat_height: int = 620
    gallery_columns: int = 5
    # Galleries kept in the chat (the newest, and the one before to compare with); older replies
    # keep their text. Every turn re-renders the chat whole: with 8 kept, Enter to gallery took
    # about twice as long as with 2 by the 12th message (bench/chat_latency.py, docs/runtime.md).
    galleries_kept: int = 2
    title: str = "Visual shopping assistant"
    # Where a result's "View product" leads: a URL with "{id}" where the product id goes
    # (URL-quoted), e.g. "https://shop.example/p/{id}" or "/products/{id}". None: the card
    # links to the product's picture instead. The shop sets its own product pages.
    product_url: str | None = None
    # "_blank" opens the product in a new tab; the shop, which frames the chat, uses "_top".
    product_link_target: str = "_blank"

    def __post_init__(self):
        if self.upload_hard_limit_bytes < self.policy.max_upload_bytes:
            raise UserError("upload_hard_limit_bytes must not be below max_upload_bytes")
        if self.product_url is not None and (
                "{id}" not in self.product_url
                or not self.product_url.startswith(("http://", "https://", "/"))):
            raise UserError(f"product_url must be an http(s) or /path URL with {{id}} in it, not {self.product_url!r}")
        if self.product_link_target not in ("_blank", "_top", "_self", "_parent"):
            raise UserError(f"product_link_target must be _blank, _top, _self or _parent, not {self.product_link_target!r}")

__all__ = ["AssistantSettings", "SearchPolicy", "model_label"]
