"""The library a video is compared with: video index, frame index, the library's background
frame feature, candidate search and verification — one way to score a pair, for the scan (in
memory) and for the daemon (persisted, caught up from the catalog).

This and the catalog are the seams a distributed implementation plugs into (docs/architecture.md
lists the calls). A score depends on the two fingerprints and on what the library holds when the
later of the two arrives (its background, the recurring-content counts); the scan adds files in
walk order and the daemon in job order, which for one folder is the same order, so both give the
same pairs with the same scores.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vfpd.fingerprint import Fingerprint
from vfpd.model.center import video_mean
from vfpd.frame_index import FRAME_CANDIDATES, FrameHits, FrameIndex
from vfpd.index import IndexInfo, VectorIndex
from vfpd.candidates import FRAME_MIN_SIM_FOR_CANDIDATE
from vfpd.matching import (
    BOUND_SLACK,
    NO_MATCH,
    NONE,
    Match,
    MatchSettings,
    centred,
    prepare,
    recurring_weights,
    stack,
    verify,
    verify_many,
)

if TYPE_CHECKING:
    from vfpd.catalog import Catalog, StoredFingerprint

CENTER_SAMPLE = 2000
"""Stored fingerprints a persisted library's background is first estimated from (enough for a
stable mean, quick to read at start-up); every fingerprint added later counts too."""

DEFAULT_CANDIDATES = 50
"""Video-index neighbours verified per new video. The shipped model's video vectors rank copies
high but not always first; 50 verifications cost ~50 ms per new file and keep copies from being
missed (clips of longer videos come through the frame index as well)."""


class FingerprintStore(Protocol):
    """Where the library reads the fingerprints its indexes point at (the catalog, or memory)."""

    def fingerprints_by_ids(self, ids: Iterable[int]) -> dict[int, StoredFingerprint]: ...


class VideoIndex(Protocol):
    """What the library, the pipeline and the daemon use of a video index: vfpd.index.VectorIndex
    (FAISS, the embedded default) or vfpd.milvus_index.MilvusIndex."""

    model_version: str
    covered_seq: int

    def add(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray) -> int: ...
    def remove(self, ids: Iterable[int] | np.ndarray) -> int: ...
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...
    def __len__(self) -> int: ...
    def __contains__(self, fingerprint_id: int) -> bool: ...
    def ids(self) -> np.ndarray: ...
    def info(self) -> IndexInfo: ...
    def catch_up(self, catalog: Catalog) -> int: ...
    def save(self, path: Path | str) -> None: ...

    @property
    def kind(self) -> str: ...


@dataclass(frozen=True)
class LibrarySettings:
    threshold: float
    candidates: int = DEFAULT_CANDIDATES
    match: MatchSettings = MatchSettings()


@dataclass(frozen=True)
class Verified:
    """A stored video verified against a new one."""

    hash: str
    match: Match
    similarity: float  # cosine of the two video vectors
    duplicate: bool  # the library's accept rule (Library.accepts)


class MemoryStore:
    """The scan's fingerprints, held in memory by id."""

    def __init__(self) -> None:
        self._items: dict[int, StoredFingerprint] = {}

    def put(self, item: StoredFingerprint) -> None:
        self._items[item.id] = item

    def fingerprints_by_ids(self, ids: Iterable[int]) -> dict[int, StoredFingerprint]:
        return {i: self._items[i] for i in ids if i in self._items}

    def __len__(self) -> int:
        return len(self._items)


