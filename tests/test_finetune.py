"""Fine-tuning (issue 6): tiny real runs on a generated catalog (random start, 64 px, one or
two epochs), whose weights file `index` then accepts; resuming after an interruption; refusal
for another model; --head-only."""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from tests.conftest import make_catalog

SIZE = 64


class Interrupted(Exception):
    pass


def stop(epoch: int) -> None:
    """An `after_epoch` hook standing for Ctrl-C right after the first checkpoint."""
    raise Interrupted(epoch)


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory) -> Path:
    # 6 kinds x 6 products: with a quarter held out, 2 validation products per articleType.
    return make_catalog(tmp_path_factory.mktemp("ft_catalog"), per_kind=6)


def settings_for(catalog: Path, out: Path, **changes):
    from training import FinetuneSettings
    values = dict(catalog=catalog, model="resnet18", out=out, epochs=1, image_size=SIZE, batch_size=8,
                  device="cpu", weights="random", seed=3, val_fraction=0.25, workers=0, threads=1, progress=False)
    values.update(changes)
    return FinetuneSettings(**values)


@pytest.fixture(scope="module")
def tuned(small_catalog, tmp_path_factory) -> Path:
    """One epoch through the command line, as a user would run it."""
    import app
    out = tmp_path_factory.mktemp("ft_out") / "resnet18-shop.pt"
    code = app.main(["finetune", "--catalog", str(small_catalog), "--model", "resnet18", "--out", str(out),
                     "--epochs", "1", "--image-size", str(SIZE), "--batch-size", "8", "--device", "cpu",
                     "--weights", "random", "--seed", "3", "--val-fraction", "0.25", "--workers", "0", "--threads", "1",
                     "--photo-probability", "0.4", "--margin", "0.2", "--aux-targets", "gender,baseColour",
                     "--quiet"])
    assert code == 0
    return out


# --- the split, the metric, the schedule, the augmentation ---------------------------------

def test_split_is_seeded_by_product_and_stratified(small_catalog):
    from catalog import read_catalog
    from training.data import split_products
    products = read_catalog(small_catalog).products
    first = split_products(products, 0.25, seed=1)
    again = split_products(products, 0.25, seed=1)
    other = split_products(products, 0.25, seed=2)
    ids = lambda ps: sorted(p.id for p in ps)
    assert ids(first.val) == ids(again.val)
    assert ids(first.val) != ids(other.val)
    assert not set(ids(first.val)) & set(ids(first.train))
    assert len(first.val) + len(first.train) == len(products)
    for article_type in {p.articleType for p in products}:
        assert sum(p.articleType == article_type for p in first.val) == 2  # round(6 x 0.25)
        assert sum(p.articleType == article_type for p in first.train) == 4


def test_precision_at_k_by_hand():
    from training.validate import precision_at_k
    # Four products on a line; each query's own row is left out of its gallery.
    rows = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    labels = ["Shirts", "Shirts", "Heels", "Shirts"]
    per_query, ceiling = precision_at_k(rows, labels, rows, labels, k=2, self_index=[0, 1, 2, 3])
    # 0 -> [1, 3]: 2 Shirts; 1 -> [0, 3]: 2; 2 (Heels) -> [3, 1]: 0; 3 -> [2, 1]: 1.
    assert per_query == [1.0, 1.0, 0.0, 0.5]
    assert ceiling == pytest.approx((1 + 1 + 0 + 1) / 4)  # no other Heels to find


def test_learning_rate_warms_up_then_decays():
    from training.trainer import lr_at
    values = [lr_at(step, 1000, 1.0) for step in range(1000)]
    peak = values.index(max(values))
    assert 0 < peak <= 60
    assert all(a <= b for a, b in zip(values[:peak], values[1:peak + 1]))
    assert all(a >= b for a, b in zip(values[peak:], values[peak + 1:]))
    assert values[-1] < 0.05


def test_margin_makes_the_true_class_win_by_a_cosine():
    from torch import nn

    from training.data import IGNORE
    from training.model import COSINE_SCALE
    from training.trainer import _loss
    torch.manual_seed(0)
    logits = {"articleType": torch.randn(4, 5) * 4}
    targets = torch.tensor([[0, IGNORE, IGNORE], [3, IGNORE, IGNORE], [IGNORE, IGNORE, IGNORE], [4, IGNORE, IGNORE]])
    plain = settings_for(Path("."), Path("x.pt"), label_smoothing=0.0)
    expected = nn.functional.cross_entropy(logits["articleType"], targets[:, 0], ignore_index=IGNORE)
    assert torch.allclose(_loss(logits, targets, plain), expected)

    # With a margin, exactly the true class's logit drops by margin x scale, rows without a
    # label stay out, and the loss only grows.
    shifted = logits["articleType"].clone()
    for row, wanted in enumerate(targets[:, 0].tolist()):
        if wanted != IGNORE:
            shifted[row, wanted] -= 0.3 * COSINE_SCALE
    expected = nn.functional.cross_entropy(shifted, targets[:, 0], ignore_index=IGNORE)
    with_margin = _loss(logits, targets, settings_for(Path("."), Path("x.pt"), label_smoothing=0.0, margin=0.3))
    assert torch.allclose(with_margin, expected)
    assert with_margin > _loss(logits, targets, plain)

    for bad in ({"margin": 1.0}, {"margin": -0.1}, {"photo_probability": 1.5}, {"crop_min": 0.0}, {"crop_min": 1.5}):
        with pytest.raises(ValueError, match="--margin|--photo-probability|--crop-min"):
            settings_for(Path("."), Path("x.pt"), **bad)


