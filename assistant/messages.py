"""The chat's messages as Gradio shows them: the shopper's file, the assistant's reply with its
gallery of products inside the chat, and the bound on galleries kept."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from assistant.chat import Reply, as_text, caption
from assistant.pictures import product_picture
from assistant.settings import AssistantSettings
from catalog.reader import IMAGE_SUFFIXES

# Height of one row of products in a chat gallery (image + four caption lines): fixed, since
# a gallery sized "auto" inside a chat message leaves a blank area.
ROW_HEIGHT = 240


def shown_file(path: str):
    """The shopper's file as their chat message: the picture, or its name as text when it is
    named like a picture but is none (the chat drew a broken-image icon for it)."""
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        try:
            with Image.open(path):
                pass
        except Image.DecompressionBombError:
            pass  # a picture, if a huge one: the assistant's reply says why it is refused
        except Exception:
            return as_text(f"📎 {Path(path).name}")
    return {"path": path}


def _gallery(reply: Reply, settings: AssistantSettings) -> gr.Gallery:
    rows = -(-len(reply.results) // settings.gallery_columns)
    pictures = [(product_picture(r, settings), caption(r, rank)) for rank, r in enumerate(reply.results, 1)]
    return gr.Gallery(value=[(path, text) for path, text in pictures if path],
                      columns=settings.gallery_columns, height=min(rows, 2) * ROW_HEIGHT + 24,
                      allow_preview=False, object_fit="contain",
                      show_label=False, elem_classes=["results"])


def keep_recent_galleries(history: list, keep: int) -> list:
    """Drop all but the newest `keep` galleries (their reply texts stay).

    Every turn sends the whole chat back to the page, which renders it again, so without a
    bound each turn costs more than the last (bench/chat_latency.py: the second ten messages
    were ~1.7x slower than the first ten with every gallery kept).
    """
    seen = 0
    out = []
    for message in reversed(history):
        if isinstance(message.get("content"), gr.Gallery):
            seen += 1
            if seen > keep:
                continue
        out.append(message)
    return out[::-1]


def reply_messages(reply: Reply, settings: AssistantSettings) -> list[dict]:
    """The assistant's chat message(s) for one reply: the text, then the gallery inside the chat."""
    content: list[Any] = [reply.markdown()]
    if reply.results:
        content.append(_gallery(reply, settings))
    return [{"role": "assistant", "content": item} for item in content]
