"""The chat assistant in Gradio: a chat with galleries of products inside the replies, controls
beside it, a crop panel for outfit photos, and an API event (`/recommend`) for programs.

All conversation logic is in `assistant.chat`; this module only maps components to turns.
Each browser session has its own `gr.State` (the conversation and its history), and the queue
lets several sessions' searches run at once.
"""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote
from typing import Any

import gradio as gr
from PIL import Image

import json

from assistant.crop import (CROP_HELP, CropFiles, crop_fractions, crop_preview, crop_status, mark_corner,
                            new_crop)
from assistant.chat import Assistant, ChatState, Reply, as_text, caption, filter_chips, without_chips
from assistant.filters import stem, words
from assistant.settings import AssistantSettings, model_label
from catalog.products import CATEGORY_FIELDS
from catalog import ImageError, open_image
from catalog.reader import IMAGE_SUFFIXES
from operations import FilterRequest, find_by_photo
from vectorstore import CATEGORY, Result, Searcher, StoreError

log = logging.getLogger(__name__)

# Clicks on a product inside a chat gallery: Gradio gives a gallery rendered in a chat message
# no events of its own, so this listener passes the clicked image's file name to a hidden
# textbox and presses a hidden button; Python maps the name back to the product shown.
# Clicks on the crop photo go the same way: Image.select reports wrong pixel coordinates when
# the photo is scaled to fit its box, so the page measures the click itself.
CLICK_BRIDGE_JS = """
() => {
  if (window.__vsaBridge) return;
  window.__vsaBridge = true;
  const MAX_UPLOAD_BYTES = __MAX_UPLOAD_BYTES__;
  document.addEventListener("click", (event) => {
    const thumb = event.target.closest("#chat button.thumbnail-item, #chat .thumbnail-item");
    if (!thumb) return;
    const img = thumb.querySelector("img");
    if (!img) return;
    event.preventDefault();
    event.stopPropagation();
    const box = document.querySelector("#pick textarea, #pick input");
    const button = document.querySelector("#pick-btn");
    if (!box || !button) return;
    const src = decodeURIComponent(img.getAttribute("src") || "");
    box.value = src.split("/").pop() + "|" + Date.now();
    box.dispatchEvent(new Event("input", { bubbles: true }));
    setTimeout(() => button.click(), 50);
  }, true);
  // Each result card gets "View product" (a real link: the shop's page, or the configured
  // product URL template) beside "More like this". The links come from the hidden #links box
  // ({picture file name: URL}), written by Python with every reply.
  const fileOf = (img) => decodeURIComponent(img.getAttribute("src") || "").split("/").pop();
  const safeUrl = (url) => {
    try { const u = new URL(url, window.location.href); return ["http:", "https:"].includes(u.protocol) ? u.href : null; }
    catch (e) { return null; }
  };
  const set = (el, key, value) => { if (el[key] !== value) el[key] = value; };
  const attr = (el, key, value) => { if (el.getAttribute(key) !== value) el.setAttribute(key, value); };
  const decorate = () => {
    let links = {};
    try { links = JSON.parse((document.querySelector("#links textarea, #links input") || {}).value || "{}"); }
    catch (e) { links = {}; }
    const box = document.querySelector("#message textarea");
    if (box && !box.getAttribute("aria-label")) box.setAttribute("aria-label", "Message: drop or paste a photo, add words");
    const note = document.querySelector("#crop-note");
    if (note && note.getAttribute("aria-live") !== "polite") note.setAttribute("aria-live", "polite");
    // Gradio labels each message's <div> with its raw Markdown ("**5 Women\\'s…"), an
    // aria-label a div may not carry: the message's own text is what a screen reader should read.
    for (const message of document.querySelectorAll('#chat [data-testid="bot"][aria-label], #chat [data-testid="user"][aria-label]'))
      message.removeAttribute("aria-label");
    // The pictures' own buttons have no name.
    for (const button of document.querySelectorAll("#chat .image-container > button:not([aria-label])"))
      button.setAttribute("aria-label", "Your photo");
    for (const button of document.querySelectorAll("#crop-image .image-container > button:not([aria-label])"))
      button.setAttribute("aria-label", "The photo to crop: arrow keys move the marker, Enter sets a corner");
    for (const item of document.querySelectorAll("#chat .gallery-item")) {
      const thumb = item.querySelector(".thumbnail-item");
      const img = thumb && thumb.querySelector("img");
      if (!img) continue;
      const label = thumb.querySelector(".caption-label");
      const lines = ((label && label.textContent) || img.getAttribute("alt") || "").split("\\n");
      // Screen readers hear the product, not "Thumbnail 1 of 5".
      attr(thumb, "aria-label", `${lines[0]}, ${lines[lines.length - 1]}: show more like this`);
      attr(img, "alt", lines[0]);
      let bar = item.querySelector(".vsa-actions");
      if (!bar) {
        bar = document.createElement("div");
        bar.className = "vsa-actions";
        const view = document.createElement("a");
        view.className = "vsa-view";
        const more = document.createElement("button");
        more.type = "button";
        more.className = "vsa-more";
        more.textContent = "More like this";
        bar.append(view, more);
        item.append(bar);
      }
      const view = bar.querySelector(".vsa-view");
      const link = links.urls && safeUrl(links.urls[fileOf(img)] || "");
      const text = link ? "View product" : "View picture";
      // Written only when different: each write is a DOM change the observer would see again.
      set(view, "textContent", text);
      set(view, "href", link || img.src);
      set(view, "target", link ? (links.target || "_blank") : "_blank");
      set(view, "rel", "noopener");
      attr(view, "aria-label", `${text}: ${lines[0]}`);
      attr(bar.querySelector(".vsa-more"), "aria-label", `More like ${lines[0]}`);
    }
  };
  // Again a moment later: the #links box may be updated just after the chat it belongs to.
  let later = null;
  new MutationObserver(() => { decorate(); clearTimeout(later); later = setTimeout(decorate, 400); })
    .observe(document.body, { childList: true, subtree: true });
  decorate();
  document.addEventListener("click", (event) => {
    const more = event.target.closest("#chat .vsa-more");
    if (!more) return;
    const img = more.closest(".gallery-item").querySelector(".thumbnail-item img");
    const box = document.querySelector("#pick textarea, #pick input");
    const button = document.querySelector("#pick-btn");
    if (!img || !box || !button) return;
    event.preventDefault();
    event.stopPropagation();
    box.value = fileOf(img) + "|" + Date.now();
    box.dispatchEvent(new Event("input", { bubbles: true }));
    setTimeout(() => button.click(), 50);
  }, true);
  // A file over the chat's limit is answered at once, before any upload: Gradio's own check
  // (set higher, for absurd files) would only show a bare toast in its own units. Registered
  // before the drop below, so an oversized drop on the chat area stops here too.
  const refuse = (files) => {
    const big = [...(files || [])].find((file) => file.size > MAX_UPLOAD_BYTES);
    const box = document.querySelector("#oversize textarea, #oversize input");
    const button = document.querySelector("#oversize-btn");
    if (!big || !box || !button) return false;
    box.value = JSON.stringify({ name: big.name, size: big.size, at: Date.now() });
    box.dispatchEvent(new Event("input", { bubbles: true }));
    setTimeout(() => button.click(), 50);
    return true;
  };
  document.addEventListener("change", (event) => {
    const input = event.target;
    if (!input.matches || !input.matches('#message input[type="file"]') || !refuse(input.files)) return;
    event.stopImmediatePropagation();
    input.value = "";
  }, true);
  for (const type of ["drop", "paste"]) {
    document.addEventListener(type, (event) => {
      if (!event.target.closest || !event.target.closest("#message, #chat")) return;
      const files = type === "drop" ? event.dataTransfer && event.dataTransfer.files
                                    : event.clipboardData && event.clipboardData.files;
      if (!refuse(files)) return;
      event.preventDefault();
      event.stopImmediatePropagation();
    }, true);
  }
  // A photo dropped anywhere on the chat goes to the message box, as if dropped there.
  document.addEventListener("dragover", (event) => {
    if (event.target.closest && event.target.closest("#chat")) event.preventDefault();
  }, true);
  document.addEventListener("drop", (event) => {
    if (!event.target.closest || !event.target.closest("#chat")) return;
    const files = event.dataTransfer && event.dataTransfer.files;
    const input = document.querySelector('#message input[data-testid="file-upload"]');
    if (!files || !files.length || !input) return;
    event.preventDefault();
    event.stopPropagation();
    const moved = new DataTransfer();
    moved.items.add(files[0]);
    input.files = moved.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }, true);
  // The message box takes the focus on a wide screen only: on a phone, focusing it scrolled
  // the page away from the top (and opened the keyboard over it).
  if (window.matchMedia("(min-width: 700px)").matches) {
    const box = document.querySelector("#message textarea");
    if (box) box.focus({ preventScroll: true });
  }
  window.scrollTo(0, 0);
  // Crop from the keyboard: with the photo focused, the arrow keys move a marker (Shift: in
  // small steps) and Enter or Space sets a corner there, as a click would.
  const cursor = { x: 0.5, y: 0.5 };
  const sendCorner = (fx, fy) => {
    const box = document.querySelector("#crop-pick textarea, #crop-pick input");
    const button = document.querySelector("#crop-pick-btn");
    if (!box || !button) return;
    box.value = fx.toFixed(4) + "," + fy.toFixed(4) + "|" + Date.now();
    box.dispatchEvent(new Event("input", { bubbles: true }));
    setTimeout(() => button.click(), 50);
  };
  const drawCursor = (img) => {
    let mark = document.getElementById("vsa-crop-cursor");
    if (!mark) {
      mark = document.createElement("div");
      mark.id = "vsa-crop-cursor";
      mark.setAttribute("aria-hidden", "true");
      document.body.append(mark);
    }
    const r = img.getBoundingClientRect();
    const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const w = img.naturalWidth * scale, h = img.naturalHeight * scale;
    mark.style.left = (window.scrollX + r.left + (r.width - w) / 2 + cursor.x * w - 9) + "px";
    mark.style.top = (window.scrollY + r.top + (r.height - h) / 2 + cursor.y * h - 9) + "px";
    mark.hidden = false;
  };
  document.addEventListener("keydown", (event) => {
    if (!event.target.closest || !event.target.closest("#crop-image")) return;
    const img = document.querySelector("#crop-image img");
    if (!img || !img.naturalWidth) return;
    const step = event.shiftKey ? 0.01 : 0.05;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[event.key]) {
      cursor.x = Math.min(1, Math.max(0, cursor.x + moves[event.key][0]));
      cursor.y = Math.min(1, Math.max(0, cursor.y + moves[event.key][1]));
      drawCursor(img);
    } else if (event.key === "Enter" || event.key === " ") {
      sendCorner(cursor.x, cursor.y);
    } else {
      return;
    }
    event.preventDefault();
    event.stopPropagation();
  }, true);
  document.addEventListener("focusout", (event) => {
    const mark = document.getElementById("vsa-crop-cursor");
    if (mark && event.target.closest && event.target.closest("#crop-image")) mark.hidden = true;
  });
  // Crop corners: the click's position on the photo as fractions of its width and height,
  // measured on the drawn image itself (object-fit: contain leaves bands around it).
  document.addEventListener("click", (event) => {
    const img = event.target.closest("#crop-image img");
    if (!img || !img.naturalWidth) return;
    const r = img.getBoundingClientRect();
    const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const w = img.naturalWidth * scale, h = img.naturalHeight * scale;
    const fx = (event.clientX - r.left - (r.width - w) / 2) / w;
    const fy = (event.clientY - r.top - (r.height - h) / 2) / h;
    if (fx < 0 || fx > 1 || fy < 0 || fy > 1) return;
    event.preventDefault();
    event.stopPropagation();
    sendCorner(fx, fy);
  }, true);
}
"""

