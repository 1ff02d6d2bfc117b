"""Words in a chat message -> search filters and follow-up intents.

Words are matched against the catalog's own vocabulary (`Searcher.vocabulary(model)`), so
whatever a shop's `styles.csv` calls things is understood without a list kept here: case,
plurals, possessives ("men's") and hyphens ("t-shirt") are normalised on both sides. A short
table of synonyms adds the words shoppers use that catalogs don't ("ladies", "shoes",
"autumn"); a synonym counts only when its target exists in this catalog.

`understand()` never raises: it runs on anything a shopper types.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from catalog.products import CATEGORY_FIELDS
from catalog.text import stem, words
from embedding.registry import model_words
from vectorstore.filters import CATEGORY, Filters

# Vocabulary fields matched from words, in the order a phrase found in several is given to
# one of them ("skin" is a colour and a category: the category wins).
WORD_FIELDS = ("gender", *CATEGORY_FIELDS, "baseColour", "usage", "season")
# Catalog values that are placeholders, not words a shopper means.
IGNORED_VALUES = {"na", "n/a", "none", "other", "unknown", "-"}
MAX_PHRASE = 6

# phrase (normalised words) -> (field, catalog values); field "category" means any level.
SYNONYMS: dict[str, tuple[str, tuple[str, ...]]] = {
    # gender
    "woman": ("gender", ("Women",)), "lady": ("gender", ("Women",)), "female": ("gender", ("Women",)),
    "feminine": ("gender", ("Women",)), "for her": ("gender", ("Women",)),
    "man": ("gender", ("Men",)), "male": ("gender", ("Men",)), "gent": ("gender", ("Men",)),
    "gentleman": ("gender", ("Men",)), "gentlemen": ("gender", ("Men",)), "guy": ("gender", ("Men",)),
    "masculine": ("gender", ("Men",)), "for him": ("gender", ("Men",)),
    "kid": ("gender", ("Boys", "Girls")), "child": ("gender", ("Boys", "Girls")),
    "children": ("gender", ("Boys", "Girls")), "junior": ("gender", ("Boys", "Girls")),
    # category
    "shoe": (CATEGORY, ("Footwear",)), "sneaker": (CATEGORY, ("Casual Shoes", "Sports Shoes")),
    "trainer": (CATEGORY, ("Sports Shoes",)), "running shoe": (CATEGORY, ("Sports Shoes",)),
    "clothe": (CATEGORY, ("Apparel",)), "clothing": (CATEGORY, ("Apparel",)),
    "garment": (CATEGORY, ("Apparel",)), "tee": (CATEGORY, ("Tshirts",)),
    "pant": (CATEGORY, ("Trousers",)), "jewelry": (CATEGORY, ("Jewellery",)),
    "purse": (CATEGORY, ("Handbags", "Clutches")), "glass": (CATEGORY, ("Sunglasses",)),
    "shade": (CATEGORY, ("Sunglasses",)), "sweater": (CATEGORY, ("Sweaters",)),
    "jumper": (CATEGORY, ("Sweaters",)), "pullover": (CATEGORY, ("Sweaters",)),
    "hoodie": (CATEGORY, ("Sweatshirts",)), "boot": (CATEGORY, ("Booties",)),
    "bag": (CATEGORY, ("Bags",)), "wristwatch": (CATEGORY, ("Watches",)),
    # colour
    "gray": ("baseColour", ("Grey",)), "navy": ("baseColour", ("Navy Blue",)),
    "dark blue": ("baseColour", ("Navy Blue",)), "golden": ("baseColour", ("Gold",)),
    "violet": ("baseColour", ("Purple",)), "multicolour": ("baseColour", ("Multi",)),
    "multicolor": ("baseColour", ("Multi",)), "multicoloured": ("baseColour", ("Multi",)),
    "multicolored": ("baseColour", ("Multi",)), "colourful": ("baseColour", ("Multi",)),
    "colorful": ("baseColour", ("Multi",)),
    # season
    "autumn": ("season", ("Fall",)), "autumnal": ("season", ("Fall",)), "summery": ("season", ("Summer",)),
    "wintry": ("season", ("Winter",)),
    # usage
    "sport": ("usage", ("Sports",)), "sporty": ("usage", ("Sports",)), "sportswear": ("usage", ("Sports",)),
    "gym": ("usage", ("Sports",)), "athletic": ("usage", ("Sports",)), "office": ("usage", ("Formal",)),
    "work": ("usage", ("Formal",)), "business": ("usage", ("Formal",)), "festive": ("usage", ("Ethnic",)),
    "traditional": ("usage", ("Ethnic",)), "partywear": ("usage", ("Party",)), "everyday": ("usage", ("Casual",)),
}

# Words that name a field, for "any colour", "clear the colour filter".
FIELD_WORDS = {
    "colour": ("baseColour",), "color": ("baseColour",), "gender": ("gender",),
    "category": (CATEGORY, *CATEGORY_FIELDS), "categorie": (CATEGORY, *CATEGORY_FIELDS),
    "type": (CATEGORY, *CATEGORY_FIELDS), "kind": (CATEGORY, *CATEGORY_FIELDS),
    "season": ("season",), "usage": ("usage",), "occasion": ("usage",), "style": ("usage",),
}
# Words a message holds around what it asks ("show me something like this please"): not worth
# naming as "not understood".
FILLER = set("""a an the and or but of for to in on at with from by as is are am be it its this that these those
one ones some any all just only also too very really so please thanks thank hi hello hey i im me my mine you
your we our want wanted need would like love looking look find finding show see get give got have has can could
do does did similar same something anything thing things stuff item items product products result results
match matches photo picture pic image pics pictures pair pairs more less other another different else same
instead maybe kind sort what which how about here there now again new use using model by version
make made wear wearing buy them they their than then hash number no yes ok okay cool nice great good""".split())

NEGATIONS = {"not", "no", "without", "except", "non", "excluding"}
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
            "eighth": 8, "ninth": 9, "tenth": 10, "last": -1}
# "one" is left out: "the second one", "find one like this" are not counts.
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
           "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20}
_NUMBER = r"(\d{1,3}|" + "|".join(NUMBERS) + r")"
_ORDINAL = r"(" + "|".join(ORDINALS) + r"|\d{1,3}(?:st|nd|rd|th))"

_CLEAR = re.compile(r"\b(?:clear|reset|remove|drop|delete|no|without|forget)\s+(?:all\s+|the\s+|my\s+|any\s+)?"
                    r"(?:the\s+)?filters?\b|\bstart\s+over\b|\bunfilter(?:ed)?\b|"
                    r"^\s*(?:clear|reset)(?:\s+(?:all|everything|it))?\s*$")
_CLEAR_FIELD = re.compile(r"\b(?:any|all|every|whatever)\s+(colou?rs?|genders?|categor(?:y|ies)|types?|kinds?|"
                          r"seasons?|usages?|occasions?|styles?)\b|"
                          r"\b(?:clear|remove|drop|no|without|forget)\s+(?:the\s+)?(colou?r|gender|category|type|"
                          r"season|usage|occasion|style)\s+filters?\b")
_MORE_LIKE = [
    re.compile(r"\b(?:more\s+like|similar\s+to|like)\s+(?:the\s+|that\s+)?" + _ORDINAL + r"(?:\s+one)?\b"),
    re.compile(r"\b(?:more\s+like|similar\s+to|like)\s+(?:the\s+)?(?:hash\s+|number\s+|no\.?\s*|item\s+|result\s+|"
               r"product\s+)(\d{1,3})\b"),
    re.compile(r"\b(?:more\s+like|similar\s+to)\s+(\d{1,3})\b"),
]
_SHOW_K = [
    re.compile(r"\b(?:show|give|see|display|return|find|get|list)(?:\s+me)?(?:\s+the)?(?:\s+top)?(?:\s+best)?\s+"
               + _NUMBER + r"\b"),
    re.compile(r"\btop\s+" + _NUMBER + r"\b"),
    re.compile(r"\b" + _NUMBER + r"\s+(?:more\s+)?(?:results?|products?|items?|matches|options|suggestions|ones)\b"),
]
# "use resnet101": a ResNet by number, registered or not (the caller says which are offered).
_RESNET = re.compile(r"\bres\s*-?\s*net\s*-?\s*(\d{1,4})\b")


def _model_names() -> tuple[re.Pattern, dict[str, str]]:
    """Any registered model's name, label or words ("use lite0", "use efficientnet"), normalised
    as a message is, longest first."""
    named = {" ".join(words(word)): name for word, name in model_words().items()}
    named.pop("", None)
    alternatives = "|".join(re.escape(w) for w in sorted(named, key=len, reverse=True))
    return re.compile(r"\b(" + alternatives + r")\b"), named






_MODEL_NAMED, _MODEL_BY_WORDS = _model_names()


def _keys(tokens: list[str]) -> tuple[str, str]:
    stems = [stem(t) for t in tokens]
    return " ".join(stems), "".join(stems)


@dataclass(frozen=True)
class Match:
    text: str           # the words as typed
    field: str          # "gender", "category", "baseColour", ...
    values: tuple       # catalog values
    negated: bool = False


@dataclass(frozen=True)
class Understanding:
    """What one message asks for. Empty fields mean "not mentioned"."""
    filters: Filters = field(default_factory=Filters)
    matches: tuple[Match, ...] = ()
    clear: bool = False                  # "clear filters"
    cleared_fields: tuple[str, ...] = ()  # "any colour"
    more_like: int | None = None         # 1-based rank in the last results; -1 = the last one
    k: int | None = None                 # "show 10"
    model: str | None = None             # "use resnet18" (maybe a model not offered: the caller checks)
    # Phrases not understood, each with the catalog values spelled most like it:
    # (("pinkk", ("Pink",)), ("size 42", ())).
    unknown: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def negated(self) -> tuple[Match, ...]:
        return tuple(m for m in self.matches if m.negated)

    def is_empty(self) -> bool:
        return (self.filters.is_empty() and not self.clear and not self.cleared_fields
                and self.more_like is None and self.k is None and self.model is None and not self.negated)


class Vocabulary:
    """Phrase index over one catalog vocabulary; build once per vocabulary, reuse per message."""

    def __init__(self, vocabulary: Mapping[str, list] | None):
        self.index: dict[str, tuple[str, tuple]] = {}
        self.max_len = 1
        self.spellings: dict[str, str] = {}  # lower-case word or value -> a catalog value, for "closest"
        known: dict[str, dict[str, str]] = {}  # output field -> lower value -> catalog spelling
        vocabulary = vocabulary if isinstance(vocabulary, Mapping) else {}
        for source in WORD_FIELDS:
            target = CATEGORY if source in CATEGORY_FIELDS else source
            for value in vocabulary.get(source) or ():
                if not isinstance(value, str) or value.strip().casefold() in IGNORED_VALUES:
                    continue
                known.setdefault(target, {})[value.casefold()] = value
                self.spellings.setdefault(value.casefold(), value)
                tokens = words(value)
                if not tokens or len(tokens) > MAX_PHRASE:
                    continue
                self.max_len = max(self.max_len, len(tokens))
                for key in _keys(tokens):
                    self._add(key, target, value)
        for phrase, (target, values) in SYNONYMS.items():
            present = tuple(known.get(target, {})[v.casefold()] for v in values
                            if v.casefold() in known.get(target, {}))
            if present:
                tokens = words(phrase)
                self.max_len = max(self.max_len, len(tokens))
                for key in _keys(tokens):
                    # A synonym replaces the literal reading: "shoes" means all footwear, not
                    # only the subCategory that happens to be called "Shoes".
                    self.index[key] = (target, present)

    def _add(self, key: str, target: str, value: str) -> None:
        current = self.index.get(key)
        if current is None:
            self.index[key] = (target, (value,))
        elif current[0] == target:
            if value not in current[1]:
                self.index[key] = (target, current[1] + (value,))
        # else: the phrase already names an earlier field in WORD_FIELDS order; keep that one.

    def closest(self, phrase: str, n: int = 3) -> tuple[str, ...]:
        """Catalog values spelled most like `phrase` ("pinkk" -> Pink)."""
        found = difflib.get_close_matches(phrase.casefold(), list(self.spellings), n=n, cutoff=0.7)
        return tuple(dict.fromkeys(self.spellings[f] for f in found))

    def find(self, tokens: list[str], rest: list[int] | None = None) -> list[Match]:
        """Longest phrases first, left to right; a phrase right after "not"/"without" is negated.
        `rest`, when given, receives the positions of the tokens no phrase took."""
        out: list[Match] = []
        i = 0
        while i < len(tokens):
            for n in range(min(self.max_len, len(tokens) - i), 0, -1):
                span = tokens[i:i + n]
                spaced, joined = _keys(span)
                hit = self.index.get(spaced) or self.index.get(joined)
                if hit:
                    negated = i > 0 and tokens[i - 1] in NEGATIONS
                    out.append(Match(" ".join(span), hit[0], hit[1], negated))
                    i += n
                    break
            else:
                if rest is not None:
                    rest.append(i)
                i += 1
        return out


def _number(text: str) -> int | None:
    if text in NUMBERS:
        return NUMBERS[text]
    digits = re.sub(r"\D", "", text)
    return int(digits) if digits else None


def _ordinal(text: str) -> int | None:
    if text in ORDINALS:
        return ORDINALS[text]
    return _number(text)


def _cleared_fields(found: list[re.Match]) -> tuple[str, ...]:
    out: list[str] = []
    for hit in found:
        word = stem(hit.group(1) or hit.group(2) or "")
        for name in FIELD_WORDS.get(word, ()):
            if name not in out:
                out.append(name)
    return tuple(out)


def understand(text, vocabulary: Mapping[str, list] | Vocabulary | None) -> Understanding:
    """Filters and follow-up intents in one message. Never raises."""
    try:
        return _understand(text, vocabulary)
    except Exception:  # a shopper's words must never break the chat; nothing understood is the answer
        return Understanding()


def _understand(text, vocabulary) -> Understanding:
    text = "" if text is None else str(text)
    if len(text) > 2000:
        text = text[:2000]  # a message, not a document: keeps matching cheap on pasted junk
    index = vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary(vocabulary)
    # "#" survives here for "more like #2"; everything else is plain lower-case words.
    lowered = " ".join(words(text.replace("#", " hash ")))
    spans: list[tuple[int, int]] = []

    def first(patterns) -> re.Match | None:
        for pattern in patterns:
            hit = pattern.search(lowered)
            if hit:
                spans.append(hit.span())
                return hit
        return None

    def every(pattern) -> list[re.Match]:
        hits = list(pattern.finditer(lowered))
        spans.extend(h.span() for h in hits)
        return hits

    clear = bool(every(_CLEAR))
    cleared = _cleared_fields(every(_CLEAR_FIELD))
    hit = first(_MORE_LIKE)
    more_like = _ordinal(hit.group(1)) if hit else None
    hit = first(_SHOW_K)
    k = _number(hit.group(1)) if hit else None
    hit = first([_MODEL_NAMED])
    model = _MODEL_BY_WORDS[hit.group(1)] if hit else None
    if model is None:
        hit = first([_RESNET])
        model = f"resnet{int(hit.group(1))}" if hit else None

    # Words inside the follow-up phrases are not filters ("top 3" is not "Tops").
    chars = list(lowered)
    for begin, end in spans:
        chars[begin:end] = " " * (end - begin)
    tokens = "".join(chars).split()
    rest: list[int] = []
    matches = index.find(tokens, rest)
    unknown = _unknown(tokens, rest, index)
    filters = Filters()
    for m in matches:
        if m.negated:
            filters = filters.with_excluded(m.field, m.values)
        else:
            filters = filters.with_values(m.field, list(filters.get(m.field)) + list(m.values))
    return Understanding(filters=filters, matches=tuple(matches), clear=clear, cleared_fields=cleared,
                         more_like=more_like, k=k, model=model, unknown=unknown)


def _unknown(tokens: list[str], rest: list[int], index: Vocabulary) -> tuple:
    """Runs of words no phrase took, less filler, each with its closest catalog values; a
    number belongs to the word before it ("size 42")."""
    if not index.spellings:
        return ()  # no vocabulary (no index yet): nothing can be judged
    ignored = FILLER | NEGATIONS | set(FIELD_WORDS) | set(ORDINALS) | set(NUMBERS)
    runs: list[list[str]] = []
    last = -2
    for i in rest:
        token = tokens[i]
        if token in ignored or stem(token) in ignored or stem(token) in FIELD_WORDS:
            last = -2
            continue
        if token.isdigit() and not (runs and last == i - 1):
            continue
        if runs and last == i - 1:
            runs[-1].append(token)
        else:
            runs.append([token])
        last = i
    out = []
    for run in runs[:5]:
        phrase = " ".join(run)
        closest = index.closest(phrase) or tuple(dict.fromkeys(
            value for w in run if not w.isdigit() for value in index.closest(w)))
        out.append((phrase, closest[:3]))
    return tuple(out)
