"""What one fine-tuning step costs, by precision and memory layout; what a photo-like
training view costs made from the shot or from its kept cut-out; and what preparing the
training images (decode and cut-out, before the first step) costs in this process and
spread over every core; side by side in one run.

    python -m bench.training_step [--catalog ../shared/catalog] [--model resnet18] [--image-size 112]
                                  [--batch-size 64] [--steps 6] [--views 200] [--prepare 600]

Training steps run on random tensors (the cost does not depend on the pixels) with the
trainer's own autocast and memory layout; the augmentation part reads the catalog's first
`--views` images, or draws synthetic products when there is no catalog.
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image, ImageDraw
from torchvision import models

from bench.common import DEFAULT_CATALOG, pct, table
from catalog import open_image, read_catalog
from catalog.photolike import cut_out
from training.augment import ShopperAugment
from training.data import DecodedImages, downsize, short_side_size
from training.trainer import cpu_has_native_bf16, mixed_precision


def step_seconds(model: str, image_size: int, batch_size: int, steps: int, precision: str,
                 channels_last: bool) -> float:
    torch.manual_seed(0)
    net = models.get_model(model, weights=None, num_classes=120)
    images = torch.randn(batch_size, 3, image_size, image_size)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 120, (batch_size,))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    autocast, _ = mixed_precision(torch.device("cpu"), precision)
    times = []
    for _ in range(steps + 2):  # the first two warm oneDNN's kernel caches
        started = time.perf_counter()
        with autocast():
            loss = torch.nn.functional.cross_entropy(net(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return pct(times[2:], 50)


def shots(catalog: Path, n: int, short_side: int) -> list[Image.Image]:
    if catalog.is_dir():
        products = read_catalog(catalog).products[:n]
        return [downsize(open_image(p.image), short_side) for p in products]
    out = []
    for i in range(n):  # a coloured product on a studio white, when there is no catalog
        image = Image.new("RGB", (short_side, round(short_side * 4 / 3)), (255, 255, 255))
        rng = random.Random(i)
        colour = tuple(rng.randint(0, 200) for _ in range(3))
        ImageDraw.Draw(image).ellipse((10, 15, short_side - 10, image.height - 15), fill=colour)
        out.append(image)
    return out


def products_to_prepare(catalog: Path, n: int, folder: Path) -> list:
    """The catalog's first `n` products, or `n` synthetic shots written as JPEG files."""
    if catalog.is_dir():
        return read_catalog(catalog).products[:n]
    out = []
    for index, image in enumerate(shots(catalog, n, 180)):
        path = folder / f"{index}.jpg"
        image.save(path, quality=85)
        out.append(SimpleNamespace(id=str(index), image=path))
    return out


def preparation_rows(products: list, short_side: int, processes: int, rounds: int = 2) -> list[dict]:
    """Decoding and cutting out `products` in this process and over `processes` loader
    processes, alternating, the best of `rounds` each."""
    best = {0: float("inf"), processes: float("inf")}
    for _ in range(rounds):
        for workers in best:
            started = time.perf_counter()
            DecodedImages.load(products, short_side, progress=False, cut_outs=True, workers=workers)
            best[workers] = min(best[workers], time.perf_counter() - started)
    return [{"where": "in this process" if workers == 0 else f"{workers} loader processes",
             "seconds": f"{seconds:.2f}", "images/s": f"{len(products) / seconds:.1f}",
             "vs in this process": f"{best[0] / seconds:.2f}x"} for workers, seconds in best.items()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--views", type=int, default=200)
    parser.add_argument("--prepare", type=int, default=600, help="products decoded and cut out, both ways")
    args = parser.parse_args()

    print(f"CPU with native bf16: {cpu_has_native_bf16()}; {torch.get_num_threads()} threads")
    rows, base = [], None
    for precision in ("fp32", "bf16"):
        for channels_last in (False, True):
            seconds = step_seconds(args.model, args.image_size, args.batch_size, args.steps, precision,
                                   channels_last)
            base = base or seconds
            rows.append({"precision": precision, "layout": "channels-last" if channels_last else "contiguous",
                         "step s": f"{seconds:.3f}", "images/s": f"{args.batch_size / seconds:.1f}",
                         "vs fp32 contiguous": f"{base / seconds:.2f}x"})
    print(f"\n{args.model} training step, batch {args.batch_size} at {args.image_size} px:")
    print(table(rows))

    images = shots(Path(args.catalog), args.views, short_side_size(args.image_size))
    augment = ShopperAugment(args.image_size, photo_probability=1.0)
    started = time.perf_counter()
    cuts = [cut_out(image) for image in images]
    cut_seconds = time.perf_counter() - started
    rows = []
    for name, pieces in (("from the shot", [None] * len(images)), ("from the kept cut-out", cuts)):
        started = time.perf_counter()
        for index, (image, piece) in enumerate(zip(images, pieces)):
            augment(image, random.Random(index), piece)
        rows.append({"photo-like view": name, "ms per view": f"{(time.perf_counter() - started) / len(images) * 1000:.2f}"})
    print(f"\nphoto-like training views, {len(images)} images (making the cut-outs once: "
          f"{cut_seconds / len(images) * 1000:.2f} ms per image):")
    print(table(rows))

    processes = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as folder:
        products = products_to_prepare(Path(args.catalog), args.prepare, Path(folder))
        rows = preparation_rows(products, short_side_size(args.image_size), max(2, processes))
    print(f"\npreparing {len(products)} training images (decode and cut-out) before the first step:")
    print(table(rows))


if __name__ == "__main__":
    main()