CSS = """
/* Galleries grow with their rows (no scroll area inside the chat's own) and take as many
   columns as fit: two on a phone, five or so on a desktop. */
#chat .grid-wrap { max-width: 100% !important; max-height: none !important; height: auto !important;
  overflow: visible !important; }
#chat .grid-container { grid-template-columns: repeat(auto-fill, minmax(min(150px, 100%), 1fr)) !important;
  grid-template-rows: none !important; grid-auto-rows: auto !important; }
#chat .gallery-item { display: flex; flex-direction: column; height: auto !important; }
#chat .bubble.bot-row { max-width: calc(100% - 12px); }
#chat .bot-row:has(.gallery-container) { width: calc(100% - 40px); box-sizing: border-box; }
#chat .bot-row:has(.gallery-container) .flex-wrap, #chat .message.component:has(.gallery-container),
#chat .gallery-container { width: 100%; box-sizing: border-box; }
#chat .thumbnail-item { cursor: pointer; aspect-ratio: auto !important; display: flex; flex-direction: column;
  height: auto !important; }
#chat .thumbnail-lg > img { height: 150px !important; flex: none; }
#chat .caption-label { position: static !important; max-width: 100% !important; border: none !important;
  white-space: pre-line !important; font-size: 14px; line-height: 1.35; display: -webkit-box;
  -webkit-line-clamp: 5; -webkit-box-orient: vertical; overflow: hidden; background: transparent !important;
  color: var(--body-text-color) !important; }
#chat .vsa-actions { display: flex; flex-wrap: wrap; gap: 4px 8px; justify-content: space-between;
  padding: 4px 2px 2px; font-size: 14px; }
#chat .vsa-actions a, #chat .vsa-actions button { color: var(--link-text-color, #1d4ed8); text-decoration: underline;
  background: none; border: 0; padding: 2px 0; cursor: pointer; font: inherit; }
/* Download and Share under the shopper's own photo are not for shoppers. */
#chat .message-buttons, #chat .image-container .icon-button-wrapper { display: none !important; }
#controls { min-width: 240px; }
#vsa-crop-cursor { position: absolute; width: 14px; height: 14px; border: 2px solid #fff; border-radius: 50%;
  background: rgb(255, 90, 0); box-shadow: 0 0 0 2px #000; pointer-events: none; z-index: 50; }
#crop-note { min-height: 3em; }
/* Gradio's light grey for empty boxes and the slider's ends is below WCAG AA contrast. */
#controls input.subdued, #active-filters input.subdued, #k .min_value, #k .max_value { color: #4b5563 !important; }
#active-filters { flex-grow: 1; }
@media (max-width: 640px) {
  #chat { height: min(620px, 58vh) !important; }
  #chat .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  #chat .thumbnail-lg > img { height: 120px !important; }
}
"""
# Height of one row of products in a chat gallery (image + four caption lines): fixed, since
# a gallery sized "auto" inside a chat message leaves a blank area.
ROW_HEIGHT = 240


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


