"""The frame-level candidate index: a few informative frame features per video, so that a clip cut
out of a longer video (whose whole-video vector lies far from the long video's) is still verified.

A cache derived from the catalog like vfpd.index (atomic saves that record the catalog
sequence, catch-up from its change log, rebuilt from stored fingerprints, never by decoding).
Exact while small, an IVF-PQ index (16 bytes a frame) above a measured size.
"""

from __future__ import annotations

import logging
import math
import mmap
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from vfpd.atomic import atomic_writer
from vfpd.fingerprint import FRAME_DIM, Fingerprint
from vfpd.index import replay_changes, single_thread
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
from vfpd.matching import centred

if TYPE_CHECKING:
    from vfpd.catalog import Catalog, Change

log = logging.getLogger(__name__)

FLAT = "flat"
IVFPQ = "ivfpq"
MAGIC = b"VFPDFRM\x01"
"""vfpd.index's file container with its own magic, so neither loader ever takes the other's
file."""
FORMAT = 1
HEADER_KEYS = ("dim", "kind", "covered_seq", "count", "frames", "center_videos", "has_center",
               "faiss_len")

BASE_FRAMES_PER_VIDEO = 64
"""Frames kept per video up to 16 minutes. The memory budget decides it: IVF-PQ costs 16 bytes of
code + 8 of id per frame, so 64 frames are 1.5 KB a video, 1.5 GB for 1M videos (issue 4's budget
for the video index is 2 GB at 1M). Videos up to ~1 min (at the sampler's 1 frame/s, after
dropping repeated frames of static shots) keep every frame; a 10-minute one one every ~9 s."""

SECONDS_PER_STORED_FRAME = 15.0
"""Longer videos keep one frame per 15 s (beyond the base 64): a clip of 30 s holds two stored
frames wherever it was cut. A 40-minute video keeps 160 frames (3.8 KB), i.e. long videos cost
more, in proportion; a library of 1M videos of which a tenth are films still fits ~2 GB."""

MAX_FRAMES_PER_VIDEO = 256
"""The hard cap (6 KB a video): reached at 64 minutes, where the sampler itself thins out to one
frame per 8-16 s (media.SamplingSettings.max_frames = 512)."""

SLOT_BITS = 8
"""A stored frame's FAISS id is (fingerprint id << SLOT_BITS) | slot: the owner is a shift away,
and removing a video removes a known, small set of ids. 2**8 = 256 = MAX_FRAMES_PER_VIDEO."""

STATIC_SIM = 0.95
"""Consecutive informative frames at least this similar (centred cosine) are one static shot and
kept once: they would spend the per-video budget on a picture that is already stored. Aligned
frames of re-encoded copies score 0.84-0.97 (matching.MatchSettings), so the frames dropped
are closer to each other than a copy is to its original."""

QUERY_MAX_FRAMES = 256
"""Frames of the new video that ask the index (evenly spread when it has more): bounds the query
cost of a long new video while keeping a frame every ~10 s of a 40-minute one."""

NEIGHBOURS_PER_FRAME = 16
"""Stored frames retrieved per query frame. The stored side has no run of near-identical
neighbouring frames (STATIC_SIM), so 16 reaches past a handful of copies and look-alikes."""

VOTE_MIN_SIM = 0.5
"""A retrieved frame votes for its video when its (approximate) similarity is at least this.
candidates.FRAME_MIN_SIM_FOR_CANDIDATE is 0.6 on exact features; PQ codes are off by up to ~0.1,
and verification, not this vote, decides."""

FRAME_CANDIDATES = 16
"""Videos with the most votes that are verified in addition to the video-vector neighbours: a
clip has one source and a few copies of it; verification costs ~1 ms each."""

FLAT_MAX_FRAMES = 131_072
"""Up to this many stored frames (~2,000 videos of 64) the index is exact (IndexFlatIP, 512 bytes
a frame, 64 MB at the limit; a query of 64 frames scans 1e9 multiply-adds, ~0.1 s). Above it,
IVF-PQ: trained once on the frames stored so far, then incremental."""

IVF_NLIST = 1024
"""Inverted lists of the IVF-PQ index. k-means needs ~40 training points per list (FAISS warns
below 39): the 131k frames present at the switch train 1024 lists well. At 1M videos (64M frames)
a list holds ~60k frames; see IVF_NPROBE for what that costs."""

IVF_NPROBE = 16
"""Lists searched per query frame. A copy's frame lies in the same or a neighbouring coarse cell as
its original; 16 of 1024 lists scans 1.6 % of the codes (measured in bench/frame_index.py)."""

