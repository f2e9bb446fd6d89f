"""Index benchmark: vfpd's FAISS index vs brute-force numpy on 256-d vectors.

./dev bench index [--sizes 10000,100000,1000000] [--queries 300] [--data random,clustered]
    [--no-compare] [--rerank 200,400] [--hnsw-max N] [--sweep SIZES]

For each size: add rate, single-query latency p50/p99 (k=10), resident memory of the index,
start-up (load the saved index + catch up 1000 newer catalog fingerprints; warm page cache) and
recall@10 against exact search. Brute-force numpy (matrix product + argpartition) is the
established baseline and the ground truth. Random vectors are the worst case for approximate
search; clustered vectors (groups of near-copies, like a library with duplicates) are also run.
Up to --hnsw-max vectors, FAISS's HNSW graph (L2 over the normalised vectors, vfpd's index
before Nov 2026) is run too, to show why vfpd scans PQ codes instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Single queries are compared on one thread each, as the index runs them (vfpd.index searches
# small batches on one OpenMP thread): a multi-threaded BLAS on this oversubscribed machine made
# numpy's p50 swing from 0.02 to 25 ms at 2k vectors. Bulk adds keep FAISS's OpenMP threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from vfpd.catalog import Catalog  # noqa: E402
from vfpd.fingerprint import FRAME_DIM, VECTOR_DIM, Fingerprint  # noqa: E402
from vfpd.hashing import FileStat, hash_bytes  # noqa: E402
import faiss  # noqa: E402

from vfpd.index import PQ_SUBVECTOR_DIM, IndexSettings, VectorIndex  # noqa: E402

K = 10
CATCH_UP = 1000
"""Fingerprints committed after the index was saved: what a restart typically has to add."""
ID_BASE = 10_000_000
"""Bench vectors get ids above the catalog's, so catch-up adds catalog rows as new ids."""
ADD_BATCH = 50_000
CLUSTER_SIZE = 20
"""Clustered data: groups of 20 near-copies around a centre (noise 0.35 of the centre's norm
gives in-group cosine ~0.9, like re-encodes of one video)."""
CLUSTER_NOISE = 0.35
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 256
"""The HNSW reference: vfpd's former settings (FAISS's usual M for 256-d)."""


