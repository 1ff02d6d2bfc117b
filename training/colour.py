"""Training the colour model (embedding/colour.py) on a catalog's own shots and baseColour labels.

Every product is seen three times, each time under light drawn at random (exposure, gamma,
white balance along the warm-cool axis and its green-magenta tint, contrast, saturation): as
its studio shot, backdrop included (so the backdrop shows the cast, as a white wall would); as
a shopper-like photo (catalog/photolike.py: cut out, pasted small on a textured background,
blurred, compressed); and as a close-up of the product's middle that fills the frame (a
garment photographed from near, with no backdrop to judge the light by). A seeded share of the products is held out: the model never
sees them, its file lists them, and `evaluate` can query them as products it has not learned.

Seeded throughout (augmentations from `random.Random(f"{seed}:{id}:{view}")`, torch on one
thread), so the same catalog and seed write the same file, byte for byte:

    python -m training.colour --catalog ../shared/catalog --out embedding/colour_model.npz
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from catalog import open_image, read_catalog
from catalog.errors import UserError
from catalog.photolike import PhotoLikeSettings, shopper_photo
from embedding.colour import ColourFeatureSettings, ColourModel, image_features


@dataclass(frozen=True)
class LightSettings:
    """Ranges a view's light is drawn from (uniformly)."""
    exposure: tuple[float, float] = (0.55, 1.3)
    gamma: tuple[float, float] = (0.75, 1.35)
    warmth: float = 0.22          # red gain 1 + t, blue gain 1 - t, t within +- this
    tint: float = 0.08            # green gain within 1 +- this
    contrast: tuple[float, float] = (0.75, 1.2)
    saturation: tuple[float, float] = (0.8, 1.15)


@dataclass(frozen=True)
class ColourTrainingSettings:
    held_out: float = 0.1               # share of products never trained on
    hidden: int = 128
    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    scale_floor: float = 0.05
    workers: int = max(1, min(4, os.cpu_count() or 1))
    light: LightSettings = LightSettings()
    # Shopper-like views at a small size: colour needs no detail, and it is 4x cheaper.
    photo: PhotoLikeSettings = PhotoLikeSettings(size=(120, 160))
    features: ColourFeatureSettings = ColourFeatureSettings()


