"""One turn of the shopping conversation, as plain Python (the Gradio UI and tests call it).

A turn takes the conversation's state, the shopper's words and any photo, and returns a reply
plus the new state. The state remembers the query (a photo, with its vector per model, or a
catalog product), the filters, the model, k and the last results, so follow-ups ("only black
ones", "more like the second one", "use resnet18") work without uploading again.

Every failure becomes a reply with a message a shopper can read; nothing here raises.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from PIL import Image

from assistant.crop import cut
from assistant.settings import AssistantSettings, model_label
from assistant.words import Understanding, Vocabulary, understand
from catalog import ImageError, open_image
from catalog.errors import UserError
from catalog.images import SUPPORTED, too_large
from catalog.text import clipped, meaning, shown_text
from embedding import WeightsError
from embedding.garments import Item, describe_items
from operations import LookSettings, Refused
from operations.find_the_look import NOTHING_FOUND, item_filters, items_in, photo_gender, shows_nothing, with_gender
from operations.keep_kind import kind_scope, search_keeping_kind, search_photo
from search import AS_IS, Answer, Result, Searcher
from search.searcher import names_hold
from vectorstore import CATEGORY, Filters, NoIndex, StoreError, UnknownFilterValue, WeightsMismatch
from vectorstore.errors import NoProduct, StoreUnreachable

log = logging.getLogger(__name__)

HELP = ("I can narrow or change the search: try “only black ones”, “not black”, “show men instead”, "
        "“more like the second one”, “show 10”, “use resnet18” (or any model offered), “clear filters”.")
ASK_PHOTO = ("Send me a photo of a product or an outfit ({supported}) and I'll find the most similar "
             "products in the catalog, or tell me what you are looking for (“black leather bag”).")
# Control name -> filter field, shared with the UI.
CONTROL_FIELDS = {"gender": "gender", "category": CATEGORY, "colour": "baseColour"}


class ChatProblem(UserError):
    """Something the shopper asked that cannot be done; the message says why."""


@dataclass(frozen=True)
class Query:
    """What the shopper is searching "like": their photo, or a product from the catalog."""
    kind: str                               # "photo", "product" or "words"
    label: str                              # "your photo", "“Brand1 Women Black Heels”", "“red dress”"
    path: str | None = None                 # the photo's file, to embed it again for another model
    crop: tuple[float, float, float, float] | None = None  # fractions (left, top, right, bottom)
    product_id: str | None = None
    vectors: Mapping[str, np.ndarray] = field(default_factory=dict)  # model -> query vector
    embedded_with: Mapping[str, str] = field(default_factory=dict)   # model -> the weights of its vector
    # The items the garment parser found in the photo, the most prominent first, and the one
    # searched (None: the whole photo).
    items: tuple[Item, ...] = ()
    item: int | None = None
    colours: tuple[str | None, ...] = ()    # each item's colour as seen, when a colour model is given
    # The colour read from the searched item's (or the whole photo's) pixels: p over the
    # catalog's colours, a soft preference of the search; None until read, or without a model.
    reading: Mapping[str, float] | None = None
    readings: tuple[Mapping[str, float] | None, ...] = ()  # each item's, read when the photo came
    gender: str | None = None               # the gender the first item's products agreed on
    words: tuple[str, ...] = ()             # words alone: those looked for in product names
    # model -> the kind group a shopper's own photo shows, as a filter (operations/keep_kind.py)
    scopes: Mapping[str, Filters] = field(default_factory=dict)

    @property
    def searched_item(self) -> Item | None:
        return self.items[self.item] if self.item is not None and self.item < len(self.items) else None


@dataclass(frozen=True)
class ChatState:
    model: str
    k: int
    filters: Filters = field(default_factory=Filters)
    query: Query | None = None
    results: tuple[Result, ...] = ()        # the last results shown, for "more like the second one"
    seen: Mapping[str, Result] = field(default_factory=dict)  # every product shown, by id (gallery clicks)
    # The filters a new photo turned off: offered back as one tap ("Re-apply"), never applied
    # silently (a men's shoe came back as women's footwear because "Women" was left over).
    previous_filters: Filters = field(default_factory=Filters)


@dataclass(frozen=True)
class Reply:
    kind: str                               # "results", "ask_photo", "info" or "error"
    headline: str = ""                      # "5 Women's Heels like your photo, by ResNet-50"
    filters_line: str = ""                  # "Filters: Women · Footwear"
    results: tuple[Result, ...] = ()
    notes: tuple[str, ...] = ()             # what was adjusted or could not be done
    items_line: str = ""                    # "I see a top, trousers and shoes: tap one to search it."

    def markdown(self) -> str:
        """The reply for the chat, which renders Markdown and HTML: every part is plain text
        (catalog names and values among it), escaped so that it shows exactly as written."""
        headline = as_text(self.headline)
        lines = [as_text(self.items_line)] if self.items_line else []
        lines += [f"**{headline}**" if self.kind == "results" and headline else headline]
        lines += [as_text(n) for n in self.notes if n]
        if self.filters_line:
            lines.append(as_text(self.filters_line))
        return "\n\n".join(line for line in lines if line)


# Every ASCII punctuation character may be backslash-escaped in Markdown (CommonMark and
# GFM): escaping them all turns off emphasis, links, images, autolinks, tables and headings.
# <, > and & become entities instead, which also keeps any HTML from being parsed.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-%'-/:;=?@\[-`{-~])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


# A message is a few words; more is pasted text or a client's flood, kept, echoed and parsed
# word by word for nothing.
MAX_MESSAGE_CHARS = 2000


def as_text(text: str) -> str:
    """`text` as Markdown that renders to exactly that text, whatever it holds (bidi controls
    aside: they would reorder what is shown around them)."""
    escaped = _MARKDOWN_PUNCTUATION.sub(r"\\\1", shown_text(text))
    escaped = re.sub(r"[&<>]", lambda m: _ENTITIES[m.group()], escaped)
    # A line break would end the paragraph (or open a list or heading on the next line), and
    # leading spaces or a tab would make a code block.
    return re.sub(r"\s*\n\s*", " ", escaped).strip()


def bounded_message(text: str | None) -> str:
    """A shopper's message as the chat keeps it: at most MAX_MESSAGE_CHARS characters."""
    text = text or ""
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


