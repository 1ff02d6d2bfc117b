"""What each event of the chat's page does: plain methods of values (the page's components in,
their updates out), so tests can call them too. `ui.build_demo` wires them to the components."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from assistant.chat import Assistant, ChatState, Reply, as_text, bounded_message, filter_chips, without_chips
from assistant.conversations import Conversations
from assistant.crop import (
    CROP_HELP,
    CropFiles,
    ItemThumbnails,
    crop_fractions,
    crop_preview,
    crop_status,
    draw_items,
    mark_corner,
    new_crop,
)
from assistant.messages import keep_recent_galleries, reply_messages, shown_file
from assistant.pictures import picture_name
from assistant.settings import AssistantSettings
from catalog.products import CATEGORY_FIELDS
from catalog.text import meaning
from operations import FilterRequest, find_the_look
from vectorstore import CATEGORY, StoreError

log = logging.getLogger(__name__)

# The outputs every turn updates: history, chat, state, five controls, chips, re-apply, links, items.
TURN_OUTPUTS = 3 + 5 + 3 + 1
ITEMS_CROP_HELP = "The items I found are outlined. To search another part, click two opposite corners of it."
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
            key = meaning(value)
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


class ChatEvents:
    """The handlers of one chat page; per-session data lives in the components' gr.State."""

    def __init__(self, assistant: Assistant, settings: AssistantSettings,
                 status: Callable[[], str | None] | None = None):
        self.assistant = assistant
        self.settings = settings
        # What the page says above the chat while the catalog is being indexed (None: nothing).
        self.status = status or (lambda: None)
        self.limits = settings.policy.image_limits
        self.crops = CropFiles()
        self.thumbnails = ItemThumbnails()
        self.choices = _control_choices(assistant, settings.policy.default_model)
        self.conversations = Conversations()

    def restore(self, key: str | None) -> tuple:
        """On page load: the browser's conversation as it was (after a reload, or back from a
        product page), or a new one under a new key."""
        saved = self.conversations.get(key)
        if saved is None:
            return (self.conversations.new_key(), *self.finish([], self.assistant.new_state()))
        return (key, *self.finish(saved.history, saved.state))

    def index_status(self):
        """The status line and its timer: shown and ticking while there is something to say."""
        text = self.status()
        return (gr.update(value=f"⏳ {as_text(text)}" if text else "", visible=bool(text)),
                gr.Timer(active=bool(text)))

    def post_user(self, message: dict | None, history: list):
        message = message or {}
        text = bounded_message((message.get("text") or "").strip())
        files = [f for f in message.get("files") or [] if f]
        if not text and not files:
            return history, history, gr.update(), None
        added = [{"role": "user", "content": shown_file(f)} for f in files]
        if text:
            added.append({"role": "user", "content": as_text(text)})
        history = history + added
        return history, history, gr.MultimodalTextbox(value=None, interactive=False), {"text": text, "files": files}

    def failed(self, history: list, exc: Exception) -> list:
        # Assistant turns never raise; this is for a bug in the glue, which must not leave the
        # page waiting with a disabled textbox.
        log.exception("chat UI handler failed", exc_info=exc)
        reply = Reply("error", f"Sorry, something went wrong on our side ({type(exc).__name__}). Please try again.")
        return history + reply_messages(reply, self.settings)

    def finish(self, history: list, state: ChatState, shown: list | None = None, key: str | None = None) -> tuple:
        """The page's updates at the end of a turn, the conversation saved first for the browser
        that holds `key`: a save in an event after this one would run after the screen changed,
        and a reload in between would bring back the turn before."""
        history = keep_recent_galleries(history, self.settings.galleries_kept)
        if key is not None:
            self.conversations.save(key, history, state)
        return (history, history, state, *_control_updates(state, shown), *_filter_updates(state, self.settings),
                self.item_choices(state))

    def item_choices(self, state: ChatState):
        """The items found in the photo as small pictures to tap, the one searched selected."""
        query = state.query
        if query is None or query.kind != "photo" or len(query.items) < 2:
            return gr.update(value=[], visible=False)
        pictures = self.thumbnails.of(query.path, [item.box for item in query.items], self.limits)
        if not pictures:
            return gr.update(value=[], visible=False)
        return gr.update(value=list(zip(pictures, item_names(query))), visible=True, selected_index=query.item)

    def on_item(self, history: list, state: ChatState, key: str | None = None, event: gr.SelectData = None):
        index = int(event.index) if event is not None and event.index is not None else -1
        query = state.query
        if query is None or not 0 <= index < len(query.items) or index == query.item:
            return self.finish(history, state, key=key)
        said = {"role": "user", "content": f"Search the {item_names(query)[index]}"}
        return self.respond(history, state, lambda s: self.assistant.search_item(s, index), said=(said,), key=key)

    def respond(self, history: list, state: ChatState, turn, said: tuple = (), shown: list | None = None,
                key: str | None = None) -> tuple:
        """The ending every handler shares: what the shopper said, the assistant's reply, the
        page's updates."""
        history = history + list(said)
        try:
            reply, state = turn(state)
            history = history + reply_messages(reply, self.settings)
        except Exception as exc:
            history = self.failed(history, exc)
        return self.finish(history, state, shown, key)

    def answer(self, pending: dict | None, history: list, state: ChatState, key: str | None = None):
        crop_updates = (gr.update(), gr.update(), gr.update(), gr.update())
        try:
            if pending:
                files = pending.get("files") or []
                reply, state = self.assistant.handle_turn(state, pending.get("text", ""), files)
                history = history + reply_messages(reply, self.settings)
                if files and reply.kind == "results":
                    crop, preview = new_crop(files[0], self.limits)
                    items = state.query.items if state.query else ()
                    preview = draw_items(preview, [i.box for i in items], [i.kind for i in items])
                    crop_updates = (crop, preview, CROP_HELP if not items else ITEMS_CROP_HELP,
                                    gr.Accordion(open=True))
        except Exception as exc:
            history = self.failed(history, exc)
        return (*self.finish(history, state, key=key), gr.MultimodalTextbox(value=None, interactive=True),
                *crop_updates)

    def on_controls(self, model: str, k: float, gender: list, category: list, colour: list, history: list,
                    state: ChatState, key: str | None = None):
        shown = [model, k, gender or [], category or [], colour or []]
        if all(_same(old, new) for old, new in zip(shown, _control_values(state))):
            # Nothing changed (leaving the "Number of results" box, tabbing past a control):
            # no new search, no reply.
            return tuple(gr.skip() for _ in range(TURN_OUTPUTS))
        current = list(state.filters.get("gender"))
        added = [g for g in gender or [] if g not in current]
        if added and current:
            # Picking "Men" while "Women" is set means men's, not "Women or Men".
            gender = added
            shown[2] = None  # the box shows both: set it to the one chosen
        return self.respond(history, state, lambda s: self.assistant.apply_controls(
            s, model=model, k=int(k or self.settings.policy.k), gender=gender or [], category=category or [],
            colour=colour or []), shown=shown, key=key)

    def on_chips(self, kept: list, history: list, state: ChatState, key: str | None = None):
        filters = without_chips(state.filters, kept or [])
        if filters == state.filters:
            return tuple(gr.skip() for _ in range(TURN_OUTPUTS))
        return self.respond(history, state, lambda s: self.assistant.set_filters(s, filters), key=key)

    def on_reapply(self, history: list, state: ChatState, key: str | None = None):
        return self.respond(history, state, self.assistant.reapply_previous, key=key)

    def on_pick(self, picked: str, history: list, state: ChatState, key: str | None = None):
        pid = product_for_file(state, picked or "")
        if pid is None:
            return self.finish(history, state, key=key)
        said = {"role": "user", "content": f"More like “{as_text(state.seen[pid].get('name') or pid)}”"}
        return self.respond(history, state, lambda s: self.assistant.more_like(s, pid), said=(said,), key=key)

    def on_oversize(self, raw: str, history: list, state: ChatState, key: str | None = None):
        try:
            held = json.loads(raw or "{}")
            name, size = str(held["name"])[:200], int(held["size"])
        except (ValueError, KeyError, TypeError):
            return self.finish(history, state, key=key)  # not from our page: nothing to answer
        said = {"role": "user", "content": as_text(f"({name}, {size / 1e6:.1f} MB)")}
        return self.respond(history, state, lambda s: self.assistant.refuse_file(s, name, size), said=(said,),
                            key=key)

    def on_crop_click(self, clicked: str, crop: dict | None):
        crop = mark_corner(crop, clicked)
        return crop, crop_preview(crop, self.limits), crop_status(crop)

    def on_crop_search(self, crop: dict | None, history: list, state: ChatState, key: str | None = None):
        box = crop_fractions(crop)
        if box is None:
            return self.respond(history, state, lambda s: (Reply("error", NO_CROP_YET), s), key=key)
        shown = self.crops.save(crop, box, self.limits)
        said = {"role": "user", "content": {"path": shown} if shown else "(the selected part of my photo)"}
        return self.respond(history, state, lambda s: self.assistant.handle_turn(s, "", [crop["path"]], crop=box),
                            said=(said,), key=key)

    def new_conversation(self, key: str | None):
        """A conversation started over, and forgotten by the server before the screen empties:
        a reload right after "New chat" must not bring the old one back."""
        return (*self.finish([], self.assistant.new_state(), key=key), None, None, CROP_HELP, gr.Accordion(open=False))

    def recommend(self, image: str | None, model: str | None, k: float | None, gender: str | None,
                  category: str | None) -> dict:
        return recommend_json(self.assistant, image, model, k, gender, category)


