"""The study's report gathers real `evaluate` runs: rows keyed by name with P@5 per label
level, the goals worked out from the figures, the experiments' tables and the plots."""
from __future__ import annotations

import json

import pytest
import torch

import app
from catalog import read_catalog
from embedding.architectures import architecture
from embedding.weights_file import save_atomically, weights_payload


def _evaluate(catalog_dir, db, out, *extra) -> None:
    code = app.main(["evaluate", "--catalog", str(catalog_dir), "--db", str(db), "--models", "resnet18",
                     "--runtime", "eager",
                     "--k", "5", "--quiet", "--out", str(out), *extra])
    assert code == 0


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory, catalog_dir):
    root = tmp_path_factory.mktemp("study")
    # A "trained" file: another seed's network, with a training history and held-out ids, as
    # finetune writes it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        network = architecture("resnet18").backbone()
    held_out = [p.id for p in read_catalog(catalog_dir).products[::2]]
    weights = root / "resnet18.pt"
    save_atomically(weights_payload("resnet18", network.state_dict(), image_size=64, start="random",
                                    history=[{"epoch": 0, "seconds": 0.0, "p_clean": 0.4, "p_photo": 0.1},
                                             {"epoch": 1, "seconds": 90.0, "p_clean": 0.5, "p_photo": 0.2},
                                             {"epoch": 2, "seconds": 30.0, "p_clean": 0.6, "p_photo": 0.3}],
                                    validation_ids=held_out,
                                    settings={"weights": "random", "image_size": 64, "teacher": "efficientnet_lite0",
                                              "aux_targets": ["gender", "baseColour"], "freeze": 0,
                                              "photo_probability": 0.3, "lr": None}), weights)
    held = ["--held-out", str(weights)]
    _evaluate(catalog_dir, root / "db-untrained", root / "untrained", "--weights", "random", *held)
    _evaluate(catalog_dir, root / "db-trained", root / "trained", "--weights", str(weights), *held)
    _evaluate(catalog_dir, root / "db-pad", root / "pad64", "--weights", str(weights), "--framing", "pad",
              "--input-size", "64", *held)
    _evaluate(catalog_dir, root / "db-q20", root / "jpeg20", "--weights", str(weights), "--jpeg-quality", "20",
              *held)
    out = root / "report"
    code = app.main(["study", "--out", str(out),
                     "--row", f"resnet18-untrained={root / 'untrained'}:resnet18",
                     "--row", f"resnet18-trained={root / 'trained'}:resnet18",
                     "--preprocessing", f"crop@64={root / 'trained'}", "--preprocessing", f"pad@64={root / 'pad64'}",
                     "--quality", f"original={root / 'trained'}", "--quality", f"jpeg20={root / 'jpeg20'}",
                     "--training", f"resnet18-trained={weights}", "--commands", "scripts/study.sh"])
    assert code == 0
    return root, out


def test_rows_are_keyed_by_name_with_every_label_level(study_runs):
    root, out = study_runs
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"resnet18-untrained", "resnet18-trained"}
    trained = metrics["models"]["resnet18-trained"]
    evaluated = json.loads((root / "trained" / "metrics.json").read_text())["models"]["resnet18"]
    for kind in ("clean", "photo_like"):
        assert trained[kind] == evaluated[kind]["precision"]
        assert set(trained[kind]) >= {"articleType", "masterCategory", "type+colour"}
    assert trained["training_minutes"] == 2.0          # 90 s + 30 s
    assert metrics["models"]["resnet18-untrained"]["training_minutes"] is None
    assert trained["queries"] == 12 and trained["input_size"] == 64
    assert metrics["training_curves"]["resnet18-trained"] == [
        {"epoch": 0, "minutes": 0.0, "clean": 0.4, "photo_like": 0.1},
        {"epoch": 1, "minutes": 1.5, "clean": 0.5, "photo_like": 0.2},
        {"epoch": 2, "minutes": 2.0, "clean": 0.6, "photo_like": 0.3}]
    recipe = metrics["training_recipes"]["resnet18-trained"]
    assert recipe["epochs"] == 2 and recipe["teacher"] == "efficientnet_lite0" and recipe["image_size"] == 64
    assert "| resnet18-trained | random | 2 | 64 | efficientnet_lite0 | gender, baseColour |" in \
        (out / "report.md").read_text()
    assert trained["gflops"] < metrics["models"]["resnet18-untrained"]["gflops"]   # 64 px against 224


def test_goals_are_worked_out_from_the_rows(study_runs):
    _, out = study_runs
    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["models"]
    gain = round(rows["resnet18-trained"]["clean"]["articleType"] - rows["resnet18-untrained"]["clean"]["articleType"], 3)
    goal = next(g for g in metrics["goals"] if g["goal"] == "gain over untrained, clean")
    assert goal["measured"] == gain and goal["wanted"] == 0.25
    assert goal["met"] == (gain >= 0.25)
    assert goal["short_by"] == (None if goal["met"] else round(0.25 - gain, 3))


def test_experiments_are_tabled_by_condition(study_runs):
    root, out = study_runs
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["preprocessing"]["resnet18"]) == ["crop@64", "pad@64"]
    assert metrics["preprocessing"]["resnet18"]["pad@64"]["weights_id"].endswith("|pad@64")
    assert list(metrics["data_quality"]["resnet18"]) == ["original", "jpeg20"]
    report = (out / "report.md").read_text()
    for heading in ("## Conclusions for a shop", "## Accuracy", "## Cost", "## Goals",
                    "## Preprocessing compatibility", "## Data quality"):
        assert heading in report
    assert "scripts/study.sh" in report
    for plot in ("accuracy.png", "complexity.png", "training.png", "preprocessing.png", "data_quality.png"):
        assert (out / plot).stat().st_size > 5000
        assert f"]({plot})" in report


def test_a_missing_evaluation_is_a_clear_message(tmp_path, capsys):
    code = app.main(["study", "--out", str(tmp_path / "r"), "--row", f"x={tmp_path / 'nothing'}:resnet18"])
    assert code == 2
    assert "run the evaluate command" in capsys.readouterr().err
    assert app.main(["study", "--out", str(tmp_path / "r"), "--row", "no-model-here"]) == 2


def test_a_missed_goal_says_by_how_much_and_what_next(tmp_path):
    from evaluation.study import GoalCheck, Study, StudySettings, next_steps
    rising = [{"epoch": 1, "minutes": 5.0, "clean": 0.5, "photo_like": 0.30},
              {"epoch": 2, "minutes": 10.0, "clean": 0.6, "photo_like": 0.40}]
    flat = [dict(p, photo_like=0.40) for p in rising]
    for curve, advice in ((rising, "more epochs"), (flat, "flattened")):
        study = Study(StudySettings(out=tmp_path, rows=()), {}, {}, {},
                      [GoalCheck("resnet50-trained", "articleType, clean", 0.88, 0.70),
                       GoalCheck("resnet50-trained", "type+colour, clean", 0.42, 0.50)],
                      {"resnet50-trained": curve})
        [line] = next_steps(study)
        assert "articleType, clean by 0.180" in line and "type+colour" not in line
        assert advice in line
