"""Frame index benchmark: finding the source of a clip among N synthetic videos by their frames.

./dev bench frame_index [--sizes 10000,100000] [--queries 200] [--exact-max 20000]

Synthetic library: videos of 10-512 frames (1 frame/s: 10 s to 8.5 min, most of them short),
made of shots of 3-8 alike frames (in-shot cosine ~0.92, unrelated across cuts). Queries are
13-frame clips cut from random videos at random offsets, each frame perturbed to cosine ~0.9 with
its original (a re-encode). For each size: add rate (frame selection included), resident memory
and bytes per video, query latency p50/p99 for one clip (what the daemon asks per new file), the
clip's source among the FRAME_CANDIDATES best-voted videos (recall), and save + load time. Exact
search over the same stored frames (FAISS IndexFlatIP, the established baseline and the ceiling for
recall) runs up to --exact-max videos; above it its memory (512 bytes a frame) is the point.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from bench.index import rss_mb
from vfpd.fingerprint import FRAME_DIM, VECTOR_DIM, Fingerprint
from vfpd.frame_index import (
    FRAME_CANDIDATES,
    SLOT_BITS,
    FrameIndex,
    FrameIndexSettings,
    select_frames,
    tally,
)

CLIP_FRAMES = 13
COPY_NOISE = 0.04
"""Per-dimension noise on a unit 128-d frame: cosine ~0.9 with the original (a re-encode)."""
SHOT_NOISE = 0.3
LONG_QUERY = 400
"""Frames of a long new video (~7 min at 1 frame/s) for the second latency column."""
MODEL = "bench"


@dataclass
class Row:
    videos: int
    method: str
    frames: int
    add_rate: float | None
    memory_mb: float
    bytes_per_video: float
    p50_ms: float
    p99_ms: float
    recall_top1: float
    recall_top: float
    recall_long: float
    save_s: float | None = None
    load_s: float | None = None
    loaded_mb: float | None = None
    long_query_ms: float | None = None


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def video_length(rng: np.random.Generator) -> int:
    """Frames of one video: 60 % under a minute, 30 % 1-5 min, 10 % 5-8.5 min."""
    r = rng.random()
    if r < 0.6:
        return int(rng.integers(10, 60))
    if r < 0.9:
        return int(rng.integers(60, 300))
    return int(rng.integers(300, 513))


def footage(rng: np.random.Generator, n: int) -> np.ndarray:
    shots = []
    total = 0
    while total < n:
        length = int(rng.integers(3, 9))
        shots.append(np.repeat(rng.standard_normal((1, FRAME_DIM)), length, axis=0))
        total += length
    x = np.concatenate(shots)[:n]
    return unit(x + SHOT_NOISE * rng.standard_normal(x.shape))


def fingerprint(feats: np.ndarray) -> Fingerprint:
    n = len(feats)
    return Fingerprint(vector=np.zeros(VECTOR_DIM, np.float32), frame_features=feats,
                       timestamps=np.arange(n, dtype=np.float64), informative=np.ones(n, bool),
                       duration=float(n), model_version=MODEL)


def clip_query(rng: np.random.Generator, feats: np.ndarray) -> Fingerprint:
    start = int(rng.integers(0, len(feats) - CLIP_FRAMES + 1))
    x = feats[start:start + CLIP_FRAMES]
    return fingerprint(unit(x + COPY_NOISE * rng.standard_normal(x.shape)))


def measure(videos: int, n_queries: int, exact: bool, rng: np.random.Generator,
            settings: FrameIndexSettings) -> list[Row]:
    seeds = rng.integers(0, 2**63, videos)
    gc.collect()
    before = rss_mb()
    index = FrameIndex(MODEL, settings)  # frames are generated centred: no background
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(FRAME_DIM)) if exact else None
    lengths = np.zeros(videos, np.int64)
    t = time.perf_counter()
    batch = []
    for fid in range(videos):
        vrng = np.random.default_rng(int(seeds[fid]))
        lengths[fid] = max(video_length(vrng), CLIP_FRAMES)
        batch.append((fid, fingerprint(footage(vrng, int(lengths[fid])))))
        if len(batch) == 256 or fid == videos - 1:
            index.add(batch)
            batch = []
    add_s = time.perf_counter() - t
    memory = rss_mb() - before
    if flat is not None:
        for fid in range(videos):
            vrng = np.random.default_rng(int(seeds[fid]))
            video_length(vrng)
            feats = select_frames(fingerprint(footage(vrng, int(lengths[fid]))), None, settings)
            flat.add_with_ids(feats, (fid << SLOT_BITS) + np.arange(len(feats)))
    queries = []
    for _ in range(n_queries):
        src = int(rng.integers(0, videos))
        vrng = np.random.default_rng(int(seeds[src]))
        video_length(vrng)
        queries.append((src, clip_query(rng, footage(vrng, int(lengths[src])))))

    def run(search) -> tuple[float, float, float, float, float]:
        times, top1, top, long_hits, long_n = [], 0, 0, 0, 0
        for src, q in queries:
            t0 = time.perf_counter()
            found = [fid for fid, _ in search(q)]
            times.append(time.perf_counter() - t0)
            top1 += bool(found) and found[0] == src
            top += src in found
            if lengths[src] >= 300:
                long_n += 1
                long_hits += src in found
        ms = np.array(times) * 1e3
        return (float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), top1 / len(queries),
                top / len(queries), long_hits / max(long_n, 1))

    rows = []
    p50, p99, r1, rk, rl = run(lambda q: index.candidates(q, FRAME_CANDIDATES))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "frames.faiss"
        t = time.perf_counter()
        index.save(path)
        save_s = time.perf_counter() - t
        gc.collect()
        rss = rss_mb()
        t = time.perf_counter()
        loaded = FrameIndex.load(path, MODEL, settings)
        load_s = time.perf_counter() - t
        loaded_mb = rss_mb() - rss
        del loaded
        size = path.stat().st_size
    # A new video of LONG_QUERY frames asks with QUERY_MAX_FRAMES of them.
    long_times = []
    for _ in range(max(5, n_queries // 10)):
        q = fingerprint(footage(rng, LONG_QUERY))
        t = time.perf_counter()
        index.candidates(q, FRAME_CANDIDATES)
        long_times.append(time.perf_counter() - t)
    rows.append(Row(videos, f"vfpd {index.kind}", index.frames, videos / add_s, memory,
                    size / videos, p50, p99, r1, rk, rl, save_s, load_s, loaded_mb,
                    float(np.median(long_times)) * 1e3))
    if flat is not None:
        def exact_search(q: Fingerprint) -> list[tuple[int, float]]:
            feats = unit(q.frame_features)
            sims, ids = flat.search(feats, settings.neighbours_per_frame)
            votes = tally(sims, ids, settings.vote_min_sim)
            return sorted(votes.items(), key=lambda kv: -kv[1])[:FRAME_CANDIDATES]

        faiss.omp_set_num_threads(1)
        p50, p99, r1, rk, rl = run(exact_search)
        rows.append(Row(videos, "exact IndexFlatIP", int(flat.ntotal), None,
                        flat.ntotal * (FRAME_DIM * 4 + 8) / 2**20,
                        flat.ntotal * (FRAME_DIM * 4 + 8) / videos, p50, p99, r1, rk, rl))
        faiss.omp_set_num_threads(os.cpu_count() or 1)
    del index, flat
    gc.collect()
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="./dev bench frame_index")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-max", type=int, default=20_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = FrameIndexSettings()
    rng = np.random.default_rng(2026)
    print(f"Frame index benchmark: {args.queries} clip queries of {CLIP_FRAMES} frames; "
          f"{settings.base_frames_per_video} frames kept per video (beyond 16 min one per "
          f"{settings.seconds_per_stored_frame:.0f} s, at most {settings.max_frames_per_video}); "
          f"exact up to "
          f"{settings.flat_max_frames:,} frames, then IVF{settings.nlist},PQ{settings.pq_m}x"
          f"{settings.pq_bits} (nprobe {settings.nprobe}). FAISS {faiss.__version__}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; queries on one thread.")
    print()
    print(f"| videos | method | frames stored | add videos/s | RSS growth MB | file bytes/video | "
          f"p50 ms | p99 ms | source top-1 | source in top {FRAME_CANDIDATES} | "
          f"same, sources >= 5 min | save s | load s | MB after load | "
          f"p50 ms, {LONG_QUERY}-frame video |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",") if s):
        for r in measure(size, args.queries, size <= args.exact_max, rng, settings):
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            print(f"| {r.videos:,} | {r.method} | {r.frames:,} | {fmt(r.add_rate, ',.0f')} | "
                  f"{r.memory_mb:,.0f} | {r.bytes_per_video:,.0f} | {r.p50_ms:.1f} | "
                  f"{r.p99_ms:.1f} | {r.recall_top1:.3f} | {r.recall_top:.3f} | "
                  f"{r.recall_long:.3f} | {fmt(r.save_s, '.1f')} | {fmt(r.load_s, '.1f')} | "
                  f"{fmt(r.loaded_mb, ',.0f')} | {fmt(r.long_query_ms, ',.0f')} |",
                  flush=True)
    return 0
