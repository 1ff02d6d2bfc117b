"""The evaluation: metrics on a case worked out by hand, photo-like queries, and the command
end to end on a generated catalog with seeded random weights (real embedded Chroma)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

import app
from catalog.photolike import BACKGROUNDS, PhotoLikeSettings, background, cut_out, product_mask, shopper_photo
from evaluation import EvaluationSettings, QueryOutcome, run_evaluation, score
from evaluation.metrics import average_precision_at_k, hit_at_k, precision_at_k, worst_article_types
from evaluation.model_facts import preprocessing_fit
from tests.conftest import draw_product, make_catalog
from vectorstore import StoreSettings

LEVELS = ("articleType", "subCategory", "masterCategory", "gender", "baseColour")


def row(*values):
    return dict(zip(LEVELS, values))


# -- metrics, by hand ----------------------------------------------------------------------
# k = 3. Query A finds Shirts at ranks 1 and 3; B finds its Heels at rank 2 (the only other
# Heels in the index); C gets only two results, both right; D finds nothing right; E is the
# only Sarees in the index (R = 0), so it can only miss and has no AP.
HAND_CASE = [
    QueryOutcome("A", row("Shirts", "Topwear", "Apparel", "Men", "Blue"), [
        row("Shirts", "Topwear", "Apparel", "Men", "Blue"),
        row("Tshirts", "Topwear", "Apparel", "Men", "Blue"),
        row("Shirts", "Topwear", "Apparel", "Women", "Blue")], n_relevant=4),
    QueryOutcome("B", row("Heels", "Shoes", "Footwear", "Women", None), [
        row("Flip Flops", "Flip Flops", "Footwear", "Women", "Black"),
        row("Heels", "Shoes", "Footwear", "Men", "Red"),
        row("Handbags", "Bags", "Accessories", "Men", "Black")], n_relevant=1),
    QueryOutcome("C", {"articleType": "Watches"}, [{"articleType": "Watches"}, {"articleType": "Watches"}],
                 n_relevant=2),
    QueryOutcome("D", {"articleType": "Jeans"}, [{"articleType": a} for a in ("Shirts", "Tshirts", "Heels")],
                 n_relevant=5),
    QueryOutcome("E", {"articleType": "Sarees"}, [{"articleType": a} for a in ("Shirts", "Kurtas", "Heels")],
                 n_relevant=0),
]


def test_precision_per_level_by_hand():
    scores = score(HAND_CASE, k=3)
    # articleType: A 2/3, B 1/3, C 2/3 (two results still divide by k), D 0, E 0.
    assert scores.precision["articleType"] == pytest.approx((2 / 3 + 1 / 3 + 2 / 3 + 0 + 0) / 5)
    # The other levels are judged on A and B only (C, D, E have no such labels).
    assert scores.precision["subCategory"] == pytest.approx((1 + 1 / 3) / 2)
    assert scores.precision["masterCategory"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores.precision["gender"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    # B has no baseColour: only A counts, and all its results are Blue.
    assert scores.precision["baseColour"] == pytest.approx(1.0)
    # type+colour needs both: A's Blue Shirts at ranks 1 and 3 (the Blue Tshirts is no match).
    assert scores.precision["type+colour"] == pytest.approx(2 / 3)
    assert scores.queries == 5


def test_map_and_hit_rate_by_hand():
    scores = score(HAND_CASE, k=3)
    # AP@3: A (1/1 + 2/3) / min(3, 4) = 5/9; B (1/2) / min(3, 1) = 1/2; C (1 + 1) / 2 = 1; D 0;
    # E has no relevant product to find and is left out.
    assert scores.map == pytest.approx((5 / 9 + 1 / 2 + 1 + 0) / 4)
    assert scores.hit_rate == pytest.approx(3 / 5)


def test_per_article_type_and_worst_by_hand():
    scores = score(HAND_CASE, k=3, worst=3)
    per_type = {s.article_type: (s.queries, s.precision, s.hit_rate) for s in scores.per_article_type}
    assert per_type["Shirts"] == (1, pytest.approx(2 / 3), 1.0)
    assert per_type["Heels"] == (1, pytest.approx(1 / 3), 1.0)
    assert per_type["Jeans"] == (1, 0.0, 0.0)
    # Lowest precision first; equal ones by name.
    assert [s.article_type for s in scores.worst_article_types] == ["Jeans", "Sarees", "Heels"]
    # Types with too few queries are not ranked at all.
    assert worst_article_types(scores.per_article_type, n=10, min_queries=2) == []


def test_single_query_functions():
    results = ["Shirts", "Tshirts", "Shirts", "Shirts"]
    assert precision_at_k("Shirts", results, 3) == pytest.approx(2 / 3)
    assert precision_at_k("Shirts", results, 4) == pytest.approx(3 / 4)
    assert precision_at_k(None, results, 3) is None
    assert hit_at_k("Jeans", results, 4) == 0.0
    # Without R, AP divides by the relevant results found: (1 + 2/3) / 2.
    assert average_precision_at_k("Shirts", results, 3) == pytest.approx(5 / 6)
    assert average_precision_at_k("Shirts", results, 3, n_relevant=0) is None
    with pytest.raises(ValueError):
        precision_at_k("Shirts", results, 0)


# -- photo-like queries --------------------------------------------------------------------
def test_shopper_photo_is_seeded_and_keeps_the_size():
    shot = draw_product(7, (200, 30, 30), "rectangle", size=(90, 120))
    first = shopper_photo(shot, random.Random(3))
    again = shopper_photo(shot, random.Random(3))
    other = shopper_photo(shot, random.Random(4))
    assert first.size == shot.size and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    # It is a different picture, not the studio shot with a little noise.
    diff = np.abs(np.asarray(first, dtype=float) - np.asarray(shot, dtype=float)).mean()
    assert diff > 20
    resized = shopper_photo(shot, random.Random(3), PhotoLikeSettings(size=(64, 64)))
    assert resized.size == (64, 64)


def test_shopper_photo_from_a_kept_cut_out_is_the_same_photo():
    """Training keeps each product's cut-out and stages it anew every epoch: that must be
    the photo the shot itself would give, pixel for pixel, or training and evaluation drift."""
    shot = draw_product(9, (30, 140, 60), "ellipse", size=(90, 120))
    piece = cut_out(shot)
    assert piece.size == shot.size
    assert piece.product.size == piece.alpha.size
    assert piece.product.width < shot.width and piece.product.height < shot.height  # cropped to the product
    for seed in range(4):
        assert np.array_equal(np.asarray(shopper_photo(piece, random.Random(seed))),
                              np.asarray(shopper_photo(shot, random.Random(seed))))


def test_shopper_photo_leaves_global_random_state_alone():
    shot = draw_product(8, (20, 30, 110), "ellipse")
    random.seed(1)
    np.random.seed(1)
    expected = (random.random(), np.random.random())
    random.seed(1)
    np.random.seed(1)
    shopper_photo(shot, random.Random(0))
    assert (random.random(), np.random.random()) == expected


def test_product_mask_keeps_a_white_garment_inside_its_outline():
    shot = Image.new("RGB", (60, 80), (255, 255, 255))
    ImageDraw.Draw(shot).rectangle((15, 20, 45, 60), fill=(255, 255, 255), outline=(90, 90, 90), width=2)
    mask = np.asarray(product_mask(shot))
    assert mask[40, 30] == 255          # white inside the outline: product
    assert mask[2, 2] == 0 and mask[77, 57] == 0  # studio white around it: background


def test_product_mask_handles_a_grey_vignetted_backdrop():
    ys, xs = np.mgrid[0:80, 0:60]
    vignette = 235 - 0.012 * ((xs - 30) ** 2 + (ys - 40) ** 2)  # lighter centre, darker corners
    pixels = np.repeat(vignette[..., None], 3, axis=2)
    pixels[30:50, 20:40] = (30, 40, 160)
    mask = np.asarray(product_mask(Image.fromarray(pixels.clip(0, 255).astype(np.uint8))))
    assert mask[40, 30] == 255
    assert mask[1, 1] == 0 and mask[78, 58] == 0 and mask[40, 5] == 0


@pytest.mark.parametrize("kind", BACKGROUNDS)
def test_every_background_kind(kind):
    image = background((40, 30), random.Random(5), kind)
    assert image.size == (40, 30) and image.mode == "RGB"
    assert np.asarray(image).std() > 1  # a texture, not a flat fill


def test_unknown_background_kind_is_refused():
    with pytest.raises(ValueError, match="unknown background"):
        background((10, 10), random.Random(0), "marble")


# -- preprocessing fit ---------------------------------------------------------------------
def test_preprocessing_fit_of_a_three_by_four_image():
    from torchvision import models
    facts = preprocessing_fit(models.ResNet18_Weights.DEFAULT.transforms(), (180, 240))
    # Shorter side 180 -> 256, so 240 -> 341.33; the 224 crop keeps 224/341.33 of the height.
    assert facts["resize_shorter_side"] == 256 and facts["centre_crop"] == 224
    assert facts["kept_height"] == pytest.approx(224 / (240 * 256 / 180))
    assert facts["cut_height"] == pytest.approx(1 - 224 / (240 * 256 / 180))
    assert facts["kept_width"] == pytest.approx(224 / 256)
    assert facts["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_preprocessing_fit_of_padding_to_a_square():
    from embedding.architectures import architecture
    facts = preprocessing_fit(architecture("efficientnet_lite0").transform(), (180, 240))
    # Padded to 240x240 on white, then 224: nothing cut, a quarter of the square is margin.
    assert facts["framing"] == "pad to square on white"
    assert facts["cut_height"] == 0 and facts["kept_area"] == 1
    assert facts["padded"] == pytest.approx(0.25)
    assert facts["upscale"] == pytest.approx(224 / 240)
    assert "keeps the whole image" in facts["summary"]


# -- the command, end to end ---------------------------------------------------------------
MODELS = ("resnet18", "resnet50")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, catalog_dir):
    """One `app.py evaluate` run on the generated catalog, into a fresh Chroma folder."""
    root = tmp_path_factory.mktemp("evaluate")
    db, out = root / "db", root / "out"
    code = app.main(["evaluate", "--catalog", str(catalog_dir), "--db", str(db), "--weights", "random",
                     "--models", ",".join(MODELS), "--k", "3", "--sample", "6", "--seed", "1",
                     "--out", str(out), "--quiet"])
    return db, out, code


def test_evaluate_writes_the_report_and_its_plots(evaluated):
    _, out, code = evaluated
    assert code == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    for model in MODELS:
        assert f"## {model}" in report
        assert f"| {model} |" in report  # its row of the summary table
    assert "| precision@3 articleType |" in report and "Worst 10 article types" in report
    assert "- query photos: embedded whole and zoomed in on the centre (80%, 65% of each side)" in report
    assert "- colour: each photo's colour is read (model: shipped) and its reading reorders the candidates" in report
    embedded = [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert {"precision_by_level.png", "accuracy_vs_latency.png", "article_types.png"} <= set(embedded)
    for name in embedded:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 100


def test_evaluate_metrics_json_fields(evaluated, catalog_dir):
    import torch
    from torchvision import models
    _, out, _ = evaluated
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["settings"]["k"] == 3 and metrics["settings"]["weights"] == "random"
    assert metrics["settings"]["query_views"]["zooms"] == [1.0, 0.8, 0.65]
    assert metrics["queries"] == {"mode": "leave-one-out", "count": 6, "photo_like": True, "folder": None,
                                  "held_out_from": None, "held_out_missing": 0, "skipped": [], "photos": None,
                                  "colour_model": "shipped"}
    assert metrics["catalog"]["products"] == 24 and metrics["catalog"]["image_size"] == [60, 80]
    assert metrics["machine"]["cpus"] >= 1
    assert metrics["index"]["reused"] is False and metrics["index"]["indexed"] == {m: 24 for m in MODELS}
    assert set(metrics["models"]) == set(MODELS)
    for name, dim in (("resnet18", 512), ("resnet50", 2048)):
        m = metrics["models"][name]
        network = getattr(models, name)()
        network.fc = torch.nn.Identity()
        assert m["parameters"] == sum(p.numel() for p in network.parameters())
        assert m["embedding_size"] == dim
        # Published: 1.8 and 4.1 billion multiply-adds at 224 px (a multiply-add is two FLOPs).
        assert m["input_size"] == 224
        assert abs(m["flops"] / 2e9 - {"resnet18": 1.82, "resnet50": 4.11}[name]) < 0.1
        assert m["index_size"]["bytes"] > 0
        assert m["embed_rate"]["images_per_s"] > 0
        assert m["latency"]["queries"] == 6 and 0 < m["latency"]["p50_ms"] <= m["latency"]["p95_ms"]
        assert 0 < m["preprocessing"]["cut_height"] < 0.5
        for kind in ("clean", "photo_like"):
            scores = m[kind]
            assert scores["queries"] == 6 and scores["k"] == 3
            assert set(scores["precision"]) == set(LEVELS) | {"type+colour"}
            assert all(0 <= v <= 1 for v in scores["precision"].values())
            assert 0 <= scores["map"] <= 1 and 0 <= scores["hit_rate"] <= 1
            assert sum(t["queries"] for t in scores["per_article_type"]) == 6
    # A 2048-d index takes more room than a 512-d one.
    assert metrics["models"]["resnet50"]["index_size"]["bytes"] > metrics["models"]["resnet18"]["index_size"]["bytes"]


def test_a_second_run_reuses_the_index_and_gives_the_same_clean_scores(evaluated, catalog_dir, embedders):
    db, out, _ = evaluated
    first = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    settings = EvaluationSettings(catalog=catalog_dir, store=StoreSettings(path=db), models=("resnet18",),
                                  weights="random", k=3, sample=6, seed=1, photo_like=False,
                                  latency_queries=3, show_progress=False)
    evaluation = run_evaluation(settings, embedders=embedders)
    assert evaluation.index["reused"] is True
    m = evaluation.models[0]
    assert m.photo_like is None and m.latency.queries == 3
    assert "clean catalog images" in m.latency.measured_on
    assert "the index was current" in m.embed_rate.source
    assert m.clean.to_json() == first["models"]["resnet18"]["clean"]
    # Leave-one-out: no query among its own recommendations, and k of them each.
    for outcome in m.outcomes["clean"]:
        ids = [r["id"] for r in outcome.results]
        assert outcome.query_id not in ids and len(ids) == 3


def test_a_queries_folder_is_searched_with_nothing_excluded(evaluated, catalog_dir, embedders, tmp_path):
    db, _, _ = evaluated
    # Products 1001..1006 of a one-per-kind catalog: 1001 is drawn exactly as the main
    # catalog's 1001, the others are new drawings.
    queries = make_catalog(tmp_path / "queries", per_kind=1)
    settings = EvaluationSettings(catalog=catalog_dir, store=StoreSettings(path=db), models=("resnet18",),
                                  weights="random", k=3, queries=queries, photo_like=False, show_progress=False)
    evaluation = run_evaluation(settings, embedders=embedders)
    assert evaluation.queries["mode"] == "folder" and evaluation.queries["count"] == 6
    outcomes = {o.query_id: o for o in evaluation.models[0].outcomes["clean"]}
    assert outcomes["1001"].results[0]["id"] == "1001"  # its twin in the catalog comes first
    assert outcomes["1001"].n_relevant == 4  # every Heels in the catalog, none excluded
    assert evaluation.models[0].latency.queries == 6


def test_an_index_run_big_enough_gives_the_embedding_rate(catalog_dir, embedders, tmp_path):
    settings = EvaluationSettings(catalog=catalog_dir, store=StoreSettings(path=tmp_path / "db"),
                                  models=("resnet18",), weights="random", k=3, sample=2, photo_like=False,
                                  latency_queries=1, rate_from_index_min=10, show_progress=False)
    evaluation = run_evaluation(settings, embedders=embedders)
    assert evaluation.models[0].embed_rate.source.startswith("indexing run")
    assert evaluation.models[0].embed_rate.images == 24


def test_evaluate_refuses_a_bad_sample_with_a_message(tmp_path, catalog_dir, capsys):
    code = app.main(["evaluate", "--catalog", str(catalog_dir), "--db", str(tmp_path / "db"),
                     "--weights", "random", "--models", "resnet18", "--sample", "0", "--out", str(tmp_path / "out"),
                     "--quiet"])
    assert code == 2
    assert "--sample must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_handheld_photos_are_seeded_keep_the_shot_and_differ_from_the_cutout_kind(catalog_dir):
    import random

    from catalog import open_image
    from catalog.handheld import WALLS, handheld_photo
    image = open_image(sorted((catalog_dir / "images").glob("*.jpg"))[0])
    first, again = (handheld_photo(image, random.Random("0:1001")) for _ in range(2))
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(handheld_photo(image, random.Random("0:1002"))))
    # Zoomed out onto a wall: bigger than the shot, the corners the wall's colour (give or take
    # the jitter and blur), and the white studio backdrop still there, unlike a cut-out.
    assert first.width > image.width and first.height > image.height
    pixels = np.asarray(first).astype(int)
    assert pixels.reshape(-1, 3).max(axis=1).max() > 200
    corner = pixels[:3, :3].reshape(-1, 3).mean(axis=0)
    assert min(np.abs(corner - np.array(w) * f).max() for w in WALLS for f in np.linspace(0.5, 1.5, 41)) < 40


def test_evaluate_asks_with_handheld_photos_when_told(evaluated, catalog_dir, tmp_path, capsys):
    db, _, _ = evaluated
    out = tmp_path / "handheld"
    assert app.main(["evaluate", "--catalog", str(catalog_dir), "--db", str(db), "--weights", "random",
                     "--models", "resnet18", "--k", "3", "--sample", "6", "--seed", "1", "--photo-style", "handheld",
                     "--zoom", "off", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["settings"]["photo_style"] == "handheld"
    assert metrics["settings"]["query_views"]["zooms"] == [1.0]
    assert metrics["models"]["resnet18"]["photo_like"]["queries"] == 6
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "photo-like queries (handheld)" in report and "- query photos: embedded as they are (`--zoom off`)" in report
    with pytest.raises(ValueError, match="--photo-style"):
        run_evaluation(EvaluationSettings(catalog=catalog_dir, store=StoreSettings(path=db), models=("resnet18",),
                                          photo_style="sideways"))
