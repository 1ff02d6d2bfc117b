"""Writing an evaluation out: report.md (a summary table, a table per model, the plots
embedded), the PNG plots, and metrics.json with every number behind them."""
from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from catalog.photo_labels import COLOUR_GROUPS, PHOTO_KINDS  # noqa: E402
from evaluation.metrics import LABEL_LEVELS, PRIMARY_LEVEL, Scores  # noqa: E402
from evaluation.photos import PHOTO_LEVELS  # noqa: E402
from evaluation.runner import Evaluation, ModelEvaluation  # noqa: E402

PLOTS = {
    "precision": "precision_by_level.png",
    "latency": "accuracy_vs_latency.png",
    "article_types": "article_types.png",
    "examples": "photo_like_examples.png",
}
ARTICLE_TYPES_SHOWN = 20


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _mb(size) -> str:
    return "n/a" if size.bytes is None else f"{size.bytes / 1e6:.1f} MB"


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f} M"


def _kinds(m: ModelEvaluation) -> list[tuple[str, Scores]]:
    return [("clean", m.clean)] + ([("photo-like", m.photo_like)] if m.photo_like else [])


# -- plots ---------------------------------------------------------------------------------
def _plot_precision(evaluation: Evaluation, path: Path) -> None:
    kinds = [k for k, _ in _kinds(evaluation.models[0])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.2), sharey=True, squeeze=False)
    x = np.arange(len(LABEL_LEVELS))
    width = 0.8 / len(evaluation.models)
    for ax, kind in zip(axes[0], kinds):
        for i, m in enumerate(evaluation.models):
            scores = dict(_kinds(m))[kind]
            values = [scores.precision.get(level) or 0.0 for level in LABEL_LEVELS]
            bars = ax.bar(x + (i - (len(evaluation.models) - 1) / 2) * width, values, width, label=m.model)
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        ax.set_xticks(x, LABEL_LEVELS, rotation=15)
        ax.set_ylim(0, 1.08)
        ax.set_title(f"{kind} queries: precision@{evaluation.settings.k}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"share of the top {evaluation.settings.k} with the query's label")
    axes[0][-1].legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_latency(evaluation: Evaluation, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"clean": "o", "photo-like": "^"}
    for i, m in enumerate(evaluation.models):
        colour = f"C{i}"
        p50, p95 = m.latency.p50_ms, m.latency.p95_ms
        if p50 is None:
            continue
        for n, (kind, scores) in enumerate(_kinds(m)):
            y = scores.precision.get(PRIMARY_LEVEL) or 0.0
            ax.errorbar([p50], [y], xerr=[[0], [max(0.0, p95 - p50)]], fmt=markers[kind], color=colour,
                        markersize=9, capsize=3, label=f"{m.model} {kind}")
            if n == 0:
                # Slanted above the marker: models close in latency would otherwise overprint.
                ax.annotate(f"{m.model}, {_millions(m.parameters)} params", (p50, y), textcoords="offset points",
                            xytext=(0, 9), fontsize=7, rotation=35, rotation_mode="anchor")
    ax.set_xlabel("query latency, ms (embed one image + search): marker p50, whisker to p95")
    ax.set_ylabel(f"precision@{evaluation.settings.k} on articleType")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("accuracy against latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_article_types(evaluation: Evaluation, path: Path) -> None:
    # The most queried types, in the first model's order, so every model is compared on them.
    shown = [s.article_type for s in evaluation.models[0].clean.per_article_type[:ARTICLE_TYPES_SHOWN]]
    kinds = [k for k, _ in _kinds(evaluation.models[0])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 1.2 + 0.32 * len(shown) * len(evaluation.models) / 2),
                             sharey=True, squeeze=False)
    y = np.arange(len(shown))
    height = 0.8 / len(evaluation.models)
    counts = {s.article_type: s.queries for s in evaluation.models[0].clean.per_article_type}
    for ax, kind in zip(axes[0], kinds):
        for i, m in enumerate(evaluation.models):
            per_type = {s.article_type: s.precision for s in dict(_kinds(m))[kind].per_article_type}
            ax.barh(y + (i - (len(evaluation.models) - 1) / 2) * height, [per_type.get(t, 0.0) for t in shown],
                    height, label=m.model)
        ax.set_yticks(y, [f"{t} ({counts[t]})" for t in shown], fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"precision@{evaluation.settings.k} on articleType")
        ax.set_title(f"{kind} queries, by article type (queries)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()  # most queried first; the axis is shared, so once
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_examples(evaluation: Evaluation, path: Path) -> None:
    n = len(evaluation.examples)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 4.4), squeeze=False)
    for column, (query_id, original, photo) in enumerate(evaluation.examples):
        for row, (image, title) in enumerate(((original, f"{query_id}: catalog"), (photo, "photo-like"))):
            axes[row][column].imshow(np.asarray(image))
            axes[row][column].set_title(title, fontsize=7)
            axes[row][column].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- markdown ------------------------------------------------------------------------------