def filters_line(filters: Filters) -> str:
    return f"Filters: {shown_filters(filters).describe()}" if not filters.is_empty() else ""


def _one_permeaning(values) -> list:
    """One spelling of each meaning ("Dress" and "Dresses": "Dresses", the longer)."""
    chosen: dict[str, object] = {}
    for value in values:
        key = meaning(value)
        if key not in chosen or len(str(value)) > len(str(chosen[key])):
            chosen[key] = value
    return list(chosen.values())


def shown_filters(filters: Filters) -> Filters:
    """The filters as the shopper reads them: "Dress" and "Dresses" (two catalog levels a word
    matched) shown once; the search still uses both."""
    out = Filters()
    for name in filters.names():
        if filters.get(name):
            out = out.with_values(name, _one_permeaning(filters.get(name)))
        if filters.get_excluded(name):
            out = out.with_excluded(name, _one_permeaning(filters.get_excluded(name)))
    return out


_POSSESSIVE = {"Women": "Women's", "Men": "Men's", "Boys": "Boys'", "Girls": "Girls'"}


def describe_results(results: Sequence[Result]) -> str:
    """'5 Women's Heels': the gender and the narrowest category every result shares."""
    genders = {r.get("gender") for r in results}
    gender = genders.pop() if len(genders) == 1 else None
    kind = "products"
    for level in ("articleType", "subCategory", "masterCategory"):
        values = {r.get(level) for r in results}
        if len(values) == 1 and None not in values:
            kind = values.pop()
            break
    prefix = f"{_POSSESSIVE.get(gender, gender)} " if gender else ""
    return f"{len(results)} {prefix}{kind}"


def rank_label(rank: int) -> str:
    """What a shopper reads instead of a cosine score (which can be negative and means nothing
    to them): the product's place in the results."""
    return "Best match" if rank == 1 else f"Match #{rank}"


CAPTION_NAME_CHARS = 48


def caption(result: Result, rank: int = 1) -> str:
    details = " · ".join(str(v) for v in (result.get("articleType"), result.get("gender"),
                                          result.get("baseColour")) if v)
    # Shown as plain text under the picture, not through as_text; the name cut short, so that on
    # a phone's narrow card the details and the rank line stay within the caption's lines.
    name = clipped(result.get("name") or result.id, CAPTION_NAME_CHARS)
    return shown_text(f"{name}\n{details}\n{rank_label(rank)}")