class PhotoTextbox(gr.MultimodalTextbox):
    """The message box. Its `file_types` still narrows the browser's file picker, but a file of
    another type reaches the assistant, which says why it cannot use it: Gradio's own check
    raised an error that the queue answered with HTTP 500 and no reason."""
    is_template = True  # rendered by the front end as the MultimodalTextbox it is

    def preprocess(self, payload):
        if payload is None:
            return None
        return {"text": payload.text, "files": [f.path for f in payload.files]}


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


NO_CROP_YET = "Send a photo first, then click two opposite corners of one garment on it (in “Crop the photo”)."


def _control_choices(assistant: Assistant, model: str) -> dict[str, list[str]]:
    try:
        vocabulary = assistant.searcher.vocabulary(model)
    except StoreError:
        return {"gender": [], "category": [], "colour": []}  # no index yet: the chat explains
    categories: list[str] = []
    keys: set[str] = set()
    for level in CATEGORY_FIELDS:
        for value in vocabulary.get(level, []):
            # "Sandal" and "Sandals" side by side read as a mistake; the broader level's
            # spelling stays, and a category filter matches every level anyway.
            key = " ".join(stem(w) for w in words(value))
            if value not in categories and key not in keys:
                categories.append(value)
                keys.add(key)
    return {"gender": list(vocabulary.get("gender", [])), "category": categories,
            "colour": list(vocabulary.get("baseColour", []))}


