"""The product pictures the chat shows: copies, so that Gradio serves no folder of the server's."""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from assistant.settings import AssistantSettings
from catalog.reader import IMAGE_SUFFIXES
from search import Result

log = logging.getLogger(__name__)

# Product pictures the chat shows are copies made here, one per image file version, so that
# Gradio serves only those (from its own cache) and never a folder: a page or an SVG left
# beside the catalog's images is not reachable through the chat.
PICTURES_DIR = Path(tempfile.gettempdir()) / "vsa-product-pictures"
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")


def picture_name(result: Result) -> str:
    """The name of a product's picture in the chat: the image's own name when it needs no URL
    encoding, else one made from the id (ids may hold ?, #, %, : or spaces)."""
    image = Path(str(result.get("image") or ""))
    if SAFE_NAME.fullmatch(image.name):
        return image.name
    suffix = image.suffix.lower() if image.suffix.lower() in IMAGE_SUFFIXES else ""
    return f"product-{hashlib.sha1(str(result.id).encode()).hexdigest()[:16]}{suffix}"


def product_picture(result: Result, settings: AssistantSettings) -> str | None:
    """A copy of the product's image to show, or None when its file is not a catalog image."""
    image = result.get("image")
    if not image:
        return None
    try:
        source = Path(str(image)).resolve()
        folders = [Path(p).resolve() for p in settings.allowed_paths]
        if source.suffix.lower() not in IMAGE_SUFFIXES or not source.is_file() or \
                (folders and not any(source.is_relative_to(f) for f in folders)):
            return None
        stat = source.stat()
        version = hashlib.sha1(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
        target = PICTURES_DIR / version / picture_name(result)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{uuid.uuid4().hex}")
            shutil.copyfile(source, partial)
            partial.replace(target)
        return str(target)
    except OSError as exc:
        log.warning("cannot show the image of product %r: %s", result.id, exc)
        return None