def filter_chips(filters: Filters) -> list[str]:
    """The active filters one by one, as the removable chips beside the chat show them."""
    shown, chips = shown_filters(filters), []
    for name in shown.names():
        chips += [str(v) for v in shown.get(name)]
        chips += [f"not {v}" for v in shown.get_excluded(name)]
    return list(dict.fromkeys(chips))


def without_chips(filters: Filters, kept: Iterable[str]) -> Filters:
    """`filters` less every value whose chip is not in `kept` (the shopper removed it); a chip
    stands for every spelling of its meaning."""
    kept_values = {meaning(k) for k in kept if not str(k).startswith("not ")}
    kept_excluded = {meaning(str(k)[4:]) for k in kept if str(k).startswith("not ")}
    out = Filters()
    for name in filters.names():
        values = [v for v in filters.get(name) if meaning(v) in kept_values]
        if values:
            out = out.with_values(name, values)
        excluded = [v for v in filters.get_excluded(name) if meaning(v) in kept_excluded]
        if excluded:
            out = out.with_excluded(name, excluded)
    return out


def pick_result(results: Sequence[Result], rank: int) -> tuple[int, Result]:
    if not results:
        raise ChatProblem("There are no results yet to pick from: send a photo first.")
    index = len(results) - 1 if rank == -1 else rank - 1
    if not 0 <= index < len(results):
        raise ChatProblem(f"There is no result #{rank}; the last search showed {len(results)}.")
    return index + 1, results[index]


def crop_box(image: Image.Image, crop: tuple[float, float, float, float]) -> Image.Image:
    """Crop by fractions of the width and height; a box too small is refused."""
    part = cut(image, crop)
    if part is None:
        raise ChatProblem("That crop is too small to search; select a larger part of the photo.")
    return part


