"""The chat assistant in Gradio: a chat with galleries of products inside the replies, controls
beside it, a crop panel for outfit photos, and an API event (`/recommend`) for programs.

All conversation logic is in `assistant.chat` and what each event does in `assistant.events`;
this module lays out the components and wires them to those events. Each browser session has
its own `gr.State` (the conversation and its history), and the queue lets several sessions'
searches run at once.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace

import gradio as gr

from assistant.chat import Assistant
from assistant.crop import CROP_HELP
from assistant.events import ChatEvents, product_links
from assistant.gate import ChatGate, UploadLimits
from assistant.page import CSS, page_js
from assistant.settings import AssistantSettings, model_label
from search import Searcher

log = logging.getLogger(__name__)


class PhotoTextbox(gr.MultimodalTextbox):
    """The message box. Its `file_types` still narrows the browser's file picker, but a file of
    another type reaches the assistant, which says why it cannot use it: Gradio's own check
    raised an error that the queue answered with HTTP 500 and no reason."""
    is_template = True  # rendered by the front end as the MultimodalTextbox it is

    def preprocess(self, payload):
        if payload is None:
            return None
        return {"text": payload.text, "files": [f.path for f in payload.files]}


def build_demo(searcher: Searcher, settings: AssistantSettings,
               status: Callable[[], str | None] | None = None) -> gr.Blocks:
    """The page; `status` says how far background indexing is (shown above the chat until done)."""
    events = ChatEvents(Assistant(searcher, settings), settings, status)
    limits = upload_limits(settings)
    # Gradio's own sweep of its cache, beside the gate's (which also bounds the folder's size).
    with gr.Blocks(title=settings.title, delete_cache=(limits.max_age_s, limits.max_age_s)) as demo:
        page = _layout(events, settings)
        _wire(page, events)
        demo.load(None, js=page_js(settings.policy.max_upload_bytes))
        demo.load(events.restore, [page.browser_key], [page.browser_key, *_turn_outputs(page)],
                  api_visibility="private", show_progress="hidden")
        demo.load(events.index_status, None, [page.index_status, page.index_timer], api_visibility="private")
    return demo


def _layout(events: ChatEvents, settings: AssistantSettings) -> SimpleNamespace:
    """The page's components, by name."""
    choices, policy = events.choices, settings.policy
    session = gr.State(events.assistant.new_state())
    history = gr.State([])
    # The browser's conversation key (assistant/conversations.py): a reload, or Back from a
    # product page, shows the same conversation.
    browser_key = gr.BrowserState("", storage_key="visual-shop-conversation")
    pending = gr.State(None)
    gr.Markdown(f"## {settings.title}\nDrop a photo of a product or an outfit, add words if you like "
                "(“women's black shoes”), and get the most similar products; or just say what you want. Each result has “View "
                "product” and “More like this”; say “only black ones”, “show 10” or “clear filters”.")
    index_status = gr.Markdown("", visible=False, elem_id="index-status")
    index_timer = gr.Timer(2.0, active=events.status() is not None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=280):
            # No LaTeX: catalog text with $$ in it stays text (the rest is escaped by as_text).
            chatbot = gr.Chatbot(value=[], elem_id="chat", height=settings.chat_height, show_label=False,
                                 label="Conversation", latex_delimiters=[],
                                 feedback_options=None, buttons=[], group_consecutive_messages=True,
                                 autoscroll=False,  # the page shows each new reply from its headline
                                 placeholder="Send a photo to start: drop it here or in the box below.")
            box = PhotoTextbox(elem_id="message", file_types=["image"], file_count="single",
                               sources=["upload"], show_label=False, label="Message",
                               placeholder="Drop or paste a photo, add words, press Enter")
            # The items found in an outfit photo: tap one to search it.
            items = gr.Gallery([], label="Items in your photo: tap one to search it", visible=False,
                               columns=8, height=150, allow_preview=False, object_fit="contain",
                               elem_id="items", interactive=False)
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
                crop_note = gr.Markdown(CROP_HELP, elem_id="crop-note")  # read out: see assistant/page.py
                crop_search = gr.Button("Search the selected part", elem_id="crop-search")
            model = gr.Radio([(model_label(m), m) for m in policy.models], value=policy.default_model,
                             label="Model", elem_id="model")
            k = gr.Slider(1, policy.max_k, value=policy.k, step=1, label="Number of results", elem_id="k")
            gender = gr.Dropdown(choices["gender"], value=[], multiselect=True, label="Gender",
                                 elem_id="gender")
            category = gr.Dropdown(choices["category"], value=[], multiselect=True, label="Category",
                                   elem_id="category")
            colour = gr.Dropdown(choices["colour"], value=[], multiselect=True, label="Colour",
                                 elem_id="colour")
            with gr.Row():
                clear = gr.Button("Clear filters", size="sm", elem_id="clear-filters")
                restart = gr.Button("New chat", size="sm", elem_id="new-chat")
    # Bridge for clicks on products inside the chat (see assistant/page.py).
    pick = gr.Textbox(visible="hidden", elem_id="pick")
    pick_btn = gr.Button("more like this", visible="hidden", elem_id="pick-btn")
    crop_pick = gr.Textbox(visible="hidden", elem_id="crop-pick")
    crop_pick_btn = gr.Button("crop corner", visible="hidden", elem_id="crop-pick-btn")
    oversize = gr.Textbox(visible="hidden", elem_id="oversize")
    oversize_btn = gr.Button("file too large", visible="hidden", elem_id="oversize-btn")
    links = gr.Textbox(product_links(events.assistant.new_state(), settings), visible="hidden", elem_id="links")
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
    # Every component made above, by its variable's name, for _wire.
    return SimpleNamespace(**{name: value for name, value in locals().items()
                              if isinstance(value, gr.components.Component | gr.blocks.BlockContext)})


