"""Scale benchmark (issue 18): the video index in Milvus Lite against vfpd's FAISS index.

./dev bench scale [--sizes 100000,1000000] [--queries 200] [--data random,clustered]

For each size: vectors added per second, single-query latency p50/p99 (k=10), resident memory
the index adds to the process (Milvus Lite serves from inside it) and recall@10 against exact
search (numpy, the ground truth), for vfpd's FAISS index (exact up to 50k vectors, then PQ
codes re-ranked) and `[index] backend = "milvus"` (vfpd.milvus_index, a FLAT collection) on the
same vectors. Ray's fan-out, the other half of issue 18's scale benchmark, needs the Ray engine,
which vfpd does not have yet.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.index import (
    ADD_BATCH,
    ID_BASE,
    K,
    Row,
    exact_topk,
    index_row,
    latencies,
    make_data,
    print_row,
    recall,
    rss_mb,
)
from vfpd.catalog import Catalog
from vfpd.index import IndexSettings


def milvus_row(size: int, kind: str, base: np.ndarray, queries: np.ndarray,
               truth: np.ndarray, workdir: Path) -> Row:
    """The milvus backend as the daemon opens it (a Milvus Lite file), filled by add()."""
    from vfpd.service.video_indexes import MilvusIndexes

    gc.collect()
    before = rss_mb()
    indexes = MilvusIndexes(str(workdir / f"milvus-{size}-{kind}.db"), "bench")
    try:
        with Catalog(workdir / f"catalog-{size}-{kind}.db") as catalog:
            index = indexes.open(catalog, "bench")
        t = time.perf_counter()
        for s in range(0, size, ADD_BATCH):
            index.add(np.arange(s, min(size, s + ADD_BATCH)) + ID_BASE, base[s:s + ADD_BATCH])
        index.save()
        add_rate = size / (time.perf_counter() - t)
        memory = rss_mb() - before

        def search(q: np.ndarray) -> np.ndarray:
            return index.search(q, K)[1][0] - ID_BASE
        p50, p99, found = latencies(search, queries)
    finally:
        indexes.close()
    return Row(size, kind, "milvus lite (flat)", add_rate, p50, p99, recall(found, truth),
               memory, None)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench scale", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--data", default="random,clustered")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    print("| vectors | data | index | add (vectors/s) | p50 ms | p99 ms | recall@10 | memory MB "
          "| start-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="vfpd-bench-scale-") as tmp:
        for size in (int(x) for x in args.sizes.split(",")):
            for kind in args.data.split(","):
                base, queries = make_data(kind, size, args.queries, rng)
                truth = exact_topk(base, queries)
                for row in (index_row(size, kind, base, queries, truth, IndexSettings(), "",
                                      Path(tmp), startup=False),
                            milvus_row(size, kind, base, queries, truth, Path(tmp))):
                    print_row(row)
                del base, queries, truth
                gc.collect()
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")
    return 0
