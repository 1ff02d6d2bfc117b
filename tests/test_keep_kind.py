"""A colour or gender word keeps the photo's kind (operations/keep_kind.py), on every surface."""
from __future__ import annotations

import pytest

from catalog import read_catalog
from indexing import index_catalog
from operations import SearchPolicy, find_the_look
from operations.filter_request import FilterRequest
from operations.keep_kind import photo_kind, search_keeping_kind
from search import Searcher
from tests.conftest import HEADER, draw_product
from vectorstore import Filters, StoreSettings, make_client

RED, BLACK, GREEN = (200, 30, 30), (20, 20, 20), (30, 150, 60)
# (articleType, colour, rgb, shape, how many): the photo is a red heel (a red triangle). Among black
# products the nearest in shape are flats (black triangles); the two black heels look otherwise
# (rectangles), so the colour filter alone answers flats. No green heels.
ROWS = [("Heels", "Red", RED, "triangle", 8), ("Heels", "Black", BLACK, "rectangle", 2),
        ("Flats", "Black", BLACK, "triangle", 8), ("Flats", "Green", GREEN, "ellipse", 3)]


@pytest.fixture(scope="module")
def shoes(tmp_path_factory, embedders):
    folder = tmp_path_factory.mktemp("shoes")
    (folder / "images").mkdir()
    lines, pid = [HEADER], 5000
    for article, colour, rgb, shape, count in ROWS:
        for i in range(count):
            pid += 1
            lines.append(f"{pid},Women,Footwear,Shoes,{article},{colour},Summer,2012,Casual,Brand{i} {colour} {article}\n")
            draw_product(pid, rgb, shape).save(folder / "images" / f"{pid}.jpg", quality=90)
    (folder / "styles.csv").write_text("".join(lines), encoding="utf-8")
    client = make_client(StoreSettings(path=folder / "db"))
    index_catalog(read_catalog(folder), client, [embedders["resnet18"]], batch_size=8, show_progress_bar=False)
    searcher = Searcher(client, embedders=embedders)
    photo = folder / "red-heel.png"
    draw_product(99, RED, "triangle", size=(120, 160)).save(photo)
    return searcher, photo


def test_a_colour_word_keeps_the_photos_kind_where_the_catalog_has_it(shoes):
    searcher, photo = shoes
    from catalog import open_image
    vector = searcher.embed("resnet18", [open_image(photo)])[0]
    assert photo_kind(searcher, "resnet18", vector) == "Heels"
    black = searcher.resolve("resnet18", {"baseColour": ["Black"]})
    assert searcher.search_vector("resnet18", vector, k=5, filters=black).results[0].get("articleType") == "Flats"
    answer = search_keeping_kind(searcher, "resnet18", vector, 5, black)
    kinds = [r.get("articleType") for r in answer.results]
    # both black heels first, then the rest of the black products; the filters are the shopper's
    assert kinds[:2] == ["Heels", "Heels"] and len(kinds) == 5 and set(kinds[2:]) == {"Flats"}
    assert {r.get("baseColour") for r in answer.results} == {"Black"} and answer.filters == black
    # no green heels: the green products, as the filter alone gives them
    green = searcher.resolve("resnet18", {"baseColour": ["Green"]})
    plain = searcher.search_vector("resnet18", vector, k=5, filters=green)
    assert [r.id for r in search_keeping_kind(searcher, "resnet18", vector, 5, green).results] == \
        [r.id for r in plain.results]
    # a kind the shopper named wins
    flats = Filters().with_values("baseColour", ["Black"]).with_values("articleType", ["Flats"])
    assert {r.get("articleType") for r in search_keeping_kind(searcher, "resnet18", vector, 5, flats).results} == \
        {"Flats"}


def test_the_api_and_the_chat_keep_the_kind_too(shoes):
    from assistant.chat import Assistant
    from assistant.settings import AssistantSettings
    searcher, photo = shoes
    policy = SearchPolicy(models=("resnet18",), default_model="resnet18", k=5)
    look = find_the_look(searcher, policy, str(photo), filters=FilterRequest(where=("baseColour=Black",)))
    assert [r.get("articleType") for r in look.first.results][:2] == ["Heels", "Heels"]
    chat = Assistant(searcher, AssistantSettings(policy=policy))
    reply, _ = chat.handle_turn(chat.new_state(), "black", [str(photo)])
    assert [r.get("articleType") for r in reply.results][:2] == ["Heels", "Heels"]
    assert {r.get("baseColour") for r in reply.results} == {"Black"}
