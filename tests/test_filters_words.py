"""Words -> filters and follow-up intents, against a vocabulary shaped like the real catalog's."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.words import Vocabulary, stem, understand, words
from vectorstore import CATEGORY, Filters

# A vocabulary as `Searcher.vocabulary()` returns it (a slice of the Kaggle catalog's values).
VOCAB = {
    "gender": ["Boys", "Girls", "Men", "Unisex", "Women"],
    "masterCategory": ["Accessories", "Apparel", "Footwear", "Personal Care"],
    "subCategory": ["Bags", "Bottomwear", "Dress", "Eyewear", "Flip Flops", "Sandal", "Shoes", "Skin", "Topwear", "Watches"],
    "articleType": ["Casual Shoes", "Dresses", "Flip Flops", "Handbags", "Heels", "Jeans", "Shirts", "Sports Shoes",
                    "Sunglasses", "Tops", "Tshirts", "Watches"],
    "baseColour": ["Black", "Grey", "Navy Blue", "Off White", "Red", "Skin", "White"],
    "season": ["Fall", "Spring", "Summer", "Winter"],
    "usage": ["Casual", "Formal", "NA", "Smart Casual", "Sports"],
    "year": [2011, 2012],
}
INDEX = Vocabulary(VOCAB)


def fields(text: str, vocabulary=INDEX) -> dict:
    return {k: set(v) for k, v in understand(text, vocabulary).filters.fields.items()}


@pytest.mark.parametrize("text, expected", [
    ("women", {"gender": {"Women"}}),
    ("WOMEN", {"gender": {"Women"}}),
    ("ladies", {"gender": {"Women"}}),
    ("men's", {"gender": {"Men"}}),
    ("mens", {"gender": {"Men"}}),
    ("kids", {"gender": {"Boys", "Girls"}}),
    ("boys", {"gender": {"Boys"}}),
    ("footwear", {CATEGORY: {"Footwear"}}),
    ("shoes", {CATEGORY: {"Footwear"}}),
    ("casual shoes", {CATEGORY: {"Casual Shoes"}}),
    ("heel", {CATEGORY: {"Heels"}}),
    ("dresses", {CATEGORY: {"Dress", "Dresses"}}),
    ("watches", {CATEGORY: {"Watches"}}),
    ("t-shirt", {CATEGORY: {"Tshirts"}}),
    ("t shirts", {CATEGORY: {"Tshirts"}}),
    ("flip-flops", {CATEGORY: {"Flip Flops"}}),
    ("black", {"baseColour": {"Black"}}),
    ("gray", {"baseColour": {"Grey"}}),
    ("navy blue", {"baseColour": {"Navy Blue"}}),
    ("navy", {"baseColour": {"Navy Blue"}}),
    ("off-white", {"baseColour": {"Off White"}}),
    ("summer", {"season": {"Summer"}}),
    ("autumn", {"season": {"Fall"}}),
    ("casual", {"usage": {"Casual"}}),
    ("smart casual", {"usage": {"Smart Casual"}}),
    ("sporty", {"usage": {"Sports"}}),
    ("Ladies' black heels for summer", {"gender": {"Women"}, CATEGORY: {"Heels"}, "baseColour": {"Black"},
                                        "season": {"Summer"}}),
    ("men's shoes", {"gender": {"Men"}, CATEGORY: {"Footwear"}}),
    ("black or white", {"baseColour": {"Black", "White"}}),
    ("skin", {CATEGORY: {"Skin"}}),  # a colour and a category: the category wins, as documented
])
def test_words_become_catalog_values(text, expected):
    assert fields(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "hello there", "I like this", "what do you have?", "na", "NA items",
                                  "2012", "more like the second one"])
def test_words_that_name_nothing_give_no_filter(text):
    assert understand(text, INDEX).filters.is_empty()


def test_synonym_needs_its_target_in_this_catalog():
    small = Vocabulary({"gender": ["Men", "Women"], "masterCategory": ["Apparel"]})
    assert understand("kids", small).filters.is_empty()  # no Boys/Girls here
    assert understand("shoes", small).filters.is_empty()  # no Footwear here
    assert fields("ladies", small) == {"gender": {"Women"}}


def test_plain_mapping_and_broken_vocabularies_work():
    assert fields("women", VOCAB) == {"gender": {"Women"}}
    for broken in (None, {}, {"gender": None}, {"gender": [None, 3, "", "  "]}, "not a mapping"):
        assert understand("women black", broken).filters.is_empty()


@pytest.mark.parametrize("text, intent, value", [
    ("more like the second one", "more_like", 2),
    ("More like #3", "more_like", 3),
    ("similar to number 4", "more_like", 4),
    ("like the 2nd one", "more_like", 2),
    ("more like the last one", "more_like", -1),
    ("show 10", "k", 10),
    ("show me the top 8", "k", 8),
    ("twelve results please", "k", 12),
    ("top 3", "k", 3),
    ("use resnet18", "model", "resnet18"),
    ("switch to ResNet-34", "model", "resnet34"),
    ("res net 50 please", "model", "resnet50"),
    ("use resnet101", "model", "resnet101"),  # understood; the chat says it is not offered
    ("clear filters", "clear", True),
    ("remove all filters", "clear", True),
    ("reset", "clear", True),
    ("start over", "clear", True),
])
def test_follow_up_intents(text, intent, value):
    assert getattr(understand(text, INDEX), intent) == value


def test_follow_up_words_are_not_filters():
    u = understand("top 3 black ones", INDEX)
    assert u.k == 3 and fields("top 3 black ones") == {"baseColour": {"Black"}}  # "top" is not "Tops"
    assert fields("tops") == {CATEGORY: {"Tops"}}
    u = understand("show men instead", INDEX)
    assert u.k is None and fields("show men instead") == {"gender": {"Men"}}
    u = understand("only black ones", INDEX)
    assert u.k is None and u.more_like is None and fields("only black ones") == {"baseColour": {"Black"}}


def test_any_field_and_negation():
    u = understand("any colour", INDEX)
    assert u.cleared_fields == ("baseColour",) and not u.clear
    assert "gender" in understand("remove the gender filter", INDEX).cleared_fields
    u = understand("not black", INDEX)
    assert u.filters.get_excluded("baseColour") == ("Black",) and not u.filters.get("baseColour")
    assert [m.text for m in u.negated] == ["black"] and not u.is_empty()
    u = understand("women's shoes but not black or without heels", INDEX)
    assert u.filters.get("gender") == ("Women",) and u.filters.get_excluded("baseColour") == ("Black",)
    assert "Heels" in u.filters.get_excluded(CATEGORY) and "Heels" not in u.filters.get(CATEGORY)


def test_a_value_is_never_both_wanted_and_excluded():
    black = Filters({"baseColour": ("Black", "Red")})
    out = black.merged(understand("not black", INDEX).filters)
    assert out.get("baseColour") == ("Red",) and out.get_excluded("baseColour") == ("Black",)
    back = out.merged(understand("only black ones", INDEX).filters)
    assert back.get("baseColour") == ("Black",) and not back.get_excluded("baseColour")
    assert out.without("baseColour").is_empty()
    assert out.describe() == "Red · not Black"
    assert out.to_where() == {"$and": [{"baseColour": {"$in": ["Red"]}}, {"baseColour": {"$nin": ["Black"]}}]}


def test_normalisation_helpers():
    assert [stem(w) for w in ("shoes", "dresses", "ladies", "watches", "dress", "jeans", "bus")] == \
        ["shoe", "dress", "lady", "watch", "dress", "jean", "bus"]
    assert words("Men’s T-Shirts, 2x!") == ["men", "t", "shirts", "2x"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200),
                 st.lists(st.sampled_from(["more", "like", "the", "#", "show", "top", "99999", "resnet", "-",
                                           "clear", "any", "not", "women", "'s", "t", "shirt", "navy", "’"]),
                          max_size=25).map(" ".join)))
def test_understand_never_raises(text):
    u = understand(text, INDEX)
    assert u.k is None or 0 <= u.k <= 999
    for name, values in u.filters.fields.items():
        known = VOCAB.get(name, []) if name != CATEGORY else \
            VOCAB["masterCategory"] + VOCAB["subCategory"] + VOCAB["articleType"]
        assert set(values) <= set(known)
