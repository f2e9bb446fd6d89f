"""The FAISS index: a cache of one model version's fingerprint vectors, derived from the catalog.

Inner product over L2-normalised vectors (= cosine). Exact (brute force) while small; above a
measured size a 4-bit product-quantisation scan picks candidates that are re-ranked exactly. Saved
atomically with the catalog sequence it covers; at start-up loaded and caught up, or rebuilt from
the vectors stored in the catalog (never by decoding videos).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from vfpd.atomic import atomic_writer
from vfpd.fingerprint import VECTOR_DIM
from vfpd.index_file import (
    HEADER_SIZE,
    IndexLoadError,
    PayloadSink,
    load_saved,
    open_container,
    read_faiss,
    verify_payload,
    write_container,
    write_faiss,
)

if TYPE_CHECKING:
    from vfpd.catalog import Catalog, Change

log = logging.getLogger(__name__)

FLAT = "flat"
PQ_RERANK = "pq-rerank"
"""Approximate kind: every vector is kept exactly (float32, in numpy) and also as a 32-byte
4-bit PQ code (FAISS IndexPQFastScan). A query scans all codes (SIMD, ~1 ms per million) for the
`rerank_factor * k` best candidates, which are re-scored exactly.

Why not HNSW (used up to Nov 2026): on uniformly random 256-d vectors its recall@10 at 1M was 0.11
(M 32, ef_construction 80, ef_search 256); an L2 graph over the same normalised vectors is no
better (measured at 100k: recall 0.54 inner product vs 0.56 L2 at ef_search 256, 0.91 vs 0.92 at
1024), because random high-dimensional vectors have no neighbourhood structure for a graph to
follow. A full code scan does not depend on structure, builds ~100x faster (no graph) and needs no
deletion support from FAISS (positions only grow; removed ids are tombstones)."""

EXACT_MAX = 50_000
"""Largest index kept exact (IndexFlatIP). Measured with `./dev bench index` on the shared
2-core machine (load ~15): single k=10 queries over 10k/25k/50k/100k/200k vectors took
0.15/0.9/6/16/26 ms p50. Up to 50k exact search stays within a few ms with perfect recall;
beyond it latency grows linearly while the PQ scan + re-rank stays near 1-3 ms."""

PQ_SUBVECTOR_DIM = 4
"""Dimensions per PQ sub-quantiser: 64 x 4-bit codes (32 bytes) for a 256-d vector. Measured at
1M random vectors (single thread): 64 codes scan in ~1 ms and reach recall@10 0.975 with 8,000
re-ranked candidates; 128 codes (2-d each) need only 1,000 candidates for 0.998 but the scan
alone takes 5-9 ms on this machine, too close to the 10 ms p99 budget."""

PQ_CENTROIDS = 16
"""Centroids per sub-quantiser: 4-bit codes are what FAISS's fast-scan SIMD kernels handle. Also
the fewest vectors k-means can train on."""

PQ_TRAIN_SAMPLE = 4096
"""Vectors sampled to train the codebooks: FAISS's k-means uses at most 256 points per centroid
(16 x 256) anyway, and training on more only costs time."""

RERANK_FACTOR = 800
"""Candidates re-ranked exactly per requested neighbour (8,000 for k=10). Measured at 1M random
256-d vectors (worst case: no structure): 200/400/800/1200 gave recall@10 0.88/0.94/0.975/0.99 at
p50 1.6/2.1/2.9/3.8 ms on one thread. 800 keeps recall above 0.95 with margin well inside 10 ms;
clustered vectors (real libraries with duplicates) reach ~1.0 at any of these."""

TOMBSTONE_REBUILD_RATIO = 0.10
"""The index does not delete in place (positions of codes and vectors must stay aligned, and a
million-row memmove per removal would stall searches): removed ids are filtered out at search
and the index is compacted once they are 10% of it, which bounds both wasted memory and the
search slow-down of filtering."""

SINGLE_THREAD_QUERIES = 16
"""Searches of up to 16 queries run on one thread. Measured on this shared 2-core machine (20k
vectors, load ~14): one thread gave flat p99 8.6 ms vs 17 ms with two; OpenMP's fan-out and
spin-waits cost more than they save for a single query when the cores are busy. PQ training is
always single-threaded: with two threads it took 6-16 s instead of 0.6 s on the loaded machine."""

COPY_CHUNK = 65_536
"""Vectors copied per lock hold while compacting, so searches wait milliseconds, not seconds."""

QUERY_CHUNK = 64
"""Queries searched together: bounds the candidate and similarity matrices of a big batch
(64 x 8,000 candidates, or 64 x 50,000 exact similarities = 13 MB)."""

MAGIC = b"VFPDIDX\x01"
FORMAT = 2
"""2: stored ids + vectors (raw little-endian) + optional IndexPQFastScan + removed ids. 1 held
a FAISS HNSW graph; such files are refused with a reason, so open_index rebuilds them from the
catalog (seconds)."""


@dataclass(frozen=True)
class IndexSettings:
    exact_max: int = EXACT_MAX
    rerank_factor: int = RERANK_FACTOR
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


class _Store:
    """Vectors and their ids in insertion order, in arrays with headroom: appending copies only
    the new rows until the headroom is used up (then the capacity doubles). FAISS's own flat
    storage grows a std::vector of exactly the loaded size, so the first add after loading a 1M
    index copied 1 GB (1-5 s of the start-up on this machine); untouched headroom costs no
    resident memory."""

    def __init__(self, dim: int, capacity: int = 0) -> None:
        self.dim = dim
        self.n = 0
        self._vectors = np.empty((capacity, dim), np.float32)
        self._ids = np.empty(capacity, np.int64)

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[:self.n]

    @property
    def ids(self) -> np.ndarray:
        return self._ids[:self.n]

    def reserve(self, total: int) -> None:
        if total <= len(self._ids):
            return
        capacity = max(total, 2 * len(self._ids))
        vectors = np.empty((capacity, self.dim), np.float32)
        ids = np.empty(capacity, np.int64)
        vectors[:self.n] = self.vectors
        ids[:self.n] = self.ids
        self._vectors, self._ids = vectors, ids

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.reserve(self.n + len(ids))
        self._vectors[self.n:self.n + len(ids)] = vectors
        self._ids[self.n:self.n + len(ids)] = ids
        self.n += len(ids)


def unit_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """A copy of vectors as float32 rows of `dim`, L2-normalised by FAISS (both video-index
    backends store and ask with the very same vectors)."""
    rows = np.array(vectors, dtype=np.float32, copy=True).reshape(-1, dim)
    faiss.normalize_L2(rows)
    return rows


def checked_rows(ids: Iterable[int] | np.ndarray, vectors: np.ndarray, dim: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(ids as int64, unit_rows(vectors)) of an add; ValueError when they do not pair up or an
    id is negative."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    rows = unit_rows(vectors, dim)
    if len(ids) != len(rows):
        raise ValueError(f"{len(ids)} ids for {len(rows)} vectors")
    if len(ids) and (ids < 0).any():
        raise ValueError("index ids must be >= 0")
    return ids, rows


def replay_changes(catalog: Catalog, model_version: str, covered_seq: int,
                   add: Callable[[list[Change]], None], remove: Callable[[int], None]
                   ) -> tuple[int, int]:
    """Feed the catalog's fingerprint changes of `model_version` after `covered_seq` to an
    index, in order: consecutive adds in one batch, each remove after the adds before it.
    Returns (changes applied, the sequence now covered)."""
    applied = 0
    pending: list[Change] = []

    def flush() -> None:
        if pending:
            add(list(pending))
            pending.clear()

    # The sequence first: every change up to it is committed and is seen below; changes of
    # other model versions advance it too and are covered by doing nothing.
    target = catalog.sequence()
    last = covered_seq
    for change in catalog.changes_since(model_version, covered_seq):
        if change.op == "add" and change.vector is not None:
            pending.append(change)
        elif change.op == "remove":
            flush()
            remove(change.fingerprint_id)
        last = change.seq
        applied += 1
    flush()
    return applied, max(target, last)


class VectorIndex:
    """Vectors of one model version keyed by catalog fingerprint id. Thread-safe (one lock: the
    stored arrays may move while adding)."""

    def __init__(self, model_version: str, dim: int = VECTOR_DIM,
                 settings: IndexSettings = IndexSettings(), expected: int = 0) -> None:
        """An empty index. `expected` (the number of vectors about to be added) reserves their
        space and, above exact_max, makes the index approximate from the start: the codebooks
        are trained as soon as PQ_TRAIN_SAMPLE vectors are stored, instead of on the first
        exact_max."""
        self.model_version = model_version
        self.dim = dim
        self.settings = settings
        self.covered_seq = 0
        """The catalog sequence whose fingerprints this index holds (see Catalog.sequence)."""
        self._lock = threading.RLock()
        self._ids: set[int] = set()
        self._tombstones: set[int] = set()
        self._tomb_sorted: np.ndarray | None = None
        """Sorted tombstones for vectorised filtering; rebuilt lazily after a change."""
        self._journal: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None
        """Changes made while a rebuild runs unlocked; replayed onto the new index."""
        self._store = _Store(dim, expected)
        """All stored vectors (removed ones included until the next compaction), normalised."""
        self._pq: faiss.IndexPQFastScan | None = None
        """PQ codes of the same vectors at the same positions (approximate kind, once trained)."""
        self._kind = PQ_RERANK if expected > settings.exact_max else FLAT
        self._train_at = max(PQ_CENTROIDS, min(PQ_TRAIN_SAMPLE, expected))

    # -- construction ------------------------------------------------------------------------------

    def _maybe_train(self) -> None:
        """Under the lock: build the PQ codes once an approximate index holds enough vectors."""
        if self._kind != PQ_RERANK or self._pq is not None or self._store.n < self._train_at:
            return
        started = time.monotonic()
        self._pq = _trained_pq(self._store.vectors, self.dim)
        log.info("index codebooks trained and %d vectors encoded in %.1f s", self._store.n,
                 time.monotonic() - started)

    def _rebuild(self, kind: str) -> None:
        """Compact into `kind`, dropping removed vectors. Call WITHOUT holding the lock: the slow
        build runs unlocked, so searches keep being answered by the old index; adds and removes
        made meanwhile go to both (through the journal). Stored positions only grow, so the
        rows present when the rebuild starts can be copied in chunks."""
        with self._lock:
            if self._journal is not None:
                return  # another thread is already rebuilding
            started = time.monotonic()
            n0 = self._store.n
            dead = self._dead()
            live0 = len(self._ids)
            self._journal = []
        try:
            store = _Store(self.dim, live0 + live0 // 4)
            for s in range(0, n0, COPY_CHUNK):
                e = min(n0, s + COPY_CHUNK)  # later positions are in the journal
                with self._lock:
                    ids = self._store.ids[s:e].copy()
                    vectors = self._store.vectors[s:e].copy()
                keep = ~_member(ids, dead)
                store.append(ids[keep], vectors[keep])
            pq = None
            if kind == PQ_RERANK and store.n >= PQ_CENTROIDS:
                pq = _trained_pq(store.vectors, self.dim)
        except BaseException:
            with self._lock:
                self._journal = None
            raise
        with self._lock:
            tombstones: set[int] = set()
            for op, j_ids, j_vectors in self._journal:
                if op == "add":
                    store.append(j_ids, j_vectors)
                    if pq is not None:
                        pq.add(j_vectors)
                    tombstones.difference_update(j_ids.tolist())
                else:
                    tombstones.update(j_ids.tolist())
            self._store, self._pq, self._kind = store, pq, kind
            self._tombstones, self._tomb_sorted = tombstones, None
            self._train_at = PQ_CENTROIDS
            self._journal = None
            self._maybe_train()
            size = store.n
        log.info("index rebuilt as %s with %d vectors in %.1f s", kind, size,
                 time.monotonic() - started)

    # -- changes -----------------------------------------------------------------------------------

    def add(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray) -> int:
        """Add vectors under catalog ids; ids already present are skipped (so replaying the
        catalog's change log twice cannot duplicate anything). Vectors are L2-normalised here.
        Returns how many were added. Growing past exact_max makes the index approximate (trains
        the codebooks, ~1 s; logged)."""
        ids, vectors = checked_rows(ids, vectors, self.dim)
        with self._lock:
            stale = bool(self._tombstones.intersection(ids.tolist()))
        if stale:
            # The old vector of a re-added id is still stored: compact it away first.
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
            self._store.append(ids, vectors)
            if self._pq is not None:
                self._pq.add(vectors)
            if self._journal is not None:
                self._journal.append(("add", ids, vectors))
            self._ids.update(ids.tolist())
            if self._kind == FLAT and len(self._ids) > self.settings.exact_max:
                log.info("index grows past %d vectors: switching from exact to %s",
                         self.settings.exact_max, PQ_RERANK)
                self._kind = PQ_RERANK
                self._train_at = PQ_CENTROIDS
            self._maybe_train()
        return len(ids)

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove ids (unknown ones are ignored). Returns how many were removed."""
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        rebuild = None
        with self._lock:
            gone = [i for i in dict.fromkeys(ids) if i in self._ids]
            if not gone:
                return 0
            self._ids.difference_update(gone)
            if self._journal is not None:
                self._journal.append(("remove", np.asarray(gone, dtype=np.int64), None))
            self._tombstones.update(gone)
            self._tomb_sorted = None
            if (len(self._tombstones) > self.settings.tombstone_ratio * self._store.n
                    and self._journal is None):
                rebuild = (PQ_RERANK if self._kind == PQ_RERANK
                           and len(self._ids) > self.settings.exact_max // 2
                           and len(self._ids) >= PQ_CENTROIDS else FLAT)
        if rebuild is not None:
            self._rebuild(rebuild)
        return len(gone)

    # -- queries -----------------------------------------------------------------------------------

    def _dead(self) -> np.ndarray:
        if self._tomb_sorted is None:
            self._tomb_sorted = np.sort(np.fromiter(self._tombstones, np.int64,
                                                    len(self._tombstones)))
        return self._tomb_sorted

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest by cosine for each query row: (scores (n, k) float32 descending, ids (n, k)
        int64). Missing results (fewer than k vectors) are id -1, score -inf."""
        q = unit_rows(queries, self.dim)
        if k <= 0:
            raise ValueError("k must be positive")
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        with self._lock:
            if not self._ids:
                return scores, ids
            if self._pq is None or k >= self._store.n:
                self._exact_search(q, scores, ids)
            else:
                with _threads(len(q)):
                    self._rerank_search(q, scores, ids)
        scores[ids < 0] = -np.inf
        return scores, ids

    def _exact_search(self, q: np.ndarray, out_scores: np.ndarray, out_ids: np.ndarray) -> None:
        """Brute force over every stored vector (small indexes, untrained codebooks)."""
        stored = self._store.ids
        k = min(out_ids.shape[1], self._store.n)
        if not self._tombstones:
            # FAISS's own exhaustive search: half the time of a product and a partition in numpy
            # for the single queries a scan makes, and no copy of the vectors.
            with _threads(len(q)):
                scores, positions = faiss.knn(q, self._store.vectors, k,
                                              metric=faiss.METRIC_INNER_PRODUCT)
            out_scores[:, :k] = scores
            out_ids[:, :k] = np.where(positions >= 0, stored[np.maximum(positions, 0)], -1)
            return
        dead = ~self._live_mask()
        for s in range(0, len(q), QUERY_CHUNK):
            sims = q[s:s + QUERY_CHUNK] @ self._store.vectors.T
            sims[:, dead] = -np.inf
            for row, row_sims in enumerate(sims, s):
                _put_top(row_sims, np.arange(len(row_sims)), stored, k, out_scores[row],
                         out_ids[row])

    def _live_mask(self) -> np.ndarray:
        return ~_member(self._store.ids, self._dead())

    def _rerank_search(self, q: np.ndarray, out_scores: np.ndarray, out_ids: np.ndarray) -> None:
        """PQ scan for candidates, removed ones dropped, the rest re-scored exactly; a query's
        candidate pool grows until it holds k live vectors (or everything)."""
        k = out_ids.shape[1]
        n = self._store.n
        stored, vectors, dead = self._store.ids, self._store.vectors, self._dead()
        want = min(k, len(self._ids))
        for s in range(0, len(q), QUERY_CHUNK):
            rows = np.arange(s, min(len(q), s + QUERY_CHUNK))
            pool = min(n, max(k, k * self.settings.rerank_factor))
            while len(rows):
                _, positions = self._pq.search(q[rows], pool)
                retry = []
                for row, pos in zip(rows, positions):
                    pos = pos[pos >= 0]
                    if len(dead):
                        live = ~_member(np.take(stored, pos), dead)
                        if live.sum() < want and pool < n:
                            retry.append(row)
                            continue
                        pos = pos[live]
                    # np.take gathers rows ~25% faster than fancy indexing (measured, 8,000 x 256).
                    _put_top(np.take(vectors, pos, axis=0) @ q[row], pos, stored, k,
                             out_scores[row], out_ids[row])
                rows = np.asarray(retry, np.int64)
                pool = min(n, pool * 2)

    def range_search(self, query: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
        """All vectors with cosine >= `min_score` to one query: (scores, ids), best first. Exact
        at every size (a scan of the stored vectors: ~50-100 ms per million)."""
        q = unit_rows(query, self.dim)[0]
        with self._lock:
            if not self._ids:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            sims = self._store.vectors @ q
            hit = np.flatnonzero((sims >= np.float32(min_score)) & self._live_mask())
            scores, ids = sims[hit], self._store.ids[hit].copy()
        order = np.argsort(-scores, kind="stable")
        return scores[order], ids[order]

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
        removed id alive, stored ids and the id set agree, codes aligned with vectors."""
        with self._lock:
            problems = []
            unique, counts = np.unique(self._store.ids, return_counts=True)
            if (counts > 1).any():
                problems.append(f"ids stored more than once: {unique[counts > 1][:10].tolist()}")
            if set(unique.tolist()) - self._tombstones != self._ids:
                problems.append("stored ids and live ids differ")
            if self._tombstones & self._ids:
                problems.append("ids both live and removed")
            if self._pq is not None and self._pq.ntotal != self._store.n:
                problems.append("PQ codes and stored vectors differ in number")
            if self._kind == FLAT and self._pq is not None:
                problems.append("exact index with PQ codes")
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
        # Not under the lock: add() may rebuild, which must run unlocked. Two concurrent
        # catch-ups are harmless (adds skip known ids, removes of absent ids do nothing).
        def add(changes: list[Change]) -> None:
            self.add([c.fingerprint_id for c in changes], np.stack([c.vector for c in changes]))

        applied, covered = replay_changes(catalog, self.model_version, self.covered_seq, add,
                                          lambda fid: self.remove([fid]))
        with self._lock:
            self.covered_seq = max(covered, self.covered_seq)
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
        and BLAKE3) + stored ids + vectors + PQ codes + removed ids. A crash leaves the previous
        file intact."""
        with self._lock, atomic_writer(path) as f:

            def payload(sink: PayloadSink) -> dict[str, int]:
                sink(memoryview(self._store.ids.astype("<i8", copy=False)).cast("B"))
                vectors = self._store.vectors.astype("<f4", copy=False)
                for s in range(0, len(vectors), COPY_CHUNK):
                    sink(memoryview(np.ascontiguousarray(vectors[s:s + COPY_CHUNK])).cast("B"))
                pq_len = 0
                if self._pq is not None:
                    def counted(chunk: bytes) -> int:
                        nonlocal pq_len
                        pq_len += len(chunk)
                        return sink(chunk)

                    write_faiss(self._pq, counted)
                sink(np.fromiter(self._tombstones, np.int64, len(self._tombstones))
                     .astype("<i8").tobytes())
                return {"pq_len": pq_len}

            write_container(f, MAGIC, {"format": FORMAT, "model_version": self.model_version,
                                       "dim": self.dim, "kind": self._kind,
                                       "covered_seq": self.covered_seq,
                                       "count": len(self._ids), "stored": self._store.n},
                            payload)

    @classmethod
    def load(cls, path: Path | str, model_version: str, dim: int = VECTOR_DIM,
             settings: IndexSettings = IndexSettings()) -> VectorIndex:
        """Load and verify a saved index. Raises IndexLoadError saying why it cannot be used
        (missing, truncated, garbage, checksum, old layout, other model version or dimension)."""
        path = Path(path)
        f, header = open_container(
            path, MAGIC, FORMAT, ("dim", "kind", "covered_seq", "count", "stored", "pq_len"),
            "index", {1: f"old index layout (format 1, hnsw graph); the current layout (format "
                         f"{FORMAT}) is rebuilt from the catalog"})
        with f:
            if header["model_version"] != model_version:
                raise IndexLoadError(f"{path}: made for model {header['model_version']!r}, "
                                     f"not {model_version!r}")
            if header["dim"] != dim:
                raise IndexLoadError(f"{path}: dimension {header['dim']}, expected {dim}")
            if header["kind"] not in (FLAT, PQ_RERANK) or (header["kind"] == FLAT
                                                           and header["pq_len"]):
                raise IndexLoadError(f"{path}: unknown index kind {header['kind']!r}")
            size = HEADER_SIZE + header["payload_len"]
            stored = int(header["stored"])
            pq_start = HEADER_SIZE + stored * (8 + 4 * dim)
            tomb_start = pq_start + header["pq_len"]
            if stored < 0 or tomb_start > size or (size - tomb_start) % 8:
                raise IndexLoadError(f"{path}: section lengths do not add up")
            # Headroom for the adds of catch-up and the next hours, at no resident cost.
            index = cls(model_version, dim, settings, expected=stored + stored // 4 + 4096)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    verify_payload(view, header, path)
                    ids = np.frombuffer(view, "<i8", stored, HEADER_SIZE)
                    vectors = np.frombuffer(view, "<f4", stored * dim, HEADER_SIZE + 8 * stored)
                    index._store.append(ids, vectors.reshape(stored, dim))
                    tomb = np.frombuffer(view[tomb_start:], dtype="<i8").astype(np.int64)
                    del ids, vectors
                finally:
                    view.release()
            if header["pq_len"]:
                f.seek(pq_start)
                pq = read_faiss(f, path)
                if not isinstance(pq, faiss.IndexPQFastScan) or pq.d != dim or pq.ntotal != stored:
                    raise IndexLoadError(f"{path}: PQ codes do not match the stored vectors")
                index._pq = pq
        index._kind = header["kind"]
        index._train_at = PQ_CENTROIDS
        index._tombstones = set(tomb.tolist())
        index._ids = set(index._store.ids.tolist()) - index._tombstones
        if len(index._ids) != header["count"]:
            raise IndexLoadError(f"{path}: holds {len(index._ids)} vectors, header says "
                                 f"{header['count']}")
        index.covered_seq = int(header["covered_seq"])
        with index._lock:
            index._maybe_train()  # an approximate index saved before it had enough to train
        return index


def _pq_subquantizers(dim: int) -> int:
    """Sub-quantisers for `dim`: dim / PQ_SUBVECTOR_DIM, or the nearest divisor of dim below."""
    m = max(1, dim // PQ_SUBVECTOR_DIM)
    while dim % m:
        m -= 1
    return m


def _trained_pq(vectors: np.ndarray, dim: int) -> faiss.IndexPQFastScan:
    """A PQ fast-scan index trained on a sample of `vectors` and holding all of them, in order.
    `vectors` (at least PQ_CENTROIDS rows) is only read."""
    pq = faiss.IndexPQFastScan(dim, _pq_subquantizers(dim), 4, faiss.METRIC_INNER_PRODUCT)
    # Small indexes (tests, a library just past exact_max's half) train on fewer points than
    # FAISS recommends; the exact re-ranking makes that harmless, so don't warn on stderr.
    pq.pq.cp.min_points_per_centroid = 1
    rng = np.random.default_rng(len(vectors))
    sample = vectors[np.sort(rng.choice(len(vectors), min(len(vectors), PQ_TRAIN_SAMPLE),
                                        replace=False))]
    with _threads(1):
        pq.train(np.ascontiguousarray(sample))
    for s in range(0, len(vectors), COPY_CHUNK):
        pq.add(np.ascontiguousarray(vectors[s:s + COPY_CHUNK]))
    return pq


def _put_top(scores: np.ndarray, positions: np.ndarray, stored: np.ndarray, k: int,
             out_scores: np.ndarray, out_ids: np.ndarray) -> None:
    """The best k of `scores` (for stored `positions`) into the output rows, best first."""
    k = min(k, len(scores))
    if not k:
        return
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    out_scores[:k] = scores[top]
    out_ids[:k] = np.where(np.isfinite(scores[top]), stored[positions[top]], -1)


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """values in sorted_set, elementwise (binary search: cheap for a few thousand candidates
    against up to 10% of the index)."""
    if not len(sorted_set):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run this thread's FAISS calls on one OpenMP thread (the setting is per calling thread):
    small searches and k-means on 2 shared cores lose more to spinning threads than they gain."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@contextlib.contextmanager
def _threads(queries: int) -> Iterator[None]:
    """OpenMP threads for a search of `queries` vectors."""
    if queries > SINGLE_THREAD_QUERIES:
        yield
        return
    with single_thread():
        yield


def open_index(catalog: Catalog, model_version: str, path: Path | str,
               dim: int = VECTOR_DIM, settings: IndexSettings = IndexSettings(),
               save_rebuilt: bool = True) -> VectorIndex:
    """The index for `model_version`: loaded from `path` and caught up with the catalog, or, when
    the file is missing / corrupt / of an old layout / of another model or dimension / ahead of
    the catalog, rebuilt from the catalog's stored vectors (logged as a warning) and saved."""
    started = time.monotonic()
    index = load_saved(lambda: VectorIndex.load(path, model_version, dim, settings), catalog,
                       path, "index")
    if index is None:
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
