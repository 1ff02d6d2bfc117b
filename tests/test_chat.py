"""Conversation turns over a real Searcher (seeded random ResNets, real embedded Chroma)."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assistant.chat import Assistant, caption, describe_results
from assistant.settings import AssistantSettings
from operations import SearchPolicy
from search import AS_IS, Searcher
from tests.conftest import KINDS, draw_product
from vectorstore import StoreSettings, make_client

SETTINGS = AssistantSettings(policy=SearchPolicy(models=("resnet18", "resnet50"), default_model="resnet50", k=5, max_k=12),
                             index_hint="python app.py index --catalog SHOP --db DB --weights random")


@pytest.fixture(scope="module")
def assistant(searcher) -> Assistant:
    return Assistant(searcher, SETTINGS)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A shopper's photo of a black heel: drawn like the catalog's heels, but not one of them."""
    gender, master, sub, article, colour, rgb, shape = KINDS[0]
    path = tmp_path_factory.mktemp("uploads") / "heel.jpg"
    draw_product(999_001, rgb, shape, size=(120, 160)).save(path, quality=85)
    return path


@pytest.fixture(scope="module")
def first(assistant, photo):
    reply, state = assistant.handle_turn(assistant.new_state(), "", [str(photo)])
    return reply, state


def test_photo_gives_top_k_with_a_sentence(first, searcher):
    reply, state = first
    assert reply.kind == "results", reply
    assert len(reply.results) == 5
    assert re.fullmatch(r"5 .+ like your photo, by ResNet-50", reply.headline), reply.headline
    assert reply.headline == f"{describe_results(reply.results)} like your photo, by ResNet-50"
    scores = [r.score for r in reply.results]
    assert scores == sorted(scores, reverse=True)
    assert state.query.kind == "photo" and set(state.query.vectors) == {"resnet50"}
    assert [r.id for r in state.results] == [r.id for r in reply.results]
    # the same answer as the searcher gives for the same image
    from catalog import open_image
    direct = searcher.search_image("resnet50", open_image(state.query.path), k=5)
    assert [r.id for r in direct.results] == [r.id for r in reply.results]
    # captions carry name, article type, gender, colour and the rank (never a score)
    text = caption(reply.results[0], 1)
    r = reply.results[0]
    for part in (r.get("name"), r.get("articleType"), r.get("gender"), r.get("baseColour")):
        assert str(part) in text
    assert text.endswith("\nBest match") and caption(reply.results[1], 2).endswith("\nMatch #2")
    assert f"{r.score:.3f}" not in text and "similarity" not in text


def test_words_with_the_photo_filter_and_are_echoed(assistant, photo):
    reply, state = assistant.handle_turn(assistant.new_state(), "women's shoes please", [str(photo)])
    assert reply.filters_line == "Filters: Women · Footwear"
    assert reply.results and all(r.get("gender") == "Women" and r.get("masterCategory") == "Footwear"
                                 for r in reply.results)
    # the fixture has 4 women's heels and no other women's footwear
    assert reply.headline == "4 Women's Heels like your photo, by ResNet-50"
    assert state.filters.get("gender") == ("Women",)


def test_follow_ups_reuse_the_photo_without_embedding_again(assistant, first, monkeypatch):
    _, state = first
    calls = []
    real_embed = assistant.searcher.embed
    monkeypatch.setattr(assistant.searcher, "embed", lambda *a, **kw: calls.append(a) or real_embed(*a, **kw))

    reply, state = assistant.handle_turn(state, "show men instead")
    assert reply.kind == "results" and reply.results
    assert {r.get("gender") for r in reply.results} == {"Men"}
    reply, state2 = assistant.handle_turn(state, "only brown ones")
    assert {(r.get("gender"), r.get("baseColour")) for r in reply.results} == {("Men", "Brown")}
    assert reply.filters_line == "Filters: Men · Brown"
    reply, state3 = assistant.handle_turn(state2, "any colour")
    assert state3.filters.get("gender") == ("Men",) and state3.filters.get("baseColour") == ()
    assert {r.get("baseColour") for r in reply.results} == {"Brown", "Navy Blue"}
    assert calls == []  # same model, same photo: the stored vector is searched
    # the old state is untouched: each turn returns a new one
    assert state.filters.get("baseColour") == ()