def _machine(machine: dict) -> str:
    if not machine or machine.get("load_average_start") is None:
        return ""
    return (f", {machine['cpus']} CPUs, load average {machine['load_average_start']:.1f} at the start and "
            f"{machine['load_average_end']:.1f} at the end (latency and speed figures depend on it)")


def _summary_table(evaluation: Evaluation) -> list[str]:
    k = evaluation.settings.k
    photo = evaluation.queries["photo_like"]
    head = ["model", "parameters", "embedding", "index on disk", "embed images/s", "latency p50 / p95 ms",
            f"P@{k} articleType clean"] + ([f"P@{k} articleType photo-like"] if photo else []) + \
        [f"mAP@{k} clean", f"hit@{k} clean"] + ([f"mAP@{k} photo-like", f"hit@{k} photo-like"] if photo else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in evaluation.models:
        row = [m.model, _millions(m.parameters), str(m.embedding_size), _mb(m.index_size),
               _num(m.embed_rate.images_per_s, 1), f"{_num(m.latency.p50_ms, 1)} / {_num(m.latency.p95_ms, 1)}",
               _num(m.clean.precision[PRIMARY_LEVEL])]
        if photo:
            row.append(_num(m.photo_like.precision[PRIMARY_LEVEL]))
        row += [_num(m.clean.map), _num(m.clean.hit_rate)]
        if photo:
            row += [_num(m.photo_like.map), _num(m.photo_like.hit_rate)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _order(m: ModelEvaluation) -> str:
    if not m.reranked_by:
        return "cosine similarity"
    judges = {"neighbours": "the labels of its nearest products", "classifiers": "the fine-tune's classifiers"}
    return ("the nearest products reordered by how likely their " + " and ".join(m.reranked_by)
            + " are for the query, judged by " + " and ".join(judges[w] for w in m.reranked_with))


def _photo_views(views) -> str:
    if not views.zooming:
        return "embedded as they are (`--zoom off`)"
    zooms = ", ".join(f"{z:.0%}" for z in views.zooms if z < 1.0)
    return (f"embedded whole and zoomed in on the centre ({zooms} of each side), the vectors averaged; "
            "studio shots as they are")


def _colour(evaluation: Evaluation, m: ModelEvaluation) -> str:
    own = (f"; a stored product's own baseColour is known: its candidates of that colour gain "
           f"{m.own_colour_bonus}" if m.own_colour_bonus > 0 else "")
    source = evaluation.queries.get("colour_model")
    if source is None:
        return "no colour model, photos are not read" + own
    if m.colour_preference:
        return (f"each photo's colour is read (model: {source}) and its reading reorders the candidates, "
                f"weight {m.colour_weight} x log p(candidate's baseColour)" + own)
    return f"each photo's colour is read (model: {source}) but does not reorder the candidates" + own


def _photos_section(evaluation: Evaluation) -> list[str]:
    """Real photos: P@k by kind, colour and both, leniently, for every model."""
    info = evaluation.queries.get("photos")
    if not info:
        return []
    k = evaluation.settings.k
    lines = ["## Real photos", "",
             f"{info['count']} labelled photos from `{info['folder']}` ({info['with_colour']} with a known colour), "
             "searched as a shopper sends them. Lenient: a result is the right kind when its articleType is one "
             "the photo's class maps to, the right colour when its baseColour is the photo's or of the same "
             "group (`catalog/photo_labels.py`, below). Colour and type+colour are averaged over the photos "
             "with a known colour only.", "",
             "| model | " + " | ".join(f"P@{k} {level}" for level in PHOTO_LEVELS) + " | "
             + " | ".join(f"hit@{k} {level}" for level in PHOTO_LEVELS) + " | colour read right | photos |",
             "|" + "---|" * (2 * len(PHOTO_LEVELS) + 3)]
    for m in evaluation.models:
        if m.photos is None:
            continue
        lines.append(f"| {m.model} | " + " | ".join(_num(m.photos.precision[lv]) for lv in PHOTO_LEVELS) + " | "
                     + " | ".join(_num(m.photos.hit_rate[lv]) for lv in PHOTO_LEVELS)
                     + f" | {_num(m.photos.colour_reading)} | {m.photos.queries} |")
    first = next((m for m in evaluation.models if m.photos is not None), None)
    if first is not None:
        lines += ["", f"P@{k} by kind, per class ({first.model}): " + "; ".join(
            f"{name} {_num(row['kind'])} ({row['queries']})" for name, row in first.photos.by_class.items()), ""]
    lines += ["Kinds: " + "; ".join(f"{c} = {', '.join(types)}" for c, types in PHOTO_KINDS.items()) + ".", "",
              "Colour groups: " + "; ".join("/".join(sorted(g)) for g in COLOUR_GROUPS) + ".", ""]
    return lines


def _model_section(evaluation: Evaluation, m: ModelEvaluation) -> list[str]:
    k = evaluation.settings.k
    kinds = _kinds(m)
    lines = [f"## {m.model}", "",
             f"- weights: `{m.weights_id}`; parameters: {m.parameters:,}; embedding size: {m.embedding_size}; "
             f"{m.flops / 1e9:.2f} GFLOPs per image at {m.input_size} px",
             f"- index on disk: {_mb(m.index_size)} ({m.index_size.note})",
             f"- embedding speed: {_num(m.embed_rate.images_per_s, 1)} images/s ({m.embed_rate.source})",
             f"- query latency: p50 {_num(m.latency.p50_ms, 1)} ms, p95 {_num(m.latency.p95_ms, 1)} ms, "
             f"mean {_num(m.latency.mean_ms, 1)} ms over {m.latency.queries} queries ({m.latency.measured_on})",
             f"- preprocessing: {m.preprocessing['summary']}",
             f"- order of results: {_order(m)}",
             f"- query photos: {_photo_views(evaluation.settings.query_views)}",
             f"- colour: {_colour(evaluation, m)}", ""]
    head = ["metric"] + [kind for kind, _ in kinds]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for level in LABEL_LEVELS:
        lines.append(f"| precision@{k} {level} | " + " | ".join(_num(s.precision.get(level)) for _, s in kinds) + " |")
    lines.append(f"| mAP@{k} articleType | " + " | ".join(_num(s.map) for _, s in kinds) + " |")
    lines.append(f"| hit-rate@{k} articleType | " + " | ".join(_num(s.hit_rate) for _, s in kinds) + " |")
    lines.append("| queries | " + " | ".join(str(s.queries) for _, s in kinds) + " |")
    lines.append("")
    worst = m.clean.worst_article_types
    minimum = evaluation.settings.min_queries_per_type
    lines.append(f"Worst {evaluation.settings.worst} article types (clean queries, at least {minimum} queries each):")
    lines.append("")
    if not worst:
        lines.append(f"_no article type has {minimum} or more queries_")
    else:
        photo = {s.article_type: s for s in m.photo_like.per_article_type} if m.photo_like else {}
        head = ["article type", "queries", f"P@{k} clean", f"hit@{k} clean"] + \
            ([f"P@{k} photo-like"] if m.photo_like else [])
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for s in worst:
            row = [s.article_type, str(s.queries), _num(s.precision), _num(s.hit_rate)]
            if m.photo_like:
                row.append(_num(photo[s.article_type].precision) if s.article_type in photo else "n/a")
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def _markdown(evaluation: Evaluation, plots: dict[str, str]) -> str:
    s = evaluation.settings
    c, q = evaluation.catalog, evaluation.queries
    if q["mode"] == "leave-one-out" and q.get("held_out_from"):
        how = (f"leave-one-out over the {q['count']} products that the fine-tuning run which wrote "
               f"`{q['held_out_from']}` held out (never trained on), each searched against the whole index "
               "with the product itself left out")
        if q.get("held_out_missing"):
            how += f"; {q['held_out_missing']} held-out products are not in the index"
    elif q["mode"] == "leave-one-out":
        how = (f"leave-one-out over a seeded sample of {q['count']} catalog products (seed {s.seed}): "
               "a clean query is the product's stored vector, searched with the product itself left out")
    else:
        how = f"{q['count']} query images from `{q['folder']}` (in the catalog layout), nothing excluded"
        if q["skipped"]:
            how += f"; {len(q['skipped'])} query rows skipped"
    if q["photo_like"] and evaluation.settings.photo_style == "handheld":
        how += ("; photo-like queries (handheld): the same catalog shots, backdrop and all, placed smaller on "
                "a wall colour, warped as if photographed at an angle, rotated, colour-jittered and blurred "
                "(`catalog/handheld.py`, nothing of which fine-tuning trains on), embedded and searched")
    elif q["photo_like"]:
        how += ("; photo-like queries: the same products cut out of their studio background, pasted smaller "
                "on a textured background, slightly rotated, relit, blurred and JPEG-compressed "
                "(`catalog/photolike.py`), embedded and searched")
    index = evaluation.index
    built = ("the index was current and reused" if index["reused"] else
             f"indexed {index['images']} images in {index['seconds']:.0f} s "
             f"({_num(index['images_per_s'], 1)} images/s for all models together, decode and writes included)")
    size = "x".join(map(str, c["image_size"])) if c["image_size"] else "unknown"
    lines = [
        "# Model comparison: " + ", ".join(m.model for m in evaluation.models), "",
        f"Catalog `{c['folder']}`: {c['products']} products with an image (rows skipped: {c['skipped']}), "
        f"{c['indexed']} in every model's index; images mostly {size}. Index: {s.store.where}; {built}.", "",
        f"Queries: {how}. k = {s.k}; weights: `{s.weights}`; device: {s.device}. "
        f"Run took {evaluation.seconds:.0f} s on {time.strftime('%Y-%m-%d %H:%M')}{_machine(evaluation.machine)}.", "",
        "Precision@k is the share of the k recommendations that share the query's label, averaged over the "
        "queries; mAP@k and hit-rate@k judge relevance by articleType (conventions in `evaluation/metrics.py`). "
        "Embed images/s is the network's forward pass on batches; latency is one query image embedded "
        "(preprocessing included, decoding not) plus the vector search.", "",
        "## Summary", "", *_summary_table(evaluation), "",
        f"![precision per label level]({plots['precision']})", "",
        f"![accuracy against latency]({plots['latency']})", "",
        f"![precision per article type]({plots['article_types']})", "",
    ]
    if "examples" in plots:
        lines += [f"![photo-like queries]({plots['examples']})", ""]
    lines += _photos_section(evaluation)
    for m in evaluation.models:
        lines += _model_section(evaluation, m)
    return "\n".join(lines)


def write_report(evaluation: Evaluation, out: Path) -> dict[str, Path]:
    """Write report.md, metrics.json and the PNG plots into `out`; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = {key: name for key, name in PLOTS.items() if key != "examples" or evaluation.examples}
    _plot_precision(evaluation, out / plots["precision"])
    _plot_latency(evaluation, out / plots["latency"])
    _plot_article_types(evaluation, out / plots["article_types"])
    if "examples" in plots:
        _plot_examples(evaluation, out / plots["examples"])
    (out / "metrics.json").write_text(json.dumps(evaluation.to_json(), indent=2, ensure_ascii=False),
                                      encoding="utf-8")
    (out / "report.md").write_text(_markdown(evaluation, plots), encoding="utf-8")
    return {"report": out / "report.md", "metrics": out / "metrics.json",
            **{key: out / name for key, name in plots.items()}}


__all__ = ["write_report", "PLOTS"]
