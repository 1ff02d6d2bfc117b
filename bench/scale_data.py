"""Realistic data for bench/scale.py: the catalog's real vectors, grown to any size by a model fitted
to them, held-out real products as queries, and exact (numpy) ground truth under per-query filters.

The growth model (what `grow` draws; fitted by `TypeModel.fit` on the stored real products only):

- Each new product copies the metadata of a real stored product drawn uniformly (the "seed"), under
  a new id, digest and image path. Metadata therefore keeps the catalog's joint distribution
  (gender x category x colour x season x usage x year), not hand-set marginals.
- Its vector is drawn from the seed's articleType distribution, fitted on that type's real vectors
  (in the collection's stored space: centered, unit norm):
      v = mean_t + sum_i z_i sqrt(lambda_i) u_i + e,      z_i ~ N(0, 1),
  with u_i, lambda_i the type's top r = min(32, members - 1) principal directions and variances, and
  e isotropic Gaussian noise in the orthogonal complement of u_1..u_r carrying the type's remaining
  variance (per dimension: (total variance - sum lambda_i) / (dim - r)); then v is unit-normalised.
- Types with fewer than 5 real members: the seed's own vector plus isotropic noise at the global
  residual scale (the member-weighted mean of the per-dimension remaining variance of the fitted
  types), unit-normalised.

So neighbours keep the real within-type spread, the real near-tie structure (checked by
`near_tie_gap`: the cosine gap between exact rank 5 and rank 20, real-only against grown), and the
real imbalance between types; what it cannot reproduce is sub-type structure finer than the
top 32 directions (near-duplicate products: one model in several colours), so it errs towards
fewer very close neighbours than a real larger catalog would have.
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from catalog.products import CATEGORY_FIELDS

TOP_COMPONENTS = 32
MIN_TYPE_MEMBERS = 5
# Fields copied from a seed product (what the indexer stores beside the catalog's fields).
KEPT_FIELDS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year", "usage", "name")


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the real catalog ---------------------------------------------------------------------------
@dataclass
class RealCatalog:
    ids: list[str]
    vectors: np.ndarray  # n x d float32, the collection's stored space
    metadatas: list[dict]


def read_real(source_db: Path, model: str) -> RealCatalog:
    """Every product of the project index at `source_db` (vectors as stored, metadata), read with a
    paged `get` on the model's collection."""
    from vectorstore import ProductCollection, StoreSettings, make_client
    client = make_client(StoreSettings(path=Path(source_db)))
    ProductCollection.open(client, model)  # says NoIndex when the model has no collection there
    try:
        from vectorstore.collection import collection_name
        name = collection_name(model)
    except ImportError:
        name = f"products_{model}"
    handle = client.get_collection(name, embedding_function=None)
    ids, parts, metas, offset, step = [], [], [], 0, 2000
    while True:
        page = handle.get(include=["embeddings", "metadatas"], limit=step, offset=offset)
        if len(page["ids"]):
            ids += page["ids"]
            parts.append(np.asarray(page["embeddings"], dtype=np.float32))
            metas += [dict(m or {}) for m in page["metadatas"]]
        if len(page["ids"]) < step:
            break
        offset += step
    vectors = np.concatenate(parts)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return RealCatalog(ids, vectors, metas)


def clean_metadata(meta: dict, pid: str) -> dict:
    out = {k: meta[k] for k in KEPT_FIELDS if meta.get(k) is not None}
    out["digest"] = hashlib.sha1(pid.encode()).hexdigest()
    out["image"] = f"/srv/catalog/images/{pid}.jpg"
    return out


# -- the growth model ----------------------------------------------------------------------------
@dataclass
class TypeFit:
    members: int
    mean: np.ndarray | None = None        # d
    directions: np.ndarray | None = None  # r x d, orthonormal rows
    scales: np.ndarray | None = None      # r, sqrt of the variances
    residual: float = 0.0                 # per-dimension std of the isotropic rest