def test_filters_matching_nothing_are_relaxed_narrowest_first(assistant, first):
    _, state = first
    # Men (8 products) and Red (4, all women's tops): together nothing; Red is the narrowest.
    reply, state = assistant.handle_turn(state, "men red")
    assert reply.kind == "results"
    assert reply.notes and reply.notes[0] == "No product matches Men · Red; without Red:"
    assert reply.results and {r.get("gender") for r in reply.results} == {"Men"}
    assert state.filters.get("gender") == ("Men",) and state.filters.get("baseColour") == ()
    assert reply.filters_line == "Filters: Men"


def test_more_like_the_second_one_uses_its_stored_vector(assistant, first, searcher):
    reply, state = first
    second = reply.results[1]
    reply2, state2 = assistant.handle_turn(state, "more like the second one")
    assert state2.query.kind == "product" and state2.query.product_id == second.id
    expected = searcher.similar_to("resnet50", second.id, k=5)
    assert [r.id for r in reply2.results] == [r.id for r in expected.results]
    assert second.id not in [r.id for r in reply2.results]
    assert reply2.headline.endswith(f"like #2 “{second.get('name')}”, by ResNet-50")
    # a follow-up after that filters the same product query
    reply3, _ = assistant.handle_turn(state2, "only women")
    assert reply3.results and all(r.get("gender") == "Women" for r in reply3.results)
    assert second.id not in [r.id for r in reply3.results]
    # ranks that do not exist are explained
    reply4, state4 = assistant.handle_turn(state, "more like #9")
    assert reply4.kind == "error" and "no result #9" in reply4.headline and state4 == state


def test_gallery_click_searches_like_that_product(assistant, first, searcher):
    reply, state = first
    clicked = reply.results[3]
    reply2, state2 = assistant.more_like(state, clicked.id)
    assert [r.id for r in reply2.results] == [r.id for r in searcher.similar_to("resnet50", clicked.id, k=5).results]
    assert f"like “{clicked.get('name')}”" in reply2.headline
    reply3, _ = assistant.more_like(state, "no-such-id")
    assert reply3.kind == "error" and "no-such-id" in reply3.headline


def test_show_k_use_model_and_clear(assistant, first):
    _, state = first
    reply, state = assistant.handle_turn(state, "show 10")
    assert len(reply.results) == 10 and state.k == 10
    reply, state = assistant.handle_turn(state, "show 100")
    assert len(reply.results) == 12 and "showing 12" in " ".join(reply.notes)
    reply, state = assistant.handle_turn(state, "use resnet18 and only women")
    assert state.model == "resnet18" and reply.headline.endswith("by ResNet-18")
    assert set(state.query.vectors) == {"resnet18", "resnet50"}  # the photo was embedded again, once
    assert all(r.get("gender") == "Women" for r in reply.results)
    reply, state = assistant.handle_turn(state, "use resnet34")
    assert "ResNet-34 is not offered here" in " ".join(reply.notes) and state.model == "resnet18"
    reply, state = assistant.handle_turn(state, "clear filters")
    assert state.filters.is_empty() and reply.filters_line == "" and len(reply.results) == 12
    # the headline names no gender or kind right after clearing: it read as if "Women" were still on
    assert reply.headline == "12 products like your photo, by ResNet-18" and "Filters cleared." in reply.notes
    assert {r.get("gender") for r in reply.results} != {"Women"} or len({r.get("gender") for r in reply.results}) > 1