def test_auxiliary_targets_are_catalog_columns_and_colour_turns_grey_views_off(small_catalog):
    from catalog import read_catalog
    from training.augment import ShopperAugment
    from training.data import LabelVocab
    from training.trainer import _loss
    plain = settings_for(Path("."), Path("x.pt"))
    assert plain.targets == ("articleType", "gender", "masterCategory")
    coloured = settings_for(Path("."), Path("x.pt"), aux_targets=["gender", "baseColour"])
    assert coloured.targets == ("articleType", "gender", "baseColour")
    assert ShopperAugment.for_settings(plain).grey_probability > 0
    assert ShopperAugment.for_settings(coloured).grey_probability == 0

    vocab = LabelVocab.from_products(read_catalog(small_catalog).products, coloured.targets)
    assert list(vocab.values) == ["articleType", "gender", "baseColour"]
    product = read_catalog(small_catalog).products[0]
    codes = vocab.encode(product)
    assert vocab.values["baseColour"][codes[2]] == product.baseColour
    # The colour head is trained: a wrong colour alone raises the loss.
    sizes = vocab.sizes()
    logits = {t: torch.zeros(1, n) for t, n in sizes.items()}
    for column, target in enumerate(coloured.targets):
        logits[target][0, codes[column]] = 5.0
    right = _loss(logits, torch.tensor([codes]), coloured)
    logits["baseColour"] = logits["baseColour"].roll(1, dims=1)
    assert _loss(logits, torch.tensor([codes]), coloured) > right

    for bad, why in ((["articleType"], "main target"), (["colour"], "catalog columns"), (["gender", "gender"], "twice")):
        with pytest.raises(ValueError, match=why):
            settings_for(Path("."), Path("x.pt"), aux_targets=bad)


def test_cpu_threads_follow_the_setting_and_the_device():
    from training.trainer import cpu_threads
    assert cpu_threads(settings_for(Path("."), Path("x.pt"), threads=3), torch.device("cpu"))[0] == 3
    # Load does not matter on a GPU: the CPU only feeds it.
    auto = settings_for(Path("."), Path("x.pt"), threads=None)
    assert cpu_threads(auto, torch.device("cuda"))[0] == torch.get_num_threads()
    with pytest.raises(ValueError, match="--threads"):
        settings_for(Path("."), Path("x.pt"), threads=0)


def test_cpu_threads_drop_to_one_while_other_work_keeps_every_core_busy(monkeypatch):
    import subprocess

    from training import trainer
    auto = settings_for(Path("."), Path("x.pt"), threads=None)
    monkeypatch.setattr(trainer, "busy_cores", lambda: 0.1)
    assert trainer.cpu_threads(auto, torch.device("cpu")) == (torch.get_num_threads(), "torch's default")
    monkeypatch.undo()
    # Real work on every core, sampled now (a load average would still say what it was
    # before these started).
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.3)
        threads, why = trainer.cpu_threads(auto, torch.device("cpu"))
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert threads == 1 and "busy" in why


