"""The chat assistant mounted inside another FastAPI app (the shop), at a path of its own.

Imported only where the chat is served: the shop and its API work (and test) without Gradio.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from assistant import ui
from assistant.page import CSS
from assistant.settings import AssistantSettings
from search import Searcher


def gradio_frontend_dir() -> Path:
    return Path(gr.__file__).resolve().parent / "templates" / "frontend"


def mount_assistant(app: FastAPI, images_root: Path | None, *, searcher: Searcher, settings: AssistantSettings,
                    path: str = "/assistant", status: Callable[[], str | None] | None = None) -> None:
    """Mount the chat at `path`; it shows pictures from `images_root` only, and its "View
    product" opens the host's /products/{id} page in the host's window."""
    path = path.rstrip("/")
    frontend = gradio_frontend_dir()
    chat = settings
    if images_root is not None and not chat.allowed_paths:
        chat = replace(chat, allowed_paths=(images_root,))
    if chat.product_url is None:
        # The chat is framed in the shop's side panel: the product opens in the shop's window.
        chat = replace(chat, product_url="/products/{id}", product_link_target="_top")

    # The web component's loader: the wheel's own gradio.js, at a URL whose "./assets/..."
    # imports land on the mounted app's asset route (no CDN is reachable here).
    @app.get(f"{path}/gradio.js", include_in_schema=False)
    def gradio_js():
        return FileResponse(frontend / "gradio.js", media_type="text/javascript",
                            headers={"Access-Control-Allow-Origin": "*"})

    # The web component asks for its base stylesheet as "./assets/..." from the origin's root,
    # not from beside gradio.js, so the same build files are served there too.
    app.mount("/assets", StaticFiles(directory=frontend / "assets"), name="gradio_assets")

    demo = ui.build_demo(searcher, chat, status)
    ui.queue(demo, chat)
    # No allowed_paths: the chat shows copies of product images (assistant/pictures.py), so Gradio
    # serves no folder of the server's as it is, the images folder included.
    gr.mount_gradio_app(app, demo, path=path, root_path=path, max_file_size=chat.policy.max_upload_bytes,
                        app_kwargs=ui.gradio_app_kwargs(chat), footer_links=[], css=CSS, ssr_mode=False, show_error=False)
    ui.check_uploads_like_launch(demo)


__all__ = ["mount_assistant", "gradio_frontend_dir"]