def test_words_alone_show_what_they_name_the_most_typical_first(assistant, photo):
    reply, state = assistant.handle_turn(assistant.new_state(), "black heels for women")
    assert reply.kind == "results" and reply.filters_line == "Filters: Women · Heels · Black"
    assert reply.results and all((r.get("gender"), r.get("articleType"), r.get("baseColour")) ==
                                 ("Women", "Heels", "Black") for r in reply.results)
    assert "the most typical looking first" in reply.headline and state.query.kind == "words"
    scores = [r.score for r in reply.results]
    assert scores == sorted(scores, reverse=True)  # by closeness to the look of what was named
    again, _ = assistant.handle_turn(assistant.new_state(), "black heels for women")
    assert [r.id for r in again.results] == [r.id for r in reply.results]  # the same order every time
    # the conversation goes on from them
    reply, state = assistant.handle_turn(state, "more like the second one")
    assert reply.kind == "results" and state.query.kind == "product"

    # a word no field holds, found in product names: those products first, within what was named
    reply, _ = assistant.handle_turn(assistant.new_state(), "grey heels")
    assert "Grey" in reply.results[0].get("name") and {r.get("articleType") for r in reply.results} == {"Heels"}
    assert "“grey” in their names first" in reply.headline
    # one no name holds is named as not understood; the rest is answered
    reply, _ = assistant.handle_turn(assistant.new_state(), "heels qwxz")
    assert {r.get("articleType") for r in reply.results} == {"Heels"} and "qwxz" in " ".join(reply.notes)
    # nothing to search by: ask for a photo
    reply, _ = assistant.handle_turn(assistant.new_state(), "qwxz")
    assert reply.kind == "ask_photo" and "photo" in reply.headline and not reply.results

    # words said before a photo are said for it: they filter its search
    _, state = assistant.handle_turn(assistant.new_state(), "women")
    reply, state = assistant.handle_turn(state, "", [str(photo)])
    assert reply.kind == "results" and state.filters.get("gender") == ("Women",)
    assert all(r.get("gender") == "Women" for r in reply.results) and state.previous_filters.is_empty()


def test_text_that_asks_nothing_gets_help(assistant, first):
    reply, state = assistant.handle_turn(first[1], "hmm, nice")
    assert reply.kind == "info" and "only black ones" in reply.headline
    assert state.results == first[1].results


def test_not_black_leaves_black_products_out(assistant, first):
    assert "Black" in {r.get("baseColour") for r in first[0].results}
    reply, state = assistant.handle_turn(first[1], "not black")
    assert reply.kind == "results" and reply.filters_line == "Filters: not Black"
    assert reply.results and "Black" not in {r.get("baseColour") for r in reply.results}
    reply, state = assistant.handle_turn(state, "for women")
    assert reply.filters_line == "Filters: Women · not Black"
    assert reply.results and all(r.get("gender") == "Women" and r.get("baseColour") != "Black"
                                 for r in reply.results)
    reply, state = assistant.handle_turn(state, "any colour")
    assert reply.filters_line == "Filters: Women"
    assert "Black" in {r.get("baseColour") for r in reply.results}


def test_crop_searches_one_part_of_the_photo(assistant, tmp_path):
    # an "outfit": a navy shirt on the left half, a red top on the right half
    shirt, top = KINDS[2], KINDS[3]
    outfit = Image.new("RGB", (240, 160), "white")
    outfit.paste(draw_product(5, shirt[5], shirt[6], size=(120, 160)), (0, 0))
    outfit.paste(draw_product(6, top[5], top[6], size=(120, 160)), (120, 0))
    path = tmp_path / "outfit.png"
    outfit.save(path)
    whole, _ = assistant.handle_turn(assistant.new_state(), "", [str(path)])
    left, state = assistant.handle_turn(assistant.new_state(), "", [str(path)], crop=(0, 0, 0.5, 1))
    assert left.kind == "results" and "your cropped photo" in left.headline
    left_vector = assistant.searcher.embed("resnet50", [outfit.crop((0, 0, 120, 160))], AS_IS)[0]
    assert np.allclose(state.query.vectors["resnet50"], left_vector, atol=1e-5)
    assert [r.id for r in whole.results] != [r.id for r in left.results] or \
        [r.score for r in whole.results] != [r.score for r in left.results]
    tiny, _ = assistant.handle_turn(assistant.new_state(), "", [str(path)], crop=(0, 0, 0.01, 0.01))
    assert tiny.kind == "error" and "too small" in tiny.headline


