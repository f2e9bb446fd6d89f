"""The video index in a Milvus collection ([index] backend = "milvus"): the calls of
vfpd.index.VectorIndex over one model version's vectors, a cache derived from the catalog.

The collection records in its properties the model version, the dimension and the catalog
sequence it covers; opened, it is caught up from the catalog's change log, or rebuilt from the
vectors stored in the catalog (never by decoding) when it is missing, unfinished, of another
model version or dimension, or ahead of the catalog. Exact inner product over L2-normalised
vectors (= cosine), as FAISS's exact index.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vfpd.fingerprint import VECTOR_DIM
from vfpd.index import IndexInfo, checked_rows, replay_changes, unit_rows

if TYPE_CHECKING:
    from pymilvus import MilvusClient

    from vfpd.catalog import Catalog, Change

log = logging.getLogger(__name__)

KIND = "milvus-flat"
"""A FLAT index (brute force, inner product): exact like FAISS's IndexFlatIP, so both backends
find the same neighbours with the same scores. An approximate Milvus index (HNSW, IVF) is a
setting of the collection away, for a server whose library outgrows brute force."""

FORMAT = 1
"""The collection's layout (fields, metric, properties); another one is rebuilt."""

ID_FIELD = "id"
VECTOR_FIELD = "vector"
MODEL_PROPERTY = "vfpd.model_version"
DIM_PROPERTY = "vfpd.dim"
FORMAT_PROPERTY = "vfpd.format"
COVERED_PROPERTY = "vfpd.covered_seq"
"""Set only once the collection holds every vector up to that catalog sequence: a rebuild
interrupted before the end leaves it unset, and the next open rebuilds again."""

MILVUS_LIMIT = 16_384
"""Milvus's cap on a search's top-k and on one query's rows (server and Lite alike)."""

WRITE_BATCH = 4096
"""Rows per upsert or existence query: ~4 MB of 256-d vectors per request, well under gRPC's
message limit, and few round trips when a rebuild streams the catalog."""

QUERY_CHUNK = 64
"""Query vectors searched per request (bounds one response's size, like vfpd.index's chunk)."""