PQ_M = 16
"""PQ sub-quantisers (8 dims each, 8 bits): 16 bytes a frame. 8 would halve it but blur
similarities so much that copies no longer stand out of a large library; 32 doubles memory."""

PQ_BITS = 8
"""Bits per PQ sub-quantiser code (256 centroids of 8 dims each): the usual setting; fewer bits
lose more than fewer sub-quantisers."""

TRAIN_SAMPLE = 65_536
"""Frames used to train the IVF-PQ quantisers (64 per list: more only slows k-means down on the
2-core target machine)."""

KMEANS_ITERATIONS = 10
"""k-means iterations for the coarse and the PQ quantisers. FAISS's default 25 mostly refines
centroids that candidate retrieval does not need exact; 10 trains 65k frames in ~5 s on one core.
(FAISS calls run on one thread here: on the shared 2-core machine two OpenMP threads made
training 2-10x slower, waiting for each other.)"""

FETCH_BATCH = 256
"""Fingerprints read from the catalog per query during catch-up and rebuild (frame features are
~256 bytes a frame: bounded memory per batch)."""


class BuildCancelled(Exception):
    """A build from the catalog was asked to stop (the daemon is shutting down)."""


@dataclass(frozen=True)
class FrameIndexSettings:
    base_frames_per_video: int = BASE_FRAMES_PER_VIDEO
    seconds_per_stored_frame: float = SECONDS_PER_STORED_FRAME
    max_frames_per_video: int = MAX_FRAMES_PER_VIDEO
    static_sim: float = STATIC_SIM
    query_max_frames: int = QUERY_MAX_FRAMES
    neighbours_per_frame: int = NEIGHBOURS_PER_FRAME
    vote_min_sim: float = VOTE_MIN_SIM
    flat_max_frames: int = FLAT_MAX_FRAMES
    nlist: int = IVF_NLIST
    nprobe: int = IVF_NPROBE
    pq_m: int = PQ_M
    pq_bits: int = PQ_BITS
    train_sample: int = TRAIN_SAMPLE

    def __post_init__(self) -> None:
        if not 1 <= self.base_frames_per_video <= self.max_frames_per_video <= 1 << SLOT_BITS:
            raise ValueError("need 1 <= base_frames_per_video <= max_frames_per_video <= "
                             f"{1 << SLOT_BITS}")
        if FRAME_DIM % self.pq_m:
            raise ValueError(f"pq_m must divide {FRAME_DIM}")


@dataclass(frozen=True)
class FrameIndexInfo:
    """What `vfpctl status` shows about the frame index."""

    kind: str
    videos: int
    frames: int
    model_version: str
    covered_seq: int
    bytes_per_frame: int

    def to_json(self) -> dict[str, object]:
        return {"type": self.kind, "videos": self.videos, "frames": self.frames,
                "bytes_per_frame": self.bytes_per_frame,
                "memory_bytes": self.frames * self.bytes_per_frame,
                "covered_seq": self.covered_seq}


# -- pure helpers --------------------------------------------------------------------------------

def _even(n: int, cap: int) -> np.ndarray:
    """Indices of at most `cap` of n items, spread evenly from the first to the last."""
    if n <= cap:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, cap)).astype(np.int64))


def frame_budget(duration: float, settings: FrameIndexSettings = FrameIndexSettings()) -> int:
    """How many frames a video of `duration` seconds may store."""
    by_time = math.ceil(max(duration, 0.0) / settings.seconds_per_stored_frame)
    return min(settings.max_frames_per_video, max(settings.base_frames_per_video, by_time))


def select_frames(fp: Fingerprint, center: np.ndarray | None,
                  settings: FrameIndexSettings = FrameIndexSettings()) -> np.ndarray:
    """The frames a video stores: informative ones, centred, one per static shot, at most
    frame_budget(duration) spread evenly over the video. (n, FRAME_DIM) float32."""
    rows = np.flatnonzero(np.asarray(fp.informative, bool))
    feats = centred(np.asarray(fp.frame_features)[rows], center)
    if len(feats) == 0:
        return feats
    keep = [0]
    for i in range(1, len(feats)):
        if float(feats[i] @ feats[keep[-1]]) < settings.static_sim:
            keep.append(i)
    kept = feats[keep]
    return np.ascontiguousarray(kept[_even(len(kept), frame_budget(fp.duration, settings))])