def _save(image: Image.Image, path: Path, **kw) -> str:
    image.save(path, **kw)
    return str(path)


def test_upload_formats_are_searched(assistant, tmp_path):
    base = draw_product(7, KINDS[4][5], KINDS[4][6], size=(90, 120))
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.new("L", base.size, 128))
    rotated = base.rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the camera stored it sideways
    files = [_save(base, tmp_path / "a.png"), _save(rgba, tmp_path / "alpha.png"),
             _save(base, tmp_path / "a.webp"), _save(base, tmp_path / "a.bmp"),
             _save(base, tmp_path / "a.gif", save_all=True, append_images=[rotated.resize(base.size)]),
             _save(rotated, tmp_path / "exif.jpg", exif=exif)]
    for path in files:
        reply, state = assistant.handle_turn(assistant.new_state(), "", [path])
        assert reply.kind == "results" and len(reply.results) == 5, (path, reply)


@pytest.mark.parametrize("make, expect", [
    (lambda p: p.write_text("not an image at all"), "not an image"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(_jpeg_bytes()[:200]), "damaged"),
    (lambda p: p.write_bytes(b"x" * 3000), "not an image"),
])
def test_bad_files_are_chat_messages(assistant, first, tmp_path, make, expect):
    path = tmp_path / "upload.jpg"
    make(path)
    reply, state = assistant.handle_turn(first[1], "women", [str(path)])
    assert reply.kind == "error" and expect in reply.headline and "couldn't use that file" in reply.headline
    assert state == first[1]  # the conversation goes on with the previous photo


def _jpeg_bytes() -> bytes:
    out = io.BytesIO()
    draw_product(1, (0, 0, 0), "triangle", size=(200, 200)).save(out, "JPEG")
    return out.getvalue()


def test_file_over_the_size_limit(searcher, photo):
    small = Assistant(searcher, AssistantSettings(policy=SearchPolicy(models=("resnet50",), default_model="resnet50", max_upload_bytes=1000)))
    reply, _ = small.handle_turn(small.new_state(), "", [str(photo)])
    assert reply.kind == "error" and "limit" in reply.headline


def test_no_index_yet_gives_the_exact_command(tmp_path, embedders, photo):
    hint = "python app.py index --catalog ../shared/catalog --db /tmp/empty-db --weights random"
    searcher = Searcher(make_client(StoreSettings(path=tmp_path / "empty")), index_hint=hint,
                        embedders=embedders)
    chat = Assistant(searcher, SETTINGS)
    for text, files in (("", [str(photo)]), ("women", []), ("use resnet18", [])):
        reply, state = chat.handle_turn(chat.new_state(), text, files)
        missing = "ResNet-18" if "resnet18" in text else "ResNet-50"
        assert reply.kind == "error" and hint in reply.headline, (text, reply)
        assert f"no product index for {missing} yet" in reply.headline
        assert state == chat.new_state()


def test_controls_set_filters_model_and_k(assistant, first):
    _, state = first
    reply, state = assistant.apply_controls(state, model="resnet18", k=3, gender=["Women"], category=[],
                                            colour=["Red"])
    assert state.model == "resnet18" and len(reply.results) == 3
    assert {(r.get("gender"), r.get("baseColour")) for r in reply.results} == {("Women", "Red")}
    assert reply.filters_line == "Filters: Women · Red"
    reply, state = assistant.apply_controls(state, colour=[])
    assert state.filters.get("baseColour") == () and state.filters.get("gender") == ("Women",)
    reply, fresh = assistant.apply_controls(assistant.new_state(), gender="Men")  # no photo yet: what they name
    assert reply.kind == "results" and fresh.filters.get("gender") == ("Men",)
    assert reply.results and all(r.get("gender") == "Men" for r in reply.results)


