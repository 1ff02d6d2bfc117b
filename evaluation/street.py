"""Shop the look, judged on real street photos with every garment outlined: are the garments a
person would name found (a found item's box within IoU 0.4 of the garment's), and are a found
item's five products of its kind (lenient: the catalog articleTypes a street label may be sold
as, written down in LENIENT), beside the whole photo searched as one query.

Only the photos the parser held out of its training count (their names are in its file).
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from catalog.photo_labels import STREET_KINDS
from catalog.street import read_labels
from embedding.garments import GarmentParser, box_iou, street_garments
from operations import LookSettings, SearchPolicy, find_the_look
from search import Searcher

# street label -> the catalog articleTypes a shopper would accept for it (catalog/photo_labels.py)
LENIENT = STREET_KINDS


@dataclass(frozen=True)
class Garment:
    kind: str                     # the parser class it belongs to
    label: str                    # the street label most of its pixels carry ("heels")
    box: tuple[float, float, float, float]


def garments_of(mask_path: Path, labels: dict[int, str]) -> list[Garment]:
    """The labelled garments of one photo: per parser class, its pixels' extent (1st-99th
    percentile) and the street label most of them carry."""
    return [Garment(g.kind, g.label, g.box) for g in street_garments(np.asarray(Image.open(mask_path)), labels)]


def of_kind(results, label: str) -> float:
    wanted = LENIENT.get(label, ())
    return float(np.mean([r.get("articleType") in wanted for r in results])) if results else 0.0


def evaluate_street(searcher: Searcher, model: str, photos: Path, held_out: list[str], k: int = 5) -> dict:
    """The figures over the held-out street photos (see the module's docstring)."""
    labels = read_labels(photos)
    policy = SearchPolicy(models=(model,), default_model=model, k=k)
    found, labelled = defaultdict(int), defaultdict(int)
    kind_p5, whole_any, items_any = defaultdict(list), [], []
    for stem in held_out:
        image_path, mask_path = photos / "images" / f"{stem}.jpg", photos / "masks" / f"{stem}.png"
        if not image_path.is_file() or not mask_path.is_file():
            continue
        truth = garments_of(mask_path, labels)
        if not truth:
            continue
        look = find_the_look(searcher, policy, str(image_path))
        whole = find_the_look(searcher, policy, str(image_path), settings=LookSettings(items=False))
        accepted = {t for g in truth for t in LENIENT.get(g.label, ())}
        whole_any.append(np.mean([r.get("articleType") in accepted for r in whole.first.results]))
        items_any.extend(np.mean([r.get("articleType") in accepted for r in f.answer.results])
                         for f in look.items if f.answer.results)
        for garment in truth:
            labelled[garment.kind] += 1
            match = next((f for f in look.items if f.item is not None and f.kind == garment.kind
                          and box_iou(f.item.box, garment.box) >= 0.4), None)
            if match is not None:
                found[garment.kind] += 1
                kind_p5[garment.kind].append(of_kind(match.answer.results, garment.label))
    per_class = {kind: {"garments": labelled[kind], "found": round(found[kind] / labelled[kind], 3),
                        "kind_p5": round(float(np.mean(kind_p5[kind])), 3) if kind_p5[kind] else None}
                 for kind in labelled}
    all_p5 = [v for values in kind_p5.values() for v in values]
    return {"photos": len(whole_any), "garments": sum(labelled.values()),
            "garment_recall": round(sum(found.values()) / max(1, sum(labelled.values())), 3),
            "found_items_kind_p5": round(float(np.mean(all_p5)), 3) if all_p5 else None,
            "whole_photo_any_garment_p5": round(float(np.mean(whole_any)), 3) if whole_any else None,
            "items_any_garment_p5": round(float(np.mean(items_any)), 3) if items_any else None,
            "classes": per_class}


def held_out_of(parser_file: Path) -> list[str]:
    return GarmentParser.held_out(parser_file)


def write(figures: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "street.json").write_text(json.dumps(figures, indent=1))


__all__ = ["LENIENT", "Garment", "evaluate_street", "garments_of", "held_out_of", "of_kind"]