def query_rows(fp: Fingerprint, settings: FrameIndexSettings = FrameIndexSettings()
               ) -> np.ndarray:
    """The rows of a video's frames that ask the index: informative ones, evenly thinned."""
    rows = np.flatnonzero(np.asarray(fp.informative, bool))
    return rows[_even(len(rows), settings.query_max_frames)]


def tally(sims: np.ndarray, ids: np.ndarray, min_sim: float) -> dict[int, float]:
    """Votes per video (fingerprint id): each query frame gives each video its best similarity
    among the retrieved frames of that video, when at least `min_sim`."""
    ok = (ids >= 0) & (sims >= min_sim)
    rows, cols = np.nonzero(ok)
    if len(rows) == 0:
        return {}
    owners = ids[rows, cols] >> SLOT_BITS
    s = sims[rows, cols].astype(np.float64)
    # Best per (query row, owner): sort by similarity, keep the first of each pair.
    order = np.argsort(-s, kind="stable")
    # One number per (query row, owner), ordered as the pairs are (row first): the votes below
    # are summed in that order.
    pairs = rows[order] * (int(owners.max()) + 1) + owners[order]
    _, first = np.unique(pairs, return_index=True)
    best_owner, best_sim = owners[order][first], s[order][first]
    uniq, inverse = np.unique(best_owner, return_inverse=True)
    votes = np.bincount(inverse, weights=best_sim)
    return {int(o): float(v) for o, v in zip(uniq, votes)}


@dataclass(frozen=True)
class FrameHits:
    """What the stored frames answered to one video's query frames: for each query row (a row of
    the video's frames), its neighbours' similarities and ids (owner << SLOT_BITS | slot)."""

    rows: np.ndarray
    sims: np.ndarray
    ids: np.ndarray

    def candidates(self, k: int, min_sim: float, exclude: Iterable[int] = ()
                   ) -> list[tuple[int, float]]:
        """The k owners with the most votes (see tally), most first."""
        if k <= 0:
            return []
        votes = tally(self.sims, self.ids, min_sim)
        for fid in exclude:
            votes.pop(int(fid), None)
        return sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[:k]

    def shared(self, n_frames: int, min_sim: float) -> np.ndarray:
        """For each of the video's n_frames frames, how many stored videos hold a frame at least
        `min_sim` similar (recurring content: intros, logos). A frame that did not ask (thinned
        out of a long video) takes the count of the nearest one that did; one with no informative
        neighbour, 0."""
        counts = np.zeros(n_frames, np.int64)
        if len(self.rows) == 0:
            return counts
        ok = (self.ids >= 0) & (self.sims >= min_sim)
        per_row = np.array([len(np.unique(self.ids[r][ok[r]] >> SLOT_BITS))
                            for r in range(len(self.rows))], np.int64)
        nearest = np.clip(np.searchsorted(self.rows, np.arange(n_frames)), 0, len(self.rows) - 1)
        below = np.clip(nearest - 1, 0, len(self.rows) - 1)
        pick = np.where(np.abs(self.rows[below] - np.arange(n_frames))
                        < np.abs(self.rows[nearest] - np.arange(n_frames)), below, nearest)
        return per_row[pick]


def _slot_ids(fids: Sequence[int]) -> np.ndarray:
    base = np.asarray(fids, np.int64)[:, None] << SLOT_BITS
    return (base + np.arange(1 << SLOT_BITS, dtype=np.int64)[None, :]).ravel()


# -- the index ------------------------------------------------------------------------------------