class TypeModel:
    """Per-articleType Gaussian (mean + top principal components + isotropic rest), fitted on the
    real stored products."""

    def __init__(self, fits: dict[str, TypeFit], global_residual: float, dim: int):
        self.fits, self.global_residual, self.dim = fits, global_residual, dim

    @classmethod
    def fit(cls, vectors: np.ndarray, types: np.ndarray) -> TypeModel:
        dim = vectors.shape[1]
        fits, weighted, weight = {}, 0.0, 0
        for t in np.unique(types):
            members = vectors[types == t].astype(np.float64)
            m = len(members)
            if m < MIN_TYPE_MEMBERS:
                fits[t] = TypeFit(m)
                continue
            mean = members.mean(axis=0)
            centered = members - mean
            _, s, vt = np.linalg.svd(centered, full_matrices=False)
            r = min(TOP_COMPONENTS, m - 1)
            variances = s ** 2 / (m - 1)
            rest = max(float(variances.sum() - variances[:r].sum()), 0.0)
            residual_var = rest / (dim - r)
            fits[t] = TypeFit(m, mean.astype(np.float32), vt[:r].astype(np.float32),
                              np.sqrt(variances[:r]).astype(np.float32), float(np.sqrt(residual_var)))
            weighted += m * residual_var
            weight += m
        return cls(fits, float(np.sqrt(weighted / max(weight, 1))), dim)

    def sample(self, type_name: str, seeds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Vectors for new products of `type_name` whose seed products' vectors are `seeds`."""
        n, fit = len(seeds), self.fits[type_name]
        if fit.mean is None:
            out = seeds + rng.standard_normal((n, self.dim), dtype=np.float32) * np.float32(self.global_residual)
        else:
            r = len(fit.scales)
            out = fit.mean + (rng.standard_normal((n, r), dtype=np.float32) * fit.scales) @ fit.directions
            noise = rng.standard_normal((n, self.dim), dtype=np.float32)
            noise -= (noise @ fit.directions.T) @ fit.directions
            out += noise * np.float32(fit.residual)
        return unit(out)

    def describe(self) -> str:
        fitted = [f for f in self.fits.values() if f.mean is not None]
        small = [f for f in self.fits.values() if f.mean is None]
        return (f"{len(fitted)} articleTypes fitted ({sum(f.members for f in fitted):,} products, "
                f"top {TOP_COMPONENTS} components), {len(small)} with < {MIN_TYPE_MEMBERS} members "
                f"({sum(f.members for f in small)} products: seed + noise, residual std {self.global_residual:.4f}/dim)")


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def grow(model: TypeModel, base_vectors: np.ndarray, base_metas: list[dict], count: int, seed: int,
         prefix: str = "s", out: np.ndarray | None = None) -> tuple[list[str], np.ndarray, list[dict]]:
    """`count` new products drawn from the model (see the module docstring), their vectors written
    into `out` when given (count x d)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(base_metas), size=count)
    types = np.asarray([base_metas[i].get("articleType") or "" for i in picks], dtype=object)
    vectors = np.empty((count, base_vectors.shape[1]), dtype=np.float32) if out is None else out
    for t in np.unique(types):
        rows = np.flatnonzero(types == t)
        for start in range(0, len(rows), 50_000):
            part = rows[start:start + 50_000]
            vectors[part] = model.sample(t, base_vectors[picks[part]], rng)
    ids = [f"{prefix}{i}" for i in range(count)]
    metas = [clean_metadata(base_metas[p], pid) for p, pid in zip(picks, ids)]
    return ids, vectors, metas


# -- the stored set and the queries --------------------------------------------------------------
@dataclass
class Dataset:
    ids: list[str]
    vectors: np.ndarray        # n x d, stored (real ones first)
    metadatas: list[dict]
    frame: pd.DataFrame        # the same metadata, one row per stored product (ground truth's masks)
    n_real: int                # the first n_real stored products are real
    query_vectors: np.ndarray  # q x d, held-out real products (never stored)
    query_metas: list[dict]
    model: TypeModel


def build(real: RealCatalog, n: int, queries: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(len(real.ids), size=min(queries, len(real.ids) // 4), replace=False))
    keep = np.setdiff1d(np.arange(len(real.ids)), held)
    base_vectors = real.vectors[keep]
    base_metas = [real.metadatas[i] for i in keep]
    base_ids = [f"r{real.ids[i]}" for i in keep]
    types = np.asarray([m.get("articleType") or "" for m in base_metas], dtype=object)
    started = time.perf_counter()
    model = TypeModel.fit(base_vectors, types)
    log(f"growth model fitted in {time.perf_counter() - started:.1f}s: {model.describe()}")
    extra = max(0, n - len(keep))
    started = time.perf_counter()
    vectors = np.empty((len(keep) + extra, base_vectors.shape[1]), dtype=np.float32)
    vectors[:len(keep)] = base_vectors
    new_ids, _, new_metas = grow(model, base_vectors, base_metas, extra, seed + 1, out=vectors[len(keep):])
    log(f"{extra:,} products grown in {time.perf_counter() - started:.1f}s")
    ids = base_ids + new_ids
    metas = [clean_metadata(m, pid) for m, pid in zip(base_metas, base_ids)] + new_metas
    frame = pd.DataFrame(metas, index=pd.Index(ids, name="id"))
    return Dataset(ids[:n], vectors[:n], metas[:n], frame.iloc[:n], min(len(keep), n),
                   real.vectors[held], [real.metadatas[i] for i in held], model)


# -- ground truth --------------------------------------------------------------------------------
def similarities(queries: np.ndarray, stored: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    """queries @ stored.T, chunked over the stored rows (q x n float32)."""
    out = np.empty((len(queries), len(stored)), dtype=np.float32)
    for start in range(0, len(stored), chunk):
        out[:, start:start + chunk] = queries @ stored[start:start + chunk].T
    return out


def top_k(scores: np.ndarray, mask: np.ndarray | None, k: int) -> np.ndarray:
    """Row indices of the k best `scores` among `mask` (all when None), best first."""
    candidates = np.arange(len(scores)) if mask is None else np.flatnonzero(mask)
    if len(candidates) == 0:
        return candidates
    s = scores[candidates]
    if len(candidates) > k:
        part = np.argpartition(-s, k - 1)[:k]
        candidates, s = candidates[part], s[part]
    return candidates[np.argsort(-s, kind="stable")]


def near_tie_gap(sims: np.ndarray, columns: slice | None = None) -> dict:
    """Mean cosine of exact ranks 1, 5 and 20 (unfiltered) and the mean gap rank 5 - rank 20."""
    s = sims if columns is None else sims[:, columns]
    top = -np.sort(-np.partition(s, s.shape[1] - 20, axis=1)[:, -20:], axis=1)
    return {"rank1": float(top[:, 0].mean()), "rank5": float(top[:, 4].mean()), "rank20": float(top[:, 19].mean()),
            "gap5_20": float((top[:, 4] - top[:, 19]).mean())}


def category_columns() -> tuple[str, ...]:
    return CATEGORY_FIELDS
