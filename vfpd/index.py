"""The FAISS index: a cache of one model version's fingerprint vectors, derived from the catalog.

Inner product over L2-normalised vectors (= cosine). Exact (flat) while small, HNSW above a
measured size. Saved atomically with the catalog sequence it covers; at start-up loaded and
caught up, or rebuilt from the vectors stored in the catalog (never by decoding videos).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import blake3
import faiss
import numpy as np

from vfpd.atomic import atomic_writer, remove_stale_temps
from vfpd.fingerprint import VECTOR_DIM

if TYPE_CHECKING:
    from vfpd.catalog import Catalog

log = logging.getLogger(__name__)

FLAT = "flat"
HNSW = "hnsw"

EXACT_MAX = 50_000
"""Largest index kept exact (IndexFlatIP). Measured with `./dev bench index` on the shared
2-core machine (load ~15): single k=10 queries over 10k/25k/50k/100k/200k vectors took
0.15/0.9/6/16/26 ms p50; HNSW took under 1 ms at 100k. Up to 50k exact search stays within a few
ms with perfect recall and instant inserts; beyond it latency grows linearly, so HNSW (slower
inserts, ~35% more memory, approximate) pays off."""

HNSW_M = 32
"""Graph degree. 32 is the usual choice for 256-d data: recall@10 >= 0.95 at modest efSearch;
16 loses recall on high-dimensional vectors, 64 doubles the graph memory (~0.5 GB at 1M)."""

HNSW_EF_CONSTRUCTION = 80
"""Build-time beam. Measured at 1M clustered vectors (bench/index --ef-construction): 40 built
a graph that capped recall@10 at 0.84 (ef_search 128) / 0.92 (512); 80 reached 0.99 at the same
~2,300 inserts/s on this 2-core machine once it was calmer (the beam matters less than load)."""

HNSW_EF_SEARCH = 256
"""Query-time beam. Measured at 1M clustered vectors with ef_construction 80: ef_search
128/256/512 gave recall@10 0.988/0.994/0.995 at p50 0.6/1.0/2.0 ms (p99 0.9/5.1/2.9 ms, noisy on
a shared machine). 256 leaves margin for less clustered libraries at ~1 ms per query."""

TOMBSTONE_REBUILD_RATIO = 0.10
"""HNSW cannot delete: removed ids are filtered out at search and the graph is rebuilt once they
are 10% of it, which bounds both wasted memory and the search slow-down of filtering."""

SINGLE_THREAD_QUERIES = 16
"""Searches of up to 16 queries run on one thread. Measured on this shared 2-core machine (20k
vectors, load ~14): one thread gave flat p99 8.6 ms vs 17 ms with two; OpenMP's fan-out and
spin-waits cost more than they save for a single query when the cores are busy."""

HEADER_SIZE = 4096
"""Fixed space for the JSON header at the start of the file, patched after the payload is
written (so the payload can stream to disk while its checksum is computed)."""

MAGIC = b"VFPDIDX\x01"
FORMAT = 1


class IndexLoadError(Exception):
    """The index file cannot be used; the caller rebuilds from the catalog."""


@dataclass(frozen=True)
class IndexSettings:
    exact_max: int = EXACT_MAX
    hnsw_m: int = HNSW_M
    ef_construction: int = HNSW_EF_CONSTRUCTION
    ef_search: int = HNSW_EF_SEARCH
    tombstone_ratio: float = TOMBSTONE_REBUILD_RATIO


@dataclass(frozen=True)
class IndexInfo:
    """What `vfpctl status` shows about the index."""

    kind: str
    size: int
    model_version: str
    dim: int
    covered_seq: int
    tombstones: int


class VectorIndex:
    """Vectors of one model version keyed by catalog fingerprint id. Thread-safe (one lock: FAISS
    does not allow adding while searching)."""

    def __init__(self, model_version: str, dim: int = VECTOR_DIM,
                 settings: IndexSettings = IndexSettings(), expected: int = 0) -> None:
        """An empty index. `expected` (the number of vectors about to be added) picks HNSW from
        the start instead of converting half-way through a rebuild."""
        self.model_version = model_version
        self.dim = dim
        self.settings = settings
        self.covered_seq = 0
        """The catalog sequence whose fingerprints this index holds (see Catalog.sequence)."""
        self._lock = threading.RLock()
        self._ids: set[int] = set()
        self._tombstones: set[int] = set()
        self._journal: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None
        """Changes made while a rebuild runs unlocked; replayed onto the new index."""
        self._kind = HNSW if expected > settings.exact_max else FLAT
        self._index = self._empty(self._kind)

    # -- construction ------------------------------------------------------------------------------

    def _empty(self, kind: str) -> faiss.IndexIDMap2:
        if kind == FLAT:
            inner = faiss.IndexFlatIP(self.dim)
        else:
            inner = faiss.IndexHNSWFlat(self.dim, self.settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.settings.ef_construction
            inner.hnsw.efSearch = self.settings.ef_search
        return faiss.IndexIDMap2(inner)

    def _all(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) physically stored, tombstoned ones included."""
        n = self._index.ntotal
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vectors = (faiss.downcast_index(self._index.index).reconstruct_n(0, n) if n
                   else np.zeros((0, self.dim), np.float32))
        return ids, vectors

    def _rebuild(self, kind: str) -> None:
        """Re-create the FAISS index as `kind` from the live vectors, dropping tombstones. Call
        WITHOUT holding the lock: the slow build runs unlocked, so searches keep being answered
        by the old index; adds and removes made meanwhile go to both (through the journal)."""
        with self._lock:
            if self._journal is not None:
                return  # another thread is already rebuilding
            started = time.monotonic()
            ids, vectors = self._all()
            if self._tombstones:
                keep = ~np.isin(ids, np.fromiter(self._tombstones, np.int64))
                ids, vectors = ids[keep], vectors[keep]
            self._journal = []
        try:
            index = self._empty(kind)
            if len(ids):
                index.add_with_ids(np.ascontiguousarray(vectors), ids)
        except BaseException:
            with self._lock:
                self._journal = None
            raise
        with self._lock:
            tombstones: set[int] = set()
            for op, j_ids, j_vectors in self._journal:
                if op == "add":
                    index.add_with_ids(j_vectors, j_ids)
                    tombstones.difference_update(j_ids.tolist())
                elif kind == FLAT:
                    index.remove_ids(j_ids)
                else:
                    tombstones.update(j_ids.tolist())
            self._index, self._kind, self._tombstones = index, kind, tombstones
            self._journal = None
        log.info("index rebuilt as %s with %d vectors in %.1f s", kind, len(ids),
                 time.monotonic() - started)

    # -- changes -----------------------------------------------------------------------------------

    def add(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray) -> int:
        """Add vectors under catalog ids; ids already present are skipped (so replaying the
        catalog's change log twice cannot duplicate anything). Vectors are L2-normalised here.
        Returns how many were added. Growing past exact_max converts to HNSW (slow, logged;
        searches are answered meanwhile)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.array(vectors, dtype=np.float32, copy=True).reshape(-1, self.dim)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(ids) and (ids < 0).any():
            raise ValueError("index ids must be >= 0")
        faiss.normalize_L2(vectors)
        with self._lock:
            stale = bool(self._tombstones.intersection(ids.tolist()))
        if stale:
            # The old vector of a re-added id still sits in the graph: compact it away first.
            self._rebuild(self._kind)
        with self._lock:
            fresh = np.fromiter((i not in self._ids for i in ids.tolist()), bool, len(ids))
            _, first = np.unique(ids, return_index=True)
            once = np.zeros(len(ids), bool)
            once[first] = True
            keep = fresh & once
            if not keep.any():
                return 0
            ids, vectors = ids[keep], np.ascontiguousarray(vectors[keep])
            self._index.add_with_ids(vectors, ids)
            if self._journal is not None:
                self._journal.append(("add", ids, vectors))
            self._ids.update(ids.tolist())
            convert = (self._kind == FLAT and len(self._ids) > self.settings.exact_max
                       and self._journal is None)
        if convert:
            log.info("index grows past %d vectors: switching from exact to HNSW",
                     self.settings.exact_max)
            self._rebuild(HNSW)
        return len(ids)

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove ids (unknown ones are ignored). Returns how many were removed."""
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        rebuild = None
        with self._lock:
            gone = [i for i in dict.fromkeys(ids) if i in self._ids]
            if not gone:
                return 0
            gone_arr = np.asarray(gone, dtype=np.int64)
            self._ids.difference_update(gone)
            if self._journal is not None:
                self._journal.append(("remove", gone_arr, None))
            if self._kind == FLAT:
                self._index.remove_ids(gone_arr)
            else:
                self._tombstones.update(gone)
                if (len(self._tombstones) > self.settings.tombstone_ratio * self._index.ntotal
                        and self._journal is None):
                    rebuild = HNSW if len(self._ids) > self.settings.exact_max // 2 else FLAT
        if rebuild is not None:
            self._rebuild(rebuild)
        return len(gone)

    # -- queries -----------------------------------------------------------------------------------

    def _params(self) -> faiss.SearchParameters | None:
        if self._kind == FLAT:
            return None
        params = faiss.SearchParametersHNSW()
        params.efSearch = self.settings.ef_search
        if self._tombstones:
            # Kept referenced on `params` so the selectors outlive the search call.
            params.batch = faiss.IDSelectorBatch(np.fromiter(self._tombstones, np.int64))
            params.sel = faiss.IDSelectorNot(params.batch)
        return params

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        q = np.array(queries, dtype=np.float32, copy=True).reshape(-1, self.dim)
        faiss.normalize_L2(q)
        return q

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest by cosine for each query row: (scores (n, k) float32 descending, ids (n, k)
        int64). Missing results (fewer than k vectors) are id -1, score -inf."""
        q = self._queries(queries)
        if k <= 0:
            raise ValueError("k must be positive")
        with self._lock:
            if not self._ids:
                return (np.full((len(q), k), -np.inf, np.float32),
                        np.full((len(q), k), -1, np.int64))
            with _threads(len(q)):
                scores, ids = self._index.search(q, k, params=self._params())
        scores[ids < 0] = -np.inf
        return scores, ids

    def range_search(self, query: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
        """All vectors with cosine >= `min_score` to one query: (scores, ids), best first."""
        q = self._queries(query)[:1]
        with self._lock:
            if not self._ids:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            # FAISS range search for inner product returns scores strictly above the radius.
            radius = np.nextafter(np.float32(min_score), np.float32(-np.inf))
            with _threads(1):
                _, scores, ids = self._index.range_search(q, float(radius),
                                                          params=self._params())
        order = np.argsort(-scores, kind="stable")
        return scores[order], ids[order].astype(np.int64)

    def __contains__(self, fingerprint_id: int) -> bool:
        with self._lock:
            return int(fingerprint_id) in self._ids

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def ids(self) -> np.ndarray:
        """Live ids, sorted."""
        with self._lock:
            return np.sort(np.fromiter(self._ids, np.int64, len(self._ids)))

    def verify(self) -> list[str]:
        """Internal consistency problems ([] when sound): every live id stored exactly once, no
        tombstone alive, FAISS and the id set agree."""
        with self._lock:
            stored = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            problems = []
            unique, counts = np.unique(stored, return_counts=True)
            if (counts > 1).any():
                problems.append(f"ids stored more than once: {unique[counts > 1][:10].tolist()}")
            if set(unique.tolist()) - self._tombstones != self._ids:
                problems.append("FAISS ids and live ids differ")
            if self._tombstones & self._ids:
                problems.append("ids both live and removed")
            if self._index.ntotal != len(stored):
                problems.append("id map and vectors differ in length")
            return problems

    @property
    def kind(self) -> str:
        return self._kind

    def info(self) -> IndexInfo:
        with self._lock:
            return IndexInfo(self._kind, len(self._ids), self.model_version, self.dim,
                             self.covered_seq, len(self._tombstones))

    # -- catalog ------------------------------------------------------------------------------------

    def catch_up(self, catalog: Catalog) -> int:
        """Apply the catalog's fingerprint changes after covered_seq, in order. Returns the number
        of changes applied."""
        applied = 0
        pending_ids: list[int] = []
        pending_vecs: list[np.ndarray] = []

        def flush() -> None:
            if pending_ids:
                self.add(pending_ids, np.stack(pending_vecs))
                pending_ids.clear()
                pending_vecs.clear()

        # Not under the lock: add() may rebuild, which must run unlocked. Two concurrent
        # catch-ups are harmless (adds skip known ids, removes of absent ids do nothing).
        # Read the sequence first: every change up to it is committed and will be seen below;
        # changes of other model versions advance it too and are covered by doing nothing.
        target = catalog.sequence()
        last = self.covered_seq
        for change in catalog.changes_since(self.model_version, self.covered_seq):
            if change.op == "add" and change.vector is not None:
                pending_ids.append(change.fingerprint_id)
                pending_vecs.append(change.vector)
            elif change.op == "remove":
                flush()
                self.remove([change.fingerprint_id])
            last = change.seq
            applied += 1
        flush()
        with self._lock:
            self.covered_seq = max(target, last, self.covered_seq)
        return applied

    @classmethod
    def from_catalog(cls, catalog: Catalog, model_version: str, dim: int = VECTOR_DIM,
                     settings: IndexSettings = IndexSettings()) -> VectorIndex:
        """Build from the vectors stored in the catalog (one read snapshot), covering it."""
        started = time.monotonic()
        expected = catalog.model_versions().get(model_version, 0)
        index = cls(model_version, dim, settings, expected=expected)
        seq, batches = catalog.snapshot_vectors(model_version)
        for ids, vectors in batches:
            index.add(ids, vectors)
        index.covered_seq = seq
        log.info("index for model %s built from catalog: %d vectors (%s) in %.1f s",
                 model_version, len(index), index.kind, time.monotonic() - started)
        return index

    # -- persistence --------------------------------------------------------------------------------

    def save(self, path: Path | str) -> None:
        """Write atomically: header (model version, dim, kind, covered sequence, payload length
        and BLAKE3) + FAISS payload + tombstones. A crash leaves the previous file intact."""
        with self._lock, atomic_writer(path) as f:
            f.write(b"\0" * HEADER_SIZE)
            hasher = blake3.blake3()
            length = 0

            def sink(chunk: bytes) -> int:
                nonlocal length
                f.write(chunk)
                hasher.update(chunk)
                length += len(chunk)
                return len(chunk)

            writer = faiss.PyCallbackIOWriter(sink)
            faiss.write_index(self._index, writer)
            del writer  # flushes its buffer
            faiss_len = length
            sink(np.fromiter(self._tombstones, np.int64, len(self._tombstones)).astype("<i8")
                 .tobytes())
            header = {
                "format": FORMAT, "model_version": self.model_version, "dim": self.dim,
                "kind": self._kind, "covered_seq": self.covered_seq, "count": len(self._ids),
                "faiss_len": faiss_len, "payload_len": length,
                "payload_blake3": hasher.hexdigest(),
            }
            blob = json.dumps(header).encode("utf-8")
            if len(blob) + len(MAGIC) + 4 > HEADER_SIZE:
                raise ValueError("index header too large (model version name too long?)")
            f.seek(0)
            f.write(MAGIC + struct.pack("<I", len(blob)) + blob)

    @classmethod
    def load(cls, path: Path | str, model_version: str, dim: int = VECTOR_DIM,
             settings: IndexSettings = IndexSettings()) -> VectorIndex:
        """Load and verify a saved index. Raises IndexLoadError saying why it cannot be used
        (missing, truncated, garbage, checksum, other model version or dimension)."""
        path = Path(path)
        try:
            f = open(path, "rb")
        except FileNotFoundError as e:
            raise IndexLoadError(f"{path}: missing") from e
        except OSError as e:
            raise IndexLoadError(f"{path}: {e.strerror}") from e
        with f:
            header = _read_header(f, path)
            if header["model_version"] != model_version:
                raise IndexLoadError(f"{path}: made for model {header['model_version']!r}, "
                                     f"not {model_version!r}")
            if header["dim"] != dim:
                raise IndexLoadError(f"{path}: dimension {header['dim']}, expected {dim}")
            size = os.fstat(f.fileno()).st_size
            if size != HEADER_SIZE + header["payload_len"]:
                raise IndexLoadError(f"{path}: truncated or padded ({size} bytes, expected "
                                     f"{HEADER_SIZE + header['payload_len']})")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    digest = blake3.blake3(max_threads=blake3.blake3.AUTO)
                    digest.update(view[HEADER_SIZE:])
                    if digest.hexdigest() != header["payload_blake3"]:
                        raise IndexLoadError(f"{path}: checksum mismatch (corrupt file)")
                    faiss_end = HEADER_SIZE + header["faiss_len"]
                    tomb = np.frombuffer(view[faiss_end:], dtype="<i8").astype(np.int64)
                finally:
                    view.release()
            f.seek(HEADER_SIZE)
            try:
                reader = faiss.PyCallbackIOReader(f.read)
                raw = faiss.read_index(reader)
                del reader
            except RuntimeError as e:
                raise IndexLoadError(f"{path}: FAISS cannot read it: {e}") from e
        # read_index returns the concrete, owning wrapper; downcasting it again would create a
        # non-owning one and let the original free the index under it.
        if not isinstance(raw, faiss.IndexIDMap2) or raw.d != dim:
            raise IndexLoadError(f"{path}: unexpected FAISS index {type(raw).__name__}")
        index = cls(model_version, dim, settings)
        index._index = raw
        index._kind = header["kind"]
        inner = faiss.downcast_index(raw.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            inner.hnsw.efSearch = settings.ef_search
        ids = faiss.vector_to_array(raw.id_map).astype(np.int64)
        index._tombstones = set(tomb.tolist())
        index._ids = set(ids.tolist()) - index._tombstones
        if len(index._ids) != header["count"]:
            raise IndexLoadError(f"{path}: holds {len(index._ids)} vectors, header says "
                                 f"{header['count']}")
        index.covered_seq = int(header["covered_seq"])
        return index


@contextlib.contextmanager
def _threads(queries: int) -> Iterator[None]:
    """OpenMP threads for a search of `queries` vectors (the setting is per calling thread)."""
    if queries > SINGLE_THREAD_QUERIES:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _read_header(f, path: Path) -> dict:
    head = f.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE or not head.startswith(MAGIC):
        raise IndexLoadError(f"{path}: not a vfpd index file (bad magic or too short)")
    (n,) = struct.unpack("<I", head[len(MAGIC):len(MAGIC) + 4])
    try:
        header = json.loads(head[len(MAGIC) + 4:len(MAGIC) + 4 + n])
        if header.get("format") != FORMAT:
            raise IndexLoadError(f"{path}: index format {header.get('format')}, need {FORMAT}")
        for key in ("model_version", "dim", "kind", "covered_seq", "count", "faiss_len",
                    "payload_len", "payload_blake3"):
            header[key]  # noqa: B018 - presence check
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise IndexLoadError(f"{path}: unreadable header ({e})") from e
    return header


def open_index(catalog: Catalog, model_version: str, path: Path | str,
               dim: int = VECTOR_DIM, settings: IndexSettings = IndexSettings(),
               save_rebuilt: bool = True) -> VectorIndex:
    """The index for `model_version`: loaded from `path` and caught up with the catalog, or, when
    the file is missing / corrupt / of another model or dimension / ahead of the catalog, rebuilt
    from the catalog's stored vectors (logged as a warning) and saved."""
    started = time.monotonic()
    if remove_stale_temps(path):
        log.info("removed temporary index files left by an interrupted save")
    try:
        index = VectorIndex.load(path, model_version, dim, settings)
        if index.covered_seq > catalog.sequence():
            raise IndexLoadError(f"{path}: covers catalog sequence {index.covered_seq}, but the "
                                 f"catalog is at {catalog.sequence()} (catalog restored?)")
    except IndexLoadError as e:
        log.warning("rebuilding index from catalog: %s", e)
        index = VectorIndex.from_catalog(catalog, model_version, dim, settings)
        if save_rebuilt:
            index.save(path)
        return index
    loaded = time.monotonic()
    applied = index.catch_up(catalog)
    log.info("index for model %s loaded (%d vectors, %s) in %.1f s, caught up %d catalog "
             "changes in %.1f s", model_version, len(index), index.kind, loaded - started,
             applied, time.monotonic() - loaded)
    return index