def test_a_run_started_beside_other_work_takes_the_cores_back_when_it_ends(small_catalog, tmp_path, monkeypatch):
    from training import finetune, trainer
    # A fresh shop's tuning starts while its first index keeps both cores busy: one thread.
    # The index ends during epoch 1; epoch 2 computes on every thread, epoch 3 is busy again.
    readings = iter([2.0, 0.0, 2.0])
    monkeypatch.setattr(trainer, "busy_cores", lambda: next(readings))
    monkeypatch.setattr(trainer, "_cores", lambda: 2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    used: list[int] = []
    messages: list[str] = []
    try:
        finetune(settings_for(small_catalog, tmp_path / "t.pt", epochs=3, threads=None), log=messages.append,
                 after_epoch=lambda epoch: used.append(torch.get_num_threads()))
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert used == [1, 2, 1]
    assert after == 2  # the caller's count is given back
    assert any("epoch 2: 2 CPU threads from now on" in m for m in messages)
    assert any("epoch 3: 1 CPU thread from now on (the CPU is busy" in m for m in messages)
    # --threads is kept whatever the CPU does.
    readings = iter([2.0, 0.0])
    used.clear()
    finetune(settings_for(small_catalog, tmp_path / "u.pt", epochs=2, threads=1),
             after_epoch=lambda epoch: used.append(torch.get_num_threads()))
    assert used == [1, 1]


def test_busy_cores_is_none_without_proc_stat(monkeypatch):
    from training import trainer

    def no_such_file(*args, **kwargs):
        raise FileNotFoundError("/proc/stat")
    monkeypatch.setattr("builtins.open", no_such_file)
    assert trainer.busy_cores(window_s=0.01) is None


def test_precision_follows_the_setting_and_the_hardware():
    from training.trainer import choose_precision, cpu_has_native_bf16
    cpu = torch.device("cpu")
    assert choose_precision("auto", cpu) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert choose_precision("fp32", cpu) == "fp32"
    assert choose_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        choose_precision("fp16", cpu)
    with pytest.raises(ValueError, match="--precision fp8"):
        settings_for(Path("."), Path("x.pt"), precision="fp8")


def test_augmentation_is_seeded_and_sized(small_catalog):
    from catalog import open_image
    from training.augment import ShopperAugment
    image = open_image(next((small_catalog / "images").glob("*.jpg")))
    augment = ShopperAugment(SIZE, photo_probability=1.0)
    a, b = augment(image, random.Random(5)), augment(image, random.Random(5))
    c = augment(image, random.Random(6))
    assert a.shape == (3, SIZE, SIZE)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert augment.view(image, random.Random(5)).size == (SIZE, SIZE)
    # From the kept cut-out, as training runs it: the same view.
    from catalog.photolike import cut_out
    assert torch.equal(augment(image, random.Random(5), cut_out(image)), a)


def test_images_prepared_in_processes_match_those_prepared_here(small_catalog, tmp_path):
    """Decoding, cutting out and the validation queries spread over loader processes give the
    same pixels, in the same order, and still report a broken image instead of failing."""
    from dataclasses import replace

    import numpy as np

    from catalog import read_catalog
    from training.augment import eval_transform
    from training.data import DecodedImages
    from training.validate import ValidationImages
    products = read_catalog(small_catalog).products[:9]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    products[4] = replace(products[4], image=tmp_path / "broken.jpg")
    here = DecodedImages.load(products, 40, progress=False, cut_outs=True)
    spread = DecodedImages.load(products, 40, progress=False, cut_outs=True, workers=2)
    assert [p.id for p in spread.products] == [p.id for p in here.products] == [p.id for i, p in enumerate(products)
                                                                                if i != 4]
    assert [p.id for p, _ in spread.unreadable] == [products[4].id]
    assert all(np.array_equal(a, b) for a, b in zip(here.arrays, spread.arrays))
    assert all(a.alpha.tobytes() == b.alpha.tobytes() for a, b in zip(here.cuts, spread.cuts))
    transform = eval_transform("resnet18", SIZE)
    queries_here = ValidationImages.build(products, transform, seed=3, progress=False)
    queries_spread = ValidationImages.build(products, transform, seed=3, progress=False, workers=2)
    assert len(queries_spread.products) == 8
    assert torch.equal(queries_here.clean, queries_spread.clean)
    assert torch.equal(queries_here.photo, queries_spread.photo)


def test_crops_keep_at_least_the_share_the_settings_ask_for():
    from training.augment import ShopperAugment
    width, height = 180, 240
    for crop_min in (0.35, 0.6):
        augment = ShopperAugment.for_settings(settings_for(Path("."), Path("x.pt"), crop_min=crop_min,
                                                           photo_probability=0.0))
        assert augment.photo_probability == 0.0
        shares = []
        for seed in range(300):
            x0, y0, x1, y1 = augment._crop_box(width, height, random.Random(seed))
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            shares.append((x1 - x0) * (y1 - y0) / (width * height))
        # Rounding to whole pixels may shave a hair off the drawn area.
        assert min(shares) >= crop_min - 0.01
        assert max(shares) > 0.9


# --- a tiny run, and what index makes of its file -----------------------------------------

def test_weights_file_records_model_size_and_labels(tuned, small_catalog):
    payload = torch.load(tuned, map_location="cpu", weights_only=True)
    assert payload["model"] == "resnet18"
    assert payload["image_size"] == SIZE
    assert set(payload["labels"]["articleType"]) == {"Heels", "Casual Shoes", "Shirts", "Tops", "Handbags", "Watches"}
    # The auxiliary targets the command line named, and no others.
    assert list(payload["labels"]) == ["articleType", "gender", "baseColour"]
    assert set(payload["labels"]["baseColour"]) == {"Black", "Brown", "Navy Blue", "Red", "Green", "White"}
    assert not any(key.startswith("fc.") for key in payload["state_dict"])
    assert "head" not in payload
    assert [h["epoch"] for h in payload["history"]] == [0, 1]
    # The recipe that made it, as the command line gave it.
    assert payload["settings"]["margin"] == 0.2
    assert payload["settings"]["photo_probability"] == 0.4
    assert payload["settings"]["aux_targets"] == ["gender", "baseColour"]
    assert payload["settings"]["model"] == "resnet18" and payload["settings"]["weights"] == "random"
    for entry in payload["history"]:
        assert 0.0 <= entry["p_clean"] <= entry["ceiling"] and 0.0 <= entry["p_photo"] <= entry["ceiling"]
    assert len(payload["validation_ids"]) == 12
    # The checkpoint of the last epoch sits next to it.
    assert Path(str(tuned) + ".ckpt").is_file()


def test_weights_file_carries_the_classifiers_that_rerank_its_searches(tuned, small_catalog, tmp_path, capsys):
    """The file keeps each head (labels, centres, scale) as trained; its embedder predicts with
    them, and a search reorders by articleType and colour unless told `--rerank off`."""
    import app
    from catalog import open_image, read_catalog
    from embedding import load_embedder
    from search import Searcher
    from vectorstore import StoreSettings, make_client
    payload = torch.load(tuned, map_location="cpu", weights_only=True)
    checkpoint = torch.load(str(tuned) + ".ckpt", map_location="cpu", weights_only=False)
    assert list(payload["classifiers"]) == ["articleType", "gender", "baseColour"]
    for target, head in payload["classifiers"].items():
        assert head["labels"] == payload["labels"][target] and head["scale"] == 16.0
        assert torch.equal(head["centres"], checkpoint["model"][f"heads.{target}.weight"].float())
    embedder = load_embedder("resnet18", str(tuned))
    assert embedder.classifiers.targets == ("articleType", "gender", "baseColour")
    product = read_catalog(small_catalog).products[0]
    p = embedder.classifiers.probabilities(embedder.embed([open_image(product.image)])[0], "articleType")
    assert set(p) == set(payload["labels"]["articleType"]) and sum(p.values()) == pytest.approx(1, abs=1e-5)

    db = tmp_path / "chroma"
    assert app.main(["index", "--catalog", str(small_catalog), "--db", str(db), "--models", "resnet18",
                     "--weights", str(tuned), "--quiet"]) == 0
    searcher = Searcher(make_client(StoreSettings(path=db)), embedders={"resnet18": embedder})
    answer = searcher.search_image("resnet18", open_image(product.image))
    assert answer.reranked_by == ("articleType", "baseColour") and answer.results[0].id == product.id
    # `--rerank off`: cosine order, the scores falling down the list.
    capsys.readouterr()
    assert app.main(["search", "--db", str(db), "--model", "resnet18", "--weights", str(tuned), "--json",
                     "--rerank", "off", "--k", "8", str(product.image)]) == 0
    scores = [r["score"] for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]]
    assert len(scores) == 8 and scores == sorted(scores, reverse=True)