def _turn_outputs(p: SimpleNamespace) -> list:
    """What every turn updates: history, chat, state, the five controls, chips, re-apply, links, items."""
    return [p.history, p.chatbot, p.session, p.model, p.k, p.gender, p.category, p.colour, p.chips, p.reapply,
            p.links, p.items]


def _wire(p: SimpleNamespace, events: ChatEvents) -> None:
    """Each component's events to the handler that answers them. Every turn's handler saves the
    conversation under the browser's key before it returns (ChatEvents.finish), so a reload
    right after the screen changed finds what it shows."""
    controls = [p.model, p.k, p.gender, p.category, p.colour]
    turn_out = _turn_outputs(p)
    private = {"api_visibility": "private"}
    # The progress animation on the chat only: drawn on each of a turn's sixteen outputs, it
    # cost ~170 ms of the 550 from Enter to the reply's text (bench/chat_latency.py).
    shown_on_chat = {**private, "show_progress": "minimal", "show_progress_on": [p.chatbot]}
    quiet = {**private, "show_progress": "hidden"}
    turn = [p.history, p.session, p.browser_key]

    crop_out = [p.crop_state, p.crop_image, p.crop_note]
    posted = [p.history, p.chatbot, p.box, p.pending]
    answered = [*turn_out, p.box, *crop_out, p.crop_panel]
    p.box.submit(events.post_user, [p.box, p.history], posted, queue=False, **quiet).then(
        events.answer, [p.pending, *turn], answered, **shown_on_chat)
    p.clear.click(lambda h: events.post_user({"text": "clear filters"}, h), [p.history], posted,
                  queue=False, **quiet).then(events.answer, [p.pending, *turn], answered, **shown_on_chat)
    for control in (p.model, p.gender, p.category, p.colour):
        control.input(events.on_controls, [*controls, *turn], turn_out, **shown_on_chat)
    p.k.release(events.on_controls, [*controls, *turn], turn_out, **shown_on_chat)
    p.chips.input(events.on_chips, [p.chips, *turn], turn_out, **shown_on_chat)
    p.reapply.click(events.on_reapply, turn, turn_out, **shown_on_chat)
    p.items.select(events.on_item, turn, turn_out, **shown_on_chat)
    p.pick_btn.click(events.on_pick, [p.pick, *turn], turn_out, **shown_on_chat)
    p.oversize_btn.click(events.on_oversize, [p.oversize, *turn], turn_out, **quiet)
    p.crop_pick_btn.click(events.on_crop_click, [p.crop_pick, p.crop_state], crop_out, **private)
    p.crop_search.click(events.on_crop_search, [p.crop_state, *turn], turn_out, **shown_on_chat)
    # The chat's own trash icon starts over too: clearing only the screen brought every
    # message back with the next photo, and kept the filters.
    for starts_over in (p.restart.click, p.chatbot.clear):
        starts_over(events.new_conversation, [p.browser_key], [*turn_out, *crop_out, p.crop_panel], **quiet)
    p.index_timer.tick(events.index_status, None, [p.index_status, p.index_timer], **quiet)
    p.api_btn.click(events.recommend, [p.api_image, p.api_model, p.api_k, p.api_gender, p.api_category],
                    p.api_out, api_name="recommend")


def upload_limits(settings: AssistantSettings) -> UploadLimits:
    """Uploads as the product takes them: the policy's photo limit, one file at a time."""
    return UploadLimits(max_bytes=settings.policy.max_upload_bytes)


def gradio_app_kwargs(settings: AssistantSettings) -> dict:
    """What Gradio's app is built with: the gate in front of every route (assistant/gate.py)."""
    from starlette.middleware import Middleware
    return {"middleware": [Middleware(ChatGate, limits=upload_limits(settings))]}


def check_uploads_like_launch(demo: gr.Blocks) -> None:
    """A mounted app (gr.mount_gradio_app) is never marked as launched, and Gradio checks that
    an event's files were uploaded to it only once it is: without this, a request naming any
    path on the server had that file copied into the cache and served back."""
    demo.has_launched = True


def queue(demo: gr.Blocks, settings: AssistantSettings) -> None:
    """Several sessions' searches at once, a bounded queue: the same whether launched or mounted."""
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)


def launch(searcher: Searcher, settings: AssistantSettings, host: str = "127.0.0.1", port: int = 7860,
           *, block: bool = True, quiet: bool = False, status: Callable[[], str | None] | None = None) -> gr.Blocks:
    """Build, queue and start the app; with `block=False` it serves from a thread (tests, benchmarks)."""
    demo = build_demo(searcher, settings, status)
    queue(demo, settings)
    # No allowed_paths: the chat shows copies of product images (assistant/pictures.py), so Gradio
    # serves no folder of the server's as it is.
    demo.launch(server_name=host, server_port=port, max_file_size=settings.policy.max_upload_bytes,
                app_kwargs=gradio_app_kwargs(settings), css=CSS, prevent_thread_lock=not block, quiet=quiet, ssr_mode=False, footer_links=[],
                show_error=False)
    return demo


__all__ = ["build_demo", "launch", "queue", "check_uploads_like_launch", "PhotoTextbox", "gradio_app_kwargs"]