class FrameIndex:
    """Selected frame features of one model version's videos, keyed by catalog fingerprint id.
    Thread-safe: one lock around FAISS; changes (add, remove, catch-up) are serialised on a
    second one so that the slow switch to IVF-PQ can train while searches go on."""

    def __init__(self, model_version: str, settings: FrameIndexSettings = FrameIndexSettings(),
                 center: np.ndarray | None = None) -> None:
        """`center`: the model's background frame feature (vfpd.library.Library.center); frames
        are stored centred with it, so an index is only valid for one background."""
        self.model_version = model_version
        self.settings = settings
        self.center = None if center is None else np.asarray(center, np.float32).reshape(FRAME_DIM)
        self.covered_seq = 0
        self._lock = threading.RLock()
        self._writer = threading.RLock()
        self._owners: set[int] = set()
        self._kind = FLAT
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(FRAME_DIM))

    # -- changes -----------------------------------------------------------------------------------

    def add(self, items: Iterable[tuple[int, Fingerprint]]) -> int:
        """Store the selected frames of each (fingerprint id, fingerprint); ids already present
        are skipped (replaying the change log twice adds nothing). Returns videos added."""
        id_parts, feat_parts, owners = [], [], []
        with self._writer:
            # _owners only changes under _writer, which this thread holds: read it unlocked.
            batch: set[int] = set()
            for fid, fp in items:
                fid = int(fid)
                if fid < 0:
                    raise ValueError("fingerprint ids must be >= 0")
                if fid in self._owners or fid in batch or fp.model_version != self.model_version:
                    continue
                batch.add(fid)
                owners.append(fid)
                feats = select_frames(fp, self.center, self.settings)
                if len(feats):
                    id_parts.append((fid << SLOT_BITS) + np.arange(len(feats), dtype=np.int64))
                    feat_parts.append(feats)
            if not owners:
                return 0
            with self._lock:
                if id_parts:
                    with single_thread():
                        self._index.add_with_ids(
                            np.ascontiguousarray(np.concatenate(feat_parts)),
                            np.concatenate(id_parts))
                self._owners.update(owners)
                convert = self._kind == FLAT and self._index.ntotal > self.settings.flat_max_frames
            if convert:
                self._to_ivfpq()
        return len(owners)

    def remove(self, fids: Iterable[int]) -> int:
        """Drop every frame of these videos (unknown ids are ignored). Returns videos removed."""
        with self._writer, self._lock:
            gone = [f for f in dict.fromkeys(int(f) for f in fids) if f in self._owners]
            if not gone:
                return 0
            selector = faiss.IDSelectorBatch(_slot_ids(gone))
            self._index.remove_ids(selector)
            self._owners.difference_update(gone)
            return len(gone)

    def _to_ivfpq(self) -> None:
        """Switch from exact to IVF-PQ: train on (a sample of) the frames stored so far without
        the search lock (training takes seconds), then move them over under it."""
        started = time.monotonic()
        with self._lock:
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            vectors = faiss.downcast_index(self._index.index).reconstruct_n(0, self._index.ntotal)
        ivf = self._trained_ivfpq(vectors)
        with single_thread():
            ivf.add_with_ids(vectors, ids)
        with self._lock:
            self._index, self._kind = ivf, IVFPQ
        s = self.settings
        log.info("frame index grows past %d frames: switched to IVF%d,PQ%dx%d in %.1f s",
                 s.flat_max_frames, s.nlist, s.pq_m, s.pq_bits, time.monotonic() - started)

    def _trained_ivfpq(self, vectors: np.ndarray) -> faiss.IndexIVFPQ:
        s = self.settings
        # index_factory hands back the concrete, owning IndexIVFPQ (no downcast: that would
        # make a second, non-owning wrapper).
        index = faiss.index_factory(FRAME_DIM, f"IVF{s.nlist},PQ{s.pq_m}x{s.pq_bits}",
                                    faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors
        if len(vectors) > s.train_sample:
            sample = vectors[np.sort(rng.choice(len(vectors), s.train_sample, replace=False))]
        # Polysemous training (index_factory's default) is a slow annealing that only helps
        # Hamming-distance filtering, which is not used here.
        index.do_polysemous_training = False
        index.cp.niter = index.pq.cp.niter = KMEANS_ITERATIONS
        with single_thread():
            index.train(np.ascontiguousarray(sample))
        index.nprobe = s.nprobe
        return index

    # -- queries -----------------------------------------------------------------------------------

    def lookup(self, fp: Fingerprint) -> FrameHits:
        """Search the stored frames with fp's informative frames (evenly thinned)."""
        rows = query_rows(fp, self.settings)
        q = centred(np.asarray(fp.frame_features)[rows], self.center)
        n = 0
        with self._lock:
            if len(q) and self._index.ntotal:
                n = min(self.settings.neighbours_per_frame, self._index.ntotal)
                with single_thread():
                    sims, ids = self._index.search(q, n)
        if n == 0:
            sims, ids = np.zeros((len(rows), 0), np.float32), np.zeros((len(rows), 0), np.int64)
        return FrameHits(rows, sims, ids)

    def candidates(self, fp: Fingerprint, k: int = FRAME_CANDIDATES,
                   exclude: Iterable[int] = ()) -> list[tuple[int, float]]:
        """The k stored videos whose frames most resemble fp's: [(fingerprint id, votes)], most
        votes first. Votes are summed best similarities, one per query frame."""
        return self.lookup(fp).candidates(k, self.settings.vote_min_sim, exclude)

    def __contains__(self, fid: int) -> bool:
        with self._lock:
            return int(fid) in self._owners

    def __len__(self) -> int:
        with self._lock:
            return len(self._owners)

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def frames(self) -> int:
        with self._lock:
            return int(self._index.ntotal)

    def owners(self) -> np.ndarray:
        """Live fingerprint ids, sorted."""
        with self._lock:
            return np.sort(np.fromiter(self._owners, np.int64, len(self._owners)))

    def stored_ids(self) -> np.ndarray:
        """Every stored frame id (owner << SLOT_BITS | slot), sorted: for consistency checks."""
        with self._lock:
            if self._kind == FLAT:
                ids = faiss.vector_to_array(self._index.id_map)
            else:
                inv = self._index.invlists
                parts = [faiss.rev_swig_ptr(inv.get_ids(i), inv.list_size(i)).copy()
                         for i in range(inv.nlist) if inv.list_size(i)]
                ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            return np.sort(ids.astype(np.int64))

    def info(self) -> FrameIndexInfo:
        with self._lock:
            s = self.settings
            per = FRAME_DIM * 4 + 8 if self._kind == FLAT else (s.pq_m * s.pq_bits + 7) // 8 + 8
            return FrameIndexInfo(self._kind, len(self._owners), int(self._index.ntotal),
                                  self.model_version, self.covered_seq, per)

    # -- catalog ---------------------------------------------------------------------------------

    def catch_up(self, catalog: Catalog) -> int:
        """Apply the catalog's fingerprint changes after covered_seq, in order. Returns changes
        applied."""

        def add(changes: list[Change]) -> None:
            ids = [c.fingerprint_id for c in changes]
            for start in range(0, len(ids), FETCH_BATCH):
                chunk = ids[start:start + FETCH_BATCH]
                stored = catalog.fingerprints_by_ids(chunk)
                # A fingerprint gone since its "add" has a "remove" later in the log.
                self.add((fid, stored[fid].fingerprint) for fid in chunk if fid in stored)

        with self._writer:
            applied, covered = replay_changes(catalog, self.model_version, self.covered_seq, add,
                                              lambda fid: self.remove([fid]))
            with self._lock:
                self.covered_seq = max(covered, self.covered_seq)
            return applied

    @classmethod
    def from_catalog(cls, catalog: Catalog, model_version: str, center: np.ndarray | None,
                     settings: FrameIndexSettings = FrameIndexSettings(),
                     should_stop: Callable[[], bool] | None = None) -> FrameIndex:
        """Build from the fingerprints stored in the catalog, covering the sequence read first
        (changes after it are replayed by catch_up; adds are idempotent). `should_stop` is
        asked between batches; when it says yes, BuildCancelled is raised."""
        started = time.monotonic()
        seq = catalog.sequence()
        index = cls(model_version, settings, center)
        batch: list[tuple[int, Fingerprint]] = []
        for stored in catalog.iter_fingerprints(model_version):
            batch.append((stored.id, stored.fingerprint))
            if len(batch) >= FETCH_BATCH:
                if should_stop is not None and should_stop():
                    raise BuildCancelled(f"frame index build stopped after {len(index)} videos")
                index.add(batch)
                batch = []
        index.add(batch)
        index.covered_seq = seq
        log.info("frame index for model %s built from catalog: %d videos, %d frames (%s) in "
                 "%.1f s", model_version, len(index), index.frames, index.kind,
                 time.monotonic() - started)
        return index

    # -- persistence -----------------------------------------------------------------------------

    def save(self, path: Path | str) -> None:
        """Write atomically in vfpd.index's container: header (model version, kind, covered
        sequence, payload length and BLAKE3) + FAISS payload + owner ids + background."""
        with self._writer, self._lock, atomic_writer(path) as f:

            def payload(sink: PayloadSink) -> dict[str, int]:
                write_faiss(self._index, sink)
                faiss_len = f.tell() - HEADER_SIZE
                sink(self.owners().astype("<i8").tobytes())
                if self.center is not None:
                    sink(self.center.astype("<f4").tobytes())
                return {"faiss_len": faiss_len}

            write_container(f, MAGIC, {
                "format": FORMAT, "model_version": self.model_version,
                "dim": FRAME_DIM, "kind": self._kind, "covered_seq": self.covered_seq,
                "count": len(self._owners), "frames": int(self._index.ntotal),
                "center_videos": 0, "has_center": self.center is not None,
            }, payload)

    @classmethod
    def load(cls, path: Path | str, model_version: str, center: np.ndarray | None,
             settings: FrameIndexSettings = FrameIndexSettings()) -> FrameIndex:
        """Load and verify a saved frame index. Raises IndexLoadError saying why it cannot be
        used (missing, truncated, garbage, checksum, a video index, other model version, frames
        centred on another background than `center`)."""
        path = Path(path)
        f, header = open_container(path, MAGIC, FORMAT, HEADER_KEYS, "frame index")
        with f:
            if header["dim"] != FRAME_DIM:
                raise IndexLoadError(f"{path}: dimension {header['dim']}, expected {FRAME_DIM}")
            if header["model_version"] != model_version:
                raise IndexLoadError(f"{path}: made for model {header['model_version']!r}, "
                                     f"not {model_version!r}")
            count = int(header["count"])
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    verify_payload(view, header, path)
                    rest = bytes(view[HEADER_SIZE + header["faiss_len"]:])
                finally:
                    view.release()
            owners = np.frombuffer(rest[:8 * count], dtype="<i8").astype(np.int64)
            stored_center = (np.frombuffer(rest[8 * count:], dtype="<f4").copy()
                             if header["has_center"] else None)
            if len(owners) != count or (stored_center is not None
                                        and stored_center.shape != (FRAME_DIM,)):
                raise IndexLoadError(f"{path}: payload does not match its header")
            f.seek(HEADER_SIZE)
            raw = read_faiss(f, path)
        kind = header["kind"]
        expected = faiss.IndexIDMap2 if kind == FLAT else faiss.IndexIVFPQ
        if not isinstance(raw, expected) or raw.d != FRAME_DIM:
            raise IndexLoadError(f"{path}: unexpected FAISS index {type(raw).__name__}")
        if raw.ntotal != int(header["frames"]):
            raise IndexLoadError(f"{path}: holds {raw.ntotal} frames, header says "
                                 f"{header['frames']}")
        want = None if center is None else np.asarray(center, np.float32).reshape(FRAME_DIM)
        if (want is None) != (stored_center is None) or (
                want is not None and not np.array_equal(want, stored_center)):
            raise IndexLoadError(f"{path}: its frames are centred on another background "
                                 "(weights from before the model shipped its background)")
        index = cls(model_version, settings, want)
        if kind == IVFPQ:
            raw.nprobe = settings.nprobe
        index._index, index._kind = raw, kind
        index._owners = set(owners.tolist())
        index.covered_seq = int(header["covered_seq"])
        return index


def load_frame_index(catalog: Catalog, model_version: str, center: np.ndarray | None,
                     path: Path | str, settings: FrameIndexSettings = FrameIndexSettings()
                     ) -> FrameIndex | None:
    """The saved frame index for `model_version`, caught up with the catalog; None (with a
    warning saying why) when it is missing / corrupt / of another model / ahead of the catalog
    and must be rebuilt (build_frame_index)."""
    started = time.monotonic()
    index = load_saved(lambda: FrameIndex.load(path, model_version, center, settings), catalog,
                       path, "frame index")
    if index is None:
        return None
    loaded = time.monotonic()
    applied = index.catch_up(catalog)
    log.info("frame index for model %s loaded (%d videos, %d frames, %s) in %.1f s, caught up "
             "%d catalog changes in %.1f s", model_version, len(index), index.frames, index.kind,
             loaded - started, applied, time.monotonic() - loaded)
    return index


def build_frame_index(catalog: Catalog, model_version: str, center: np.ndarray | None,
                      path: Path | str | None, settings: FrameIndexSettings = FrameIndexSettings(),
                      should_stop: Callable[[], bool] | None = None) -> FrameIndex:
    """Build the frame index from the catalog's stored fingerprints, catch up, save to `path`."""
    index = FrameIndex.from_catalog(catalog, model_version, center, settings, should_stop)
    index.catch_up(catalog)
    if path is not None:
        index.save(path)
    return index


def open_frame_index(catalog: Catalog, model_version: str, center: np.ndarray | None,
                     path: Path | str, settings: FrameIndexSettings = FrameIndexSettings()
                     ) -> FrameIndex:
    """The frame index for `model_version`: loaded and caught up, or rebuilt and saved."""
    index = load_frame_index(catalog, model_version, center, path, settings)
    if index is None:
        index = build_frame_index(catalog, model_version, center, path, settings)
    return index
