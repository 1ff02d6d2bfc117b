"""What the shop process serves, passed explicitly from app.py (or a test)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from operations import SearchPolicy


@dataclass(frozen=True)
class ShopSettings:
    # Models, k and upload limits: the same policy as the chat and the command line.
    policy: SearchPolicy = field(default_factory=SearchPolicy)
    page_size: int = 24
    # The catalog's images folder: the only folder images are served from. None: the folder
    # most of the index's stored image paths are in.
    images_dir: Path | None = None
    # Where app.py mounts the chat assistant, if it does (see build_app's `mount_chat`).
    assistant_path: str = "/assistant"
    title: str = "Demo shop"
