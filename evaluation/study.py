"""The study's report: many `evaluate` runs (one per row, one per experimental condition)
gathered into one metrics.json, one report.md and its plots.

The runs themselves are ordinary `evaluate` and `finetune` commands (scripts/study.sh lists
them); this module reads what they wrote, so the report can be remade without redoing them.

A row is NAME=DIR:MODEL, the MODEL of the evaluation written to DIR. An experiment is
LABEL=DIR: every model of that evaluation under one condition (a framing and input size, or a
data-quality variant). Rows named `M-trained` and `M-untrained` are paired for the goals."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from catalog.errors import UserError
from evaluation.metrics import LABEL_LEVELS, PRIMARY_LEVEL  # noqa: E402
from evaluation.report import _num as _f  # noqa: E402  (one number format for both reports)

TYPE_COLOUR = "type+colour"


@dataclass(frozen=True)
class Goals:
    """The issue's goals, on held-out products."""
    gain_clean: float = 0.25          # trained minus untrained, articleType P@5, clean queries
    gain_photo: float = 0.50          # the same on photo-like queries
    type_colour: float = 0.42         # articleType and baseColour both match
    resnet50_clean: float = 0.88
    resnet50_photo: float = 0.75


@dataclass(frozen=True)
class StudySettings:
    out: Path
    rows: tuple[tuple[str, Path, str], ...]                   # (name, evaluation dir, model)
    preprocessing: tuple[tuple[str, Path], ...] = ()          # (condition, evaluation dir)
    quality: tuple[tuple[str, Path], ...] = ()                # (variant, evaluation dir)
    training: tuple[tuple[str, Path], ...] = ()               # (row name, weights file)
    commands: Path | None = None                              # the script that ran it all
    goals: Goals = Goals()