def _control_values(state: ChatState) -> list:
    return [state.model, state.k, list(state.filters.get("gender")), list(state.filters.get(CATEGORY)),
            list(state.filters.get("baseColour"))]


def _control_updates(state: ChatState, shown: list | None = None) -> list:
    """Updates for the controls; a control already showing its value is left alone, so that the
    one the shopper is using keeps the focus (an update re-renders it, and focus went to <body>)."""
    values = _control_values(state)
    if shown is None:
        return [gr.update(value=v) for v in values]
    return [gr.skip() if _same(old, new) else gr.update(value=new) for old, new in zip(shown, values)]


def _same(old, new) -> bool:
    if isinstance(new, int) and not isinstance(new, bool):
        try:
            return int(old) == new
        except (TypeError, ValueError):
            return False
    if isinstance(new, list):
        return list(old or []) == new
    return old == new


def product_links(state: ChatState, settings: AssistantSettings) -> str:
    """{picture file name: product page URL} for every product shown, for the cards' "View
    product" links; the id is URL-quoted into the template, so any id gives a working URL."""
    urls = {}
    if settings.product_url:
        for pid, result in state.seen.items():
            if result.get("image"):
                urls[picture_name(result)] = settings.product_url.replace("{id}", quote(str(pid), safe=""))
    return json.dumps({"urls": urls, "target": settings.product_link_target})