def test_index_accepts_the_file_and_search_uses_it(tuned, small_catalog, tmp_path, capsys):
    import app
    db = tmp_path / "chroma"
    assert app.main(["index", "--catalog", str(small_catalog), "--db", str(db), "--models", "resnet18",
                     "--weights", str(tuned), "--quiet"]) == 0
    assert "resnet18: indexed 36" in capsys.readouterr().out
    query = sorted((small_catalog / "images").glob("*.jpg"))[0]
    assert app.main(["search", "--db", str(db), "--model", "resnet18", "--weights", str(tuned), "--json",
                     str(query)]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(answer["results"]) == 5
    assert answer["results"][0]["id"] == query.stem  # the product itself is its own nearest
    # The index was made with these weights: other weights are refused, not mixed.
    assert app.main(["search", "--db", str(db), "--model", "resnet18", "--weights", "random", str(query)]) != 0


def test_embedder_from_the_file_scores_like_validation(tuned, small_catalog):
    """`load_embedder(FILE)` preprocesses at the recorded size and gives the vectors the run
    validated with: its own P@5 on the held-out products matches the last epoch's."""
    from catalog import open_image, read_catalog
    from embedding import load_embedder
    from training.validate import precision_at_k
    payload = torch.load(tuned, map_location="cpu", weights_only=True)
    embedder = load_embedder("resnet18", str(tuned))
    by_id = read_catalog(small_catalog).by_id()
    val = [by_id[i] for i in payload["validation_ids"]]
    images = [open_image(p.image) for p in val]
    assert embedder.preprocess(images[0]).shape == (3, SIZE, SIZE)
    rows = torch.from_numpy(embedder.embed(images))
    labels = [p.articleType for p in val]
    per_query, _ = precision_at_k(rows, labels, rows, labels, k=5, self_index=list(range(len(val))))
    assert sum(per_query) / len(per_query) == pytest.approx(payload["history"][-1]["p_clean"], abs=0.04)


def test_file_for_another_model_is_refused(tuned, small_catalog, tmp_path, capsys):
    import app
    from embedding import WeightsError, load_embedder
    with pytest.raises(WeightsError, match="holds weights for resnet18, not resnet34.*--model resnet18"):
        load_embedder("resnet34", str(tuned))
    code = app.main(["index", "--catalog", str(small_catalog), "--db", str(tmp_path / "db"), "--models",
                     "resnet50", "--weights", str(tuned), "--quiet"])
    assert code == 2
    assert "holds weights for resnet18, not resnet50" in capsys.readouterr().err


def test_evaluate_queries_exactly_the_products_the_run_held_out(tuned, small_catalog, tmp_path, capsys):
    """`evaluate --held-out FILE`: leave-one-out over the run's validation products only,
    each against the whole index (training products included), itself left out."""
    import app
    from embedding import held_out_ids, load_embedder
    from evaluation import EvaluationSettings, run_evaluation
    from vectorstore import StoreSettings
    payload = torch.load(tuned, map_location="cpu", weights_only=True)
    assert held_out_ids(tuned) == tuple(payload["validation_ids"])
    db, out = tmp_path / "db", tmp_path / "out"
    assert app.main(["evaluate", "--catalog", str(small_catalog), "--db", str(db), "--weights", str(tuned),
                     "--held-out", str(tuned), "--models", "resnet18", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["queries"]["count"] == len(payload["validation_ids"]) == 12
    assert metrics["queries"]["held_out_from"] == str(tuned) and metrics["settings"]["held_out"] == 12
    assert metrics["models"]["resnet18"]["photo_like"]["queries"] == 12
    assert "held out (never trained on)" in (out / "report.md").read_text(encoding="utf-8")
    # Its classifiers reordered the results, and the report says so.
    assert metrics["models"]["resnet18"]["reranked_by"] == ["articleType", "baseColour"]
    assert metrics["models"]["resnet18"]["reranked_with"] == ["neighbours", "classifiers"]
    assert ("reordered by how likely their articleType and baseColour are for the query, judged by the labels "
            "of its nearest products and the fine-tune's classifiers") in (out / "report.md").read_text(encoding="utf-8")

    embedder = load_embedder("resnet18", str(tuned))
    evaluation = run_evaluation(
        EvaluationSettings(catalog=small_catalog, store=StoreSettings(path=db), models=("resnet18",),
                           weights=str(tuned), held_out=held_out_ids(tuned), held_out_from=tuned,
                           photo_like=False, latency_queries=2, show_progress=False),
        embedders={"resnet18": embedder})
    outcomes = evaluation.models[0].outcomes["clean"]
    assert {o.query_id for o in outcomes} == set(payload["validation_ids"])
    validation = set(payload["validation_ids"])
    answered = set()
    for outcome in outcomes:
        ids = [r["id"] for r in outcome.results]
        assert outcome.query_id not in ids and len(ids) == 5
        answered.update(ids)
    assert answered - validation, "the gallery is the whole index, training products included"


def test_evaluate_held_out_is_refused_for_a_file_without_a_split(small_catalog, tuned, tmp_path, capsys):
    from torchvision import models

    import app
    plain = tmp_path / "resnet18-plain.pth"
    torch.save(models.resnet18().state_dict(), plain)
    common = ["--catalog", str(small_catalog), "--db", str(tmp_path / "db"), "--weights", "random",
              "--models", "resnet18", "--out", str(tmp_path / "out"), "--quiet"]
    assert app.main(["evaluate", *common, "--held-out", str(plain)]) == 2
    assert "records no held-out products" in capsys.readouterr().err
    assert app.main(["evaluate", *common, "--held-out", str(tmp_path / "nowhere.pt")]) == 2
    assert "no such weights file" in capsys.readouterr().err
    assert app.main(["evaluate", *common, "--held-out", str(tuned), "--queries", str(small_catalog)]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- resume -----------------------------------------------------------------------------

def test_interrupted_run_resumes_with_the_same_command(small_catalog, tmp_path):
    from training import finetune
    out = tmp_path / "resumed.pt"
    settings = settings_for(small_catalog, out, epochs=2)
    with pytest.raises(Interrupted):
        finetune(settings, after_epoch=stop)
    assert not out.exists()
    checkpoint = torch.load(Path(str(out) + ".ckpt"), map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 1
    assert set(checkpoint) >= {"model", "optimizer", "rng", "history"}

    messages: list[str] = []
    result = finetune(settings, log=messages.append)
    assert result.resumed_from == 1
    assert any("resuming" in m and "1 of 2 epochs done" in m for m in messages)
    assert not any(m.startswith("epoch 1/") for m in messages)  # epoch 1 was not trained again
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert result.history[:2] == checkpoint["history"]

    # The same run without the interruption ends with the same weights.
    straight = finetune(settings_for(small_catalog, tmp_path / "straight.pt", epochs=2))
    resumed_state = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    straight_state = torch.load(straight.out, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in straight_state.items():
        assert torch.allclose(resumed_state[key].float(), value.float(), atol=1e-4), key


def test_checkpoint_of_other_settings_is_not_resumed(small_catalog, tmp_path):
    from training import CheckpointMismatch, finetune
    out = tmp_path / "a.pt"
    with pytest.raises(Interrupted):
        finetune(settings_for(small_catalog, out, epochs=2), after_epoch=stop)
    with pytest.raises(CheckpointMismatch, match="image_size: 64 there, 96 now"):
        finetune(settings_for(small_catalog, out, epochs=2, image_size=96))


def test_checkpoint_from_before_a_setting_existed_resumes_at_its_default(small_catalog, tmp_path):
    from training import CheckpointMismatch, finetune
    from training.checkpoint import atomic_save
    out = tmp_path / "old.pt"
    with pytest.raises(Interrupted):
        finetune(settings_for(small_catalog, out, epochs=2), after_epoch=stop)
    path = Path(str(out) + ".ckpt")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for added_later in ("margin", "crop_min", "aux_targets"):
        del state["identity"][added_later]
    atomic_save(state, path)

    # Asking for another value than the one it trained with is still refused...
    with pytest.raises(CheckpointMismatch, match="margin: 0.0 there, 0.2 now"):
        finetune(settings_for(small_catalog, out, epochs=2, margin=0.2))
    # ...while the same command resumes.
    result = finetune(settings_for(small_catalog, out, epochs=2))
    assert result.resumed_from == 1
    assert [h["epoch"] for h in result.history] == [0, 1, 2]


# --- head-only ----------------------------------------------------------------------------

def test_head_only_trains_a_projection_on_a_frozen_backbone(small_catalog, tmp_path):
    from embedding import load_embedder
    from training import finetune
    out = tmp_path / "head.pt"
    threads = torch.get_num_threads()
    result = finetune(settings_for(small_catalog, out, epochs=2, head_only=True, batch_size=16))
    assert torch.get_num_threads() == threads  # the run's --threads 1 does not outlive it
    payload = torch.load(out, map_location="cpu", weights_only=True)
    head = payload["head"]
    assert head["weight"].shape == (512, 512)
    assert not torch.allclose(head["weight"], torch.eye(512))  # it trained
    start = load_embedder("resnet18", "random").network.state_dict()
    assert all(torch.equal(start[k], v) for k, v in payload["state_dict"].items())  # frozen
    embedder = load_embedder("resnet18", str(out))
    assert embedder.dim == 512 and isinstance(embedder.network, torch.nn.Sequential)
    assert [h["epoch"] for h in result.history] == [0, 1, 2]

    # A longer run of the same settings continues from the checkpoint and the stored features.
    messages: list[str] = []
    longer = finetune(settings_for(small_catalog, out, epochs=3, head_only=True, batch_size=16),
                      log=messages.append)
    assert longer.resumed_from == 2
    assert any(m.startswith("frozen features from") for m in messages)
    assert [h["epoch"] for h in longer.history] == [0, 1, 2, 3]


def test_training_step_benchmark_runs_and_compares(capsys, monkeypatch, tmp_path):
    """The benchmark behind the precision and cut-out figures: a tiny run on synthetic shots."""
    import sys

    from bench import training_step
    monkeypatch.setattr(sys, "argv", ["training_step", "--catalog", str(tmp_path / "none"), "--image-size", "32",
                                      "--batch-size", "2", "--steps", "1", "--views", "3", "--prepare", "4"])
    training_step.main()
    out = capsys.readouterr().out
    for row in ("fp32       contiguous", "bf16       channels-last", "from the shot", "from the kept cut-out",
                "in this process", "loader processes", "preparing 4 training images"):
        assert row in out
    assert "1.00x" in out  # the baseline row compares with itself


# --- distillation from an ImageNet teacher, and the EfficientNet-Lite recipe ----------------

def test_distillation_loss_falls_and_the_student_moves_toward_the_teacher(small_catalog, tmp_path):
    from training import finetune
    # A random student learns to carry the frozen Lite0 teacher's ImageNet embedding.
    result = finetune(settings_for(small_catalog, tmp_path / "distilled.pt", epochs=4, teacher="efficientnet_lite0",
                                   lr=3e-3, photo_probability=0.0))
    trained = result.history[1:]
    cosines = [h["distill_cosine"] for h in trained]
    assert cosines[-1] > cosines[0] + 0.05
    assert trained[-1]["loss"] < trained[0]["loss"]
    # The file holds the student only: no teacher, no distillation map.
    payload = torch.load(result.out, map_location="cpu", weights_only=True)
    assert not any(k.startswith(("distill", "network.")) for k in payload["state_dict"])
    assert payload["settings"]["teacher"] == "efficientnet_lite0"


def test_distillation_checkpoint_resumes_with_the_teacher(small_catalog, tmp_path):
    from training import finetune
    out = tmp_path / "distilled.pt"
    settings = settings_for(small_catalog, out, epochs=2, teacher="efficientnet_lite0")
    with pytest.raises(Interrupted):
        finetune(settings, after_epoch=stop)
    checkpoint = torch.load(Path(str(out) + ".ckpt"), map_location="cpu", weights_only=True)
    assert any(k.startswith("distill.") for k in checkpoint["model"])
    resumed = finetune(settings)
    assert resumed.resumed_from == 1 and "distill_cosine" in resumed.history[-1]
    # Without the teacher it is another run: the checkpoint is not taken for it.
    from training import CheckpointMismatch
    with pytest.raises(CheckpointMismatch):
        finetune(settings_for(small_catalog, out, epochs=3))


def test_teacher_and_head_only_are_refused_together(small_catalog, tmp_path):
    with pytest.raises(ValueError, match="--teacher"):
        settings_for(small_catalog, tmp_path / "x.pt", teacher="efficientnet_lite0", head_only=True)


def test_lite_recipe_from_imagenet_through_the_command_line(small_catalog, tmp_path):
    # `finetune --model efficientnet_lite0` alone is the recipe: ImageNet start, frozen early
    # stages, written where `--weights auto` looks; a flag given still wins over the recipe.
    import app
    from embedding import load_embedders
    weights_dir = tmp_path / "weights"
    code = app.main(["finetune", "--catalog", str(small_catalog), "--model", "efficientnet_lite0",
                     "--weights-dir", str(weights_dir), "--epochs", "1", "--image-size", str(SIZE),
                     "--batch-size", "8", "--val-fraction", "0.25", "--workers", "0", "--threads", "1", "--quiet"])
    assert code == 0
    out = weights_dir / "efficientnet_lite0.pt"
    payload = torch.load(out, map_location="cpu", weights_only=True)
    # The size given on the command line is trained and served at; the recipe's 224 px goes
    # with its own 128.
    assert payload["start"] == "imagenet" and payload["image_size"] == payload["train_size"] == SIZE
    assert payload["settings"]["freeze"] == 3 and "baseColour" in payload["settings"]["aux_targets"]
    lines: list[str] = []
    built = load_embedders(["efficientnet_lite0"], "auto", weights_dir=weights_dir, log=lines.append)
    assert built["efficientnet_lite0"].weights_id.startswith("file:efficientnet_lite0.pt:")
    assert any(str(out) in line for line in lines)


def test_recipe_serving_size_goes_with_its_training_size(tmp_path):
    from training.recipes import recipe_settings
    lite = dict(catalog=tmp_path, out=tmp_path / "x.pt")
    assert (recipe_settings("efficientnet_lite0", **lite).image_size,
            recipe_settings("efficientnet_lite0", **lite).input_size) == (128, 224)
    assert recipe_settings("efficientnet_lite0", image_size=128, **lite).input_size == 128
    assert recipe_settings("efficientnet_lite0", image_size=128, serve_size=192, **lite).input_size == 192
    assert recipe_settings("resnet18", **lite).input_size == 112
    with pytest.raises(ValueError, match="--serve-size"):
        recipe_settings("resnet18", serve_size=16, **lite)


def test_a_gpu_run_gets_the_gpu_recipe_and_flags_still_win(tmp_path):
    from training.recipes import on_gpu, recipe_settings
    lite = dict(catalog=tmp_path, out=tmp_path / "x.pt")
    gpu = recipe_settings("efficientnet_lite0", device="cuda", **lite)
    cpu = recipe_settings("efficientnet_lite0", device="cpu", **lite)
    assert (gpu.epochs, gpu.image_size, gpu.input_size, gpu.freeze) == (9, 224, 224, 0)
    assert (cpu.epochs, cpu.image_size, cpu.input_size, cpu.freeze) == (4, 128, 224, 3)
    assert recipe_settings("efficientnet_lite0", device="cuda:1", epochs=3, freeze=2, **lite).epochs == 3
    assert recipe_settings("efficientnet_lite2", device="cuda", **lite).input_size == 260
    # No GPU recipe measured for the ResNets: theirs, wherever they train.
    on_cpu = recipe_settings("resnet18", device="cpu", **lite)
    assert recipe_settings("resnet18", device="cuda", **lite) == on_cpu.with_changes(device="cuda")
    assert on_gpu("auto") == torch.cuda.is_available() and not on_gpu("cpu")


def test_file_is_served_at_its_serve_size_and_a_resume_may_change_it(small_catalog, tmp_path):
    from embedding import load_embedder
    from training import finetune
    out = tmp_path / "served.pt"
    settings = settings_for(small_catalog, out, epochs=2, serve_size=96)
    with pytest.raises(Interrupted):
        finetune(settings, after_epoch=stop)
    # What the file is served at does not change what is trained: the checkpoint resumes.
    result = finetune(settings.with_changes(serve_size=128))
    assert result.resumed_from == 1
    payload = torch.load(out, map_location="cpu", weights_only=True)
    assert (payload["image_size"], payload["train_size"]) == (128, SIZE)
    embedder = load_embedder("resnet18", str(out))
    assert embedder.image_size == 128
    assert embedder.preprocess(Image.new("RGB", (60, 80), "white")).shape == (3, 128, 128)


def test_frozen_stages_keep_their_starting_weights(small_catalog, tmp_path):
    from embedding.architectures import architecture
    from training import finetune
    from training.model import early_layers
    result = finetune(settings_for(small_catalog, tmp_path / "frozen.pt", model="efficientnet_lite0",
                                   weights="imagenet", freeze=2, epochs=1))
    tuned = architecture("efficientnet_lite0").backbone()
    tuned.load_state_dict(torch.load(result.out, map_location="cpu", weights_only=True)["state_dict"])
    from embedding import load_embedder
    start = load_embedder("efficientnet_lite0", "imagenet").network
    frozen_tuned, frozen_start = (early_layers(n, "efficientnet_lite0", 2) for n in (tuned, start))
    for a, b in zip(frozen_tuned, frozen_start):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name            # weights and batch-norm statistics alike
    last = lambda n: dict(n.blocks[-1].named_parameters())
    assert any(not torch.equal(x, last(start)[k]) for k, x in last(tuned).items())   # the rest trained


# --- real photos beside the catalog (--photos) ------------------------------------------------

def write_photo_folders(root: Path, per_class: int = 4) -> Path:
    """root/train/<class>/ and root/validation/<class>/ of generated "home photos": a shoe-like
    triangle or a shirt-like rectangle, small on a random cloth-coloured floor."""
    rnd = random.Random(11)
    for split, count in (("train", per_class), ("validation", 2)):
        for photo_class, shape in (("shoes", "triangle"), ("shirt", "rectangle")):
            folder = root / split / photo_class
            folder.mkdir(parents=True)
            for i in range(count):
                image = Image.new("RGB", (96, 96), tuple(rnd.randint(60, 200) for _ in range(3)))
                draw, x, y = ImageDraw.Draw(image), rnd.randint(5, 40), rnd.randint(5, 40)
                colour = tuple(rnd.randint(0, 255) for _ in range(3))
                if shape == "triangle":
                    draw.polygon([(x, y + 45), (x + 50, y + 45), (x + 25, y)], fill=colour)
                else:
                    draw.rectangle((x, y, x + 40, y + 50), fill=colour)
                image.save(folder / f"{i}.jpg", quality=90)
    (root / "train" / "shirt" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def test_partial_label_loss_asks_for_any_allowed_class_and_skips_catalog_rows():
    from training.real_photos import partial_label_loss
    allowed = torch.tensor([[True, True, False], [False, False, False]])
    assert partial_label_loss(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool)) is None
    # Only the first row counts; with uniform logits the allowed pair holds 2/3 of the mass.
    assert partial_label_loss(torch.zeros(2, 3), allowed).item() == pytest.approx(-torch.log(torch.tensor(2 / 3)).item())
    # Either allowed class may take the mass: both give a near-zero loss, the other class a large one.
    for winner, small in ((0, True), (1, True), (2, False)):
        logits = torch.zeros(2, 3)
        logits[0, winner] = 20.0
        assert (partial_label_loss(logits, allowed).item() < 1e-3) is small
    logits = torch.zeros(1, 3, requires_grad=True)
    partial_label_loss(logits, allowed[:1]).backward()
    assert logits.grad[0, 0] < 0 and logits.grad[0, 1] < 0 and logits.grad[0, 2] > 0


def finetune_seeing_the_dataset(settings, **kwargs):
    """finetune(settings), and the ProductsAndPhotos it trained on."""
    from training import finetune
    from training.real_photos import ProductsAndPhotos
    seen: list[ProductsAndPhotos] = []
    original = ProductsAndPhotos.__init__

    def remember(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self)

    ProductsAndPhotos.__init__ = remember
    try:
        return finetune(settings, **kwargs), seen[0]
    finally:
        ProductsAndPhotos.__init__ = original


def test_photos_join_the_batches_with_their_kinds_and_are_scored_every_epoch(small_catalog, tmp_path):
    from training.data import IGNORE
    photos = write_photo_folders(tmp_path / "photos")
    messages: list[str] = []
    result, dataset = finetune_seeing_the_dataset(
        settings_for(small_catalog, tmp_path / "p.pt", epochs=2, real_photos=(photos,)), log=messages.append)
    assert any("9 real photos to train on, 4 held out" in m for m in messages)
    assert any("broken.jpg" in m and "skipped" in m for m in messages)  # one unreadable photo stops nothing
    assert len(dataset) == len(dataset.products) + 8
    types = torch.load(result.out, map_location="cpu", weights_only=True)["labels"]["articleType"]
    view, targets, allowed = dataset[len(dataset.products)]  # the first photo: shirt/0.jpg (classes sorted)
    assert view.shape == (3, SIZE, SIZE) and (targets == IGNORE).all()
    assert {t for t, ok in zip(types, allowed.tolist()) if ok} == {"Shirts", "Tops"}
    assert not dataset[0][2].any()  # a product's row allows nothing beyond its own codes
    # Every epoch, the start included, scores the held-out photos' kind among the held-out products.
    assert [("p_real_kind" in h, h.get("real_queries")) for h in result.history] == [(True, 4)] * 3
    assert all(0 <= h["p_real_kind"] <= 1 for h in result.history)
    assert torch.load(result.out, map_location="cpu", weights_only=True)["settings"]["real_photos"] == \
        [str(photos.resolve())]


def test_a_share_of_the_photos_is_drawn_afresh_each_epoch_beside_every_product(small_catalog, tmp_path):
    from catalog.errors import UserError
    from training.data import epoch_batches
    photos = write_photo_folders(tmp_path / "photos")
    _, dataset = finetune_seeing_the_dataset(
        settings_for(small_catalog, tmp_path / "h.pt", epochs=2, real_photos=(photos,), real_share=0.5))
    products = list(range(len(dataset.products)))
    drawn = {epoch: dataset.epoch_indices(epoch) for epoch in (1, 2, 3)}
    for indices in drawn.values():
        assert indices[:len(products)] == products  # every product, every epoch
        photo_part = indices[len(products):]
        assert len(photo_part) == 4 and len(set(photo_part)) == 4  # half of the 8 readable photos
        assert all(len(products) <= i < len(dataset) for i in photo_part)
    assert len({tuple(indices) for indices in drawn.values()}) > 1  # drawn afresh
    assert dataset.epoch_indices(2) == drawn[2]  # a resumed epoch draws the same photos
    batches = epoch_batches(drawn[1], 4, seed=0, epoch=1)
    assert sorted(i for batch in batches for i in batch) == sorted(drawn[1])
    # A whole share trains on every photo, as before the share existed.
    dataset.share = 1.0
    assert dataset.epoch_indices(1) == list(range(len(dataset)))
    assert epoch_batches(list(range(10)), 4, seed=0, epoch=1) == epoch_batches(10, 4, seed=0, epoch=1)
    for share in (0, 1.5):
        with pytest.raises(UserError, match="--real-share"):
            settings_for(small_catalog, tmp_path / "x.pt", real_photos=(photos,), real_share=share)


def test_photos_are_part_of_what_a_checkpoint_resumes(small_catalog, tmp_path):
    from training import CheckpointMismatch, finetune
    photos = write_photo_folders(tmp_path / "photos")
    out = tmp_path / "r.pt"
    with pytest.raises(Interrupted):
        finetune(settings_for(small_catalog, out, epochs=2, real_photos=(photos,)), after_epoch=stop)
    with pytest.raises(CheckpointMismatch, match="real_photos"):
        finetune(settings_for(small_catalog, out, epochs=2))
    assert finetune(settings_for(small_catalog, out, epochs=2, real_photos=(photos,))).resumed_from == 1


def test_photos_flag_finds_the_home_photos_beside_the_catalog_and_can_be_turned_off(tmp_path):
    from catalog.errors import UserError
    from cli.arguments import build_parser
    from cli.settings import settings_from
    root = tmp_path / "shared"
    catalog = make_catalog(root / "catalog", per_kind=2)
    photos = write_photo_folders(root / "photos" / "handheld")

    def settings(*extra):
        return settings_from(build_parser().parse_args(["finetune", "--catalog", str(catalog), "--model",
                                                        "efficientnet_lite0", "--out", str(tmp_path / "x.pt"),
                                                        *extra]))
    assert settings().real_photos == (photos.resolve(),)
    # The recipe with photos keeps within the half hour: half the photos each epoch, five epochs,
    # each photo weighed nearer a product.
    assert (settings().epochs, settings().real_share, settings().real_weight) == (5, 0.5, 0.5)
    assert (settings("--real-share", "1").real_share, settings("--epochs", "3").epochs,
            settings("--real-weight", "1").real_weight) == (1.0, 3, 1.0)
    none = settings("--photos", "none")
    assert none.real_photos == () and (none.epochs, none.real_share, none.real_weight) == (4, 1.0, 1.0)
    assert settings("--photos", str(photos / "train")).real_photos == (photos / "train",)
    assert settings("--head-only").real_photos == ()  # auto: a head-only run cannot use them
    with pytest.raises(UserError, match="needs the network to see the photos"):
        settings("--head-only", "--photos", str(photos))
    with pytest.raises(UserError, match="no such folder"):
        settings("--photos", str(tmp_path / "nowhere"))
