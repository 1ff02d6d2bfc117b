"""What each model costs, apart from its accuracy: parameters, vector size, index size on
disk, embedding speed, and what its preprocessing does to the catalog's 3:4 images."""
from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from catalog import Product, open_image
from catalog.errors import UserError
from embedding import Embedder
from indexing import IndexReport
from vectorstore.store import collection_name


def parameter_count(embedder: Embedder) -> int:
    return sum(p.numel() for p in embedder.network.parameters())


def forward_flops(embedder: Embedder) -> int:
    """Floating-point operations of one image's forward pass at the embedder's input size, as
    torch's FlopCounterMode counts them (a multiply-add is two)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    network = embedder.network.eval()
    with torch.no_grad(), counter:
        network(torch.zeros(1, 3, embedder.image_size, embedder.image_size))
    return int(counter.get_total_flops())


@dataclass
class IndexSize:
    bytes: int | None
    note: str


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def index_size(db: Path | None, model: str) -> IndexSize:
    """Bytes of the model's vector index folder under an embedded Chroma path.

    Chroma keeps each collection's HNSW index in a folder named after its vector segment, and
    the metadata of every collection in one shared chroma.sqlite3; the segment's id is read
    from that file (read-only). A server's disk is not ours to measure.
    """
    if db is None:
        return IndexSize(None, "n/a (Chroma server)")
    sqlite_path = Path(db) / "chroma.sqlite3"
    if not sqlite_path.is_file():
        return IndexSize(None, f"n/a (no chroma.sqlite3 in {db})")
    try:
        with sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True) as connection:
            rows = connection.execute(
                "SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
                "WHERE c.name = ? AND s.scope = 'VECTOR'", (collection_name(model),)).fetchall()
    except sqlite3.Error as exc:
        return IndexSize(None, f"n/a (cannot read {sqlite_path.name}: {exc})")
    folders = [Path(db) / row[0] for row in rows if (Path(db) / row[0]).is_dir()]
    if not folders:
        return IndexSize(None, "n/a (no vector folder on disk yet)")
    shared = sqlite_path.stat().st_size
    return IndexSize(sum(_folder_bytes(f) for f in folders),
                     f"its HNSW folder; the metadata of every model, and vectors written since the last "
                     f"flush to HNSW, are in the shared chroma.sqlite3 ({shared / 1e6:.1f} MB)")


@dataclass
class EmbedRate:
    images_per_s: float
    images: int
    source: str


def rate_from_index(report: IndexReport, model: str, min_images: int) -> EmbedRate | None:
    """Forward-pass throughput seen while indexing, when enough images were embedded for the
    first call's one-off cost (tracing the network) to wash out."""
    images = report.indexed.get(model, 0)
    seconds = report.timer.seconds.get(f"embed {model}", 0.0)
    if images < max(1, min_images) or seconds <= 0:
        return None
    return EmbedRate(images / seconds, images, "indexing run (forward pass only, batches of the index)")


def timed_rate(embedder: Embedder, products: Sequence[Product], batch_size: int, why: str = "") -> EmbedRate:
    """Forward-pass throughput over a small batch of catalog images, after a warm-up: the
    same quantity `rate_from_index` reads, for when the index was already current."""
    images = [open_image(p.image) for p in products]
    if not images:
        raise UserError("no catalog image to time the embedder with")
    tensors = torch.stack([embedder.preprocess(im) for im in images])
    embedder.embed_preprocessed(tensors[:1])
    started = time.perf_counter()
    for start in range(0, len(tensors), batch_size):
        embedder.embed_preprocessed(tensors[start:start + batch_size])
    seconds = time.perf_counter() - started
    return EmbedRate(len(images) / seconds, len(images), f"timed batch of {len(images)} catalog images, "
                     f"forward pass only{'; ' + why if why else ''}")


def typical_size(paths: Sequence[Path], probe: int = 200) -> tuple[int, int] | None:
    """The most common (width, height) among the first `probe` images (headers only)."""
    sizes = Counter()
    for path in list(paths)[:probe]:
        try:
            with Image.open(path) as image:
                sizes[image.size] += 1
        except OSError:
            continue
    return sizes.most_common(1)[0][0] if sizes else None


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def preprocessing_fit(transform, image_size: tuple[int, int] | None) -> dict:
    """The embedder's resize/crop/normalisation and what it keeps of an image of `image_size`.

    torchvision's classification preset resizes the shorter side to `resize_size`, then
    centre-crops `crop_size` squared: on a portrait 3:4 image the crop cuts the top and the
    bottom (heads, shoes) and part of the sides.
    """
    resize, crop = _first(getattr(transform, "resize_size", None)), _first(getattr(transform, "crop_size", None))
    facts: dict = {
        "resize_shorter_side": resize,
        "centre_crop": crop,
        "interpolation": getattr(getattr(transform, "interpolation", None), "value", None),
        "mean": list(getattr(transform, "mean", []) or []) or None,
        "std": list(getattr(transform, "std", []) or []) or None,
        "catalog_image_size": list(image_size) if image_size else None,
    }
    if resize is None or crop is None or image_size is None:
        facts["summary"] = f"{transform!s}; fit to the catalog images unknown"
        return facts
    width, height = image_size
    if getattr(transform, "framing", "") == "pad to square on white":
        return _padded_fit(facts, crop, width, height)
    scale = resize / min(width, height)
    resized = (width * scale, height * scale)
    kept_width, kept_height = min(1.0, crop / resized[0]), min(1.0, crop / resized[1])
    facts.update({
        "upscale": scale,
        "kept_width": kept_width,
        "kept_height": kept_height,
        "cut_height": 1 - kept_height,
        "cut_width": 1 - kept_width,
        "kept_area": kept_width * kept_height,
    })
    facts["summary"] = (
        f"resize shorter side to {resize} ({'up' if scale > 1 else 'down'}scale x{scale:.2f} from "
        f"{width}x{height}), centre crop {crop}x{crop}, ImageNet mean/std: keeps "
        f"{kept_width:.0%} of the width and {kept_height:.0%} of the height, i.e. cuts "
        f"{(1 - kept_height) / 2:.0%} off the top and off the bottom of a {width}x{height} image")
    return facts


def _padded_fit(facts: dict, size: int, width: int, height: int) -> dict:
    """Pad to a square on white, then resize: the whole image is kept, the short sides get
    white margins."""
    scale = size / max(width, height)
    facts.update({"resize_shorter_side": None, "centre_crop": None, "framing": "pad to square on white",
                  "upscale": scale, "kept_width": 1.0, "kept_height": 1.0, "cut_height": 0.0, "cut_width": 0.0,
                  "kept_area": 1.0, "padded": 1 - min(width, height) / max(width, height)})
    mean = facts["mean"] and round(facts["mean"][0] * 255)
    std = facts["std"] and round(facts["std"][0] * 255)
    facts["summary"] = (f"pad to a square on white, resize to {size}x{size} ({'up' if scale > 1 else 'down'}scale "
                        f"x{scale:.2f} from {width}x{height}), (x - {mean}) / {std}: keeps the whole image, "
                        f"{facts['padded']:.0%} of the square is white margin")
    return facts


__all__ = ["parameter_count", "IndexSize", "index_size", "EmbedRate", "rate_from_index", "timed_rate",
           "typical_size", "preprocessing_fit"]