def _filter_updates(state: ChatState, settings: AssistantSettings) -> list:
    """The active-filter chips, the "Re-apply" offer and the cards' links."""
    chips = filter_chips(state.filters)
    previous = state.previous_filters
    offer = not previous.is_empty() and previous != state.filters
    return [gr.update(choices=chips, value=chips, visible=bool(chips)),
            gr.update(value=f"Re-apply earlier filters: {previous.describe()}", visible=True) if offer
            else gr.update(visible=False),
            product_links(state, settings)]


def product_for_file(state: ChatState, file_name: str) -> str | None:
    """The id of the product shown in this conversation whose picture has this name."""
    name = file_name.split("|", 1)[0].split("?", 1)[0]
    for pid, result in state.seen.items():
        if result.get("image") and picture_name(result) == name:
            return pid
    return None


def build_demo(searcher: Searcher, settings: AssistantSettings) -> gr.Blocks:
    assistant = Assistant(searcher, settings)
    choices = _control_choices(assistant, settings.policy.default_model)
    limits = settings.policy.image_limits
    crops = CropFiles()

    # -- handlers (plain functions of values, so tests can call them too) ------------------
    def post_user(message: dict | None, history: list):
        message = message or {}
        text = (message.get("text") or "").strip()
        files = [f for f in message.get("files") or [] if f]
        if not text and not files:
            return history, history, gr.update(), None
        added = [{"role": "user", "content": shown_file(f)} for f in files]
        if text:
            added.append({"role": "user", "content": as_text(text)})
        history = history + added
        return history, history, gr.MultimodalTextbox(value=None, interactive=False), {"text": text, "files": files}

    def failed(history: list, exc: Exception) -> list:
        # Assistant turns never raise; this is for a bug in the glue, which must not leave the
        # page waiting with a disabled textbox.
        log.exception("chat UI handler failed", exc_info=exc)
        reply = Reply("error", f"Sorry, something went wrong on our side ({type(exc).__name__}). Please try again.")
        return history + reply_messages(reply, settings)

    def finish(history: list, state: ChatState, shown: list | None = None) -> tuple:
        history = keep_recent_galleries(history, settings.galleries_kept)
        return (history, history, state, *_control_updates(state, shown), *_filter_updates(state, settings))

    def respond(history: list, state: ChatState, turn, said: tuple = (), shown: list | None = None) -> tuple:
        """The ending every handler shares: what the shopper said, the assistant's reply, the
        page's updates."""
        history = history + list(said)
        try:
            reply, state = turn(state)
            history = history + reply_messages(reply, settings)
        except Exception as exc:
            history = failed(history, exc)
        return finish(history, state, shown)

    def answer(pending: dict | None, history: list, state: ChatState):
        crop_updates = (gr.update(), gr.update(), gr.update(), gr.update())
        try:
            if pending:
                files = pending.get("files") or []
                reply, state = assistant.handle_turn(state, pending.get("text", ""), files)
                history = history + reply_messages(reply, settings)
                if files and reply.kind == "results":
                    crop, preview = new_crop(files[0], limits)
                    crop_updates = (crop, preview, CROP_HELP, gr.Accordion(open=True))
        except Exception as exc:
            history = failed(history, exc)
        return (*finish(history, state), gr.MultimodalTextbox(value=None, interactive=True), *crop_updates)

    def on_controls(model: str, k: float, gender: list, category: list, colour: list, history: list,
                    state: ChatState):
        shown = [model, k, gender or [], category or [], colour or []]
        if all(_same(old, new) for old, new in zip(shown, _control_values(state))):
            # Nothing changed (leaving the "Number of results" box, tabbing past a control):
            # no new search, no reply.
            return tuple(gr.skip() for _ in range(5 + 3 + 3))
        current = list(state.filters.get("gender"))
        added = [g for g in gender or [] if g not in current]
        if added and current:
            # Picking "Men" while "Women" is set means men's, not "Women or Men".
            gender = added
            shown[2] = None  # the box shows both: set it to the one chosen
        return respond(history, state, lambda s: assistant.apply_controls(
            s, model=model, k=int(k or settings.policy.k), gender=gender or [], category=category or [],
            colour=colour or []), shown=shown)

    def on_chips(kept: list, history: list, state: ChatState):
        filters = without_chips(state.filters, kept or [])
        if filters == state.filters:
            return tuple(gr.skip() for _ in range(5 + 3 + 3))
        return respond(history, state, lambda s: assistant.set_filters(s, filters))

    def on_reapply(history: list, state: ChatState):
        return respond(history, state, assistant.reapply_previous)

    def on_pick(picked: str, history: list, state: ChatState):
        pid = product_for_file(state, picked or "")
        if pid is None:
            return finish(history, state)
        said = {"role": "user", "content": f"More like “{as_text(state.seen[pid].get('name') or pid)}”"}
        return respond(history, state, lambda s: assistant.more_like(s, pid), said=(said,))

    def on_oversize(raw: str, history: list, state: ChatState):
        try:
            held = json.loads(raw or "{}")
            name, size = str(held["name"])[:200], int(held["size"])
        except (ValueError, KeyError, TypeError):
            return finish(history, state)  # not from our page: nothing to answer
        said = {"role": "user", "content": as_text(f"({name}, {size / 1e6:.1f} MB)")}
        return respond(history, state, lambda s: assistant.refuse_file(s, name, size), said=(said,))

    def on_crop_click(clicked: str, crop: dict | None):
        crop = mark_corner(crop, clicked)
        return crop, crop_preview(crop, limits), crop_status(crop)

    def on_crop_search(crop: dict | None, history: list, state: ChatState):
        box = crop_fractions(crop)
        if box is None:
            return respond(history, state, lambda s: (Reply("error", NO_CROP_YET), s))
        shown = crops.save(crop, box, limits)
        said = {"role": "user", "content": {"path": shown} if shown else "(the selected part of my photo)"}
        return respond(history, state, lambda s: assistant.handle_turn(s, "", [crop["path"]], crop=box),
                       said=(said,))

    def new_conversation():
        state = assistant.new_state()
        return (*finish([], state), None, None, CROP_HELP, gr.Accordion(open=False))

    def recommend(image: str | None, model: str | None, k: float | None, gender: str | None,
                  category: str | None) -> dict:
        return recommend_json(assistant, image, model, k, gender, category)

    # -- layout ----------------------------------------------------------------------------
    with gr.Blocks(title=settings.title) as demo:
        session = gr.State(assistant.new_state())
        history = gr.State([])
        pending = gr.State(None)
        gr.Markdown(f"## {settings.title}\nDrop a photo of a product or an outfit, add words if you like "
                    "(“women's black shoes”), and get the most similar products. Each result has “View "
                    "product” and “More like this”; say “only black ones”, “show 10” or “clear filters”.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=280):
                # No LaTeX: catalog text with $$ in it stays text (the rest is escaped by as_text).
                chatbot = gr.Chatbot(value=[], elem_id="chat", height=settings.chat_height, show_label=False,
                                     label="Conversation", latex_delimiters=[],
                                     feedback_options=None, buttons=[], group_consecutive_messages=True,
                                     placeholder="Send a photo to start: drop it here or in the box below.")
                box = PhotoTextbox(elem_id="message", file_types=["image"], file_count="single",
                                   sources=["upload"], show_label=False, label="Message",
                                   placeholder="Drop or paste a photo, add words, press Enter")
                with gr.Row(equal_height=True):
                    # The active filters as chips: the × on one removes that filter.
                    chips = gr.Dropdown([], value=[], multiselect=True, label="Active filters (× removes one)",
                                        elem_id="active-filters", visible=False, allow_custom_value=False)
                    reapply = gr.Button("Re-apply earlier filters", size="sm", visible=False, elem_id="reapply")
            with gr.Column(scale=1, elem_id="controls", min_width=240):
                # Closed until there is a photo to crop; first in the column so that it is in view.
                with gr.Accordion("Crop the photo to one garment", open=False, elem_id="crop-panel") as crop_panel:
                    crop_state = gr.State(None)
                    crop_image = gr.Image(type="pil", interactive=False, show_label=False, height=260,
                                          buttons=[], elem_id="crop-image")
                    crop_note = gr.Markdown(CROP_HELP, elem_id="crop-note")  # read out: see CLICK_BRIDGE_JS
                    crop_search = gr.Button("Search the selected part", elem_id="crop-search")
                model = gr.Radio([(model_label(m), m) for m in settings.policy.models], value=settings.policy.default_model,
                                 label="Model", elem_id="model")
                k = gr.Slider(1, settings.policy.max_k, value=settings.policy.k, step=1, label="Number of results", elem_id="k")
                gender = gr.Dropdown(choices["gender"], value=[], multiselect=True, label="Gender",
                                     elem_id="gender")
                category = gr.Dropdown(choices["category"], value=[], multiselect=True, label="Category",
                                       elem_id="category")
                colour = gr.Dropdown(choices["colour"], value=[], multiselect=True, label="Colour",
                                     elem_id="colour")
                with gr.Row():
                    clear = gr.Button("Clear filters", size="sm", elem_id="clear-filters")
                    restart = gr.Button("New chat", size="sm", elem_id="new-chat")
        # Bridge for clicks on products inside the chat (see CLICK_BRIDGE_JS).
        pick = gr.Textbox(visible="hidden", elem_id="pick")
        pick_btn = gr.Button("more like this", visible="hidden", elem_id="pick-btn")
        crop_pick = gr.Textbox(visible="hidden", elem_id="crop-pick")
        crop_pick_btn = gr.Button("crop corner", visible="hidden", elem_id="crop-pick-btn")
        oversize = gr.Textbox(visible="hidden", elem_id="oversize")
        oversize_btn = gr.Button("file too large", visible="hidden", elem_id="oversize-btn")
        links = gr.Textbox(product_links(assistant.new_state(), settings), visible="hidden", elem_id="links")
        # The API's own event: its inputs are not part of the page.
        with gr.Column(visible=False):
            # A file, not gr.Image: Gradio's Image decodes the upload before any handler runs,
            # which would bypass the pixel limit open_image checks from the header (and turn a
            # non-image into an error without a reason).
            api_image = gr.File(type="filepath", label="image")
            api_model = gr.Textbox(label="model")
            api_k = gr.Number(label="k", precision=0)
            api_gender = gr.Textbox(label="gender")
            api_category = gr.Textbox(label="category")
            api_out = gr.JSON(label="results")
            api_btn = gr.Button("recommend")

        controls = [model, k, gender, category, colour]
        turn_out = [history, chatbot, session, *controls, chips, reapply, links]
        private = {"api_visibility": "private"}

        crop_out = [crop_state, crop_image, crop_note]
        box.submit(post_user, [box, history], [history, chatbot, box, pending], queue=False, **private).then(
            answer, [pending, history, session], [*turn_out, box, *crop_out, crop_panel], **private)
        clear.click(lambda h: post_user({"text": "clear filters"}, h), [history], [history, chatbot, box, pending],
                    queue=False, **private).then(
            answer, [pending, history, session], [*turn_out, box, *crop_out, crop_panel], **private)
        for control in (model, gender, category, colour):
            control.input(on_controls, [*controls, history, session], turn_out, **private)
        k.release(on_controls, [*controls, history, session], turn_out, **private)
        chips.input(on_chips, [chips, history, session], turn_out, **private)
        reapply.click(on_reapply, [history, session], turn_out, **private)
        pick_btn.click(on_pick, [pick, history, session], turn_out, **private)
        oversize_btn.click(on_oversize, [oversize, history, session], turn_out, **private)
        crop_pick_btn.click(on_crop_click, [crop_pick, crop_state], crop_out, **private)
        crop_search.click(on_crop_search, [crop_state, history, session], turn_out, **private)
        restart.click(new_conversation, None, [*turn_out, *crop_out, crop_panel], **private)
        # The chat's own trash icon starts over too: clearing only the screen brought every
        # message back with the next photo, and kept the filters.
        chatbot.clear(new_conversation, None, [*turn_out, *crop_out, crop_panel], **private)
        api_btn.click(recommend, [api_image, api_model, api_k, api_gender, api_category], api_out,
                      api_name="recommend")
        demo.load(None, js=CLICK_BRIDGE_JS.replace("__MAX_UPLOAD_BYTES__", str(int(settings.policy.max_upload_bytes))))
    return demo


def recommend_json(assistant: Assistant, image: str | None, model: str | None = None, k: float | None = None,
                   gender: str | None = None, category: str | None = None) -> dict:
    """The chat's one API event: `search --json`'s schema, or {"query", "error"} in the chat's words."""
    query = str(image) if image else None
    try:
        answer = find_by_photo(assistant.searcher, assistant.settings.policy, image, model=model or None,
                               k=None if k in (None, "") else int(k),
                               filters=FilterRequest(gender=gender or None, category=category or None))
        return {"query": query, "model": answer.model, "results": [r.to_json() for r in answer.results]}
    except Exception as exc:
        return {"query": query, "error": assistant.explain(exc, model or assistant.settings.policy.default_model)}


def check_uploads_like_launch(demo: gr.Blocks) -> None:
    """A mounted app (gr.mount_gradio_app) is never marked as launched, and Gradio checks that
    an event's files were uploaded to it only once it is: without this, a request naming any
    path on the server had that file copied into the cache and served back."""
    demo.has_launched = True


def queue(demo: gr.Blocks, settings: AssistantSettings) -> None:
    """Several sessions' searches at once, a bounded queue: the same whether launched or mounted."""
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)


def launch(searcher: Searcher, settings: AssistantSettings, host: str = "127.0.0.1", port: int = 7860,
           *, block: bool = True, quiet: bool = False) -> gr.Blocks:
    """Build, queue and start the app; with `block=False` it serves from a thread (tests, benchmarks)."""
    demo = build_demo(searcher, settings)
    queue(demo, settings)
    # No allowed_paths: the chat shows copies of product images (product_picture), so Gradio
    # serves no folder of the server's as it is.
    demo.launch(server_name=host, server_port=port, max_file_size=settings.upload_hard_limit_bytes,
                css=CSS, prevent_thread_lock=not block, quiet=quiet, ssr_mode=False, footer_links=[],
                show_error=False)
    return demo


__all__ = ["build_demo", "launch", "queue", "recommend_json", "check_uploads_like_launch", "product_picture", "picture_name", "reply_messages", "product_for_file", "CLICK_BRIDGE_JS"]