class Library:
    """Candidates and verification over a set of fingerprints of one model version."""

    def __init__(self, model_version: str, settings: LibrarySettings,
                 model_center: np.ndarray | None, index: VideoIndex,
                 frame_index: FrameIndex | None, store: FingerprintStore,
                 background: Iterable[Fingerprint] = ()) -> None:
        """`model_center`: the weights' own background (vfpd/model/center.py), which the frame
        index's stored frames are centred with. `background`: fingerprints already in the library
        that its own background is first estimated from (at most CENTER_SAMPLE are read)."""
        self.model_version = model_version
        self.settings = settings
        self.model_center = model_center
        self.index = index
        self.frame_index = frame_index
        self.store = store
        self._lock = threading.Lock()
        self._sum: np.ndarray | None = None
        self._videos = 0
        for i, fp in enumerate(background):
            if i >= CENTER_SAMPLE:
                break
            self._count(fp)

    @classmethod
    def in_memory(cls, model_version: str, settings: LibrarySettings,
                  model_center: np.ndarray | None) -> Library:
        return cls(model_version, settings, model_center, VectorIndex(model_version),
                   FrameIndex(model_version, center=model_center), MemoryStore())

    # -- the library's background ---------------------------------------------------------------------

    def _count(self, fp: Fingerprint) -> None:
        m = video_mean(fp)
        if m is not None:
            with self._lock:
                self._sum = m if self._sum is None else self._sum + m
                self._videos += 1

    def center(self, extra: Fingerprint | None = None) -> np.ndarray | None:
        """The background removed before frames are compared: the mean over the library's videos
        of each video's mean informative frame feature, counting `extra` (a video not yet in the
        library) as one more. What a library's footage shares says nothing about a pair of it: a
        folder of one camera's clips has that camera's view as its background."""
        m = video_mean(extra) if extra is not None else None
        with self._lock:
            total, n = self._sum, self._videos
        if m is not None:
            total, n = (m if total is None else total + m), n + 1
        return None if total is None else (total / n).astype(np.float32)

    # -- what counts --------------------------------------------------------------------------------

    def accepts(self, m: Match) -> bool:
        """The one accept rule: the score reaches the threshold and the alignment found footage in
        common (a match with no segment is no duplicate, whatever its score)."""
        return m.score >= self.settings.threshold and m.kind != NONE

    def update(self, settings: LibrarySettings) -> None:
        with self._lock:
            self.settings = settings

    # -- scoring ------------------------------------------------------------------------------------

    def _weights(self, fp: Fingerprint, hits: FrameHits | None) -> np.ndarray | None:
        """Per-frame weights of the video being asked about: lower for frames many stored videos
        share (matching.recurring_weights)."""
        if hits is None:
            return None
        counts = hits.shared(len(fp.timestamps), FRAME_MIN_SIM_FOR_CANDIDATE)
        return recurring_weights(counts, self.settings.match)

    @staticmethod
    def _transferred(a_centred: np.ndarray, a_weights: np.ndarray | None,
                     bs: Sequence[Fingerprint], center: np.ndarray | None
                     ) -> list[np.ndarray | None]:
        """Each stored video's frame weights: each frame takes the weight of its most similar
        frame of the new video (`a_centred`: all its frames, centred) when they show the same
        picture, else full weight, so recurring content weighs the same on both sides of a
        pair. One product for all of bs."""
        lengths = [len(b.timestamps) for b in bs]
        if a_weights is None or len(a_centred) == 0 or not sum(lengths):
            return [None] * len(bs)
        fb = centred(np.concatenate([np.asarray(b.frame_features, np.float32) for b in bs]),
                     center)
        sim = fb @ a_centred.T
        best = sim.argmax(axis=1)
        same = sim[np.arange(len(fb)), best] >= FRAME_MIN_SIM_FOR_CANDIDATE
        weights = np.where(same, a_weights[best], 1.0)
        parts = np.split(weights, np.cumsum(lengths)[:-1])
        return [w if n else None for w, n in zip(parts, lengths)]

    def score(self, a: Fingerprint, b: Fingerprint, hits: FrameHits | None = None,
              center: np.ndarray | None = None) -> Match:
        """Verify `a` (the new video, or the one asked about) against stored `b`, both in the
        library or `center` given (the background counting `a`)."""
        center = self.center() if center is None else center
        weights = self._weights(a, hits if hits is not None else self._lookup(a))
        a_centred = centred(np.asarray(a.frame_features, np.float32), center)
        return verify(a, b, self.settings.match, weights,
                      self._transferred(a_centred, weights, [b], center)[0], center)

    def _lookup(self, fp: Fingerprint) -> FrameHits | None:
        return self.frame_index.lookup(fp) if self.frame_index is not None else None

    # -- candidates and verification ------------------------------------------------------------------

    def verified(self, fp: Fingerprint, exclude_hash: str | None = None, k: int | None = None,
                 at_least: float = 0.0) -> list[Verified]:
        """Every candidate of fp verified, best first: the k (default: the settings') nearest
        videos by vector plus the FRAME_CANDIDATES whose frames resemble fp's most (clips of
        longer videos). `exclude_hash`: fp's own content, never its own match. `at_least`: a
        candidate that provably scores less is not aligned (matching.verify), its score 0."""
        return self._results(fp, self._verify(fp, exclude_hash, k, at_least))

    def duplicates(self, fp: Fingerprint, exclude_hash: str | None = None) -> list[Verified]:
        """The stored videos fp duplicates, by the accept rule."""
        return self._results(fp, [(sf, m) for sf, m in self._verify(
            fp, exclude_hash, None, self.settings.threshold) if self.accepts(m)])

    def _results(self, fp: Fingerprint, verified: list[tuple[StoredFingerprint, Match]]
                 ) -> list[Verified]:
        """Verified records of (stored video, match) pairs, best first."""
        if not verified:
            return []
        sims = np.stack([np.asarray(sf.fingerprint.vector, np.float32) for sf, _ in verified]
                        ) @ np.asarray(fp.vector, np.float32)
        out = [Verified(sf.hash, m, float(sim), self.accepts(m))
               for (sf, m), sim in zip(verified, sims)]
        out.sort(key=lambda v: (-v.match.score, v.hash))
        return out

    def _verify(self, fp: Fingerprint, exclude_hash: str | None, k: int | None,
                at_least: float) -> list[tuple[StoredFingerprint, Match]]:
        """verified()'s candidates and their matches, in the order they were found."""
        settings = self.settings
        k = settings.candidates if k is None else k
        ids: list[int] = []
        if len(self.index):
            _, found = self.index.search(np.asarray(fp.vector, np.float32)[None], k + 1)
            ids = [int(i) for i in found[0] if i >= 0]
        hits = self._lookup(fp)
        if hits is not None:
            seen = set(ids)
            ids += [i for i, _ in hits.candidates(FRAME_CANDIDATES + 1,
                                                  self.frame_index.settings.vote_min_sim)
                    if i not in seen]
        stored = self.store.fingerprints_by_ids(ids)
        known = exclude_hash is not None and any(  # a stored content asked about again
            sf.hash == exclude_hash for sf in stored.values())
        center = self.center(None if known else fp)
        weights = self._weights(fp, hits)  # fp's, the same against every candidate
        prepared = prepare(fp, weights, center)
        fp_centred = centred(np.asarray(fp.frame_features, np.float32), center)
        match = self.settings.match
        eligible = [sf for sf in (stored.get(i) for i in ids)
                    if sf is not None and sf.hash != exclude_hash
                    and sf.fingerprint.model_version == fp.model_version]
        fps = [sf.fingerprint for sf in eligible]
        stacked = stack(fps, center)
        # Most candidates are other footage: one product over all of them bounds what each can
        # score, and only those that can reach at_least are aligned.
        reach = np.flatnonzero(stacked.bounds(prepared, len(eligible), match, weights)
                               >= at_least - BOUND_SLACK if at_least > 0
                               else np.ones(len(eligible), bool)).tolist()
        transferred = self._transferred(fp_centred, weights, [fps[i] for i in reach], center)
        matches = [NO_MATCH] * len(eligible)
        for i, m in zip(reach, verify_many(prepared, [
                prepare(fps[i], w, center, stacked.part(i))
                for i, w in zip(reach, transferred)], match, at_least)):
            matches[i] = m
        return list(zip(eligible, matches))

    # -- keeping it current ---------------------------------------------------------------------------

    def add(self, fid: int, content_hash: str, fp: Fingerprint) -> None:
        """Add a fingerprint held in memory (the scan; the daemon's come through catch_up)."""
        from vfpd.catalog import StoredFingerprint

        if not isinstance(self.store, MemoryStore):
            raise TypeError("a library backed by the catalog is filled by catch_up()")
        self.store.put(StoredFingerprint(fid, content_hash, fp))
        self.index.add([fid], np.asarray(fp.vector, np.float32)[None])
        if self.frame_index is not None:
            self.frame_index.add([(fid, fp)])
        self._count(fp)

    def catch_up(self, catalog: Catalog, new: Fingerprint | None = None) -> None:
        """Apply the catalog's fingerprint changes to both indexes (the daemon); `new`, the
        fingerprint just committed, counts in the library's background."""
        self.index.catch_up(catalog)
        if self.frame_index is not None:
            self.frame_index.catch_up(catalog)
        if new is not None:
            self._count(new)

    def save(self, index_path: Path, frame_index_path: Path) -> None:
        """Write both indexes atomically (each records the catalog state it covers)."""
        self.index.save(index_path)
        if self.frame_index is not None:
            self.frame_index.save(frame_index_path)