class MilvusIndex:
    """Vectors of one model version keyed by catalog fingerprint id, in one collection. Safe to
    use from several threads (the client is; a lock guards covered_seq)."""

    def __init__(self, client: MilvusClient, collection: str, model_version: str,
                 dim: int = VECTOR_DIM, covered_seq: int = 0) -> None:
        """An index over an existing collection (open_milvus_index makes or checks it)."""
        self.client = client
        self.collection = collection
        self.model_version = model_version
        self.dim = dim
        self.covered_seq = covered_seq
        """The catalog sequence whose fingerprints the collection holds (Catalog.sequence)."""
        self._lock = threading.Lock()

    # -- changes -----------------------------------------------------------------------------------

    def add(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray) -> int:
        """Add vectors under catalog ids; ids already present are skipped (replaying the change
        log twice duplicates nothing). Vectors are L2-normalised here. Returns how many were
        added."""
        ids, vectors = checked_rows(ids, vectors, self.dim)
        _, first = np.unique(ids, return_index=True)
        first.sort()
        ids, vectors = ids[first], vectors[first]
        present = self._present(ids)
        fresh = np.fromiter((i not in present for i in ids.tolist()), bool, len(ids))
        # An upsert, not an insert: two instances catching up one collection cannot store an id
        # twice.
        self._upsert(ids[fresh], vectors[fresh])
        return int(fresh.sum())

    def _upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for s in range(0, len(ids), WRITE_BATCH):
            rows = [{ID_FIELD: int(i), VECTOR_FIELD: v}
                    for i, v in zip(ids[s:s + WRITE_BATCH].tolist(), vectors[s:s + WRITE_BATCH])]
            self.client.upsert(self.collection, rows)

    def _present(self, ids: np.ndarray) -> set[int]:
        """Which of `ids` the collection holds."""
        out: set[int] = set()
        for s in range(0, len(ids), WRITE_BATCH):
            chunk = ids[s:s + WRITE_BATCH].tolist()
            rows = self.client.query(self.collection, filter=f"{ID_FIELD} in {chunk}",
                                     output_fields=[ID_FIELD], limit=len(chunk))
            out.update(int(r[ID_FIELD]) for r in rows)
        return out

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove ids (unknown ones are ignored). Returns how many were removed."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        gone = sorted(self._present(ids))
        if gone:
            self.client.delete(self.collection, ids=gone)
        return len(gone)

    # -- queries -----------------------------------------------------------------------------------

    def _search(self, q: np.ndarray, limit: int, params: dict[str, float] | None = None
                ) -> list[list[dict]]:
        return self.client.search(self.collection, data=list(q), limit=limit,
                                  anns_field=VECTOR_FIELD, output_fields=[ID_FIELD],
                                  search_params={"metric_type": "IP", "params": params or {}})

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest by cosine for each query row: (scores (n, k) float32 descending, ids (n, k)
        int64). Missing results (fewer than k vectors) are id -1, score -inf. At most
        MILVUS_LIMIT are found per query."""
        q = unit_rows(queries, self.dim)
        if k <= 0:
            raise ValueError("k must be positive")
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        for s in range(0, len(q), QUERY_CHUNK):
            for row, hits in enumerate(self._search(q[s:s + QUERY_CHUNK], min(k, MILVUS_LIMIT)),
                                       s):
                for col, hit in enumerate(hits):
                    scores[row, col] = hit["distance"]
                    ids[row, col] = hit["id"]
        return scores, ids

    def range_search(self, query: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
        """All vectors with cosine >= `min_score` to one query: (scores, ids), best first, up to
        MILVUS_LIMIT of them (a warning says when more may exist)."""
        q = unit_rows(query, self.dim)[:1]
        # Milvus's radius is exclusive; one float step below it makes min_score itself count.
        radius = float(np.nextafter(np.float32(min_score), np.float32(-np.inf)))
        hits = self._search(q, MILVUS_LIMIT, {"radius": radius})[0]
        if len(hits) >= MILVUS_LIMIT:
            log.warning("range search capped at %d results (Milvus's limit)", MILVUS_LIMIT)
        scores = np.array([h["distance"] for h in hits], np.float32)
        ids = np.array([h["id"] for h in hits], np.int64)
        keep = scores >= np.float32(min_score)
        scores, ids = scores[keep], ids[keep]
        order = np.argsort(-scores, kind="stable")
        return scores[order], ids[order]

    def __contains__(self, fingerprint_id: int) -> bool:
        return int(fingerprint_id) in self._present(np.array([fingerprint_id], np.int64))

    def __len__(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _stored_ids(self) -> Iterator[int]:
        """Every stored id, window by window of MILVUS_LIMIT consecutive ids (a window holds at
        most that many rows, so one query reads it whole; Milvus Lite has no query iterator)."""
        left = len(self)
        start = 0
        while left > 0:
            rows = self.client.query(
                self.collection, filter=f"{ID_FIELD} >= {start} and {ID_FIELD} < "
                                        f"{start + MILVUS_LIMIT}",
                output_fields=[ID_FIELD], limit=MILVUS_LIMIT)
            left -= len(rows)
            start += MILVUS_LIMIT
            yield from (int(r[ID_FIELD]) for r in rows)

    def ids(self) -> np.ndarray:
        """Live ids, sorted."""
        return np.sort(np.fromiter(self._stored_ids(), np.int64))

    def verify(self) -> list[str]:
        """Consistency problems ([] when sound): the collection's properties are this index's
        and every id is stored once."""
        problems = []
        props = _properties(self.client, self.collection)
        if props.get(MODEL_PROPERTY) != self.model_version:
            problems.append(f"collection made for model {props.get(MODEL_PROPERTY)!r}")
        if props.get(DIM_PROPERTY) != str(self.dim):
            problems.append(f"collection of dimension {props.get(DIM_PROPERTY)!r}")
        stored = self.ids()
        unique, counts = np.unique(stored, return_counts=True)
        if (counts > 1).any():
            problems.append(f"ids stored more than once: {unique[counts > 1][:10].tolist()}")
        if len(unique) != len(self):
            problems.append("stored ids and the collection's count differ")
        return problems

    @property
    def kind(self) -> str:
        return KIND

    def info(self) -> IndexInfo:
        with self._lock:
            covered = self.covered_seq
        return IndexInfo(KIND, len(self), self.model_version, self.dim, covered, 0)

    # -- catalog ------------------------------------------------------------------------------------

    def catch_up(self, catalog: Catalog) -> int:
        """Apply the catalog's fingerprint changes after covered_seq, in order. Returns the number
        of changes applied. Recorded in the collection at the next save()."""
        def add(changes: list[Change]) -> None:
            self.add([c.fingerprint_id for c in changes], np.stack([c.vector for c in changes]))

        with self._lock:
            since = self.covered_seq
        applied, covered = replay_changes(catalog, self.model_version, since, add,
                                          lambda fid: self.remove([fid]))
        with self._lock:
            self.covered_seq = max(covered, self.covered_seq)
        return applied

    def save(self, path: Path | str | None = None) -> None:
        """Record the covered catalog sequence in the collection, after its rows are flushed
        (so the record never claims rows a crash could lose). `path` is ignored: the collection
        is where this index lives (the FAISS index's callers pass its file)."""
        with self._lock:
            covered = self.covered_seq
        self.client.flush(self.collection)
        self.client.alter_collection_properties(self.collection,
                                                {COVERED_PROPERTY: str(covered)})


def _properties(client: MilvusClient, collection: str) -> dict[str, str]:
    return dict(client.describe_collection(collection).get("properties") or {})


def _unusable(client: MilvusClient, collection: str, catalog: Catalog, model_version: str,
              dim: int) -> str | None:
    """Why the collection cannot serve as `model_version`'s index (None when it can)."""
    if not client.has_collection(collection):
        return f"collection {collection} missing"
    props = _properties(client, collection)
    if props.get(FORMAT_PROPERTY) != str(FORMAT):
        return f"collection {collection} has layout {props.get(FORMAT_PROPERTY)!r}, need {FORMAT}"
    if props.get(MODEL_PROPERTY) != model_version:
        return (f"collection {collection} made for model {props.get(MODEL_PROPERTY)!r}, not "
                f"{model_version!r}")
    if props.get(DIM_PROPERTY) != str(dim):
        return f"collection {collection}: dimension {props.get(DIM_PROPERTY)}, expected {dim}"
    covered = props.get(COVERED_PROPERTY)
    if covered is None:
        return f"collection {collection} was not finished (an interrupted rebuild?)"
    if int(covered) > catalog.sequence():
        return (f"collection {collection} covers catalog sequence {covered}, but the catalog is "
                f"at {catalog.sequence()} (catalog restored?)")
    return None


def _create(client: MilvusClient, collection: str, model_version: str, dim: int) -> None:
    """A new, empty collection (replacing one of that name)."""
    from pymilvus import DataType

    if client.has_collection(collection):
        client.drop_collection(collection)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(ID_FIELD, DataType.INT64, is_primary=True)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
    index_params = client.prepare_index_params()
    index_params.add_index(VECTOR_FIELD, index_type="FLAT", metric_type="IP")
    # Strong: a search sees every write made before it (a server's default, Bounded, lets a
    # copy added a moment ago be missed).
    client.create_collection(collection, schema=schema, consistency_level="Strong",
                             properties={FORMAT_PROPERTY: str(FORMAT),
                                         MODEL_PROPERTY: model_version, DIM_PROPERTY: str(dim)})
    # Not waited for: the wait asks for a timestamp Milvus Lite does not serve (an error in its
    # log) and polls every 0.5 s; a FLAT index of an empty collection has nothing to build.
    client.create_index(collection, index_params, sync=False)
    client.load_collection(collection)


def rebuild_milvus_index(client: MilvusClient, collection: str, catalog: Catalog,
                         model_version: str, dim: int = VECTOR_DIM) -> MilvusIndex:
    """Replace the collection with the vectors stored in the catalog (one read snapshot),
    covering it."""
    started = time.monotonic()
    _create(client, collection, model_version, dim)
    index = MilvusIndex(client, collection, model_version, dim)
    seq, batches = catalog.snapshot_vectors(model_version)
    for ids, vectors in batches:
        index._upsert(np.asarray(ids, np.int64), unit_rows(vectors, dim))  # a fresh collection: all are new
    index.covered_seq = seq
    index.save()
    log.info("index for model %s built from catalog in collection %s: %d vectors in %.1f s",
             model_version, collection, len(index), time.monotonic() - started)
    return index


def open_milvus_index(client: MilvusClient, collection: str, catalog: Catalog,
                      model_version: str, dim: int = VECTOR_DIM) -> MilvusIndex:
    """The index for `model_version` in `collection`: caught up with the catalog, or rebuilt
    from the catalog's stored vectors when it cannot be used (logged, as vfpd.index does: INFO
    on a first start, WARNING when work was lost)."""
    started = time.monotonic()
    reason = _unusable(client, collection, catalog, model_version, dim)
    if reason is not None:
        first = not client.has_collection(collection) and catalog.sequence() == 0
        log.log(logging.INFO if first else logging.WARNING, "rebuilding index from catalog: %s",
                reason)
        return rebuild_milvus_index(client, collection, catalog, model_version, dim)
    client.load_collection(collection)  # a server may hold it released (on disk only)
    index = MilvusIndex(client, collection, model_version, dim,
                        int(_properties(client, collection)[COVERED_PROPERTY]))
    loaded = time.monotonic()
    applied = index.catch_up(catalog)
    if applied:
        index.save()
    log.info("index for model %s opened in collection %s (%d vectors) in %.1f s, caught up %d "
             "catalog changes in %.1f s", model_version, collection, len(index), loaded - started,
             applied, time.monotonic() - loaded)
    return index
