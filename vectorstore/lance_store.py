"""The LanceDB adapter: one Lance table per model, in a folder or on an object store.

LanceDB filters inside the search itself (a prefilter over bitmap indexes, then the vector index
or an exact scan of what passes), so a search needs no plan from a metadata table in the serving
process, and the answer carries each product's metadata. Many serving machines can read one
store on an object store (s3://...), which is how it scales past one machine (docs/scale.md).

- **Names.** LanceDB OSS cannot rename a table, and a tuned model's index is promoted by a
  rename (ProductCollection.promote). So the store keeps a small table, `_collections`, that maps
  each collection's name to the Lance table that holds it and keeps the collection's notes
  (weights, runtime, centre, search breadth); promoting rewrites two of its rows.
- **Index.** Below INDEX_MIN_ROWS products a search is an exact scan (12k x 1280-d in a few ms).
  From there, `tidy()` (run at the end of every index run) builds an IVF-RQ index (RaBitQ codes,
  candidates re-ranked on the stored vectors), a second one over the route column (each
  masterCategory in partitions of its own, which a filter within one category searches: ROUTE)
  and bitmap indexes on the filtered fields, and folds rows written later into them; rows not
  yet indexed are still searched, exactly.
- **Consistency.** Handles check for other processes' commits every HANDLE_TTL_SECONDS (LanceDB's
  read consistency interval), so a serving process follows an index run without a restart.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from catalog.products import CATEGORY_FIELDS, METADATA_FIELDS, VOCABULARY_FIELDS
from vectorstore.collection import (
    CENTERED_KEY,
    DIGEST_KEY,
    EF_SEARCH,
    RUNTIME_KEY,
    WEIGHTS_KEY,
    Hit,
    ProductCollection,
    plain,
)
from vectorstore.errors import NoIndex, StoreError
from vectorstore.filters import CATEGORY, Filters, columns_of
from vectorstore.guard import store_error
from vectorstore.metadata import MetadataTable

NAMES_TABLE = "_collections"
HANDLE_TTL_SECONDS = 2.0
# An exact scan of fewer products is as fast as an index walk here, and exact.
INDEX_MIN_ROWS = 50_000
# IVF partitions the search visits (LanceDB's nprobes), of partitions of about PARTITION_ROWS
# products. Chosen on realistic data at a million products (bench/serving_memory.py): 20 of 488
# found 0.997 of the true top 5 unfiltered, 10 found 0.943.
NPROBES = 20
PARTITION_ROWS = 2048
# The vector index: "ivf_rq" (RaBitQ: one bit per dimension, 1/32 of the vectors' bytes, compared
# with bit operations), "ivf_pq" (product-quantised codes of the same size; each answer's
# REFINE x k best candidates re-ranked on the stored vectors with either) or "ivf_hnsw_sq" (an HNSW
# graph per partition over 8-bit scalar-quantised vectors). At a million realistic products RQ
# built in about a minute against 7-21 for PQ, and searched every partition in the time PQ searched
# a sixth of them (docs/scale.md); an HNSW graph over a million 1280-d vectors is hours on 2 cores.
VECTOR_INDEX = "ivf_rq"
QUANTISED = ("IvfRq", "IvfPq")   # LanceDB's names of the index types whose candidates are re-ranked
MAX_PROBES = 1 << 20  # every partition
PARTITIONS_KEY = "index_partitions"   # the collection note: partitions the vector index was built with
REFINE = 4
MAX_REFINE = 64
# A filtered search through the plain index visits FILTERED_PROBES / near partitions, nearest the
# photo first, where near is how full a quick look for NEAR_ROWS products that pass, in the
# NEAR_PROBES partitions nearest the photo, came back (`_breadth`); every partition when none
# pass there. A filter whose products are everywhere (a colour, a gender, its own or not) finds
# them near any photo; one whose products lie apart (shoes asked of a shirt's photo) finds none.
FILTERED_PROBES = 40
NEAR_ROWS = 20
NEAR_PROBES = 2
# A second vector index that keeps each masterCategory in partitions of its own: the column ROUTE
# holds each product's unit vector followed by ROUTE_WEIGHT x a fixed random unit code of its
# ROUTE_FIELD value (ROUTE_DIMS numbers, the same in every process). Products of two categories
# lie at least about ROUTE_WEIGHT apart, farther than any two of one category, so the index's
# partitions each hold one category, and a photo's vector followed by a category's code is
# nearest that category's partitions, most similar products first: a filter that names one
# masterCategory (or categories within one) visits that category's partitions only, the photo's
# own or not. A product's distance to such a query is its distance to the photo alone (the codes
# cancel), so answers and scores are those of the plain index.
ROUTE = "route"
ROUTE_FIELD = "masterCategory"
ROUTE_DIMS = 32
ROUTE_WEIGHT = 2.0
# A routed search visits ROUTE_PROBES of its category's partitions, nearest the photo first,
# whatever else the filter asks: products near the photo that pass lie in them (chosen by a sweep
# at a million products, docs/scale.md: a photo far from the category needs more than NPROBES,
# and past 100 none of the filter classes gained). More where too few products pass to give each
# answer REFINE candidates per product asked.
ROUTE_PROBES = 100
# The partitions a category's products fill: its share of them, give or take what the k-means
# that made them gives it beyond its share (its seeds are drawn from the products: ROUTE_SLACK
# standard deviations of that draw).
ROUTE_SLACK = 3.0
WRITE_ROWS = 2000
OLD_VERSIONS = timedelta(minutes=10)
ID_CHUNK = 1000
STRING_FIELDS = tuple(f for f in METADATA_FIELDS if f != "year") + ("image", DIGEST_KEY)
FILTERED_FIELDS = VOCABULARY_FIELDS  # bitmap-indexed: a few hundred values at most


def quote(value) -> str:
    """A SQL literal for a value from a catalog or a client: never trusted into the query."""
    if isinstance(value, bool | np.bool_):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return "'" + str(value).replace("'", "''") + "'"


def column(name: str) -> str:
    return f"`{name}`"


def in_list(name: str, values) -> str:
    return f"{column(name)} IN ({', '.join(quote(v) for v in values)})"


def schema(dim: int) -> pa.Schema:
    fields = [pa.field("id", pa.string(), nullable=False), pa.field("vector", pa.list_(pa.float32(), dim))]
    fields += [pa.field(name, pa.string()) for name in STRING_FIELDS]
    fields += [pa.field("year", pa.int64()), pa.field(CENTERED_KEY, pa.bool_()), pa.field(RECORD, pa.string())]
    fields += [pa.field(ROUTE, pa.list_(pa.float32(), dim + ROUTE_DIMS))]
    return pa.schema(fields)


METADATA_COLUMNS = (*STRING_FIELDS, "year", CENTERED_KEY)
# The same metadata once more, as one JSON text per product: a search reads its hits' metadata
# from this one column rather than from a dozen (a read per column per hit: 11 ms of a million
# products' unfiltered search at k = 50, against about 2, docs/scale.md). Tables written before it
# are read from the columns.
RECORD = "record"


class LanceStore:
    """A LanceDB database (a folder, or an object store's URI) and its table of collection names."""

    def __init__(self, uri: str | Path):
        import lancedb
        self.uri = str(uri)
        self.local_folder = None if "://" in self.uri else Path(self.uri)
        self.where = self.uri
        try:
            if self.local_folder is not None:
                self.local_folder.mkdir(parents=True, exist_ok=True)
            self.db = lancedb.connect(self.uri, read_consistency_interval=timedelta(seconds=HANDLE_TTL_SECONDS))
        except Exception as exc:
            raise store_error(exc, self.where) from exc

    # -- the names table ---------------------------------------------------------------------
    def _names(self, create: bool = False):
        if self.exists(NAMES_TABLE):
            return self.db.open_table(NAMES_TABLE)
        if not create:
            return None
        names_schema = pa.schema([pa.field("name", pa.string(), nullable=False), pa.field("table", pa.string()),
                                  pa.field("notes", pa.string())])
        return self.db.create_table(NAMES_TABLE, schema=names_schema, exist_ok=True)

    def exists(self, table: str) -> bool:
        return table in self.db.list_tables().tables

    def lookup(self, name: str) -> tuple[str, dict] | None:
        """(Lance table, notes) of a collection, or None."""
        names = self._names()
        if names is None:
            return None
        rows = names.search().where(f"name = {quote(name)}").limit(1).to_list()
        if not rows:
            return None
        return rows[0]["table"], json.loads(rows[0]["notes"] or "{}")

    def record(self, name: str, table: str, notes: dict) -> None:
        row = pa.table({"name": [name], "table": [table], "notes": [json.dumps(notes, sort_keys=True)]})
        names = self._names(create=True)
        names.merge_insert("name").when_matched_update_all().when_not_matched_insert_all().execute(row)

    def forget(self, name: str) -> None:
        names = self._names()
        if names is not None:
            names.delete(f"name = {quote(name)}")

    def new_table_name(self, name: str) -> str:
        return f"{name}-{uuid.uuid4().hex[:12]}"


def connect(uri: str | Path) -> LanceStore:
    return LanceStore(uri)


class LanceCollection(ProductCollection):
    """One model's Lance table."""

    def __init__(self, store: LanceStore, model: str, name: str, table_name: str, notes: dict):
        self.client = store
        self.model = model
        self.name = name
        self.where = store.where
        self._table_name = table_name
        self._notes = notes
        self._handle = None
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self._vocabulary: tuple[int, dict, dict] | None = None
        self._index_kind: tuple[object, dict[str, str]] | None = None
        self.metadata = EngineMetadata(self)

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def open_named(cls, client: LanceStore, model: str, name: str, *, weights_id: str | None = None,
                   dim: int | None = None, create: bool = False, runtime: str | None = None) -> LanceCollection:
        with _translated(client.where, model):
            found = client.lookup(name)
            if found is None:
                if not create:
                    raise NoIndex(model)
                notes = {"model": model, "ef_search": EF_SEARCH}
                for key, value in ((WEIGHTS_KEY, weights_id), ("dim", dim), (RUNTIME_KEY, runtime)):
                    if value:
                        notes[key] = value
                found = (client.new_table_name(name), notes)
                if dim:
                    client.db.create_table(found[0], schema=schema(int(dim)))
                client.record(name, *found)
            elif create and found[1].get("ef_search") != EF_SEARCH:
                found = (found[0], {**found[1], "ef_search": EF_SEARCH})
                client.record(name, *found)
        return cls(client, model, name, *found)

    @staticmethod
    def drop_named(client: LanceStore, model: str, name: str) -> None:
        with _translated(client.where, model):
            found = client.lookup(name)
            if found is None:
                return
            client.forget(name)
            _drop_table(client, found[0])

    @staticmethod
    def promote_named(client: LanceStore, model: str, staged: str, live: str, retired: str) -> None:
        # A handle opened before keeps reading its Lance table until that table is dropped.
        with _translated(client.where, model):
            LanceCollection.drop_named(client, model, retired)
            staged_found = client.lookup(staged)
            if staged_found is None:
                raise NoIndex(model)
            live_found = client.lookup(live)
            if live_found is not None:
                client.record(retired, *live_found)
            client.record(live, *staged_found)
            client.forget(staged)

    # -- the live handle -------------------------------------------------------------------
    def revalidate(self, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._checked < HANDLE_TTL_SECONDS:
                return
            self._checked = time.monotonic()
            with _translated(self.where, self.model):
                found = self.client.lookup(self.name)
            if found is None:
                raise NoIndex(self.model)
            changed = found[0] != self._table_name
            self._table_name, self._notes = found
            if changed:
                self._handle = None
        if changed:
            self.metadata.refresh()

    def _table(self, must: bool = True):
        """The Lance table as it is now (None before the first write of a collection opened
        without a dimension, unless `must`)."""
        if time.monotonic() - self._checked >= HANDLE_TTL_SECONDS:
            self.revalidate()
        if self._handle is None:
            with _translated(self.where, self.model):
                if self.client.exists(self._table_name):
                    self._handle = self.client.db.open_table(self._table_name)
        if self._handle is None and must:
            raise NoIndex(self.model)
        return self._handle

    @property
    def notes(self) -> dict:
        if time.monotonic() - self._checked >= HANDLE_TTL_SECONDS:
            self.revalidate()
        return dict(self._notes)

    def set_notes(self, notes: dict) -> None:
        with _translated(self.where, self.model):
            self.client.record(self.name, self._table_name, notes)
        self._notes = dict(notes)

    @property
    def ef_search(self) -> int:
        return int(self.notes.get("ef_search") or EF_SEARCH)

    # -- counting and reading ----------------------------------------------------------------
    def count(self) -> int:
        table = self._table(must=False)
        return 0 if table is None else self._do(table.count_rows)

    def count_matching(self, filters: Filters | None) -> int:
        table = self._table(must=False)
        if table is None:
            return 0
        where = filters_sql(filters)
        return self._do(lambda: table.count_rows(where) if where else table.count_rows())

    def _scan(self, columns: list[str], where: str | None = None) -> Iterator[pa.RecordBatch]:
        table = self._table(must=False)
        if table is None:
            return
        query = table.search().select(columns).limit(None)
        if where:
            query = query.where(where)
        yield from self._do(lambda: query.to_batches(WRITE_ROWS))

    def metadata_pages(self):
        table = self._table(must=False)
        for batch in self._scan(["id", *_metadata_columns(table)]):
            rows = batch.to_pylist()
            yield [row.pop("id") for row in rows], [_stored(row) for row in rows]

    def vector_pages(self):
        for batch in self._scan(["vector"]):
            yield _vectors(batch.column("vector"))

    def records_of(self, product_ids: list[str]) -> tuple[list[str], np.ndarray, list[dict]]:
        ids, parts, metas = [], [], []
        for start in range(0, len(product_ids), ID_CHUNK):
            chunk = product_ids[start:start + ID_CHUNK]
            for batch in self._scan(["id", "vector", *_metadata_columns(self._table(must=False))],
                                    in_list("id", chunk)):
                parts.append(_vectors(batch.column("vector")))
                rows = batch.drop_columns(["vector"]).to_pylist()
                ids += [row.pop("id") for row in rows]
                metas += [_stored(row) for row in rows]
        return ids, (np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)), metas

    def vocabulary(self) -> dict[str, list]:
        """Facet values from the store's columns (not the whole metadata table), once per version."""
        return self._facets()[0]

    def _facets(self) -> tuple[dict[str, list], dict[tuple, int]]:
        """The vocabulary, and how many products carry each (masterCategory, subCategory,
        articleType) there is (which categories a filter's products are in, `_route`): one scan
        of those columns per version of the table."""
        table = self._table(must=False)
        if table is None:
            return {name: [] for name in (*VOCABULARY_FIELDS, "year")}, {}
        version = self._do(lambda: table.version)
        if self._vocabulary is None or self._vocabulary[0] != version:
            values: dict[str, set] = {name: set() for name in (*VOCABULARY_FIELDS, "year")}
            combinations: dict[tuple, int] = {}
            for batch in self._scan(list(values)):
                for name in values:
                    values[name].update(v for v in batch.column(name).unique().to_pylist() if v is not None)
                counted = pa.Table.from_batches([batch]).group_by(list(CATEGORY_FIELDS)).aggregate([([], "count_all")])
                for row in counted.to_pylist():
                    found = tuple(row[name] for name in CATEGORY_FIELDS)
                    combinations[found] = combinations.get(found, 0) + row["count_all"]
            self._vocabulary = (version, {name: sorted(found, key=str) for name, found in values.items()},
                                combinations)
        return self._vocabulary[1], self._vocabulary[2]

    # -- writing ---------------------------------------------------------------------------
    def write_prepared(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict]) -> None:
        """An upsert of whole rows (every column given, missing fields null), so nothing of a
        product's previous record survives; each call of up to WRITE_ROWS commits whole."""
        if not ids:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        table = self._table(must=False)
        if table is None:
            with _translated(self.where, self.model):
                self.client.db.create_table(self._table_name, schema=schema(vectors.shape[1]), exist_ok=True)
            self._handle = None
            table = self._table()
        centered = self.center is not None
        for start in range(0, len(ids), WRITE_ROWS):
            rows = _arrow(ids[start:start + WRITE_ROWS], vectors[start:start + WRITE_ROWS],
                          metadatas[start:start + WRITE_ROWS], centered, table.schema)
            self._do(lambda rows=rows: table.merge_insert("id").when_matched_update_all()
                     .when_not_matched_insert_all().execute(rows))

    def delete(self, ids: list[str]) -> None:
        table = self._table(must=False)
        if table is None:
            return
        for start in range(0, len(ids), ID_CHUNK):
            where = in_list("id", ids[start:start + ID_CHUNK])
            self._do(lambda where=where: table.delete(where))

    def tidy(self) -> None:
        """The run's fragments compacted and its rows folded into the indexes there are, then the
        missing ones built: bitmaps on the filtered fields and, from INDEX_MIN_ROWS products, the
        vector index (built after the compaction, so that it is not rewritten with the data)."""
        table = self._table(must=False)
        if table is None:
            return
        from lancedb.index import Bitmap, BTree
        with _translated(self.where, self.model):
            # Every write committed its own small fragment. Versions older than OLD_VERSIONS are
            # let go: a reader moves to the newest within HANDLE_TTL_SECONDS, and the compaction
            # just made doubles the disk until the next run lets its inputs go.
            table.optimize(cleanup_older_than=OLD_VERSIONS)
            have = {tuple(index.columns) for index in table.list_indices()}
            if ("id",) not in have:
                table.create_index("id", config=BTree())
            for name in FILTERED_FIELDS:
                if (name,) not in have:
                    table.create_index(name, config=Bitmap())
            rows = table.count_rows()
            partitions = int(self.notes.get(PARTITIONS_KEY) or max(1, rows // PARTITION_ROWS))
            if ("vector",) not in have and rows >= INDEX_MIN_ROWS:
                partitions = max(1, rows // PARTITION_ROWS)
                table.create_index("vector", config=_vector_index(table.schema.field("vector").type.list_size,
                                                                  partitions))
                # The search's breadth is a share of these; later rows join them, so the count
                # is the one the index was built with.
                self.set_notes({**self.notes, PARTITIONS_KEY: partitions})
            if ROUTE in table.schema.names and (ROUTE,) not in have and rows >= INDEX_MIN_ROWS:
                # Squared distances: the category codes add nothing within a category.
                table.create_index(ROUTE, config=_vector_index(table.schema.field(ROUTE).type.list_size,
                                                               partitions, "l2"))
        self._index_kind = None

    # -- searching -------------------------------------------------------------------------
    def search_stored(self, vector: np.ndarray, k: int = 5, filters: Filters | None = None,
                      exclude: tuple[str, ...] = ()) -> list[Hit]:
        """The k products most similar to `vector` that pass `filters`: through the route index
        when the filter keeps to one masterCategory, else the plain one (or an exact scan)."""
        table = self._table(must=False)
        if table is None or k <= 0:
            return []
        plan = self._plan(table, np.asarray(vector, dtype=np.float32).reshape(-1), filters, k)
        query = (table.search(plan.vector, vector_column_name=plan.column).distance_type(plan.distance)
                 .select(["id", *_metadata_columns(table), "_distance"]).limit(k).nprobes(plan.probes))
        if plan.kind in QUANTISED:
            query = query.refine_factor(plan.refine)
        elif plan.kind:
            query = query.ef(self.ef_search)
        where = " AND ".join(filter(None, [filters_sql(filters), _excluding(exclude)]))
        if where:
            query = query.where(where, prefilter=True)
        found = self._do(lambda: query.to_list())
        return [Hit(row.pop("id"), plan.similarity(row.pop("_distance")), _stored(row)) for row in found]

    def _plan(self, table, vector: np.ndarray, filters: Filters | None, k: int) -> _Plan:
        """Which vector index a search walks and how much of it."""
        kind = self._vector_index_kind(table)
        if kind is None:
            return _Plan("vector", "cosine", vector, None, MAX_PROBES, REFINE)
        rows = self._do(table.count_rows)
        partitions = int(self.notes.get(PARTITIONS_KEY) or max(1, rows // PARTITION_ROWS))
        if filters is None or filters.is_empty():
            return _Plan("vector", "cosine", vector, kind, *_breadth(1.0, None, partitions, kind))
        route = self._route(table, filters)
        if route is None:
            near = self._near(table, vector, filters) / NEAR_ROWS
            # Only PQ's re-ranking follows the share that passes (`_refine`): a count saved.
            share = self._passing(table, filters) / max(1, rows) if kind == "IvfPq" else 1.0
            return _Plan("vector", "cosine", vector, kind, *_breadth(share, near, partitions, kind))
        # The category's partitions are the whole index to this search, nearest the photo first.
        key, key_rows = route
        kind = self._vector_index_kind(table, ROUTE)
        share = self._passing(table, filters) / max(1, key_rows)
        breadth = _route_breadth(min(1.0, share), key_rows, rows / partitions, k, kind)
        return _Plan(ROUTE, "l2", _routed(vector[None], [key])[0], kind, *breadth)

    def browse(self, filters: Filters | None, offset: int, limit: int) -> list[tuple[str, dict]]:
        """`limit` products from `offset` on of those that pass `filters`, as stored."""
        table = self._table(must=False)
        if table is None or limit <= 0:
            return []
        query = table.search().select(["id", *_metadata_columns(table)]).offset(max(0, offset)).limit(limit)
        where = filters_sql(filters)
        if where:
            query = query.where(where)
        rows = self._do(lambda: query.to_list())
        return [(row.pop("id"), _stored(row)) for row in rows]

    def value_counts(self, columns: tuple[str, ...]) -> dict[str, dict]:
        """Per column, how many products carry each value: one scan of those columns, counted
        batch by batch (nothing of the table kept)."""
        import pyarrow.compute as pc
        counts: dict[str, dict] = {c: {} for c in columns}
        for batch in self._scan(list(columns)):
            for name in columns:
                for item in pc.value_counts(batch.column(name)).to_pylist():
                    if item["values"] is not None:
                        counts[name][item["values"]] = counts[name].get(item["values"], 0) + item["counts"]
        return counts

    def records(self, product_ids) -> dict[str, dict]:
        ids, _, metas = self.records_of(list(dict.fromkeys(product_ids)))
        return dict(zip(ids, metas))

    def _passing(self, table, filters: Filters) -> int:
        """How many products pass `filters` (at least one: a share is taken of it)."""
        where = filters_sql(filters)
        return max(1, self._do(lambda: table.count_rows(where)))

    def _near(self, table, vector: np.ndarray, filters: Filters) -> int:
        """How many products that pass `filters` the NEAR_PROBES partitions nearest the photo
        hold, up to NEAR_ROWS (their codes only: nothing of theirs is read)."""
        query = (table.search(np.asarray(vector, dtype=np.float32).reshape(-1), vector_column_name="vector")
                 .distance_type("cosine").select(["_distance"]).nprobes(NEAR_PROBES).limit(NEAR_ROWS)
                 .where(filters_sql(filters), prefilter=True))
        return self._do(query.to_arrow).num_rows

    def _route(self, table, filters: Filters | None) -> tuple[str | None, int] | None:
        """(the one ROUTE_FIELD value of the products whose categories pass `filters`, how many
        products carry it), where the table has a route index; None where the filter names no
        category or categories in more than one."""
        if filters is None or filters.is_empty() or self._vector_index_kind(table, ROUTE) is None:
            return None
        combinations = self._facets()[1]
        keys = _route_keys(combinations, filters)
        if keys is None or len(keys) != 1:
            return None
        key = next(iter(keys))
        at = CATEGORY_FIELDS.index(ROUTE_FIELD)
        return key, sum(n for found, n in combinations.items() if found[at] == key)

    def _vector_index_kind(self, table, name: str = "vector") -> str | None:
        """The type of the table's index on the vector column `name` (None: exact scans), asked
        once per handle."""
        if self._index_kind is None or self._index_kind[0] is not table:
            kinds = {i.columns[0]: i.index_type for i in self._do(table.list_indices) if len(i.columns) == 1}
            self._index_kind = (table, kinds)
        return self._index_kind[1].get(name)

    def _do(self, action):
        try:
            return action()
        except StoreError:
            raise
        except Exception as exc:
            raise store_error(exc, self.where, self.model) from exc


class EngineMetadata(MetadataTable):
    """The metadata table of a LanceDB collection, loaded whole only by what browses every product
    (the shop's grid, the words matched against names, a words-only search); a product's record
    and the vocabulary come from the engine, so a process that only searches never holds it."""

    def __init__(self, collection: LanceCollection):
        super().__init__(collection.metadata_pages, collection.count)
        self._collection = collection
        self._built: dict[str, object] = {}
        self._built_for: dict | None = None

    def records(self, product_ids) -> dict[str, dict]:
        return self._collection.records(product_ids)

    def vocabulary(self) -> dict[str, list]:
        return self._collection.vocabulary()

    def value_counts(self, columns: tuple[str, ...]) -> dict[str, dict]:
        return self.from_vocabulary("value-counts:" + ",".join(columns),
                                    lambda _: self._collection.value_counts(columns))

    def rows(self, filters, offset: int, limit: int, order=None) -> tuple[list[tuple[str, dict]], int]:
        """In the order the products were written (the catalog's, at the first index run): the
        engine pages through what passes without the table (`order` is the table's, unused)."""
        return self._collection.browse(filters, offset, limit), self._collection.count_matching(filters)

    def from_vocabulary(self, name: str, build):
        vocabulary = self.vocabulary()   # one object per version of the table
        with self._lock:
            if self._built_for is not vocabulary:
                self._built, self._built_for = {}, vocabulary
            if name in self._built:
                return self._built[name]
        value = build(vocabulary)
        with self._lock:
            if self._built_for is vocabulary:
                self._built[name] = value
        return value


@dataclass(frozen=True)
class _Plan:
    """A search's vector column, its distance, the query vector for it, the column's index type
    (None: an exact scan), partitions to visit and re-ranking factor."""
    column: str
    distance: str
    vector: np.ndarray
    kind: str | None
    probes: int
    refine: int

    def similarity(self, distance: float) -> float:
        # The route's vectors are unit length: squared distance 2 - 2 x cosine to the photo's
        # part (the category codes cancel).
        return float(1.0 - distance) if self.distance == "cosine" else float(1.0 - distance / 2.0)


def _vector_index(dim: int, partitions: int, distance: str = "cosine"):
    from lancedb.index import IvfHnswSq, IvfPq, IvfRq
    if VECTOR_INDEX == "ivf_rq" and dim % 8 == 0:   # RaBitQ packs whole bytes
        return IvfRq(distance_type=distance, num_partitions=partitions)
    if VECTOR_INDEX in ("ivf_rq", "ivf_pq"):
        # Sub-vectors of about 8 dimensions that split the vector evenly.
        sub_vectors = next(n for n in range(max(1, dim // 8), 0, -1) if dim % n == 0)
        return IvfPq(distance_type=distance, num_partitions=partitions, num_sub_vectors=sub_vectors)
    return IvfHnswSq(distance_type=distance, num_partitions=partitions)


def _breadth(share: float, near: float | None, partitions: int, kind: str | None) -> tuple[int, int]:
    """(partitions to visit, re-ranking factor) through the plain index for a search whose filter
    `share` of the products pass, `near` the share of NEAR_ROWS that the partitions nearest the
    photo gave (None unfiltered: NPROBES).

    A filter whose products lie near the photo, however rare in the catalog, is searched a
    little wider than none (FILTERED_PROBES); one with none of its products near the photo keeps
    them in the partitions farthest from it, and visits every partition (docs/scale.md)."""
    if near is not None and near <= 0:
        return MAX_PROBES, _refine(share, kind)
    wanted = NPROBES if near is None else math.ceil(FILTERED_PROBES / near)
    return _probes(wanted, partitions), _refine(share, kind)


def _route_breadth(share: float, key_rows: int, per_partition: float, k: int, kind: str | None) -> tuple[int, int]:
    """(partitions to visit, re-ranking factor) for a search through the route index within a
    category of `key_rows` products, of which `share` pass the filter: ROUTE_PROBES, or as many
    as hold k x REFINE products that pass, at most every partition of the category."""
    partitions = max(1, math.ceil(key_rows / max(1.0, per_partition)))
    everything = math.ceil(partitions + ROUTE_SLACK * math.sqrt(partitions)) + 1
    enough = math.ceil(k * REFINE / max(share * per_partition, 1e-9))
    return int(min(everything, max(ROUTE_PROBES, enough))), _refine(share, kind)


def _refine(share: float, kind: str | None) -> int:
    """The re-ranking factor of a search whose filter `share` of the products pass."""
    if kind == "IvfRq":
        # RaBitQ's distance estimates tell a rare filter's products apart well enough: REFINE
        # alone keeps recall@5 >= 0.97 for every filter class at a million (docs/scale.md).
        return REFINE
    # PQ codes of a rare filter's products lie close together: more of them are re-ranked on the
    # stored vectors (a rare filter's recall 0.90 -> 0.99 at a million).
    return int(min(MAX_REFINE, math.ceil(REFINE / math.sqrt(share))))


def _probes(wanted: int, partitions: int) -> int:
    """`wanted` partitions; every one past half of them. The partitions are visited nearest the
    photo first, so those left out are the farthest from it, which is where a filter that
    disagrees with the photo keeps its products (shoes asked of a shirt's photo: recall@5 0.68 at
    a million products with 87 of 122 partitions, 0.95-0.98 with all, docs/scale.md)."""
    return MAX_PROBES if wanted > partitions / 2 else int(wanted)


def _route_keys(combinations: dict[tuple, int], filters: Filters) -> set | None:
    """The ROUTE_FIELD values of the (masterCategory, subCategory, articleType) combinations that
    pass the filter's category conditions, as `filters_sql` reads them (None: it has none)."""
    names = [name for name in filters.names() if name == CATEGORY or name in CATEGORY_FIELDS]
    if not names:
        return None
    at = CATEGORY_FIELDS.index(ROUTE_FIELD)

    def passes(found: tuple, name: str) -> bool:
        values = [found[CATEGORY_FIELDS.index(c)] for c in columns_of(name)]
        wanted, unwanted = filters.get(name), filters.get_excluded(name)
        return (not wanted or any(v in wanted for v in values)) and not any(v in unwanted for v in values)
    return {found[at] for found in combinations if all(passes(found, name) for name in names)}


def filters_sql(filters: Filters | None) -> str:
    """`Filters` as the SQL condition LanceDB prefilters with: the same rows as `Filters.mask`."""
    if filters is None or filters.is_empty():
        return ""
    clauses = []
    for name, values in filters.fields.items():
        if values:
            clauses.append("(" + " OR ".join(in_list(c, values) for c in columns_of(name)) + ")")
    for name, values in filters.excluded.items():
        if values:
            clauses += [f"({column(c)} IS NULL OR NOT {in_list(c, values)})" for c in columns_of(name)]
    return " AND ".join(clauses)


def _excluding(ids: tuple[str, ...]) -> str:
    return f"NOT {in_list('id', ids)}" if ids else ""


def _vectors(array) -> np.ndarray:
    flat = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(array), -1) if len(array) else np.zeros((0, 1), np.float32)


def _metadata_columns(table) -> tuple[str, ...]:
    """What a read asks for to have a row's metadata: the one JSON column, where the table has it."""
    return (RECORD,) if table is not None and RECORD in table.schema.names else METADATA_COLUMNS


def _stored(row: dict) -> dict:
    """A row's metadata as Chroma's adapter returns it: fields with a value only."""
    if RECORD in row:
        row = {**json.loads(row.pop(RECORD) or "{}"), **row}
    return {key: value for key, value in row.items() if value is not None and key not in ("vector", "_distance")}


def _arrow(ids, vectors: np.ndarray, metadatas, centered: bool, table_schema: pa.Schema) -> pa.Table:
    clean = [{k: plain(v) for k, v in (m or {}).items() if v is not None} for m in metadatas]
    columns = {"id": [str(i) for i in ids],
               "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), vectors.shape[1])}
    for name in STRING_FIELDS:
        columns[name] = [None if m.get(name) is None else str(m[name]) for m in clean]
    columns["year"] = [_year(m.get("year")) for m in clean]
    columns[CENTERED_KEY] = [True if centered else bool(m.get(CENTERED_KEY, False)) for m in clean]
    if RECORD in table_schema.names:
        columns[RECORD] = [json.dumps({name: columns[name][row] for name in METADATA_COLUMNS
                                       if columns[name][row] is not None}) for row in range(len(clean))]
    if ROUTE in table_schema.names:
        routed = _routed(vectors, columns[ROUTE_FIELD])
        columns[ROUTE] = pa.FixedSizeListArray.from_arrays(pa.array(routed.ravel(), pa.float32()), routed.shape[1])
    return pa.table(columns, schema=table_schema)


@functools.lru_cache(maxsize=4096)
def route_code(value: str | None) -> tuple[float, ...]:
    """A category's code in the ROUTE column: a unit vector drawn from a seed that is the value's
    digest, so that every process and every run gives a value the same code (none: zeros)."""
    if value is None:
        return (0.0,) * ROUTE_DIMS
    seed = int.from_bytes(hashlib.blake2b(str(value).encode(), digest_size=8).digest(), "little")
    code = np.random.default_rng(seed).standard_normal(ROUTE_DIMS)
    return tuple(float(x) for x in code / np.linalg.norm(code))


def _routed(vectors: np.ndarray, keys) -> np.ndarray:
    """Each vector made unit length, followed by ROUTE_WEIGHT x its category's code."""
    vectors = np.asarray(vectors, dtype=np.float32).reshape(len(keys), -1)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    codes = ROUTE_WEIGHT * np.asarray([route_code(key) for key in keys], dtype=np.float32).reshape(len(keys), -1)
    return np.hstack([unit, codes]).astype(np.float32)


def _year(value) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _drop_table(client: LanceStore, table_name: str) -> None:
    if client.exists(table_name):
        client.db.drop_table(table_name)


class _translated:
    """LanceDB's and the OS's failures inside as a StoreError that says what to do."""

    def __init__(self, where: str, model: str | None = None):
        self.where, self.model = where, model

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, StoreError):
            return False
        if isinstance(exc, Exception):
            raise store_error(exc, self.where, self.model) from exc
        return False
