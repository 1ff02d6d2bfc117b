"""A shopper's photo is searched with zoomed views averaged; a studio shot or a crop as it is."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from assistant.chat import Assistant
from assistant.settings import AssistantSettings
from operations import SearchPolicy
from search import AS_IS, QueryViews, Searcher
from search.query_views import centre_crop, mean_direction
from tests.conftest import KINDS, ROOT, draw_product
from vectorstore import StoreSettings, make_client

WALL = (200, 190, 170)


def in_a_room(seed: int = 3, kind=KINDS[1], size=(240, 200), at=(30, 90)) -> Image.Image:
    """A product drawn as in the catalog, small and off-centre on a beige wall."""
    room = Image.new("RGB", size, WALL)
    shot = draw_product(seed, kind[5], kind[6], size=(60, 80))
    room.paste(shot, at)
    return room


def test_a_studio_shot_is_one_view_and_a_photo_in_a_room_three_centred_crops():
    views = QueryViews()
    studio = draw_product(11, KINDS[2][5], KINDS[2][6], size=(90, 120))
    assert views.is_studio_shot(studio) and views.of(studio) == [studio]
    grey = Image.new("RGB", (90, 120), (242, 242, 240))
    grey.paste(draw_product(12, KINDS[0][5], KINDS[0][6], size=(60, 80)).crop((5, 5, 55, 75)), (20, 20))
    assert views.is_studio_shot(grey)

    room = in_a_room()
    assert not views.is_studio_shot(room)
    got = views.of(room)
    assert [v.size for v in got] == [(240, 200), (192, 160), (156, 130)]
    # centred: the 80 % view is the middle of the photo, pixel for pixel
    assert np.array_equal(np.asarray(got[1]), np.asarray(room.crop((24, 20, 216, 180))))
    assert AS_IS.of(room) == [room] and not AS_IS.zooming


def test_a_border_mostly_covered_by_the_product_is_not_a_studio_shot():
    # a close-up that fills the frame: little backdrop at the border, so it is zoomed like a photo
    close = Image.new("RGB", (100, 100), (255, 255, 255))
    close.paste(Image.new("RGB", (100, 70), (30, 30, 120)), (0, 15))
    assert not QueryViews().is_studio_shot(close)
    assert QueryViews(studio_share=0.25).is_studio_shot(close)


@pytest.mark.parametrize("kwargs", [{"zooms": ()}, {"zooms": (1.0, 0.0)}, {"zooms": (1.5,)}, {"studio_share": 0}])
def test_query_views_refuse_nonsense(kwargs):
    with pytest.raises(ValueError):
        QueryViews(**kwargs)


def test_centre_crop_keeps_at_least_a_pixel_and_mean_direction_is_a_unit_vector():
    assert centre_crop(Image.new("RGB", (3, 2)), 0.1).size == (1, 1)
    v = mean_direction(np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert np.allclose(v, [2 ** -0.5, 2 ** -0.5])


def test_search_averages_a_photos_views_and_takes_a_studio_shot_as_it_is(searcher, indexed_db, embedders):
    room = in_a_room()
    views = QueryViews().of(room)
    raw = searcher.embed("resnet50", views, AS_IS)
    expected = raw.mean(axis=0) / np.linalg.norm(raw.mean(axis=0))
    got = searcher.embed("resnet50", [room])[0]
    assert np.allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, raw[0], atol=1e-3)  # the zoomed views changed the query

    # the answer is the search of that averaged vector; with zoom off, of the photo alone
    answer = searcher.search_image("resnet50", room, k=5)
    assert [r.id for r in answer.results] == [r.id for r in searcher.search_vector("resnet50", got, k=5).results]
    as_is = Searcher(make_client(StoreSettings(path=indexed_db)), embedders=embedders,
                     query_views=AS_IS)
    assert np.allclose(as_is.embed("resnet50", [room])[0], raw[0], atol=1e-5)

    studio = draw_product(21, KINDS[4][5], KINDS[4][6], size=(90, 120))
    assert np.allclose(searcher.embed("resnet50", [studio, room])[0],
                       searcher.embed("resnet50", [studio])[0], atol=1e-5)


def test_the_chat_zooms_a_whole_photo_but_searches_a_shoppers_crop_as_it_is(searcher, tmp_path):
    assistant = Assistant(searcher, AssistantSettings(policy=SearchPolicy(models=("resnet50",), default_model="resnet50")))
    room = in_a_room()
    path = tmp_path / "room.png"
    room.save(path)
    reply, state = assistant.handle_turn(assistant.new_state(), "", [str(path)])
    assert reply.kind == "results"
    assert np.allclose(state.query.vectors["resnet50"], searcher.embed("resnet50", [room])[0], atol=1e-5)

    reply, state = assistant.handle_turn(assistant.new_state(), "", [str(path)], crop=(0, 0.25, 0.5, 1))
    assert reply.kind == "results"
    crop = room.crop((0, 50, 120, 200))
    assert np.allclose(state.query.vectors["resnet50"], searcher.embed("resnet50", [crop], AS_IS)[0], atol=1e-5)


@pytest.mark.slow
def test_search_command_zooms_unless_told_off(indexed_db, tmp_path):
    path = tmp_path / "room.png"
    in_a_room().save(path)

    def scores(*extra):
        out = subprocess.run([sys.executable, str(ROOT / "app.py"), "search", "--db", str(indexed_db),
                              "--weights", "random", "--model", "resnet50", "--runtime", "eager", "--rerank", "off",
                              *extra, str(path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert out.returncode == 0, out.stderr
        return [line.split()[1] for line in out.stdout.splitlines() if line.strip()[:2].rstrip(".").isdigit()]

    zoomed, plain = scores(), scores("--zoom", "off")
    assert zoomed and plain and zoomed != plain