class Assistant:
    """The conversation logic over one Searcher; holds no per-conversation data (that is ChatState)."""

    def __init__(self, searcher: Searcher, settings: AssistantSettings, look: LookSettings = LookSettings()):
        self.searcher = searcher
        self.settings = settings
        self.look = look

    def new_state(self) -> ChatState:
        return ChatState(model=self.settings.policy.default_model, k=self.settings.policy.k)

    # -- public turns ------------------------------------------------------------------
    def handle_turn(self, state: ChatState, text: str | None = "", image_paths: Iterable[str] = (),
                    crop: tuple[float, float, float, float] | None = None,
                    label: str | None = None) -> tuple[Reply, ChatState]:
        """One message: words and/or photos (only the first photo is used). `crop` cuts the photo
        to one garment (fractions of its size) before it is searched; `label` names the photo in
        the reply ("your cropped photo" when the UI cropped it already)."""
        try:
            return self._turn(state, bounded_message(text), [str(p) for p in image_paths or () if p], crop, label)
        except Exception as exc:  # every failure is a message in the chat, never a stack trace
            return self._failure(exc, state), state

    def more_like(self, state: ChatState, product_id: str) -> tuple[Reply, ChatState]:
        """Products like one already shown (a gallery click), by its stored vector."""
        try:
            product_id = str(product_id)
            known = state.seen.get(product_id)
            meta = dict(known.metadata) if known else (self.searcher.product(state.model, product_id) or {})
            if not known and not meta:
                raise ChatProblem(f"Product {product_id} is not in the catalog any more.")
            label = f"“{meta.get('name') or product_id}”"
            return self._search(replace(state, query=Query("product", label, product_id=product_id)), [])
        except Exception as exc:
            return self._failure(exc, state), state

    def refuse_file(self, state: ChatState, name: str, size: int) -> tuple[Reply, ChatState]:
        """A file the page held back for its size, before uploading it: the same answer as for
        one refused here. The conversation is unchanged."""
        return self._failure(too_large(name, size, self.settings.policy.image_limits), state), state

    def reapply_previous(self, state: ChatState) -> tuple[Reply, ChatState]:
        """The filters the last new photo turned off, back on (the "Re-apply" tap)."""
        try:
            if state.previous_filters.is_empty():
                raise ChatProblem("There are no earlier filters to re-apply.")
            filters = state.previous_filters.merged(state.filters)
            return self.set_filters(replace(state, previous_filters=Filters()), filters)
        except Exception as exc:
            return self._failure(exc, state), state

    def set_filters(self, state: ChatState, filters: Filters) -> tuple[Reply, ChatState]:
        """Replace the filters (a chip removed, filters re-applied) and search again."""
        try:
            state = replace(state, filters=filters)
            if state.query is None:
                return self._words_or_ask(state, [])
            return self._search(state, [])
        except Exception as exc:
            return self._failure(exc, state), state

    def apply_controls(self, state: ChatState, *, model: str | None = None, k: int | None = None,
                       **controls: Sequence[str] | str | None) -> tuple[Reply, ChatState]:
        """The controls beside the chat: model, k, and gender/category/colour (empty = any)."""
        try:
            notes: list[str] = []
            new_model = state.model
            if model and model != state.model:
                new_model = self.settings.policy.model(model)
            new_k = state.k if k is None else self._clamp_k(int(k), notes)
            filters = state.filters
            for name, values in controls.items():
                if name not in CONTROL_FIELDS:
                    raise ChatProblem(f"unknown control {name!r}")
                values = [values] if isinstance(values, str) else [v for v in values or [] if v]
                # typed values are spelled as the catalog spells them, or refused with suggestions
                resolved = self.searcher.resolve(new_model, {CONTROL_FIELDS[name]: values}) if values else None
                filters = filters.with_values(CONTROL_FIELDS[name],
                                              resolved.get(CONTROL_FIELDS[name]) if resolved else [])
            state = replace(state, model=new_model, k=new_k, filters=filters)
            if state.query is None:
                return self._words_or_ask(state, notes)
            return self._search(state, notes)
        except Exception as exc:
            return self._failure(exc, state), state

    # -- the turn ----------------------------------------------------------------------
    def vocabulary(self, model: str) -> Vocabulary:
        """The phrase index of this model's catalog, built once per load of its metadata table."""
        table = self.searcher.collection(model, check_weights=False).metadata
        return table.from_vocabulary("chat-phrases", Vocabulary)

    def _turn(self, state: ChatState, text: str, image_paths: list[str], crop, label) -> tuple[Reply, ChatState]:
        notes: list[str] = []
        understood = Understanding()
        if text.strip():
            try:
                vocabulary = self.vocabulary(state.model)
            except StoreError:
                # No index for this model: still understand "use resnet18" and the like; the
                # search below reports what is missing.
                vocabulary = None
            understood = understand(text, vocabulary)
        model = state.model
        if understood.model and understood.model != model:
            try:
                model = self.settings.policy.model(understood.model)
            except Refused as exc:
                notes.append(exc.message)
        k = state.k if understood.k is None else self._clamp_k(understood.k, notes)
        filters = Filters() if understood.clear else state.filters
        # "Re-apply" is offered right after the new photo that turned the filters off, not later.
        previous = Filters()
        query = state.query
        if image_paths:
            query = self._photo_query(image_paths[0], crop, label)  # a bad file changes nothing
            if len(image_paths) > 1:
                notes.append("I searched with the first photo; send one photo per message.")
        if image_paths and state.query is not None and state.query.kind != "words" \
                and image_paths[0] != state.query.path:
            # A new photo after another search (not a crop of the photo shown) is a new search:
            # the earlier filters are offered back, not applied. Words said before it (alone,
            # or before any photo) were said for it, and stay.
            if not filters.is_empty():
                previous = filters
            filters = Filters()
        for name in understood.cleared_fields:
            filters = filters.without(name)
        filters = filters.merged(understood.filters)
        names, unknown = self._name_words(model, filters, understood.unknown)
        if unknown:
            notes.append(self._not_understood(unknown))
        if not image_paths and not understood.filters.is_empty() and filters == state.filters \
                and state.query is not None:
            # "only black ones" with Black set: say so, rather than show the same gallery silently.
            notes.insert(0, f"{understood.filters.describe()} was already set: these are the same products.")

        if image_paths:
            pass
        elif understood.more_like is not None:
            rank, picked = pick_result(state.results, understood.more_like)
            query = Query("product", f"#{rank} “{picked.get('name') or picked.id}”", product_id=picked.id)
        elif (query is None or query.kind == "words") and (names or not understood.filters.is_empty()):
            # Words alone are a query: what they name, the most typical looking first.
            query = Query("words", "your words", words=names or (query.words if query else ()))
        if names and query is not None and query.kind == "photo":
            query = replace(query, words=names)  # "like this but striped": named ones first

        state = replace(state, model=model, k=k, filters=filters, query=query, previous_filters=previous)
        if query is None:
            self.vocabulary(model)  # no index for this model: say so (with the command) before asking for a photo
            return self._words_or_ask(state, notes)
        if understood.clear and filters.is_empty():
            notes.insert(0, "Filters cleared.")
        if not image_paths and understood.is_empty():
            return Reply("info", HELP, filters_line(filters), notes=tuple(notes)), state
        return self._search(state, notes, plain=understood.clear and filters.is_empty(), announce=bool(image_paths))

    def _words_or_ask(self, state: ChatState, notes: list[str]) -> tuple[Reply, ChatState]:
        """No photo yet: the products the filters name, if any; else ask for a photo."""
        if state.filters.is_empty():
            return Reply("ask_photo", ASK_PHOTO.format(supported=SUPPORTED), notes=tuple(notes)), state
        return self._search(replace(state, query=Query("words", "your filters")), notes)

    def _name_words(self, model: str, filters: Filters, unknown) -> tuple[tuple[str, ...], tuple]:
        """Of the phrases no catalog field holds ("leather", "floral"), those some product's
        name holds within `filters` (then they are a query), and the others (not understood)."""
        if not unknown:
            return (), ()
        try:
            table = self.searcher.collection(model, check_weights=False).metadata.frame()
        except StoreError:
            return (), unknown
        within = table[filters.mask(table)]
        named, rest = [], []
        for phrase, closest in unknown:
            words = phrase.split()
            (named if names_hold(within, words).any() else rest).append((phrase, closest))
        return tuple(w for phrase, _ in named for w in phrase.split()), tuple(rest)

    def _photo_query(self, path: str, crop, label: str | None = None) -> Query:
        """Opened now so a bad file is reported before the state changes; a whole photo's items
        found now too (a shopper's crop is their own framing of one garment)."""
        photo = self._open_photo(path, crop)
        if crop:
            return Query("photo", label or "your cropped photo", path=path, crop=crop)
        if shows_nothing(photo, self.look):
            raise ChatProblem(NOTHING_FOUND)
        items = tuple(items_in(self.searcher, photo, self.look))
        # Each item's colour read once: named in the reply, and the preference of its search.
        readings = tuple(self._colour_reading(photo, item) for item in items)
        colours = tuple(max(r, key=r.get) if r else None for r in readings)
        return Query("photo", label or "your photo", path=path, items=items, item=0 if items else None,
                     colours=colours, readings=readings, reading=readings[0] if readings else None)

    def _colour_reading(self, photo: Image.Image, item: Item | None) -> Mapping[str, float] | None:
        model = self.searcher.colour_model()
        if model is None:
            return None
        return model.probabilities(photo, item.full_mask(photo.size) if item is not None else None)

    def search_item(self, state: ChatState, index: int) -> tuple[Reply, ChatState]:
        """Another item of the photo (a tap on it), searched with the conversation's filters."""
        try:
            query = state.query
            if query is None or not 0 <= index < len(query.items):
                raise ChatProblem("That item is not in the last photo; send the photo again.")
            reading = query.readings[index] if index < len(query.readings) else None
            state = replace(state, query=replace(query, item=index, vectors={}, reading=reading))
            return self._search(state, [])
        except Exception as exc:
            return self._failure(exc, state), state

    def _open_photo(self, path: str, crop) -> Image.Image:
        image = open_image(path, self.settings.policy.image_limits)
        return crop_box(image, crop) if crop else image

    def _query_answer(self, state: ChatState, filters: Filters) -> tuple[Answer, ChatState]:
        query = state.query
        if query.kind == "product":
            return self.searcher.similar_to(state.model, query.product_id, k=state.k, filters=filters), state
        if query.kind == "words":
            return self.searcher.typical(state.model, filters, query.words, k=state.k), state
        # A tuned model switched in mid-conversation (training/background_tune.py) embeds anew.
        weights = self.searcher.embedder(state.model).weights_id
        vector = query.vectors.get(state.model) if query.embedded_with.get(state.model) == weights else None
        item = query.searched_item
        if vector is None:
            self.searcher.collection(state.model)  # refuse a missing index or other weights before embedding
            photo = self._open_photo(query.path, query.crop)
            # A shopper's crop, or an item the parser cut out, is framed already: searched as it
            # is. A whole photo is searched with its zoomed views too (search/query_views.py).
            reading = query.reading if query.reading is not None else self._colour_reading(photo, item)
            if item is not None:
                photo = item.cut_out(photo)
            vector = self.searcher.embed(state.model, [photo], AS_IS if query.crop or item is not None else None)[0]
            scope = kind_scope(self.searcher, state.model, vector, photo) if item is None else Filters()
            query = replace(query, vectors={**query.vectors, state.model: vector},
                            embedded_with={**query.embedded_with, state.model: weights}, reading=reading,
                            scopes={**query.scopes, state.model: scope})
            state = replace(state, query=query)
        within = item_filters(self.searcher, state.model, item, filters)
        gendered = within
        if item is not None and not filters.get("gender"):
            gendered = with_gender(self.searcher, state.model, within, query.gender)
        # A colour the shopper named (a filter) says more than the one read from the pixels.
        reading = None if filters.get("baseColour") else state.query.reading
        # Words a product name holds ("striped"): the nearest so named come first.
        wide = max(state.k, NAMED_CANDIDATES) if query.words else state.k
        # A colour or gender word keeps the photo's kind (operations/keep_kind.py).
        if item is None:  # a whole photo or a crop: within the kind it shows, if the kind model reads one
            answer = search_photo(self.searcher, state.model, vector, wide, within,
                                  query.scopes.get(state.model, Filters()), colour=reading)
        else:
            scope = item_filters(self.searcher, state.model, item, Filters())
            answer = search_keeping_kind(self.searcher, state.model, vector, wide, gendered, within=scope,
                                         colour=reading)
            if not answer.results and gendered != within:  # none of the photo's gender in this category
                answer = search_keeping_kind(self.searcher, state.model, vector, wide, within, within=scope,
                                             colour=reading)
        if query.words:
            answer = named_first(answer, query.words, state.k)
        if item is not None and query.gender is None and query.item == 0:
            state = replace(state, query=replace(state.query, gender=photo_gender(answer.results)))
        return answer, state

    def _narrowest(self, model: str, filters: Filters) -> str:
        collection = self.searcher.collection(model, check_weights=False)
        counts = {name: collection.count_matching(filters.only(name)) for name in filters.names()}
        return min(counts, key=lambda name: counts[name])

    def _search(self, state: ChatState, notes: list[str], plain: bool = False,
                announce: bool = False) -> tuple[Reply, ChatState]:
        """`plain`: the headline counts the products without naming their gender or kind (right
        after "clear filters", "3 Women's products" read as if the filter were still on).
        `announce`: say which items the photo holds (a new photo; not a tap on one of them)."""
        asked = state.filters
        filters, dropped = asked, []
        with self.searcher.steady():  # one model's weights and index for the whole turn
            answer, state = self._query_answer(state, asked)
            # Nothing matches: drop the filter that matches the fewest products, then the next...
            while not answer.results and not filters.is_empty():
                name = self._narrowest(state.model, filters)
                dropped.append(filters.only(name).describe())
                filters = filters.without(name)
                answer, state = self._query_answer(state, filters)
        if dropped:
            notes.insert(0, f"No product matches {asked.describe()}; without {' and '.join(dropped)}:"
                         if answer.results else f"No product matches {asked.describe()}.")
        results = tuple(answer.results)
        seen = {**state.seen, **{r.id: r for r in results}}
        state = replace(state, filters=filters, results=results, seen=seen)
        query = state.query
        item = query.searched_item if query.kind == "photo" else None
        label = f"the {item.kind} in {query.label}" if item is not None else query.label
        if results and query.kind == "words":
            described = f"{len(results)} products" if plain else describe_results(results)
            named = f" (“{' '.join(query.words)}” in their names first)" if query.words else ""
            headline = f"{described} for {label}{named}, the most typical looking first"
        elif results:
            described = f"{len(results)} products" if plain else describe_results(results)
            headline = f"{described} like {label}, by {model_label(state.model)}"
        else:
            headline = f"No products found like {label}, by {model_label(state.model)}: the index is empty."
        items_line = _items_line(query) if announce and item is not None else ""
        if announce and item is None and query.kind == "photo" and query.reading and not asked.get("baseColour"):
            seen = max(query.reading, key=query.reading.get)
            items_line = f"The colour I see is {seen.lower()}: say another colour (or “not {seen.lower()}”) to change it."
        return Reply("results", headline, filters_line(filters), results, tuple(notes), items_line), state

    # -- helpers -----------------------------------------------------------------------
    def _clamp_k(self, k: int, notes: list[str]) -> int:
        clamped = self.settings.policy.clamp(k)
        if clamped != k:
            notes.append(f"I show between 1 and {self.settings.policy.max_k} products; showing {clamped}.")
        return clamped

    def _not_understood(self, unknown) -> str:
        """"I didn't understand “pinkk” (closest: Pink)": each phrase with the catalog values
        spelled most like it."""
        parts = []
        for phrase, closest in unknown:
            phrase = clipped(phrase)
            parts.append(f"“{phrase}” (closest: {', '.join(closest)})" if closest else f"“{phrase}”")
        return f"I didn't understand {', '.join(parts)}, so I left it out."

    def _failure(self, exc: Exception, state: ChatState) -> Reply:
        return Reply("error", self.explain(exc, state.model))

    def explain(self, exc: Exception, model: str) -> str:
        """Any failure of a search, in the chat's words."""
        limit = self.settings.policy.max_upload_bytes / 1e6
        if isinstance(exc, ImageError):
            # the reason may name the formats already: say them once
            advice = (f"Send a photo up to {limit:.0f} MB." if SUPPORTED in str(exc) else
                      f"Send a photo as {SUPPORTED}, up to {limit:.0f} MB.")
            return f"I couldn't use that file: {exc}. {advice}"
        if isinstance(exc, (ChatProblem, Refused)):
            return str(exc)
        if isinstance(exc, NoIndex):
            # the turn may have switched models ("use resnet18"): the error names the missing one
            return (f"There is no product index for {model_label(exc.model)} yet. Build it first with: {exc.hint}"
                    if exc.hint else f"There is no product index for {model_label(exc.model)} yet.")
        if isinstance(exc, (WeightsMismatch, WeightsError, UnknownFilterValue)):
            return str(exc)
        if isinstance(exc, StoreUnreachable) or _is_connection_error(exc):
            self.searcher.forget_connection()  # the next message reconnects
            return (f"The product index (Chroma) is not reachable right now ({exc}). Try again in a moment.")
        if isinstance(exc, NoProduct):
            return f"Product {exc.product_id} is not in the catalog any more."
        if isinstance(exc, StoreError):
            return f"The product index cannot answer right now: {exc}"
        if _is_connection_error(exc):
            self.searcher.forget_connection()  # the next message reconnects
            return (f"The product index (Chroma) is not reachable right now ({type(exc).__name__}: {exc}). "
                    "Try again in a moment.")
        log.exception("chat turn failed", exc_info=exc)
        return f"Sorry, something went wrong on our side ({type(exc).__name__}: {exc}). Please try again."