def test_the_chat_api_returns_the_search_json_schema(assistant, photo, tmp_path):
    from assistant.events import recommend_json
    out = recommend_json(assistant, str(photo), model="resnet18", k=3, gender="women", category="footwear")
    assert out["model"] == "resnet18" and out["query"] == photo.name and len(out["results"]) == 3
    for row in out["results"]:
        assert set(row) == {"id", "score", "name", "gender", "masterCategory", "subCategory", "articleType",
                            "baseColour", "season", "year", "usage", "image"}
        assert row["gender"] == "Women" and row["masterCategory"] == "Footwear"
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    assert "not an image" in recommend_json(assistant, str(bad))["error"]
    assert "closest known" in recommend_json(assistant, str(photo), gender="Wemen")["error"]
    assert "not offered" in recommend_json(assistant, str(photo), model="resnet34")["error"]
    assert "between 1 and 12" in recommend_json(assistant, str(photo), k=13)["error"]  # the policy's max_k
    assert "no photo" in recommend_json(assistant, None)["error"]


# A Chroma server stopped and restarted under a running chat: tests/test_hostile.py.


def test_chat_keeps_a_bounded_number_of_galleries(first):
    import gradio as gr

    from assistant.messages import keep_recent_galleries, reply_messages
    reply, _ = first
    history = []
    for turn in range(12):
        history += [{"role": "user", "content": f"message {turn}"}] + reply_messages(reply, SETTINGS)
    kept = keep_recent_galleries(history, 8)
    assert sum(isinstance(m["content"], gr.Gallery) for m in kept) == 8
    assert [m["content"] for m in kept if isinstance(m["content"], str)] == \
        [m["content"] for m in history if isinstance(m["content"], str)]  # every text stays
    assert isinstance(kept[-1]["content"], gr.Gallery) and kept[-1] is history[-1]
    assert not isinstance(kept[2]["content"], gr.Gallery)  # the oldest galleries went first


def test_a_new_photo_starts_fresh_and_offers_the_old_filters(assistant, photo, tmp_path):
    from assistant.chat import filter_chips, without_chips
    reply, state = assistant.handle_turn(assistant.new_state(), "women not black", [str(photo)])
    assert filter_chips(state.filters) == ["Women", "not Black"]
    # a follow-up keeps them; a crop of the same photo keeps them too
    reply, state = assistant.handle_turn(state, "", [str(photo)], crop=(0, 0, 1, 1))
    assert filter_chips(state.filters) == ["Women", "not Black"] and state.previous_filters.is_empty()
    # a new photo: no filter, the old ones offered
    shoe = tmp_path / "shoe.jpg"
    draw_product(5, KINDS[1][5], KINDS[1][6]).save(shoe)
    reply, state = assistant.handle_turn(state, "", [str(shoe)])
    assert reply.kind == "results" and state.filters.is_empty() and reply.filters_line == ""
    assert filter_chips(state.previous_filters) == ["Women", "not Black"]
    # one tap puts them back
    reply, state = assistant.reapply_previous(state)
    assert reply.kind == "results" and filter_chips(state.filters) == ["Women", "not Black"]
    assert all(r.get("gender") == "Women" and r.get("baseColour") != "Black" for r in reply.results)
    assert state.previous_filters.is_empty()
    # a chip removed: that filter alone goes
    reply, state = assistant.set_filters(state, without_chips(state.filters, ["Women"]))
    assert filter_chips(state.filters) == ["Women"] and reply.filters_line == "Filters: Women"
    # the offer is made once, right after the new photo, not through later turns
    reply, state = assistant.handle_turn(state, "", [str(photo)])
    assert filter_chips(state.previous_filters) == ["Women"]
    reply, state = assistant.handle_turn(state, "show 3")
    assert state.previous_filters.is_empty()


