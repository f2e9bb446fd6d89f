"""Candidate search over a whole set of fingerprints at once (video- and frame-level k-NN, with the
recurring-content weights) and match_all to verify them; the Library searches a video at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np

from vfpd.fingerprint import Fingerprint
from vfpd.index import VectorIndex
from vfpd.matching import Match, MatchSettings, centred, frame_center, recurring_weights, verify

VIDEO_NEIGHBOURS = 10
"""Video-level neighbours retrieved per video. Copies of one video are few in a normal library;
more than this many near copies still end up grouped through the frame-level candidates."""

VIDEO_MIN_SIM = -1.0
"""Video-embedding similarity (centred) below which a neighbour is not a candidate. Off: the
shipped model's video vectors do not yet separate copies from other videos reliably enough to
discard any of the k nearest."""

FRAME_NEIGHBOURS = 24
"""Frame-level neighbours retrieved per informative frame. Enough to see past a video's own
neighbouring frames (static shots) to other videos' frames."""

FRAME_MIN_SIM_FOR_CANDIDATE = 0.6
"""A frame pair at least this similar makes the two videos a candidate (finds clips inside long
videos, whose whole-video embeddings can differ); also the level at which a frame counts as shared
with another video for the recurring-content weights."""


FRAME_EXACT_MAX = 100_000
"""Up to this many informative frames the frame-level k-NN is exact (a flat index: ~1e12 flops at
the limit, seconds to a minute on two cores); above it an HNSW graph keeps the search near-linear
(a scan of 10 000 one-minute videos has 600 000 frames)."""

FRAME_HNSW_M = 32
"""HNSW links per frame: FAISS's usual setting for ~100-d vectors, recall above 0.95 at k=24."""


def _frame_index(dim: int, n: int) -> faiss.Index:
    if n <= FRAME_EXACT_MAX:
        return faiss.IndexFlatIP(dim)
    index = faiss.IndexHNSWFlat(dim, FRAME_HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = 2 * FRAME_NEIGHBOURS
    return index


@dataclass(frozen=True)
class Candidates:
    """Pairs of video indices worth verifying, and per-video recurring-content weights."""

    pairs: list[tuple[int, int]]
    weights: list[np.ndarray] = field(default_factory=list)


def find_candidates(fps: Sequence[Fingerprint], settings: MatchSettings = MatchSettings(),
                    center: np.ndarray | None = None) -> Candidates:
    """Candidate pairs from a video-level k-NN on the 256-d vectors plus a frame-level k-NN on the
    informative frame features (minus `center`, see frame_center()); the frame-level hits also
    count, per frame, how many other videos share it (recurring content)."""
    n = len(fps)
    pairs: set[tuple[int, int]] = set()
    if n < 2:
        return Candidates([], [recurring_weights(np.zeros(len(f.timestamps)), settings)
                               for f in fps])
    stacked = np.stack([f.vector for f in fps]).astype(np.float32)
    # Centred like the frames: video vectors share a common component too.
    vectors = centred(stacked, stacked.mean(axis=0))
    index = VectorIndex(fps[0].model_version, dim=vectors.shape[1], expected=n)
    index.add(np.arange(n), vectors)
    sims, ids = index.search(vectors, min(n, VIDEO_NEIGHBOURS + 1))
    for i in range(n):
        for sim, j in zip(sims[i], ids[i]):
            if j >= 0 and j != i and sim >= VIDEO_MIN_SIM:
                pairs.add((min(i, int(j)), max(i, int(j))))

    owner_parts, row_parts, feat_parts = [], [], []
    for v, f in enumerate(fps):
        rows = np.flatnonzero(f.informative)
        owner_parts.append(np.full(len(rows), v, np.int64))
        row_parts.append(rows)
        feat_parts.append(centred(f.frame_features[rows], center))
    owner = np.concatenate(owner_parts)
    row = np.concatenate(row_parts)
    shared: list[list[set[int]]] = [[set() for _ in range(len(f.timestamps))] for f in fps]
    if len(owner):
        feats = np.ascontiguousarray(np.concatenate(feat_parts), dtype=np.float32)
        frame_index = _frame_index(feats.shape[1], len(feats))
        frame_index.add(feats)
        fsims, fids = frame_index.search(feats, min(len(owner), FRAME_NEIGHBOURS))
        hit = (fids >= 0) & (fsims >= FRAME_MIN_SIM_FOR_CANDIDATE)
        for q, k in zip(*np.nonzero(hit)):
            u, v = int(owner[q]), int(owner[fids[q, k]])
            if u != v:
                shared[u][row[q]].add(v)
                pairs.add((min(u, v), max(u, v)))
    weights = [recurring_weights(np.array([len(s) for s in per_frame]), settings)
               for per_frame in shared]
    return Candidates(sorted(pairs), weights)


def match_all(fps: Sequence[Fingerprint], settings: MatchSettings = MatchSettings()
              ) -> list[tuple[int, int, Match]]:
    """Every candidate pair among fps, verified (including those below any threshold)."""
    center = frame_center(fps)
    cands = find_candidates(fps, settings, center)
    out = []
    for i, j in cands.pairs:
        out.append((i, j, verify(fps[i], fps[j], settings, cands.weights[i], cands.weights[j],
                                 center)))
    return out