def public_result(result) -> dict:
    """`search --json`'s result with its image as a file name, not a path on this server."""
    out = result.to_json()
    if out.get("image"):
        out["image"] = Path(str(out["image"])).name
    return out


def recommend_json(assistant: Assistant, image: str | None, model: str | None = None, k: float | None = None,
                   gender: str | None = None, category: str | None = None) -> dict:
    """The chat's one API event: `search --json`'s schema (with `items`), or {"query", "error"}
    in the chat's words."""
    # Public: names files, never where this server keeps them.
    query = Path(str(image)).name if image else None
    try:
        look = find_the_look(assistant.searcher, assistant.settings.policy, image, model=model or None,
                             k=None if k in (None, "") else int(k),
                             filters=FilterRequest(gender=gender or None, category=category or None),
                             settings=assistant.look)
        answer = look.first
        return {"query": query, "model": answer.model, "results": [public_result(r) for r in answer.results],
                "items": [found.to_json(public_result) for found in look.items]}
    except Exception as exc:
        return {"query": query, "error": assistant.explain(exc, model or assistant.settings.policy.default_model)}


def item_names(query) -> list[str]:
    """Each found item as the shopper would tell it from the others: "black bag", "brown bag"."""
    colours = list(query.colours) or [None] * len(query.items)
    return [f"{colour.lower()} {item.kind}" if colour else item.kind for item, colour in zip(query.items, colours)]