@dataclass
class Row:
    size: int
    data: str
    method: str
    add_rate: float | None
    p50_ms: float
    p99_ms: float
    recall: float
    memory_mb: float
    startup_s: float | None
    load_s: float | None = None
    catch_up_s: float | None = None


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(kind: str, n: int, queries: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    if kind == "random":
        base = np.empty((n, VECTOR_DIM), np.float32)
        for s in range(0, n, ADD_BATCH):
            base[s:s + ADD_BATCH] = rng.standard_normal((min(ADD_BATCH, n - s), VECTOR_DIM))
        q = rng.standard_normal((queries, VECTOR_DIM)).astype(np.float32)
        return unit(base), unit(q)
    centres = unit(rng.standard_normal((max(1, n // CLUSTER_SIZE), VECTOR_DIM)).astype(np.float32))
    base = np.empty((n, VECTOR_DIM), np.float32)
    for s in range(0, n, ADD_BATCH):
        m = min(ADD_BATCH, n - s)
        pick = rng.integers(0, len(centres), m)
        base[s:s + m] = centres[pick] + CLUSTER_NOISE / np.sqrt(VECTOR_DIM) * rng.standard_normal(
            (m, VECTOR_DIM))
    # Queries: new near-copies of stored videos (what the daemon asks when a file arrives).
    pick = rng.integers(0, n, queries)
    q = base[pick] + CLUSTER_NOISE / np.sqrt(VECTOR_DIM) * rng.standard_normal(
        (queries, VECTOR_DIM)).astype(np.float32)
    return unit(base), unit(q.astype(np.float32))


def exact_topk(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    out = np.empty((len(queries), K), np.int64)
    for s in range(0, len(queries), 64):
        scores = queries[s:s + 64] @ base.T
        part = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1)
        out[s:s + 64] = np.take_along_axis(part, order, 1)
    return out


def latencies(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray
              ) -> tuple[float, float, np.ndarray]:
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(search(q))
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), np.stack(found)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def numpy_row(size: int, kind: str, base: np.ndarray, queries: np.ndarray,
              truth: np.ndarray) -> Row:
    def search(q: np.ndarray) -> np.ndarray:
        scores = base @ q
        part = np.argpartition(-scores, K)[:K]
        return part[np.argsort(-scores[part])]
    p50, p99, found = latencies(search, queries)
    return Row(size, kind, "numpy brute force", None, p50, p99, recall(found, truth),
               base.nbytes / 2**20, None)


def index_row(size: int, kind: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray,
              settings: IndexSettings, label: str, workdir: Path, startup: bool,
              rerank_values: tuple[int, ...] = ()) -> Row:
    gc.collect()
    before = rss_mb()
    index = VectorIndex("bench", VECTOR_DIM, settings, expected=size)
    t = time.perf_counter()
    for s in range(0, size, ADD_BATCH):
        index.add(np.arange(s, min(size, s + ADD_BATCH)) + ID_BASE, base[s:s + ADD_BATCH])
    add_rate = size / (time.perf_counter() - t)
    memory = rss_mb() - before

    def search(q: np.ndarray) -> np.ndarray:
        return index.search(q, K)[1][0] - ID_BASE
    p50, p99, found = latencies(search, queries)
    if index.kind != "flat":
        # Other candidate pools on the same codes: the recall/latency trade-off behind
        # RERANK_FACTOR.
        for factor in rerank_values:
            index.settings = dataclasses.replace(settings, rerank_factor=factor)
            e50, e99, efound = latencies(search, queries)
            print_row(Row(size, kind, f"vfpd {index.kind} rerank_factor={factor}", None, e50,
                          e99, recall(efound, truth), float("nan"), None))
        index.settings = settings
    startup_s = load_s = catch_up_s = None
    method = f"vfpd {index.kind}{label}"
    if startup:
        path = workdir / f"{size}-{kind}.faiss"
        index.save(path)
        del index
        gc.collect()
        with Catalog(workdir / f"catalog-{size}-{kind}.db") as cat:
            fill_catalog(cat)
            # What open_index does, timed in its two steps.
            t = time.perf_counter()
            loaded = VectorIndex.load(path, "bench", VECTOR_DIM, settings)
            load_s = time.perf_counter() - t
            loaded.catch_up(cat)
            startup_s = time.perf_counter() - t
            catch_up_s = startup_s - load_s
            assert len(loaded) == size + CATCH_UP, "start-up did not catch up"
        path.unlink()
        del loaded
    else:
        del index
    gc.collect()
    return Row(size, kind, method, add_rate, p50, p99, recall(found, truth), memory, startup_s,
               load_s, catch_up_s)


def hnsw_row(size: int, kind: str, base: np.ndarray, queries: np.ndarray,
             truth: np.ndarray) -> Row:
    """FAISS HNSW, L2 over the normalised vectors (the same ranking as cosine), one thread per
    query like vfpd."""
    gc.collect()
    before = rss_mb()
    index = faiss.IndexHNSWFlat(VECTOR_DIM, HNSW_M)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.hnsw.efSearch = HNSW_EF_SEARCH
    t = time.perf_counter()
    for s in range(0, size, ADD_BATCH):
        index.add(base[s:s + ADD_BATCH])
    add_rate = size / (time.perf_counter() - t)
    memory = rss_mb() - before
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        p50, p99, found = latencies(lambda q: index.search(q[None], K)[1][0], queries)
    finally:
        faiss.omp_set_num_threads(threads)
    del index
    gc.collect()
    return Row(size, kind, f"faiss hnsw L2 (M {HNSW_M}, ef {HNSW_EF_SEARCH})", add_rate, p50,
               p99, recall(found, truth), memory, None)


def fill_catalog(cat: Catalog) -> None:
    rng = np.random.default_rng(7)
    vectors = unit(rng.standard_normal((CATCH_UP, VECTOR_DIM)).astype(np.float32))
    with cat.transaction():
        for i, v in enumerate(vectors):
            fp = Fingerprint(v, np.zeros((1, FRAME_DIM), np.float32), np.zeros(1),
                             np.ones(1, bool), 1.0, "bench")
            cat.store_result(f"/bench/{i}.mp4", FileStat(1, i, i, 1), hash_bytes(b"%d" % i),
                             fingerprint=fp)


def exact_sweep(sizes: list[int], queries: int, rng: np.random.Generator) -> list[tuple]:
    """Flat (exact) index latency by size: where it stops being fast enough sets EXACT_MAX."""
    out = []
    base = unit(rng.standard_normal((max(sizes), VECTOR_DIM)).astype(np.float32))
    q = unit(rng.standard_normal((queries, VECTOR_DIM)).astype(np.float32))
    for n in sizes:
        index = VectorIndex("bench", VECTOR_DIM, IndexSettings(exact_max=10**9))
        index.add(np.arange(n), base[:n])
        p50, p99, _ = latencies(lambda v: index.search(v, K)[1][0], q)
        out.append((n, p50, p99))
        del index
    return out


def fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def print_row(r: Row) -> None:
    print(f"| {r.size:,} | {r.data} | {r.method} | {fmt(r.add_rate, ',.0f')} | "
          f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.recall:.3f} | "
          f"{fmt(None if np.isnan(r.memory_mb) else r.memory_mb, ',.0f')} | "
          f"{startup(r)} |", flush=True)


def startup(r: Row) -> str:
    if r.startup_s is None:
        return "–"
    return f"{r.startup_s:.2f} ({r.load_s:.2f} load + {r.catch_up_s:.2f} catch-up)"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="./dev bench index")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--clustered-max", type=int, default=1_000_000,
                        help="largest size also run with clustered vectors (1M doubles the time)")
    parser.add_argument("--data", default="random,clustered")
    parser.add_argument("--rerank", default="",
                        help="extra rerank_factor values to measure on the same index, e.g. 200,400")
    parser.add_argument("--hnsw-max", type=int, default=100_000,
                        help="largest size also run with FAISS HNSW (its 1M build takes ~8 min)")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the other index kind at each size (its build is the slow part)")
    parser.add_argument("--sweep", default="10000,25000,50000,100000,200000",
                        help="sizes for the exact-search latency sweep ('' to skip)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rerank_values = tuple(int(e) for e in args.rerank.split(",") if e)
    rng = np.random.default_rng(2026)
    started = time.monotonic()
    # Rows are printed as they are measured, so a long 1M run shows its progress.
    print(f"Index benchmark: {VECTOR_DIM}-d, k={K}, {args.queries} single queries, start-up = "
          f"load + catch up {CATCH_UP} fingerprints (warm cache); memory = RSS growth.")
    print(f"vfpd's index is exact (flat) up to {IndexSettings().exact_max:,} vectors, above it "
          f"pq-rerank: a scan of {VECTOR_DIM // PQ_SUBVECTOR_DIM} x 4-bit PQ codes per vector "
          f"(FAISS fast-scan) picks {IndexSettings().rerank_factor} x k candidates, re-ranked "
          f"exactly. FAISS {faiss.__version__}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at start.")
    print()
    print("| vectors | data | method | add/s | p50 ms | p99 ms | recall@10 | memory MB | "
          "start-up s |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory(prefix="vfpd-bench-index-") as tmp:
        workdir = Path(tmp)
        for size in sizes:
            for kind in args.data.split(","):
                if kind == "clustered" and size > args.clustered_max:
                    continue
                base, queries = make_data(kind, size, args.queries, rng)
                truth = exact_topk(base, queries)
                print_row(numpy_row(size, kind, base, queries, truth))
                auto = IndexSettings()
                print_row(index_row(size, kind, base, queries, truth, auto, " (auto)", workdir,
                                    startup=True, rerank_values=rerank_values))
                if size <= args.hnsw_max:
                    print_row(hnsw_row(size, kind, base, queries, truth))
                if not args.no_compare:
                    # The other index kind at this size: why the automatic choice is what it is.
                    other = IndexSettings(exact_max=0 if size <= auto.exact_max else 10**9)
                    print_row(index_row(size, kind, base, queries, truth, other, "", workdir,
                                        startup=False))
                del base, queries
                gc.collect()
    sweep = [int(s) for s in args.sweep.split(",") if s]
    if sweep:
        print()
        print("Exact (flat) index, single-query latency by size (sets EXACT_MAX):")
        print()
        print("| vectors | p50 ms | p99 ms |")
        print("|---:|---:|---:|")
        for n, p50, p99 in exact_sweep(sweep, min(args.queries, 200), rng):
            print(f"| {n:,} | {p50:.2f} | {p99:.2f} |")
    print(f"\n(total {time.monotonic() - started:.0f} s, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end)")
    return 0