# How many of a photo's nearest products are looked through for those named with its words.
NAMED_CANDIDATES = 50


def named_first(answer: Answer, words: Sequence[str], k: int) -> Answer:
    """The answer's products whose names hold `words` first, each part in its order, cut to k."""
    table = pd.DataFrame({"name": [r.get("name") for r in answer.results]})
    named = names_hold(table, words) if len(table) else np.zeros(0, dtype=bool)
    ordered = [r for r, n in zip(answer.results, named) if n] + [r for r, n in zip(answer.results, named) if not n]
    return replace(answer, results=ordered[:k])


def _items_line(query: Query) -> str:
    """'I see a white top, blue trousers or skirt and brown shoes: tap one to search it.'"""
    seen = describe_items([i.kind for i in query.items], list(query.colours) or None)
    return f"I see {seen}." if len(query.items) == 1 else f"I see {seen}: tap one to search it."


def _is_connection_error(exc: BaseException) -> bool:
    names = {"ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError", "TransportError",
             "ChromaError", "InternalError"}
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in names:
            return True
        if type(exc).__module__.split(".")[0] in ("httpx", "httpcore", "chromadb"):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


__all__ = ["Assistant", "ChatProblem", "ChatState", "Query", "Reply", "MAX_MESSAGE_CHARS", "bounded_message", "as_text", "caption", "describe_results",
           "filter_chips", "without_chips", "rank_label",
           "filters_line", "pick_result", "CONTROL_FIELDS", "HELP"]
