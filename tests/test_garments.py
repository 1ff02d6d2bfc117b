"""Shop the look: the garment parser (trained here on generated street-like photos with
outlined garments), the items it finds, and every surface that searches them."""
from __future__ import annotations

import io
import json
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import ROOT, draw_product

pytestmark = pytest.mark.slow

# value -> label in the street photos' labels.csv format; shapes drawn per label
LABELS = {0: "null", 1: "t-shirt", 2: "jeans", 3: "shoes", 4: "skin"}
TOP, TROUSERS, SHOES = (200, 40, 40), (40, 60, 170), (30, 30, 30)


def draw_scene(seed: int, size=(200, 300)) -> tuple[Image.Image, Image.Image, dict]:
    """A person-like figure on a textured street: a red top, blue trousers, two black shoes.
    Returns the photo, its label mask and each garment's box as fractions."""
    rnd = random.Random(seed)
    w, h = size
    photo = Image.new("RGB", size, tuple(rnd.randint(120, 200) for _ in range(3)))
    draw = ImageDraw.Draw(photo)
    for _ in range(40):  # street clutter
        x, y = rnd.randint(0, w), rnd.randint(0, h)
        draw.rectangle((x, y, x + rnd.randint(4, 30), y + rnd.randint(4, 30)),
                       fill=tuple(rnd.randint(100, 230) for _ in range(3)))
    mask = Image.new("L", size, 0)
    paint = ImageDraw.Draw(mask)
    cx = w // 2 + rnd.randint(-w // 8, w // 8)
    body = rnd.randint(w // 6, w // 4)
    top = (cx - body, int(h * 0.18), cx + body, int(h * 0.48))
    trousers = (cx - body + 4, int(h * 0.48), cx + body - 4, int(h * 0.86))
    shoes = (cx - body, int(h * 0.87), cx + body, int(h * 0.95))
    draw.ellipse((cx - 14, int(h * 0.06), cx + 14, int(h * 0.17)), fill=(220, 180, 150))
    paint.ellipse((cx - 14, int(h * 0.06), cx + 14, int(h * 0.17)), fill=4)
    for box, rgb, value in ((top, TOP, 1), (trousers, TROUSERS, 2)):
        colour = tuple(max(0, min(255, c + rnd.randint(-20, 20))) for c in rgb)
        draw.rectangle(box, fill=colour)
        paint.rectangle(box, fill=value)
    for left in (shoes[0], cx + 3):
        part = (left, shoes[1], left + (shoes[2] - shoes[0]) // 2 - 3, shoes[3])
        draw.ellipse(part, fill=SHOES)
        paint.ellipse(part, fill=3)
    boxes = {name: (b[0] / w, b[1] / h, (b[2] + 1) / w, (b[3] + 1) / h)
             for name, b in (("top", top), ("trousers or skirt", trousers), ("shoes", shoes))}
    return photo, mask, boxes


def make_street(folder, count: int):
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    (folder / "labels.csv").write_text("value,label\n" + "".join(f"{v},{l}\n" for v, l in LABELS.items()))
    for i in range(count):
        photo, mask, _ = draw_scene(i)
        photo.save(folder / "images" / f"{i:04d}.jpg", quality=90)
        mask.save(folder / "masks" / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def trained_parser(tmp_path_factory):
    """A parser trained end to end by the project's command on generated photos."""
    from training.parser import ParserSettings, train_parser
    folder = make_street(tmp_path_factory.mktemp("street"), 14)
    out = tmp_path_factory.mktemp("parser") / "parser.pt"
    figures = train_parser(ParserSettings(photos=folder, out=out, epochs=30, batch_size=8, lr=5e-3,
                                          held_out=0.2, cache_dir=out.parent / "cache"))
    return out, figures


def test_training_runs_end_to_end_and_reports_held_out_figures(trained_parser):
    out, figures = trained_parser
    state = __import__("torch").load(out, weights_only=True)
    assert state["held_out"], "some photos were held out"
    assert set(figures["classes"]) >= {"top", "trousers or skirt", "shoes"}
    # Learned, not guessed: the three garments are found in photos it never saw.
    assert figures["classes"]["top"]["iou"] > 0.5
    assert figures["classes"]["trousers or skirt"]["iou"] > 0.5
    assert figures["garment_recall"] >= 0.6


def test_training_pastes_catalog_products_onto_the_scenes_and_refuses_a_missing_catalog(tmp_path):
    import torch

    from catalog.errors import UserError
    from tests.conftest import make_catalog
    from training.parser import ParserSettings, train_parser
    folder = make_street(tmp_path / "street", 8)
    catalog = make_catalog(tmp_path / "catalog", per_kind=3)
    out = tmp_path / "parser.pt"
    train_parser(ParserSettings(photos=folder, out=out, epochs=1, batch_size=8, held_out=0.25, catalog=catalog,
                                composites=6, cache_dir=tmp_path / "cache", members=("garments_lite0",)))
    state = torch.load(out, weights_only=True)
    assert state["settings"]["composites"] == 6 and state["settings"]["catalog"] == str(catalog)
    # The street photos' features and the composites' (each with its mirror image), cached apart.
    cached = [torch.load(f, weights_only=True) for f in sorted((tmp_path / "cache").glob("*.pt"))]
    trained = 8 - len(state["held_out"])
    assert trained != 6 and sorted(len(c["target"]) for c in cached) == sorted([2 * 6, 2 * trained])
    # A pasted product's pixels carry its class (bags, shoes, watches here), not the scene's
    # (the scenes hold tops, trousers and shoes).
    composite = next(c for c in cached if len(c["target"]) == 2 * 6)
    assert any(len(set(t.unique().tolist()) - {0, 1, 2, 5}) for t in composite["target"])
    with pytest.raises(UserError, match="no catalog"):
        ParserSettings(photos=folder, out=out, catalog=tmp_path / "nowhere")


def test_the_parser_averages_its_members_scores_kept_in_half_precision(trained_parser):
    import torch

    from embedding.garments import GarmentParser, ParserNetwork, parser_input
    parser = GarmentParser.load(trained_parser[0], runtime="eager")
    network = parser.network
    members = ["garments_lite0", "garments_lite1", "garments_lite2"]
    assert [head.spec.name for head in network.heads] == members
    photo = draw_scene(1003)[0]
    with torch.inference_mode():
        each = [ParserNetwork([b], [h]).eval()(parser_input(photo))[0] for b, h in zip(network.backbones, network.heads)]
    assert not torch.allclose(each[0], each[1], atol=1e-3), "two backbones, two readings"
    assert not torch.allclose(each[1], each[2], atol=1e-3)
    # The members' class scores averaged (a log-probability is the score less one number per
    # pixel, which the softmax takes out again).
    torch.testing.assert_close(parser.probabilities(photo), (sum(p.log() for p in each) / 3).softmax(0),
                               rtol=1e-4, atol=1e-5)
    # Items are drawn at three quarters of the input's sides (448 x 288).
    assert parser.probabilities(photo).shape[-2:] == (336, 216)
    state = torch.load(trained_parser[0], weights_only=True)
    weights = [v for member in state["members"] for v in member["head"].values() if v.is_floating_point()]
    assert weights and all(v.dtype == torch.float16 for v in weights)
    # The held-out figures of each member and of their average.
    assert set(state["figures"]) == {*members, "parser"}


def test_members_trained_side_by_side_are_the_members_trained_one_after_the_other(tmp_path):
    import torch

    from training.parser import ParserSettings, train_parser
    folder = make_street(tmp_path / "street", 6)
    files = {}
    for workers in (1, 2):
        files[workers] = tmp_path / f"parser-{workers}.pt"
        train_parser(ParserSettings(photos=folder, out=files[workers], epochs=2, batch_size=4, held_out=0.34,
                                    catalog=None, cache_dir=tmp_path / "cache", workers=workers,
                                    members=("garments_lite0", "garments_lite1")))
    one, two = (torch.load(files[w], weights_only=True) for w in (1, 2))
    assert [m["name"] for m in two["members"]] == ["garments_lite0", "garments_lite1"]
    for a, b in zip(one["members"], two["members"]):
        assert a["history"] == b["history"]
        for key in a["head"]:
            assert torch.equal(a["head"][key], b["head"][key]), key
    assert one["settings"] == two["settings"], "the file does not say how many trained at once"
    # Run again over finished members (a run killed while it measured them): the same file,
    # without computing a member's features again.
    import shutil
    shutil.rmtree(tmp_path / "cache")
    train_parser(ParserSettings(photos=folder, out=files[1], epochs=2, batch_size=4, held_out=0.34, catalog=None,
                                cache_dir=tmp_path / "cache", members=("garments_lite0", "garments_lite1")))
    again = torch.load(files[1], weights_only=True)
    assert not list((tmp_path / "cache").glob("*.pt"))
    for a, b in zip(one["members"], again["members"]):
        assert all(torch.equal(a["head"][key], b["head"][key]) for key in a["head"])


def test_items_are_found_where_the_garments_are(trained_parser):
    from embedding.garments import GarmentParser, box_iou
    parser = GarmentParser.load(trained_parser[0])
    photo, _, boxes = draw_scene(1000)
    items = {item.kind: item for item in parser.parse(photo)}
    for kind in ("top", "trousers or skirt"):
        assert kind in items, f"no {kind} found among {list(items)}"
        assert box_iou(items[kind].box, boxes[kind]) >= 0.4
        assert 0 < items[kind].score <= 1
    assert items["top"].label == "Topwear" and items["trousers or skirt"].label == "Bottomwear"


def test_an_item_is_cut_out_on_white(trained_parser):
    from embedding.garments import GarmentParser
    parser = GarmentParser.load(trained_parser[0])
    photo, _, _ = draw_scene(1001)
    top = next(i for i in parser.parse(photo) if i.kind == "top")
    cut = np.asarray(top.cut_out(photo), dtype=np.int16)
    # mostly the top's red, and white around it: the street is gone
    red = (cut[..., 0] > 150) & (cut[..., 1] < 90)
    white = cut.min(axis=2) > 245
    assert red.mean() > 0.4 and (red | white).mean() > 0.85


def test_the_shipped_parser_loads_offline_and_gives_identical_masks_in_two_processes(tmp_path):
    from embedding.garments import SHIPPED_FILE
    assert SHIPPED_FILE.is_file(), "the garment parser ships with the project"
    photo, _, _ = draw_scene(7, size=(300, 450))
    photo.save(tmp_path / "scene.png")
    script = ("import hashlib, sys; from PIL import Image; from embedding.garments import GarmentParser; "
              "parser = GarmentParser.load(runtime=sys.argv[2]); items = parser.parse(Image.open(sys.argv[1])); "
              "print(parser.runtime, hashlib.sha256(b''.join(i.mask.tobytes() + i.kind.encode() for i in items)).hexdigest(), "
              "len(items))")
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    outs = [subprocess.run([sys.executable, "-c", script, str(tmp_path / "scene.png"), runtime], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300) for runtime in ("auto", "auto", "eager")]
    assert all(o.returncode == 0 for o in outs), outs[0].stderr
    assert outs[0].stdout == outs[1].stdout
    # ONNX Runtime by default, finding what PyTorch finds
    assert outs[0].stdout.split()[0] == "onnxruntime" and outs[2].stdout.split()[0] == "eager"
    assert outs[0].stdout.split()[1:] == outs[2].stdout.split()[1:]


def test_onnx_runtime_is_used_only_when_it_agrees_with_pytorch(trained_parser):
    import torch

    from embedding.garments import GarmentParser, _check_agrees
    from embedding.runtime import RuntimeUnavailable
    parser = GarmentParser.load(trained_parser[0])
    assert parser.runtime == "onnxruntime"
    _check_agrees(parser._fast, parser.network)

    def off_by_one_class(pixels):  # a network that reads every pixel as the next class
        return torch.roll(parser.network(torch.from_numpy(pixels)), 1, dims=1).numpy()
    with pytest.raises(RuntimeUnavailable, match="disagrees with PyTorch"):
        _check_agrees(off_by_one_class, parser.network)


@pytest.fixture(scope="module")
def look_searcher(indexed_db, embedders, trained_parser):
    from embedding.garments import GarmentParser
    from search import Searcher
    from vectorstore import StoreSettings, make_client
    return Searcher(make_client(StoreSettings(path=indexed_db)), embedders=embedders,
                    parser_factory=lambda: GarmentParser.load(trained_parser[0]))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_each_item_is_searched_within_its_category(look_searcher):
    from operations import SearchPolicy, find_the_look
    policy = SearchPolicy(models=("resnet18",), default_model="resnet18")
    look = find_the_look(look_searcher, policy, _png(draw_scene(1002)[0]), k=4)
    kinds = [found.kind for found in look.items]
    assert "top" in kinds
    top = look.items[kinds.index("top")]
    assert top.answer.results and all(r.get("subCategory") == "Topwear" for r in top.answer.results)
    if "shoes" in kinds:
        shoes = look.items[kinds.index("shoes")]
        assert all(r.get("masterCategory") == "Footwear" for r in shoes.answer.results)
    assert look.first is look.items[0].answer


def test_a_studio_shot_is_one_item_searched_as_before(look_searcher, searcher):
    from operations import SearchPolicy, find_by_photo, find_the_look
    policy = SearchPolicy(models=("resnet18",), default_model="resnet18")
    shot = _png(draw_product(5, (20, 30, 110), "rectangle"))
    look = find_the_look(look_searcher, policy, shot)
    before = find_by_photo(searcher, policy, shot)
    assert len(look.items) == 1 and look.items[0].item is None
    assert [r.id for r in look.first.results] == [r.id for r in before.results]


@pytest.mark.parametrize("image", [Image.new("RGB", (1, 1), (200, 10, 10)), Image.new("RGB", (4000, 30), (9, 9, 9)),
                                   Image.new("RGB", (300, 400), (255, 255, 255))])
def test_a_photo_showing_nothing_is_told_so(look_searcher, image):
    from operations import Refused, SearchPolicy, find_the_look
    policy = SearchPolicy(models=("resnet18",), default_model="resnet18")
    with pytest.raises(Refused) as refused:
        find_the_look(look_searcher, policy, _png(image))
    assert refused.value.reason == "nothing_found" and "can't find a product" in str(refused.value)


def test_the_api_returns_items_and_items_false_gives_the_old_answer(look_searcher):
    from fastapi.testclient import TestClient

    from operations import SearchPolicy
    from shop import ShopSettings, build_app
    app = build_app(look_searcher, ShopSettings(policy=SearchPolicy(models=("resnet18",), default_model="resnet18")))
    client = TestClient(app)
    files = {"image": ("look.png", _png(draw_scene(1003)[0]), "image/png")}
    body = client.post("/api/recommend", files=files).json()
    assert body["items"] and body["results"] == body["items"][0]["results"]
    for item in body["items"]:
        assert set(item) >= {"label", "box", "score", "results"}
        x0, y0, x1, y1 = item["box"]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    old = client.post("/api/recommend", files=files, data={"items": "false"}).json()
    assert "items" not in old and old["results"]
    blank = client.post("/api/recommend", files={"image": ("b.png", _png(Image.new("RGB", (1, 1))), "image/png")})
    assert blank.status_code == 422 and "can't find a product" in blank.json()["detail"]
    assert "items" in client.get("/openapi.json").text


def test_search_json_carries_items_and_items_off_keeps_todays_lines(indexed_db, trained_parser, tmp_path):
    photo = tmp_path / "look.png"
    draw_scene(1004)[0].save(photo)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (1, 1)).save(blank)
    base = [sys.executable, str(ROOT / "app.py"), "search", "--db", str(indexed_db), "--model", "resnet18",
            "--weights", "random", "--runtime", "eager", "--json", "--parser", str(trained_parser[0])]
    on = subprocess.run(base + [str(photo), str(blank)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = [json.loads(line) for line in on.stdout.splitlines()]
    assert on.returncode == 1, "the blank photo is an error line, the exit status says so"
    assert lines[0]["items"] and lines[0]["results"] == lines[0]["items"][0]["results"]
    assert "can't find a product" in lines[1]["error"]
    off = subprocess.run(base + ["--items", "off", str(photo)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert off.returncode == 0, off.stderr
    line = json.loads(off.stdout)
    assert "items" not in line and line["results"]


def test_the_chat_names_the_items_and_a_tap_searches_another(look_searcher, tmp_path):
    from assistant.chat import Assistant
    from assistant.settings import AssistantSettings
    from operations import SearchPolicy
    assistant = Assistant(look_searcher, AssistantSettings(policy=SearchPolicy(models=("resnet18",),
                                                                               default_model="resnet18")))
    photo = tmp_path / "look.png"
    draw_scene(1005)[0].save(photo)
    reply, state = assistant.handle_turn(assistant.new_state(), "", [str(photo)])
    assert reply.kind == "results" and reply.items_line.startswith("I see ")
    kinds = [item.kind for item in state.query.items]
    assert "top" in kinds and "trousers or skirt" in kinds
    assert f"the {kinds[0]} in your photo" in reply.headline
    other = kinds.index("top") if kinds[0] != "top" else kinds.index("trousers or skirt")
    reply, state = assistant.search_item(state, other)
    assert reply.kind == "results" and f"the {kinds[other]} in your photo" in reply.headline
    expected = "Topwear" if kinds[other] == "top" else None
    if expected:
        assert all(r.get("subCategory") == expected for r in reply.results)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (1, 1)).save(blank)
    reply, _ = assistant.handle_turn(state, "", [str(blank)])
    assert reply.kind == "error" and "can't find a product" in reply.headline


def test_street_garments_become_labelled_cut_outs_for_fine_tuning(tmp_path):
    # finetune --photos STREET_DIR: each outlined garment cut out on white, labelled with its
    # street label, the photos the parser held out only scored (evaluate-look queries with them).
    import numpy as np

    from catalog.photo_labels import kind_matches
    from training.real_photos import RealPhotos, allowed_types, photo_image
    folder = make_street(tmp_path / "street", 4)
    photos = RealPhotos.read([folder], street_held_out=["0003"])
    assert {p.path.stem for p in photos.held_out} == {"0003"}
    assert {p.path.stem for p in photos.train} == {"0000", "0001", "0002"}
    assert sorted(p.photo_class for p in photos.held_out) == ["street:jeans", "street:shoes", "street:t-shirt"]
    shirt = next(p for p in photos.train if p.photo_class == "street:t-shirt")
    assert kind_matches(shirt.photo_class, "Tshirts") and not kind_matches(shirt.photo_class, "Jeans")
    assert allowed_types(shirt.photo_class, ["Jeans", "Tops", "Tshirts"]).tolist() == [False, True, True]
    _, _, boxes = draw_scene(int(shirt.path.stem))
    cut = np.asarray(photo_image(shirt)).reshape(-1, 3).astype(int)
    # The top's own red fills most of the cut-out; the street around it is white, none of it left.
    red = (np.abs(cut - np.array(TOP)) < 45).all(axis=1).mean()
    white = (cut > 240).all(axis=1).mean()
    assert red > 0.6 and red + white > 0.95
    x0, y0, x1, y1 = boxes["top"]
    width, height = photo_image(shirt).size   # the top's box with a margin, not the photo
    assert 0.9 < width / ((x1 - x0) * 200 * 1.12) < 1.1 and 0.9 < height / ((y1 - y0) * 300 * 1.12) < 1.1


def _probabilities(classes: int, size: tuple[int, int], regions: dict):
    """A parser's output with each class's rectangles (x0, y0, x1, y1 in pixels) sure of it."""
    import torch
    height, width = size
    logits = torch.zeros(classes, height, width)
    logits[0] = 5.0
    for index, boxes in regions.items():
        for x0, y0, x1, y1 in boxes:
            logits[index, y0:y1, x0:x1] = 10.0
    return logits.softmax(0)


def test_a_second_bag_or_shoe_apart_from_the_first_is_an_item_of_its_own_and_a_pair_of_shoes_stays_one():
    from embedding.garments import BY_NAME, GARMENT_CLASSES, box_iou, items_from
    index = {g.name: i for i, g in enumerate(GARMENT_CLASSES)}
    height, width = 224, 144
    carried, on_the_floor = (10, 60, 40, 100), (100, 180, 136, 215)
    # a pair a little apart (one foot forward), and a shoe on a shelf across the photo
    left_shoe, right_shoe, on_a_shelf = (40, 200, 58, 214), (72, 203, 90, 217), (110, 120, 128, 134)
    probabilities = _probabilities(len(GARMENT_CLASSES), (height, width),
                                   {index["bag"]: [carried, on_the_floor],
                                    index["shoes"]: [left_shoe, right_shoe, on_a_shelf]})
    items = items_from(probabilities)
    bags = sorted((i for i in items if i.kind == "bag"), key=lambda i: i.box[0])
    shoes = sorted((i for i in items if i.kind == "shoes"), key=lambda i: i.box[0])
    assert len(bags) == 2 and len(shoes) == 2, [(i.kind, i.box) for i in items]

    def fraction(box):
        return (box[0] / width, box[1] / height, box[2] / width, box[3] / height)
    assert box_iou(bags[0].box, fraction(carried)) > 0.8
    assert box_iou(bags[1].box, fraction(on_the_floor)) > 0.8
    assert box_iou(shoes[0].box, fraction((40, 200, 90, 217))) > 0.8
    assert box_iou(shoes[1].box, fraction(on_a_shelf)) > 0.8
    # each part carries its own pixels, so each is cut out and coloured alone
    assert not (bags[0].mask & bags[1].mask).any()
    assert bags[0].mask.sum() == (carried[2] - carried[0]) * (carried[3] - carried[1])
    assert BY_NAME["bag"].label == bags[0].label


def test_glasses_are_their_confident_frame_not_the_face_around_it():
    import torch

    from embedding.garments import GARMENT_CLASSES, box_iou, items_from
    index = {g.name: i for i, g in enumerate(GARMENT_CLASSES)}
    height, width = 224, 144
    face, frame = (50, 20, 94, 70), (60, 38, 84, 46)
    logits = torch.zeros(len(GARMENT_CLASSES), height, width)
    logits[index["glasses"], face[1]:face[3], face[0]:face[2]] = 1.0     # the face: glasses, barely
    logits[index["glasses"], frame[1]:frame[3], frame[0]:frame[2]] = 10.0  # the frame: sure
    for kind, box in (("top", (30, 90, 114, 160)), ("belt", (40, 160, 104, 170))):
        logits[index[kind], box[1]:box[3], box[0]:box[2]] = 1.0           # as unsure, and no core
    items = {i.kind: i for i in items_from(logits.softmax(0), min_score=0.1)}

    def fraction(box):
        return (box[0] / width, box[1] / height, box[2] / width, box[3] / height)
    glasses = items["glasses"]
    assert box_iou(glasses.box, fraction(frame)) > 0.8 and box_iou(glasses.box, fraction(face)) < 0.2
    assert glasses.mask.sum() == (frame[2] - frame[0]) * (frame[3] - frame[1])   # cut out and coloured alone
    # a class without a core, and one whose pixels never reach it, keep every pixel
    assert box_iou(items["top"].box, fraction((30, 90, 114, 160))) > 0.9
    assert box_iou(items["belt"].box, fraction((40, 160, 104, 170))) > 0.9


def test_an_item_is_framed_as_the_catalog_frames_its_class_with_white_past_the_photos_edge():
    from embedding.garments import BY_NAME, CUT_OUT_SIDE, GARMENT_CLASSES, items_from
    index = {g.name: i for i, g in enumerate(GARMENT_CLASSES)}
    height, width = 224, 144
    # a top in the middle, shoes touching the bottom edge of the photo
    top_cells, shoe_cells = (40, 40, 104, 120), (50, 200, 94, 224)
    probabilities = _probabilities(len(GARMENT_CLASSES), (height, width),
                                   {index["top"]: [top_cells], index["shoes"]: [shoe_cells]})
    items = {i.kind: i for i in items_from(probabilities)}
    photo = Image.new("RGB", (width * 4, height * 4), (90, 140, 60))   # a green street, 4 pixels a cell
    for kind, colour in (("top", (200, 30, 30)), ("shoes", (20, 20, 20))):
        x0, y0, x1, y1 = (round(v * s) for v, s in zip(items[kind].box, (width * 4, height * 4) * 2))
        ImageDraw.Draw(photo).rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)

    def filled(cut):
        """The share of the cut-out's longer side the item spans, and whether the street is gone
        (green only where the mask's edge blends it in)."""
        pixels = np.asarray(cut, dtype=np.int16)
        ys, xs = np.nonzero(pixels.min(axis=2) < 200)
        spans = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) / max(cut.size)
        green = (pixels[..., 1] > pixels[..., 0] + 30) & (pixels[..., 1] > pixels[..., 2] + 30)
        return spans, green.mean() < 0.03

    top_fill, top_white = filled(items["top"].cut_out(photo))
    shoe_fill, shoe_white = filled(items["shoes"].cut_out(photo))
    assert top_white and shoe_white, "the street is gone, also past the photo's edge"
    # shoes sit small on white in catalog shots, a worn top fills the frame
    assert abs(shoe_fill - BY_NAME["shoes"].fill) < 0.05 and abs(top_fill - BY_NAME["top"].fill) < 0.05
    assert BY_NAME["shoes"].fill < BY_NAME["top"].fill - 0.1
    # the white below the shoes is there although the photo ends under them
    shoes = np.asarray(items["shoes"].cut_out(photo), dtype=np.int16)
    assert shoes[-3:].min() > 245
    # a wide margin around an item that fills a large photo stays within a bounded picture
    large = photo.resize((4000, 6000))
    assert max(items["top"].cut_out(large, margin=0.5).size) == CUT_OUT_SIDE


def test_thousands_of_specks_close_together_are_one_part_and_far_groups_two():
    from embedding.garments import parts_apart
    speckled = np.zeros((224, 144), dtype=bool)
    for y in range(0, 100, 4):
        for x in range(0, 144, 4):
            speckled[y:y + 3, x:x + 3] = True  # 900 pieces, a pixel apart
    speckled[200:220, 60:80] = True             # a block far below them
    parts = parts_apart(speckled, 0.5)
    assert sorted(int(p.sum()) for p in parts) == [400, 25 * 36 * 9]
    assert not np.logical_and(*parts).any() and np.logical_or(*parts).sum() == speckled.sum()


def _item(kind: str, box, score: float = 0.9):
    from embedding.garments import BY_NAME, Item
    garment = BY_NAME[kind]
    return Item(kind, garment.label, garment.search_categories, box, score, 0.1, np.zeros((4, 4), dtype=bool))


@pytest.mark.parametrize("items, worn", [
    # a person: a top above trousers above shoes, each narrow
    ([("top", (0.35, 0.2, 0.6, 0.5)), ("trousers or skirt", (0.37, 0.5, 0.58, 0.85)), ("shoes", (0.38, 0.86, 0.57, 0.95))], True),
    ([("jacket or coat", (0.3, 0.2, 0.65, 0.6)), ("shoes", (0.4, 0.85, 0.55, 0.97))], True),
    # the same two, the parser unsure of one
    ([("jacket or coat", (0.3, 0.2, 0.65, 0.6)), ("shoes", (0.4, 0.85, 0.55, 0.97), 0.6)], False),
    # a shirt and trousers laid side by side on a bed
    ([("top", (0.05, 0.3, 0.45, 0.7)), ("trousers or skirt", (0.55, 0.2, 0.95, 0.9))], False),
    # one garment spread across the frame, read as a top over trousers
    ([("top", (0.1, 0.1, 0.9, 0.5)), ("trousers or skirt", (0.1, 0.45, 0.9, 0.95))], False),
    # shoes above trousers: not how a person wears them
    ([("shoes", (0.4, 0.1, 0.55, 0.3)), ("trousers or skirt", (0.37, 0.4, 0.58, 0.85))], False),
    # a bag beside a top: a bag goes anywhere, it says nothing of a body
    ([("bag", (0.3, 0.6, 0.5, 0.8)), ("top", (0.35, 0.2, 0.6, 0.5))], False),
])
def test_items_are_searched_one_by_one_only_when_a_person_wears_them(items, worn):
    from operations.find_the_look import is_outfit
    assert is_outfit([_item(*spec) for spec in items]) is worn