def parse_pair(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise UserError(f"{what} {text!r}: expected NAME=VALUE")
    return name.strip(), value.strip()


def parse_row(text: str) -> tuple[str, Path, str]:
    name, value = parse_pair(text, "--row")
    folder, sep, model = value.rpartition(":")
    if not sep or not folder or not model:
        raise UserError(f"--row {text!r}: expected NAME=DIR:MODEL")
    return name, Path(folder), model


def _read_evaluation(folder: Path) -> dict:
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise UserError(f"{path}: no such file; run the evaluate command that writes it first")
    return json.loads(path.read_text(encoding="utf-8"))


def _scores(model: dict) -> dict:
    out = {}
    for kind in ("clean", "photo_like"):
        scores = model.get(kind)
        out[kind] = dict(scores["precision"]) if scores else None
        out[f"map@k_{kind}"] = scores["map"] if scores else None
        out[f"hit@k_{kind}"] = scores["hit_rate"] if scores else None
    return out


def _training_run(weights: Path) -> tuple[list[dict], dict]:
    """A weights file's per-epoch history and the settings of the run that wrote it."""
    from embedding.weights_file import read_weights_file
    payload = read_weights_file(weights)
    return list(payload.get("history") or []), dict(payload.get("settings") or {})


def _training_minutes(history: list[dict]) -> float | None:
    seconds = sum(h.get("seconds") or 0 for h in history)
    return round(seconds / 60, 1) if seconds else None


def _curve(history: list[dict]) -> list[dict]:
    """Validation P@k after each epoch against the minutes trained so far."""
    points, seconds = [], 0.0
    for h in history:
        seconds += h.get("seconds") or 0
        if h.get("p_clean") is not None:
            points.append({"epoch": h["epoch"], "minutes": round(seconds / 60, 2), "clean": h["p_clean"],
                           "photo_like": h.get("p_photo")})
    return points


def _row(name: str, folder: Path, model_name: str, minutes: float | None) -> dict:
    evaluation = _read_evaluation(folder)
    model = evaluation["models"].get(model_name)
    if model is None:
        raise UserError(f"{folder}/metrics.json has no model {model_name!r} (it has {', '.join(evaluation['models'])})")
    return {
        "model": model_name, "weights_id": model["weights_id"], **_scores(model),
        "k": evaluation["settings"]["k"], "queries": evaluation["queries"]["count"],
        "held_out_from": evaluation["queries"].get("held_out_from"),
        "catalog_products": evaluation["catalog"]["indexed"],
        "parameters": model["parameters"], "gflops": round(model["flops"] / 1e9, 3),
        "input_size": model["input_size"], "embedding_size": model["embedding_size"],
        "index_mb": round(model["index_size"]["bytes"] / 1e6, 1) if model["index_size"]["bytes"] else None,
        "images_per_s": round(model["embed_rate"]["images_per_s"], 1),
        "latency_p50_ms": model["latency"]["p50_ms"], "training_minutes": minutes,
        "preprocessing": model["preprocessing"]["summary"],
        # Speed figures mean little without how busy the machine was while they were taken.
        "load_average": evaluation.get("machine", {}).get("load_average_end"),
        "evaluation": str(folder),
    }


def _conditions(experiments: Sequence[tuple[str, Path]]) -> dict[str, dict[str, dict]]:
    """model -> condition -> {clean, photo_like} P@k maps."""
    table: dict[str, dict[str, dict]] = {}
    for label, folder in experiments:
        evaluation = _read_evaluation(folder)
        for name, model in evaluation["models"].items():
            scores = _scores(model)
            table.setdefault(name, {})[label] = {
                "clean": scores["clean"], "photo_like": scores["photo_like"],
                "queries": evaluation["queries"]["count"], "products": evaluation["catalog"]["indexed"],
                "weights_id": model["weights_id"]}
    return table


def _p(scores: dict | None, level: str = PRIMARY_LEVEL) -> float | None:
    return None if not scores else scores.get(level)


@dataclass
class GoalCheck:
    row: str
    goal: str
    wanted: float
    measured: float | None

    @property
    def met(self) -> bool:
        return self.measured is not None and self.measured >= self.wanted - 1e-9

    @property
    def short_by(self) -> float | None:
        return None if self.measured is None or self.met else round(self.wanted - self.measured, 3)


def check_goals(rows: dict[str, dict], goals: Goals) -> list[GoalCheck]:
    checks = []
    for name, row in rows.items():
        if not name.endswith("-trained"):
            continue
        base = rows.get(name.removesuffix("-trained") + "-untrained")
        if base:
            for kind, wanted in (("clean", goals.gain_clean), ("photo_like", goals.gain_photo)):
                now, before = _p(row[kind]), _p(base[kind])
                gain = None if now is None or before is None else round(now - before, 3)
                checks.append(GoalCheck(name, f"gain over untrained, {kind}", wanted, gain))
        checks.append(GoalCheck(name, f"{TYPE_COLOUR}, clean", goals.type_colour, _p(row["clean"], TYPE_COLOUR)))
        if row["model"] == "resnet50":
            checks.append(GoalCheck(name, "articleType, clean", goals.resnet50_clean, _p(row["clean"])))
            checks.append(GoalCheck(name, "articleType, photo-like", goals.resnet50_photo, _p(row["photo_like"])))
    return checks


@dataclass
class Study:
    settings: StudySettings
    rows: dict[str, dict]
    preprocessing: dict[str, dict[str, dict]]
    quality: dict[str, dict[str, dict]]
    goals: list[GoalCheck] = field(default_factory=list)
    # Per trained row, validation P@k after each epoch (finetune's own held-out gallery).
    curves: dict[str, list[dict]] = field(default_factory=dict)
    recipes: dict[str, dict] = field(default_factory=dict)   # per trained row, what its run was told

    def to_json(self) -> dict:
        return {"label_levels": list(LABEL_LEVELS), "models": self.rows, "preprocessing": self.preprocessing,
                "data_quality": self.quality, "training_curves": self.curves, "training_recipes": self.recipes,
                "goals": [{"row": g.row, "goal": g.goal, "wanted": g.wanted, "measured": g.measured,
                           "met": g.met, "short_by": g.short_by} for g in self.goals],
                "commands": str(self.settings.commands) if self.settings.commands else None}


def gather(settings: StudySettings) -> Study:
    runs = {name: _training_run(Path(path)) for name, path in settings.training}
    rows = {name: _row(name, folder, model, _training_minutes(runs[name][0] if name in runs else []))
            for name, folder, model in settings.rows}
    recipes = {name: {"epochs": sum(1 for h in history if h.get("epoch")), **{
        key: run_settings.get(key) for key in ("weights", "image_size", "teacher", "aux_targets", "freeze",
                                               "photo_probability", "lr")}}
        for name, (history, run_settings) in runs.items()}
    return Study(settings, rows, _conditions(settings.preprocessing), _conditions(settings.quality),
                 check_goals(rows, settings.goals), {name: _curve(h) for name, (h, _) in runs.items()}, recipes)


# ---- plots -------------------------------------------------------------------------------

def _bar_rows(study: Study, path: Path) -> None:
    names = list(study.rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.8), sharey=True)
    for ax, level in zip(axes, (PRIMARY_LEVEL, TYPE_COLOUR)):
        for offset, kind, colour in ((-0.2, "clean", "#4c72b0"), (0.2, "photo_like", "#dd8452")):
            values = [_p(study.rows[n][kind], level) or 0 for n in names]
            ax.barh([i + offset for i in range(len(names))], values, height=0.4, color=colour,
                    label=kind.replace("_", "-"))
        ax.set_yticks(range(len(names)), names)
        ax.set_xlim(0, 1)
        ax.set_title(f"P@5, {level}")
        ax.invert_yaxis()
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _complexity(study: Study, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, row in study.rows.items():
        y = _p(row["photo_like"])
        if y is None:
            continue
        ax.scatter(row["gflops"], y, s=30 + row["parameters"] / 4e5)
        ax.annotate(name, (row["gflops"], y), textcoords="offset points", xytext=(5, 3), fontsize=8)
    ax.set_xlabel("GFLOPs per image (at its input size)")
    ax.set_ylabel("P@5 articleType, photo-like")
    ax.set_title("Accuracy against cost (marker size: parameters)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _clean_and_photo(path: Path, draw) -> None:
    """One figure, clean queries on the left and photo-like on the right: `draw(ax, kind)`."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, kind in zip(axes, ("clean", "photo_like")):
        draw(ax, kind)
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curves_plot(study: Study, path: Path) -> None:
    def draw(ax, kind):
        for name, points in study.curves.items():
            ax.plot([p["minutes"] for p in points], [p[kind] for p in points], marker="o", label=name)
        ax.set_xlabel("minutes of training")
        ax.set_title(f"validation P@5 articleType, {kind.replace('_', '-')}")
    _clean_and_photo(path, draw)


def _conditions_plot(table: dict[str, dict[str, dict]], title: str, path: Path) -> None:
    conditions = list(next(iter(table.values())))
    width = 0.8 / max(1, len(table))

    def draw(ax, kind):
        for i, (model, by_condition) in enumerate(table.items()):
            values = [_p(by_condition.get(c, {}).get(kind)) or 0 for c in conditions]
            ax.bar([j + (i - (len(table) - 1) / 2) * width for j in range(len(conditions))], values, width,
                   label=model)
        ax.set_xticks(range(len(conditions)), conditions, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{title}: P@5 articleType, {kind.replace('_', '-')}")
    _clean_and_photo(path, draw)


# ---- report ------------------------------------------------------------------------------

def _rows_table(study: Study) -> list[str]:
    levels = [*LABEL_LEVELS]
    head = ["row", *[f"{lv} clean / photo" for lv in levels], "mAP@5 clean / photo", "hit@5 clean / photo"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in study.rows.items():
        cells = [name] + [f"{_f(_p(r['clean'], lv))} / {_f(_p(r['photo_like'], lv))}" for lv in levels]
        cells += [f"{_f(r['map@k_clean'])} / {_f(r['map@k_photo_like'])}",
                  f"{_f(r['hit@k_clean'])} / {_f(r['hit@k_photo_like'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cost_table(study: Study) -> list[str]:
    head = ["row", "parameters", "GFLOPs", "input px", "embedding", "index on disk MB", "embed img/s",
            "single-image latency p50 ms", "load average", "training min", "weights"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in study.rows.items():
        lines.append("| " + " | ".join([
            name, f"{r['parameters'] / 1e6:.1f} M", _f(r["gflops"], 2), str(r["input_size"]), str(r["embedding_size"]),
            _f(r["index_mb"], 1), _f(r["images_per_s"], 1), _f(r["latency_p50_ms"], 1), _f(r["load_average"], 1),
            _f(r["training_minutes"], 1) if r["training_minutes"] is not None else "0",
            f"`{r['weights_id']}`"]) + " |")
    return lines


def _recipe_table(study: Study) -> list[str]:
    head = ["row", "start", "epochs", "input px", "teacher", "auxiliary targets", "frozen stages",
            "photo-like share", "minutes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in study.recipes.items():
        minutes = study.rows.get(name, {}).get("training_minutes")
        lines.append("| " + " | ".join(str(v) for v in (
            name, r["weights"], r["epochs"], r["image_size"], r["teacher"] or "none",
            ", ".join(r["aux_targets"] or []) or "none", r["freeze"], r["photo_probability"],
            _f(minutes, 1))) + " |")
    return lines


def _conditions_table(table: dict[str, dict[str, dict]]) -> list[str]:
    if not table:
        return ["(not run)"]
    conditions = list(next(iter(table.values())))
    lines = ["| model | " + " | ".join(conditions) + " |", "|" + "---|" * (len(conditions) + 1)]
    for model, by_condition in table.items():
        cells = []
        for c in conditions:
            s = by_condition.get(c)
            cells.append(f"{_f(_p(s['clean']))} / {_f(_p(s['photo_like']))}" if s else "n/a")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    first = next(iter(next(iter(table.values())).values()))
    lines += ["", f"P@5 by articleType, clean / photo-like; {first['queries']} queries against "
                  f"{first['products']} products."]
    return lines


def _goal_lines(study: Study) -> list[str]:
    if not study.goals:
        return ["(no trained row)"]
    lines = ["| row | goal | wanted | measured | |", "|---|---|---|---|---|"]
    for g in study.goals:
        verdict = "met" if g.met else f"short by {_f(g.short_by)}"
        lines.append(f"| {g.row} | {g.goal} | {_f(g.wanted, 2)} | {_f(g.measured)} | {verdict} |")
    return lines


def _best(table: dict[str, dict], key) -> str | None:
    scored = [(key(v), k) for k, v in table.items() if key(v) is not None]
    return max(scored)[1] if scored else None


def conclusions(study: Study) -> list[str]:
    """What the figures say, worked out from them, so a rerun with new figures says it anew."""
    lines = []
    best = _best(study.rows, lambda r: _p(r["photo_like"]))
    if best:
        r = study.rows[best]
        lines.append(f"- **Serve `{r['model']}` ({best})**: the best articleType P@5 on shopper-like photos "
                     f"({_f(_p(r['photo_like']))}; clean {_f(_p(r['clean']))}, type+colour "
                     f"{_f(_p(r['clean'], TYPE_COLOUR))}) at {_f(r['gflops'], 2)} GFLOPs and "
                     f"{r['input_size']} px.")
    trained = {n: r for n, r in study.rows.items() if n.endswith("-trained") and n.startswith("resnet")}
    if trained:
        depth = _best(trained, lambda r: _p(r["photo_like"]))
        cheapest = min(trained, key=lambda n: trained[n]["gflops"])
        cost = (f"and costs least ({_f(trained[depth]['gflops'], 2)} GFLOPs)" if cheapest == depth else
                f"; `{cheapest}` costs least ({_f(trained[cheapest]['gflops'], 2)} GFLOPs, "
                f"{_f(_p(trained[cheapest]['photo_like']))} on photos)")
        lines.append(f"- **Depth**: among the trained ResNets, `{depth}` scores best on photos "
                     f"({_f(_p(trained[depth]['photo_like']))}) {cost}. Under one budget of epochs a deeper "
                     f"network learns less per epoch from a random start and costs more minutes; the "
                     f"training table says what each depth cost.")
    for model, by_condition in study.preprocessing.items():
        choice = _best(by_condition, lambda s: _p(s["photo_like"]))
        worst = min(by_condition, key=lambda c: _p(by_condition[c]["photo_like"]) or 0)
        if choice:
            lines.append(f"- **Preprocessing, {model}**: `{choice}` "
                         f"({_f(_p(by_condition[choice]['photo_like']))} on photos); `{worst}` is worst "
                         f"({_f(_p(by_condition[worst]['photo_like']))}).")
    for model, by_variant in study.quality.items():
        reference = by_variant.get("original")
        if not reference:
            continue
        losses = {v: tuple(round((_p(reference[k]) or 0) - (_p(s[k]) or 0), 3) for k in ("clean", "photo_like"))
                  for v, s in by_variant.items() if v != "original"}
        if not losses:
            continue
        harmless = [v for v, loss in losses.items() if max(loss) <= 0.02]
        harmful = sorted(((max(loss), v, loss) for v, loss in losses.items() if max(loss) > 0.02), reverse=True)
        text = (f"- **Image quality, {model}**: within 0.02 of the original on clean and photo-like queries: "
                f"{', '.join(harmless) or 'none'}")
        if harmful:
            text += "; costs more (change in P@5, clean / photo-like): " + ", ".join(
                f"{v} ({-loss[0]:+.3f} / {-loss[1]:+.3f})" for _, v, loss in harmful)
        lines.append(text + ".")
    return lines


def next_steps(study: Study) -> list[str]:
    """For each row that misses a goal: by how much, and what the training curve suggests."""
    lines = []
    for row in dict.fromkeys(g.row for g in study.goals if not g.met):
        missed = [g for g in study.goals if g.row == row and not g.met]
        text = f"- **{row}** misses " + "; ".join(f"{g.goal} by {_f(g.short_by)}" for g in missed) + "."
        curve = study.curves.get(row, [])
        if len(curve) >= 2:
            last, before = curve[-1], curve[-2]
            per_epoch = (last["photo_like"] or 0) - (before["photo_like"] or 0)
            minutes = last["minutes"] - before["minutes"]
            if per_epoch > 0.01:
                text += (f" Its validation P@5 on photos still rose by {per_epoch:.3f} in the last epoch "
                         f"({minutes:.0f} min): the next step is more epochs (`EPOCHS`), then a larger input "
                         f"(`SIZE=224`, on a GPU: `DEVICE=cuda`).")
            else:
                text += (f" Its validation P@5 on photos has flattened ({per_epoch:+.3f} in the last epoch): "
                         f"the next step is a larger input (`SIZE=224`) or a stronger start "
                         f"(ImageNet weights, where a connected machine has them), not more of the same epochs.")
        lines.append(text)
    return lines


def _markdown(study: Study, plots: dict[str, str]) -> str:
    any_row = next(iter(study.rows.values()))
    out = ["# The study: depth, preprocessing and data quality", "",
           f"Queries: {any_row['queries']} products held out of training "
           f"(`{any_row['held_out_from'] or 'a seeded sample'}`), each searched against the whole index of "
           f"{any_row['catalog_products']} products with itself left out; clean = the catalog shot, photo-like = "
           f"the same product made to look like a shopper's photo. P@{any_row['k']} = share of the first "
           f"{any_row['k']} results that share the query's label.", ""]
    if study.settings.commands:
        out += [f"Every figure comes from the commands in `{study.settings.commands}`; "
                f"this report is remade from their output by its last command.", ""]
    out += ["## Conclusions for a shop", "", *conclusions(study), "",
            "## Accuracy", "", *_rows_table(study), "", f"![accuracy]({plots['accuracy']})", "",
            "## Cost", "", *_cost_table(study), "",
            "Embedding rate and latency were taken during each evaluation run, with the load average shown "
            "(other jobs shared the cores); `bench/` measures speed as ratios in one run.", "",
            f"![complexity]({plots['complexity']})", "",
            "## Goals", "", *_goal_lines(study), "", *next_steps(study), ""]
    if "training" in plots:
        out += ["## Training", "",
                "Validation P@5 after each epoch, on finetune's own held-out products searched among "
                "themselves (a smaller gallery than the rows above), against minutes of training.", "",
                f"![training]({plots['training']})", "", *_recipe_table(study), ""]
    out += ["## Preprocessing compatibility", "",
            "`crop@N`: resize the short side to N·256/224, centre crop N (torchvision's ImageNet "
            "transforms; a 180x240 shot loses 17% at the top and bottom). `pad@N`: pad to a square on white, "
            "resize to N (the whole product stays in the frame).", "",
            *_conditions_table(study.preprocessing), ""]
    if "preprocessing" in plots:
        out += [f"![preprocessing]({plots['preprocessing']})", ""]
    out += ["## Data quality", "",
            "Every image of the index and every query degraded alike: fitted within WxH, saved as JPEG at "
            "quality Q, or its studio-white backdrop replaced by a texture.", "",
            *_conditions_table(study.quality), ""]
    if "quality" in plots:
        out += [f"![data quality]({plots['quality']})", ""]
    return "\n".join(out)


def write_study(study: Study) -> dict[str, Path]:
    out = Path(study.settings.out)
    out.mkdir(parents=True, exist_ok=True)
    plots = {"accuracy": "accuracy.png", "complexity": "complexity.png"}
    _bar_rows(study, out / plots["accuracy"])
    _complexity(study, out / plots["complexity"])
    if study.curves:
        plots["training"] = "training.png"
        _curves_plot(study, out / plots["training"])
    if study.preprocessing:
        plots["preprocessing"] = "preprocessing.png"
        _conditions_plot(study.preprocessing, "preprocessing", out / plots["preprocessing"])
    if study.quality:
        plots["quality"] = "data_quality.png"
        _conditions_plot(study.quality, "data quality", out / plots["quality"])
    (out / "metrics.json").write_text(json.dumps(study.to_json(), indent=2), encoding="utf-8")
    (out / "report.md").write_text(_markdown(study, plots), encoding="utf-8")
    return {"report": out / "report.md", "metrics": out / "metrics.json",
            **{k: out / v for k, v in plots.items()}}


__all__ = ["Goals", "StudySettings", "Study", "GoalCheck", "gather", "write_study", "check_goals", "conclusions",
           "next_steps",
           "parse_row", "parse_pair"]
