"""The kind a shopper's own photo shows (embedding/kinds.py, training/kinds.py), and its search
within that kind (operations/keep_kind.py) on the chat and the API."""
from __future__ import annotations

import random

import pytest
from PIL import Image

from embedding.kinds import GROUPS, NAMES, OTHER, KindModel, group_of
from tests.conftest import KINDS, draw_product

# Photo classes drawn for training: the shape and colour of the catalog's kinds, on a room's wall.
PHOTO_CLASSES = {"shoes": [KINDS[0], KINDS[1]], "t-shirt": [KINDS[2], KINDS[3]]}


def at_home(seed: int, kind) -> Image.Image:
    """A product on a wall of a random colour, off-centre: not a studio shot."""
    rnd = random.Random(seed)
    wall = tuple(rnd.randint(120, 200) for _ in range(3))
    room = Image.new("RGB", (200, 200), wall)
    room.paste(draw_product(seed, kind[5], kind[6], size=(90, 120)), (rnd.randint(10, 100), rnd.randint(10, 70)))
    return room


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("home-photos")
    for split, count, offset in (("train", 10, 0), ("validation", 4, 500)):
        for photo_class, kinds in PHOTO_CLASSES.items():
            (folder / split / photo_class).mkdir(parents=True)
            for i in range(count):
                at_home(offset + i * 7 + len(photo_class), kinds[i % 2]).save(
                    folder / split / photo_class / f"{i}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, catalog_dir, photos_dir):
    from training.kinds import KindTrainingSettings, train_kinds
    folder = tmp_path_factory.mktemp("kinds")
    settings = KindTrainingSettings(catalog=catalog_dir, photos=photos_dir, out=folder / "kinds.npz",
                                    model="resnet18", weights="random", steps=1000, weight_decay=1e-6,
                                    cache_dir=folder / "cache")
    figures = train_kinds(settings, log=lambda _: None)
    return settings, figures


def test_the_groups_and_the_file():
    assert group_of("Heels") == "footwear" and group_of("Handbags") == OTHER and group_of(None) == OTHER
    assert NAMES[-1] == OTHER and len(set(a for g in GROUPS.values() for a in g)) == sum(map(len, GROUPS.values()))


def test_training_writes_the_same_file_twice_and_reads_held_out_photos(trained, tmp_path):
    from training.kinds import photo_group, train_kinds
    settings, figures = trained
    assert photo_group("outwear") == "outer layer" and photo_group("longsleeve") == "top"
    assert figures["photos"] == 20 and figures["held_out_photos"] == 8
    assert figures["held_out_accuracy"] >= 0.75  # shoes from tops, on photos it never saw
    again = settings.__class__(**{**settings.__dict__, "out": tmp_path / "again.npz"})
    train_kinds(again, log=lambda _: None)  # the features come from the cache now
    assert settings.out.read_bytes() == again.out.read_bytes()
    model = KindModel.load(settings.out)
    assert model.reads("resnet18", "random:0") and not model.reads("resnet18", "file:tuned")


def test_a_home_photo_is_searched_within_its_kind_on_every_surface(trained, indexed_db, embedders, tmp_path):
    from assistant.chat import Assistant
    from assistant.settings import AssistantSettings
    from operations import SearchPolicy, find_the_look
    from operations.keep_kind import kind_scope
    from search import Searcher
    from vectorstore import StoreSettings, make_client
    settings, _ = trained
    model = KindModel.load(settings.out)
    searcher = Searcher(make_client(StoreSettings(path=indexed_db)), embedders=embedders,
                        kind_factory=lambda: model)
    policy = SearchPolicy(models=("resnet18",), default_model="resnet18", k=4)
    shoe = at_home(9001, KINDS[0])
    path = tmp_path / "shoe-at-home.jpg"
    shoe.save(path, quality=92)
    vector = searcher.embed("resnet18", [shoe])[0]
    assert set(kind_scope(searcher, "resnet18", vector, shoe).get("articleType")) == {"Heels", "Casual Shoes"}
    # a studio shot is searched as before: no kind reading
    studio = draw_product(9002, KINDS[0][5], KINDS[0][6])
    assert kind_scope(searcher, "resnet18", searcher.embed("resnet18", [studio])[0], studio).is_empty()

    look = find_the_look(searcher, policy, str(path))
    assert {group_of(r.get("articleType")) for r in look.first.results} == {"footwear"}
    chat = Assistant(searcher, AssistantSettings(policy=policy))
    reply, state = chat.handle_turn(chat.new_state(), "", [str(path)])
    assert {group_of(r.get("articleType")) for r in reply.results} == {"footwear"}
    assert state.filters.is_empty()  # the kind is the search's, not a filter the shopper has to remove
    # a kind the shopper names wins
    reply, _ = chat.handle_turn(state, "only bags")
    assert {r.get("subCategory") for r in reply.results} == {"Bags"}


def test_a_fine_tunes_own_article_type_classifier_reads_the_kind_of_its_vectors(embedders):
    import numpy as np

    from embedding.classifiers import Classifiers
    from embedding.kinds import ClassifierKinds
    from search import Searcher
    articles = ["Heels", "Flats", "Tshirts", "Watches"]
    centres = np.eye(4, 8, dtype=np.float32)
    classifiers = Classifiers({"articleType": {"centres": centres, "labels": articles, "scale": 30.0}})
    reader = ClassifierKinds(classifiers, "m", "tuned:1")
    heel_ish = centres[0] + 0.9 * centres[1]     # between two kinds of shoe: footwear for sure
    p = reader.probabilities(heel_ish)
    assert abs(sum(p.values()) - 1.0) < 1e-6 and p["footwear"] > 0.99
    assert reader.kind(heel_ish, 0.5) == "footwear"
    assert reader.kind(centres[3], 0.5) is None              # a watch: "other" is no kind to search in
    assert reader.kind(centres[2] + centres[0], 0.99) is None  # unsure between a top and a shoe
    assert reader.reads("m", "tuned:1") and not reader.reads("m", "imagenet")

    # The searcher's choice: the kind model for the weights it was trained on, else the weights'
    # own classifier, else nothing (and nothing at all without a kind factory).
    embedder = embedders["resnet18"]
    trained_on_it = KindModel(np.zeros((len(NAMES), embedder.dim)), np.zeros(len(NAMES)), NAMES, "resnet18",
                              embedder.weights_id)
    assert Searcher(None, embedders={"resnet18": embedder},
                    kind_factory=lambda: trained_on_it).kind_reader("resnet18") is trained_on_it
    other = KindModel(np.zeros((len(NAMES), embedder.dim)), np.zeros(len(NAMES)), NAMES, "resnet18", "other")
    assert Searcher(None, embedders={"resnet18": embedder}, kind_factory=lambda: other).kind_reader("resnet18") is None
    assert Searcher(None, embedders={"resnet18": embedder}).kind_reader("resnet18") is None
