"""The int8 runtime beside PyTorch, per model, in one run: speed and what it keeps.

    python -m bench.runtime --catalog ../shared/catalog [--models ...] [--weights auto|FILE|...]
                            [--sample 1000] [--rounds 5]

For each model, three ways to compute the same embedding:
  eager   PyTorch fp32, the plain module (the reference);
  frozen  today's path: the traced, frozen, optimised TorchScript graph (`--runtime eager`);
  int8    ONNX Runtime, static int8 (`--runtime onnx-int8`), built or taken from the cache.
Speed: img/s at batch 32 and single-image ms on real catalog images, the three timed in turns
(round-robin, `--rounds` times, medians) so that other jobs on the machine slow all alike.
Quality, on a seeded sample of `--sample` products: mean cosine int8 vs PyTorch, and P@5 by
articleType with each vector set (leave-one-out, vectors centered as the store does), for clean
queries and for shopper-like photos of the first `--photo-queries` products (searched among the
sample's clean vectors). Models without real weights on this machine run with seeded random
weights, said in the weights column.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import DEFAULT_CATALOG, table
from catalog import read_catalog
from catalog.photolike import shopper_photo
from embedding import MODEL_NAMES, load_embedder, resolve_weights
from embedding.runtime import DEFAULT_CACHE_DIR, RuntimeSettings, fast_model, readable_sample, session_forward
from embedding.weights import DEFAULT_WEIGHTS_DIR


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--weights", default="auto", help="as index's --weights (e.g. a fine-tuned file), every model")
    parser.add_argument("--weights-dir", default=str(DEFAULT_WEIGHTS_DIR), help="where auto looks for fine-tuned files")
    parser.add_argument("--sample", type=int, default=1000, help="products for cosine and P@5")
    parser.add_argument("--photo-queries", type=int, default=200, help="photo-like queries among them (0: none)")
    parser.add_argument("--rounds", type=int, default=5, help="timed turns of each runtime")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE_DIR))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sample = readable_sample(read_catalog(args.catalog).products, args.sample, args.seed)
    products, images = [p for p, _ in sample], [image for _, image in sample]
    labels = np.array([p.metadata().get("articleType") for p in products])
    photos = [shopper_photo(images[i], random.Random(f"{args.seed}:{products[i].id}"))
              for i in range(min(args.photo_queries, len(products)))]
    print(f"{len(products)} products ({len(photos)} photo-like queries) from {args.catalog}; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    speed, quality = [], []
    for name in args.models.split(","):
        row = _measure(name, images, photos, labels, args)
        speed.append({k: v for k, v in row.items() if k in SPEED_KEYS})
        quality.append({k: v for k, v in row.items() if k not in SPEED_KEYS or k == "model"})
        print(table(speed[-1:]) + "\n" + table(quality[-1:]) + "\n", flush=True)   # kept if the run is cut short
    print("all models:")
    print(table(speed))
    print()
    print(table(quality))


SPEED_KEYS = ("model", "eager b32 img/s", "frozen b32 img/s", "int8 b32 img/s", "int8/eager b32", "int8/frozen b32",
              "eager 1-img ms", "frozen 1-img ms", "int8 1-img ms", "int8/eager 1-img", "int8/frozen 1-img")


def _measure(name: str, images, photos, labels, args) -> dict:
    resolved = resolve_weights(name, args.weights, Path(args.weights_dir), download=False)
    weights = str(resolved.choice) if resolved.available else "random"
    embedder = load_embedder(name, weights)
    settings = RuntimeSettings("onnx-int8", cache_dir=Path(args.cache), catalog=Path(args.catalog), seed=args.seed)
    fast = fast_model(embedder, settings)
    int8 = session_forward(fast.path)
    frozen = embedder._runner()

    def eager(batch):
        with torch.inference_mode():
            return embedder.network(batch)

    def traced(batch):
        with torch.inference_mode():
            return frozen(batch)

    runners = {"eager": eager, "frozen": traced, "int8": lambda batch: int8(batch.numpy())}
    batch = torch.stack([embedder.preprocess(im) for im in images[:32]])
    speed = _speed(runners, batch, args.rounds)

    tensors = torch.stack([embedder.preprocess(im) for im in images])
    reference = _vectors(traced, tensors)
    quantised = _vectors(runners["int8"], tensors)
    cosine = float((reference * quantised).sum(axis=1).mean())
    row = {"model": name, "weights": weights, "int8 model": "built" if fast.built else "cached"}
    for runner in runners:
        row[f"{runner} b32 img/s"] = f"{speed[runner][0]:.1f}"
    row["int8/eager b32"] = f"{speed['int8'][0] / speed['eager'][0]:.2f}x"
    row["int8/frozen b32"] = f"{speed['int8'][0] / speed['frozen'][0]:.2f}x"
    for runner in runners:
        row[f"{runner} 1-img ms"] = f"{speed[runner][1]:.1f}"
    row["int8/eager 1-img"] = f"{speed['eager'][1] / speed['int8'][1]:.2f}x"
    row["int8/frozen 1-img"] = f"{speed['frozen'][1] / speed['int8'][1]:.2f}x"
    row["cosine"] = f"{cosine:.4f}"
    p_ref, p_int8 = _p_at_5(reference, labels), _p_at_5(quantised, labels)
    row["P@5 eager"], row["P@5 int8"], row["P@5 diff"] = f"{p_ref:.3f}", f"{p_int8:.3f}", f"{p_int8 - p_ref:+.3f}"
    if photos:
        queries = torch.stack([embedder.preprocess(im) for im in photos])
        photo_ref = _p_at_5(reference, labels, _vectors(traced, queries))
        photo_int8 = _p_at_5(quantised, labels, _vectors(runners["int8"], queries))
        row["photo P@5 eager"], row["photo P@5 int8"] = f"{photo_ref:.3f}", f"{photo_int8:.3f}"
        row["photo P@5 diff"] = f"{photo_int8 - photo_ref:+.3f}"
    return row


def _speed(runners: dict, batch: torch.Tensor, rounds: int) -> dict[str, tuple[float, float]]:
    """(img/s at the batch's size, single-image ms) per runner: medians over turns taken in
    turn, after one warm-up call each."""
    single = batch[:1].contiguous()
    for run in runners.values():
        run(batch), run(single)
    timings = {name: ([], []) for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            run(batch)
            timings[name][0].append(time.perf_counter() - started)
            for _ in range(3):
                started = time.perf_counter()
                run(single)
                timings[name][1].append(time.perf_counter() - started)
    return {name: (len(batch) / statistics.median(b), statistics.median(s) * 1000) for name, (b, s) in timings.items()}


def _vectors(run, tensors: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    parts = [np.asarray(run(tensors[i:i + batch_size]), dtype=np.float32) for i in range(0, len(tensors), batch_size)]
    vectors = np.concatenate(parts)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _p_at_5(vectors: np.ndarray, labels: np.ndarray, photo_queries: np.ndarray | None = None, k: int = 5) -> float:
    """P@k by articleType: leave-one-out over `vectors`, or with `photo_queries` (one per first
    product) searched among all of them with their own product left out; centered as the store
    centers a collection (on the mean of what it stores)."""
    center = vectors.mean(axis=0)

    def prepare(v):
        v = v - center
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    stored = prepare(vectors)
    queries = stored if photo_queries is None else prepare(photo_queries)
    scores = queries @ stored.T
    scores[np.arange(len(queries)), np.arange(len(queries))] = -np.inf   # the product itself
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((labels[top] == labels[:len(queries), None]).mean())


if __name__ == "__main__":
    main()