def test_two_spellings_of_one_kind_are_one_chip():
    from assistant.chat import filter_chips, filters_line, without_chips
    from vectorstore import Filters
    filters = Filters().with_values("category", ["Dress", "Dresses"]).with_values("baseColour", ["Red"])
    assert filter_chips(filters) == ["Dresses", "Red"] and filters_line(filters) == "Filters: Dresses · Red"
    assert without_chips(filters, ["Dresses"]).get("category") == ("Dress", "Dresses")  # the search keeps both
    assert without_chips(filters, ["Red"]).get("category") == ()


def test_a_filter_already_set_is_said_not_silently_repeated(assistant, first):
    _, state = first
    reply, state = assistant.handle_turn(state, "only black ones")
    assert not any("already set" in n for n in reply.notes)
    again, state = assistant.handle_turn(state, "only black ones")
    assert "Black was already set: these are the same products." in again.notes
    assert [r.id for r in again.results] == [r.id for r in reply.results]


def test_words_not_understood_are_named_with_the_closest_values(assistant, first):
    _, state = first
    reply, _ = assistant.handle_turn(state, "pinkk size 42", [])
    assert reply.kind == "info" and "I didn't understand “pinkk size 42”" in reply.notes[0], reply
    assert "only black ones" in reply.headline  # and what it does understand
    reply, _ = assistant.handle_turn(state, "only blak ones", [])
    assert "“blak” (closest: Black)" in " ".join(reply.notes), reply
    assert reply.filters_line == ""  # "blak" is named, not applied
    reply, _ = assistant.handle_turn(state, "women in burgundy", [])  # understood words still apply
    assert reply.kind == "results" and reply.filters_line == "Filters: Women", reply
    assert "I didn't understand “burgundy”" in " ".join(reply.notes)
    reply, _ = assistant.handle_turn(state, "show me 3 please", [])
    assert not any("understand" in n for n in reply.notes) and len(reply.results) == 3


def test_product_links_quote_the_id_into_the_template(first):
    import json

    from assistant.chat import ChatState
    from assistant.events import product_links
    from assistant.pictures import picture_name
    from search import Result
    with pytest.raises(ValueError):
        AssistantSettings(policy=SearchPolicy(models=("resnet50",), default_model="resnet50"), product_url="javascript:alert({id})")
    with pytest.raises(ValueError):
        AssistantSettings(policy=SearchPolicy(models=("resnet50",), default_model="resnet50"), product_url="https://shop.example/p")
    settings = AssistantSettings(policy=SearchPolicy(models=("resnet50",), default_model="resnet50"), product_url="https://shop.example/p/{id}")
    odd = Result(id="a?b #1", score=0.5, metadata={"name": "Odd", "image": "/catalog/images/odd.jpg"})
    state = ChatState(model="resnet50", k=5, seen={odd.id: odd, **first[1].seen})
    links = json.loads(product_links(state, settings))
    assert links["urls"][picture_name(odd)] == "https://shop.example/p/a%3Fb%20%231"
    assert links["target"] == "_blank" and len(links["urls"]) == len(state.seen)
    # without a template the cards link to the picture (the page decides): no product URLs
    assert json.loads(product_links(state, SETTINGS))["urls"] == {}


def test_two_items_of_one_kind_are_told_apart_by_their_colour():
    from types import SimpleNamespace

    from assistant.events import item_names
    bags = SimpleNamespace(items=[SimpleNamespace(kind="bag"), SimpleNamespace(kind="bag"),
                                  SimpleNamespace(kind="shoes")], colours=("Black", "Navy Blue", None))
    assert item_names(bags) == ["black bag", "navy blue bag", "shoes"]
    assert item_names(SimpleNamespace(items=[SimpleNamespace(kind="top")], colours=())) == ["top"]