def relight(image: Image.Image, rng: random.Random, light: LightSettings) -> Image.Image:
    """The image under other light: exposure and gamma, a white balance off along the
    warm-cool axis with a tint, contrast and saturation."""
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(*light.contrast))
    image = ImageEnhance.Color(image).enhance(rng.uniform(*light.saturation))
    warmth = rng.uniform(-light.warmth, light.warmth)
    gains = np.array([1 + warmth, 1 + rng.uniform(-light.tint, light.tint), 1 - warmth], dtype=np.float32)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = (pixels ** rng.uniform(*light.gamma)) * gains * rng.uniform(*light.exposure)
    return Image.fromarray((pixels.clip(0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def close_up(image: Image.Image, rng: random.Random, share: tuple[float, float] = (0.35, 0.6)) -> Image.Image:
    """The middle of the product (its box on the studio backdrop), `share` of each side."""
    ys, xs = np.nonzero(np.asarray(image.convert("L")) < 235)
    if len(ys) == 0:
        return image
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    cy, cx, part = (top + bottom) / 2, (left + right) / 2, rng.uniform(*share)
    half_h, half_w = max(2, (bottom - top) * part / 2), max(2, (right - left) * part / 2)
    return image.crop((round(cx - half_w), round(cy - half_h), round(cx + half_w), round(cy + half_h)))


VIEWS = ("studio, relit", "shopper-like, relit", "close-up, relit")


def views_of(image: Image.Image, key: str, seed: int, settings: ColourTrainingSettings) -> list[Image.Image]:
    """The views a product is learned from (see the module), in the order of VIEWS."""
    studio = relight(image, random.Random(f"{seed}:{key}:studio"), settings.light)
    rng = random.Random(f"{seed}:{key}:photo")
    photo = relight(shopper_photo(image, rng, settings.photo), rng, settings.light)
    rng = random.Random(f"{seed}:{key}:close")
    near = relight(close_up(image, rng), rng, settings.light)
    return [studio, photo, near]


def _features_of_product(task: tuple[str, str, int, ColourTrainingSettings]) -> np.ndarray:
    product_id, path, seed, settings = task
    image = open_image(path)
    return np.stack([image_features(view, None, settings.features)
                     for view in views_of(image, product_id, seed, settings)])


def _features(tasks: list, workers: int) -> np.ndarray:
    """Every product's view features (products x views x size), in the order of `tasks`."""
    if workers <= 1:
        return np.stack([_features_of_product(t) for t in tasks])
    with ProcessPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(_features_of_product, tasks, chunksize=64)))


def split(ids: list[str], seed: int, share: float) -> tuple[list[str], list[str]]:
    """(trained on, held out): a seeded share held out."""
    held = set(random.Random(f"{seed}:held-out").sample(sorted(ids), round(len(ids) * share)))
    return [i for i in ids if i not in held], [i for i in ids if i in held]


def fit_mlp(x: np.ndarray, y: np.ndarray, classes: int, seed: int, settings: ColourTrainingSettings):
    """A one-hidden-layer MLP on standardised features; its layers as numpy arrays."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same sums in the same order, the same file
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], settings.hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(settings.hidden, classes))
        optimiser = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate,
                                      weight_decay=settings.weight_decay)
        steps = settings.epochs * -(-len(x) // settings.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, settings.learning_rate, total_steps=steps)
        xs, ys = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(settings.epochs):
            for batch in torch.randperm(len(x), generator=generator).split(settings.batch_size):
                loss = torch.nn.functional.cross_entropy(net(xs[batch]), ys[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
        return [(layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy())
                for layer in net if isinstance(layer, torch.nn.Linear)]
    finally:
        torch.set_num_threads(threads)


def _accuracy(model: ColourModel, x: np.ndarray, y: np.ndarray) -> float:
    return float((model.probabilities_of(x).argmax(axis=1) == y).mean()) if len(x) else float("nan")


@dataclass
class TrainingSet:
    """Every product's view features (products x views x size), trained-on products first."""
    colours: list[str]
    features: np.ndarray
    labels: np.ndarray
    trained_ids: list[str]
    held_ids: list[str]
    catalog_products: int


def extract(catalog_dir: Path, seed: int, settings: ColourTrainingSettings, log=print) -> TrainingSet:
    """The slow half of training: every product's views, made and read."""
    products = [p for p in read_catalog(Path(catalog_dir)).products if p.baseColour]
    if not products:
        raise UserError(f"{catalog_dir}: no product with an image and a baseColour")
    colours = sorted({p.baseColour for p in products})
    trained_ids, held_ids = split([p.id for p in products], seed, settings.held_out)
    by_id = {p.id: p for p in products}
    log(f"colour model: {len(colours)} colours, {len(trained_ids)} products to learn from, "
        f"{len(held_ids)} held out; extracting features with {settings.workers} processes")
    ordered = trained_ids + held_ids
    features = _features([(i, str(by_id[i].image), seed, settings) for i in ordered], settings.workers)
    labels = np.array([colours.index(by_id[i].baseColour) for i in ordered], dtype=np.int64)
    return TrainingSet(colours, features, labels, trained_ids, held_ids, len(products))


def fit(data: TrainingSet, seed: int, settings: ColourTrainingSettings) -> ColourModel:
    """The fast half: standardise, fit the MLP, measure it on the held-out products."""
    n = len(data.trained_ids)
    train_x = data.features[:n].reshape(-1, data.features.shape[2])
    train_y = np.repeat(data.labels[:n], data.features.shape[1])
    mean = train_x.mean(axis=0)
    # A floor under the spread: a histogram bin the catalog hardly uses would otherwise turn a
    # vivid swatch into a value hundreds of spreads away, where the MLP means nothing.
    scale = train_x.std(axis=0) + settings.scale_floor
    blank = [(np.zeros((len(mean), len(data.colours))), np.zeros(len(data.colours)))]
    standardised = ColourModel(data.colours, settings.features, mean, scale, blank).standardise(train_x)
    layers = fit_mlp(standardised, train_y, len(data.colours), seed, settings)
    model = ColourModel(data.colours, settings.features, mean, scale, layers)
    held_x, held_y = data.features[n:], data.labels[n:]
    model.facts = {"seed": seed, "catalog_products": data.catalog_products, "trained_on": n,
                   "held_out_ids": data.held_ids,
                   "held_out_accuracy": {view: round(_accuracy(model, held_x[:, v], held_y), 4)
                                         for v, view in enumerate(VIEWS)},
                   "training": {k: v for k, v in asdict(settings).items() if k not in ("features", "workers")}}
    return model


def train_colour_model(catalog_dir: Path, out: Path, seed: int = 0,
                       settings: ColourTrainingSettings = ColourTrainingSettings(),
                       log=print) -> ColourModel:
    """Learn the colour model from the catalog in `catalog_dir` and write it to `out`."""
    started = time.perf_counter()
    data = extract(catalog_dir, seed, settings, log)
    log(f"features in {time.perf_counter() - started:.0f} s; training")
    model = fit(data, seed, settings)
    model.save(out)
    log(f"wrote {out} in {time.perf_counter() - started:.0f} s; held-out top-1 accuracy "
        f"{model.facts['held_out_accuracy']}")
    return model


def held_out_ids(path: Path | None = None) -> tuple[str, ...]:
    """The products the colour model in `path` (default: the shipped one) never learned from."""
    return tuple(ColourModel.load(path).facts.get("held_out_ids", ()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.colour", description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=ColourTrainingSettings.workers)
    args = parser.parse_args(argv)
    train_colour_model(Path(args.catalog), Path(args.out), args.seed,
                       ColourTrainingSettings(workers=args.workers), log=lambda m: print(m, file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
