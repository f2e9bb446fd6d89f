"""The library a video is compared with: video index, frame index, the model's background frame
feature, candidate search and verification — one way to score a pair, for the scan (in memory)
and for the daemon (persisted, caught up from the catalog).

This and the catalog are the seams a distributed implementation plugs into (docs/architecture.md
lists the calls). Scores are a pure function of the two fingerprints, the model (its background)
and the recurring-content counts the library holds when the later of the two arrives; the scan
adds files in walk order and the daemon in job order, which for one folder is the same order,
so both give the same pairs with the same scores.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vfpd.fingerprint import Fingerprint
from vfpd.frame_index import FRAME_CANDIDATES, FrameHits, FrameIndex
from vfpd.index import VectorIndex
from vfpd.matching import (
    FRAME_MIN_SIM_FOR_CANDIDATE,
    NONE,
    Match,
    MatchSettings,
    centred,
    recurring_weights,
    verify,
)

if TYPE_CHECKING:
    from vfpd.catalog import Catalog, StoredFingerprint

DEFAULT_CANDIDATES = 50
"""Video-index neighbours verified per new video. The shipped model's video vectors rank copies
high but not always first; 50 verifications cost ~50 ms per new file and keep copies from being
missed (clips of longer videos come through the frame index as well)."""


class FingerprintStore(Protocol):
    """Where the library reads the fingerprints its indexes point at (the catalog, or memory)."""

    def fingerprints_by_ids(self, ids: Iterable[int]) -> dict[int, StoredFingerprint]: ...


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

    def __init__(self, model_version: str, settings: LibrarySettings, center: np.ndarray | None,
                 index: VectorIndex, frame_index: FrameIndex | None,
                 store: FingerprintStore) -> None:
        self.model_version = model_version
        self.settings = settings
        self.center = center
        self.index = index
        self.frame_index = frame_index
        self.store = store
        self._lock = threading.Lock()

    @classmethod
    def in_memory(cls, model_version: str, settings: LibrarySettings,
                  center: np.ndarray | None) -> Library:
        return cls(model_version, settings, center, VectorIndex(model_version),
                   FrameIndex(model_version, center=center), MemoryStore())

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

    def _transferred(self, a: Fingerprint, a_weights: np.ndarray | None, b: Fingerprint
                     ) -> np.ndarray | None:
        """The stored video's frame weights: each frame takes the weight of its most similar
        frame of the new video when they show the same picture, else full weight, so recurring
        content weighs the same on both sides of a pair."""
        if a_weights is None or len(a.timestamps) == 0 or len(b.timestamps) == 0:
            return None
        fa = centred(np.asarray(a.frame_features, np.float32), self.center)
        fb = centred(np.asarray(b.frame_features, np.float32), self.center)
        sim = fb @ fa.T
        best = sim.argmax(axis=1)
        same = sim[np.arange(len(fb)), best] >= FRAME_MIN_SIM_FOR_CANDIDATE
        return np.where(same, a_weights[best], 1.0)

    def score(self, a: Fingerprint, b: Fingerprint, hits: FrameHits | None = None) -> Match:
        """Verify `a` (the new video, or the one asked about) against stored `b`."""
        weights = self._weights(a, hits if hits is not None else self._lookup(a))
        return verify(a, b, self.settings.match, weights, self._transferred(a, weights, b),
                      self.center)

    def _lookup(self, fp: Fingerprint) -> FrameHits | None:
        return self.frame_index.lookup(fp) if self.frame_index is not None else None

    # -- candidates and verification ------------------------------------------------------------------

    def verified(self, fp: Fingerprint, exclude_hash: str | None = None, k: int | None = None
                 ) -> list[Verified]:
        """Every candidate of fp verified, best first: the k (default: the settings') nearest
        videos by vector plus the FRAME_CANDIDATES whose frames resemble fp's most (clips of
        longer videos). `exclude_hash`: fp's own content, never its own match."""
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
        vector = np.asarray(fp.vector, np.float32)
        out: list[Verified] = []
        for i in ids:
            sf = stored.get(i)
            if sf is None or sf.hash == exclude_hash:
                continue
            if sf.fingerprint.model_version != fp.model_version:
                continue
            m = self.score(fp, sf.fingerprint, hits)
            sim = float(vector @ np.asarray(sf.fingerprint.vector, np.float32))
            out.append(Verified(sf.hash, m, sim, self.accepts(m)))
        out.sort(key=lambda v: (-v.match.score, v.hash))
        return out

    def duplicates(self, fp: Fingerprint, exclude_hash: str | None = None) -> list[Verified]:
        """The stored videos fp duplicates, by the accept rule."""
        return [v for v in self.verified(fp, exclude_hash) if v.duplicate]

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

    def catch_up(self, catalog: Catalog) -> None:
        """Apply the catalog's fingerprint changes to both indexes (the daemon)."""
        self.index.catch_up(catalog)
        if self.frame_index is not None:
            self.frame_index.catch_up(catalog)

    def save(self, index_path: Path, frame_index_path: Path) -> None:
        """Write both indexes atomically (each records the catalog state it covers)."""
        self.index.save(index_path)
        if self.frame_index is not None:
            self.frame_index.save(frame_index_path)
