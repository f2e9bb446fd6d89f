"""Jobs from the catalog queue -> hash -> (known hash: path alias) -> isolated decode -> batched
embedding -> one catalog transaction (result, duplicates, outbox, job removal) -> index.

One thread runs the queue; it sleeps on a condition variable when nothing is due, so an idle
daemon spends no CPU here, and it lets the model go after `idle_unload_seconds` without work.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vfpd import hashing
from vfpd.catalog import (
    FILE_OK,
    JOB_FAILED,
    JOB_QUEUED,
    PRIORITY_BACKLOG,
    Catalog,
    ContentInfo,
    FileRecord,
    Job,
)
from vfpd.fingerprint import Fingerprint
from vfpd.frame_index import FRAME_CANDIDATES, FrameIndex
from vfpd.hashing import FileStat, changed
from vfpd.index import VectorIndex
from vfpd.matching import EXACT, NONE, VIDEO_MIN_SIM, Match, MatchSettings, verify
from vfpd.media import MediaError, SampledVideo, SamplingSettings
from vfpd.service.watcher import Filter, walk

log = logging.getLogger("vfpd.pipeline")

# Worker outcomes (vfpd.workers) that may not happen again (a crash under memory pressure, a
# machine so loaded that the time limit ran out): retried with back-off. Every other MediaError says something about
# the file itself (not a video, truncated, ...) and trying again would give the same answer.
TRANSIENT_KINDS = frozenset({"timeout", "crashed", "out-of-memory"})
# The matcher compares frames after removing the library's "background" frame feature (the mean
# over videos of each video's mean informative frame, matching.frame_center). At start it is
# estimated from this many stored fingerprints (enough for a stable mean, quick to read) and then
# kept up to date with every new fingerprint.
CENTER_SAMPLE = 2000
# The index is saved after this many added fingerprints even while busy, so a crash in a long
# back-log replays at most this many catalog changes at the next start.
CHECKPOINT_EVERY = 200
EVENT_DUPLICATE = "duplicate"
# Job reason of a file queued only because its content has no fingerprint of the model (or
# preset) the daemon runs now.
REASON_MODEL = "new model"


class Decoder(Protocol):
    """Decodes paths in isolated workers; yields (path, sampled video or the error) as each
    finishes, in any order."""

    def __call__(self, paths: Sequence[str]) -> Iterator[tuple[str, SampledVideo | MediaError]]:
        ...


class Embedder(Protocol):
    model_version: str

    def embed_many(self, videos: list[SampledVideo]) -> list[Fingerprint]: ...

    def unload(self) -> None: ...


@dataclass(frozen=True)
class PipelineSettings:
    batch_size: int
    threshold: float
    candidates: int
    idle_unload_seconds: float
    match: MatchSettings = MatchSettings()
    """How candidates are verified: the preset's (vfpd/presets.py)."""
    sampling: SamplingSettings = SamplingSettings()
    """How the decoder samples: stored frames sampled the same way are re-embedded instead of
    decoding the file again."""


@dataclass
class _Work:
    job: Job
    stat: FileStat
    hash: str
    old: FileRecord | None
    sampled: SampledVideo | None = None
    stored_frames: bool = False  # sampled comes from the catalog, not from a decode


def _grew(path: str, hashed: FileStat) -> bool:
    """Whether the file is no longer what was hashed (a writer is still at it)."""
    try:
        return changed(FileStat.from_stat_result(os.stat(path)), hashed)
    except OSError:
        return False


def _segments(m: Match) -> list[dict[str, float]]:
    return [s.to_json() for s in m.segments]


class Pipeline:
    """Processes the catalog's job queue on its own thread."""

    def __init__(self, catalog: Catalog, index: VectorIndex, index_path: Path,
                 embedder: Embedder, decoder: Decoder, settings: PipelineSettings,
                 sinks: Callable[[], list[str]], on_event: Callable[[], None],
                 frame_index: FrameIndex | None = None,
                 frame_index_path: Path | None = None) -> None:
        """`frame_index` (optional) adds the videos whose frames resemble a new video's to its
        candidates: clips cut out of longer videos, whose whole-video vectors differ."""
        self.catalog = catalog
        self.index = index
        self.index_path = index_path
        self.frame_index = frame_index
        self.frame_index_path = frame_index_path
        self.embedder = embedder
        self.decoder = decoder
        self.settings = settings
        self._sinks = sinks
        self._on_event = on_event
        self._cond = threading.Condition()
        self._stopping = False
        self._paused = False
        self._wakeups = 0
        self._busy = False
        self._unsaved = 0
        self._model_used_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="vfpd-pipeline", daemon=True)
        self.processed = 0
        self.decoded = 0  # fingerprints made by decoding the file
        self.reembedded = 0  # fingerprints made from frames stored in the catalog
        self._center_sum: np.ndarray | None = None
        self._center_n = 0
        for i, stored in enumerate(catalog.iter_fingerprints(embedder.model_version)):
            if i >= CENTER_SAMPLE:
                break
            self._add_to_center(stored.fingerprint)

    # -- the library's background frame feature -----------------------------------------------

    @staticmethod
    def _video_mean(fp: Fingerprint) -> np.ndarray | None:
        informative = np.asarray(fp.informative, bool)
        if not informative.any():
            return None
        return np.asarray(fp.frame_features, np.float64)[informative].mean(axis=0)

    def _add_to_center(self, fp: Fingerprint) -> None:
        m = self._video_mean(fp)
        if m is None:
            return
        with self._cond:
            self._center_sum = m if self._center_sum is None else self._center_sum + m
            self._center_n += 1

    def _center(self, extra: Fingerprint | None = None) -> np.ndarray | None:
        """The background to remove before comparing frames, counting `extra` (a new video not
        yet in the library) as one more video."""
        m = self._video_mean(extra) if extra is not None else None
        with self._cond:
            total, n = self._center_sum, self._center_n
        if m is not None:
            total, n = (m if total is None else total + m), n + 1
        return None if total is None else (total / n).astype(np.float32)

    # -- control ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the loop to stop: the file in hand is finished or its job given back."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (waiting up to `timeout`), then save the index."""
        self.request_stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("pipeline still busy after %.0f s; its jobs stay queued", timeout)
        self.checkpoint()

    def wake(self) -> None:
        with self._cond:
            self._wakeups += 1
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            self._paused = True
        log.info("paused: no new jobs are taken")

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()
        log.info("resumed")

    @property
    def paused(self) -> bool:
        with self._cond:
            return self._paused

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy

    def update(self, settings: PipelineSettings) -> None:
        with self._cond:
            self.settings = settings

    def checkpoint(self) -> None:
        """Save the indexes (atomically) if they changed since the last save."""
        with self._cond:
            unsaved, self._unsaved = self._unsaved, 0
        if unsaved:
            try:
                self.index.save(self.index_path)
                log.debug("index saved (%d vectors)", len(self.index))
            except OSError as e:
                log.error("cannot save the index to %s: %s", self.index_path, e)
            if self.frame_index is not None and self.frame_index_path is not None:
                try:
                    self.frame_index.save(self.frame_index_path)
                except OSError as e:
                    log.error("cannot save the frame index to %s: %s", self.frame_index_path, e)

    # -- the loop --------------------------------------------------------------------------------

    def _should_stop(self) -> bool:
        with self._cond:
            return self._stopping

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                paused = self._paused
                seen = self._wakeups
            jobs = [] if paused else self.catalog.claim_jobs(self.settings.batch_size)
            if jobs:
                with self._cond:
                    self._busy = True
                try:
                    self._process(jobs)
                except Exception as e:
                    if self._should_stop():  # (the decoders were closed under us)
                        for job in jobs:
                            self._release(job)
                        return
                    # Counted as a failed try: an error that follows a file is bounded by the
                    # retry policy instead of looping on it.
                    log.exception("pipeline error; the batch is tried again later")
                    for job in jobs:
                        try:
                            if self._job_still_ours(job):  # (not the ones already done)
                                self._fail(job, f"internal error: {e}", None, permanent=False)
                        except Exception:
                            self._release(job)
                    time.sleep(1.0)  # a persistent error (disk full) must not spin
                finally:
                    with self._cond:
                        self._busy = False
                if self._unsaved >= CHECKPOINT_EVERY:
                    self.checkpoint()
                continue
            self._idle(paused, seen)

    def _idle(self, paused: bool, seen: int) -> None:
        self.checkpoint()
        now = time.time()
        timeout: float | None = None
        if not paused:
            due = self._next_due()
            if due is not None:
                timeout = max(0.0, due - now)
        if self._model_used_at is not None:
            left = self._model_used_at + self.settings.idle_unload_seconds - time.monotonic()
            if left <= 0:
                self.embedder.unload()
                unload = getattr(self.decoder, "unload", None)
                if unload is not None:
                    unload()
                self._model_used_at = None
                log.info("model released after %.0f s without work",
                         self.settings.idle_unload_seconds)
            else:
                timeout = left if timeout is None else min(timeout, left)
        with self._cond:
            if self._stopping or self._wakeups != seen:
                return
            self._cond.wait(timeout)

    def _next_due(self) -> float | None:
        due = None
        for job in self.catalog.iter_jobs(JOB_QUEUED):
            due = job.next_try if due is None else min(due, job.next_try)
        return due

    def _release(self, job: Job) -> None:
        try:
            self.catalog.release_job(job)
        except Exception:
            log.exception("cannot give job %s back", job.path)

    # -- one batch -------------------------------------------------------------------------------

    def _process(self, jobs: list[Job]) -> None:
        todo: list[_Work] = []
        hashes: set[str] = set()
        for i, job in enumerate(jobs):
            if self._should_stop():
                for rest in jobs[i:]:
                    self._release(rest)
                for w in todo:
                    self._release(w.job)
                return
            work = self._prepare(job)
            if work is None:
                continue
            if work.hash in hashes:
                # A second copy of content this batch is about to fingerprint: next batch it is
                # a path alias (and an exact duplicate) instead of a second decode.
                self._release(job)
                continue
            hashes.add(work.hash)
            todo.append(work)
        if not todo:
            return
        to_decode = [w for w in todo if not w.stored_frames]
        if to_decode:
            self._decode(to_decode)
        ready = [w for w in todo if w.sampled is not None]
        if not ready:
            return
        if self._should_stop():
            for w in ready:
                self._release(w.job)
            return
        try:
            fps = self.embedder.embed_many([w.sampled for w in ready])  # type: ignore[misc]
        except Exception as e:
            log.exception("embedding failed")
            for w in ready:
                self._fail(w.job, f"embedding failed: {e}", w.hash, permanent=False)
            return
        self._model_used_at = time.monotonic()
        for w, fp in zip(ready, fps):
            self._commit(w, fp)

    def _prepare(self, job: Job) -> _Work | None:
        """Stat and hash one job's file. Returns the work still to do (decode + embed), or None
        when the job was settled here (gone, unchanged, alias of known content, failed)."""
        path = job.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.catalog.complete_job(job)
            if self.catalog.file_by_path(path) is not None:
                self.catalog.remove_file(path)
            return None
        except OSError as e:
            self._fail(job, f"cannot read: {e.strerror}", None, permanent=False)
            return None
        if not stat.S_ISREG(st.st_mode):
            self._fail(job, "not a regular file", None, permanent=True)
            return None
        fstat = FileStat.from_stat_result(st)
        mv = self.embedder.model_version
        old = self.catalog.file_by_path(path)
        if (old is not None and old.hash is not None and old.stat == fstat
                and old.state == FILE_OK):
            if self.catalog.has_fingerprint(old.hash, mv):
                self.catalog.complete_job(job)  # unchanged since it was fingerprinted
                return None
            # Unchanged, but fingerprinted by another model or preset: the stat vouches for
            # the hash (as in reconcile), so the content is not read again.
            digest = old.hash
        else:
            try:
                digest, fstat = hashing.hash_and_stat(path)
            except hashing.FileChanged:
                self._fail(job, "the file changed while it was read (still being written?)",
                           None, permanent=False)
                return None
            except FileNotFoundError:
                self.catalog.complete_job(job)
                return None
            except OSError as e:
                self._fail(job, f"cannot read: {e.strerror or e}", None, permanent=False)
                return None
            if self.catalog.has_fingerprint(digest, mv):
                self._commit_alias(job, path, fstat, digest, old)
                return None
        # Frames of this content sampled the way the decoder would sample it now are as good
        # as a new decode (DESIGN.md: re-embedding never decodes again).
        try:
            stored = self.catalog.load_frames(digest, self.settings.sampling)
        except Exception as e:  # a damaged blob: decoding the file again repairs it
            log.warning("stored frames of %s unusable (%s); decoding %s", digest[:12], e, path)
            stored = None
        if stored is not None and len(stored.frames):
            return _Work(job, fstat, digest, old, stored, stored_frames=True)
        return _Work(job, fstat, digest, old)

    def _decode(self, todo: list[_Work]) -> None:
        by_path = {w.job.path: w for w in todo}
        pending = set(by_path)
        results = self.decoder(list(by_path))
        try:
            for path, result in results:
                if self._should_stop():
                    break  # (a worker killed by the shutdown is not the file's fault)
                w = by_path.get(path)
                if w is None:
                    continue
                pending.discard(path)
                if isinstance(result, MediaError) and _grew(path, w.stat):
                    # Still being written (its close will queue it again): not the file's fault.
                    self._fail(w.job, "the file changed while it was decoded (still being "
                                      "written?)", None, permanent=False)
                elif isinstance(result, MediaError):
                    permanent = result.kind not in TRANSIENT_KINDS
                    self._fail(w.job, f"{result.kind}: {result.reason}", w.hash, permanent)
                else:
                    w.sampled = result
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
        for path in pending:  # stopped early, or the decoder lost track of a file
            by_path[path].sampled = None
            self._release(by_path[path].job)

    def _fail(self, job: Job, reason: str, content_hash: str | None, permanent: bool) -> None:
        cat = self.catalog
        with cat.transaction():
            now = cat.fail_job(job, reason, content_hash)
            # A reason that will not change (not a video, truncated) fails at once; the catalog
            # counts tries, so the remaining ones are used up in the same transaction.
            while permanent and now.state != JOB_FAILED and now.attempts < 1000:
                now = cat.fail_job(now, reason)
        if now.state == JOB_FAILED:
            log.warning("failed: %s: %s", job.path, reason)
        else:
            log.info("will retry %s (try %d): %s", job.path, now.attempts, reason)

    # -- results ---------------------------------------------------------------------------------

    def _live_others(self, content_hash: str, path: str, fstat: FileStat | None) -> list[str]:
        """Other paths holding this content, hardlinks of `path` left out (one file, not two)."""
        out = []
        for p in self.catalog.paths_for_hash(content_hash):
            if p == path:
                continue
            rec = self.catalog.file_by_path(p)
            if rec is None or rec.state != FILE_OK:
                continue
            if fstat is not None and (rec.stat.device, rec.stat.inode) == (fstat.device,
                                                                           fstat.inode):
                continue
            out.append(p)
        return out

    def _event(self, kind: str, score: float, path: str, content_hash: str, size: int,
               duration: float | None, other_hash: str, others: list[str],
               segments: list[dict[str, float]]) -> dict[str, Any]:
        return {
            "event": EVENT_DUPLICATE, "kind": kind, "score": round(float(score), 4),
            "detected_at": time.time(),
            "new": {"path": path, "hash": content_hash, "size": size, "duration": duration},
            "existing": [{"path": p, "hash": other_hash} for p in others],
            "segments": segments,
        }

    def _job_still_ours(self, job: Job) -> bool:
        current = self.catalog.job(job.path)
        return current is not None and current.id == job.id

    def _commit_alias(self, job: Job, path: str, fstat: FileStat, digest: str,
                      old: FileRecord | None) -> None:
        cat = self.catalog
        announced = False
        with cat.transaction():
            if not self._job_still_ours(job):
                return  # deleted or moved while we hashed it; the move's own job redoes it
            others = self._live_others(digest, path, fstat)
            cat.store_result(path, fstat, digest, job=job)
            content = cat.content(digest)
            if (old is None or old.hash != digest) and others:
                duration = None
                if content is not None:
                    duration = content.duration
                sinks = self._sinks()
                if sinks:
                    cat.outbox_enqueue(self._event(EXACT, 1.0, path, digest, fstat.size, duration,
                                                   digest, others, []), sinks)
                    announced = True
        log.info("%s: known content %s", path, digest[:12])
        if announced:
            self._on_event()

    def _commit(self, w: _Work, fp: Fingerprint) -> None:
        cat = self.catalog
        path = w.job.path
        sampled = w.sampled
        assert sampled is not None
        matches = self._match(fp, w.hash)
        announced = 0
        with cat.transaction():
            if not self._job_still_ours(w.job):
                return
            # Other paths with these bytes, known from before the model changed (content
            # without a current fingerprint): an exact duplicate, as if it were an alias.
            same = (self._live_others(w.hash, path, w.stat)
                    if w.old is None or w.old.hash != w.hash else [])
            info = sampled.info
            cat.store_result(path, w.stat, w.hash, info=ContentInfo(
                w.stat.size, sampled.duration, info.codec, info.width, info.height),
                fingerprint=fp, frames=None if w.stored_frames else sampled, job=w.job,
                sampling=self.settings.sampling)
            sinks = self._sinks()
            if same and sinks:
                cat.outbox_enqueue(self._event(EXACT, 1.0, path, w.hash, w.stat.size,
                                               sampled.duration, w.hash, same, []), sinks)
                announced += 1
            for other, m in matches:
                others = self._live_others(other, path, None)
                if not others:
                    continue  # only history (e.g. this path's own previous content)
                if not cat.add_duplicate(w.hash, other, m.score, m.kind, _segments(m)):
                    continue  # known pair (and any verdict on it) - nothing new to say
                if sinks:
                    cat.outbox_enqueue(self._event(m.kind, m.score, path, w.hash, w.stat.size,
                                                   sampled.duration, other, others,
                                                   _segments(m)), sinks)
                    announced += 1
        self.index.catch_up(cat)
        if self.frame_index is not None:
            self.frame_index.catch_up(cat)
        self._add_to_center(fp)
        with self._cond:
            self._unsaved += 1
        self.processed += 1
        if w.stored_frames:
            self.reembedded += 1
        else:
            self.decoded += 1
        log.info("%s %s (%.1f s, %d frames)%s",
                 "re-fingerprinted from stored frames" if w.stored_frames else "fingerprinted",
                 path, sampled.duration, len(sampled.timestamps),
                 f"; {len(matches)} duplicate(s)" if matches else "")
        if announced:
            self._on_event()

    def _match(self, fp: Fingerprint, content_hash: str) -> list[tuple[str, Match]]:
        """Verified duplicates of a fingerprint among the indexed ones, best per content."""
        return [(h, m) for h, m, _ in self._verified(fp, self.settings.candidates, content_hash)
                if m.score >= self.settings.threshold and m.kind != NONE]

    def nearest(self, fp: Fingerprint, k: int, exclude_hash: str | None = None
                ) -> list[tuple[str, Match, float]]:
        """(content hash, verified match, vector similarity) of the k best candidates."""
        return self._verified(fp, k, exclude_hash)[:k]

    def _verified(self, fp: Fingerprint, k: int, exclude_hash: str | None
                  ) -> list[tuple[str, Match, float]]:
        """(content hash, verified match, vector similarity) of every candidate: the k nearest
        indexed videos by vector, plus the FRAME_CANDIDATES videos whose frames resemble fp's
        most (frame index: clips of longer videos), best verified match first."""
        if len(self.index) == 0:
            return []
        sims, ids = self.index.search(np.asarray(fp.vector, np.float32)[None], k + 1)
        keep = [int(i) for s, i in zip(sims[0], ids[0]) if i >= 0 and s >= VIDEO_MIN_SIM]
        if self.frame_index is not None:
            seen = set(keep)
            keep += [i for i, _ in self.frame_index.candidates(fp, FRAME_CANDIDATES + 1)
                     if i not in seen]
        stored = self.catalog.fingerprints_by_ids(keep)
        known = self.catalog.has_fingerprint(exclude_hash, fp.model_version) if exclude_hash else False
        center = self._center(None if known else fp)
        vector = np.asarray(fp.vector, np.float32)
        out = []
        for i in keep:
            sf = stored.get(i)
            if sf is None or sf.hash == exclude_hash:
                continue
            if sf.fingerprint.model_version != fp.model_version:
                continue
            sim = float(vector @ np.asarray(sf.fingerprint.vector, np.float32))
            out.append((sf.hash, verify(fp, sf.fingerprint, self.settings.match, center=center),
                        sim))
        out.sort(key=lambda t: -t[1].score)
        return out

    # -- queries (control socket threads) --------------------------------------------------------

    def fingerprint_of(self, path: Path) -> tuple[str, Fingerprint]:
        """A file's (hash, fingerprint): stored when the content is known, else decoded in a
        worker and embedded now (nothing is stored)."""
        digest, _ = hashing.hash_and_stat(path)
        stored = self.catalog.fingerprint(digest, self.embedder.model_version)
        if stored is not None:
            return digest, stored.fingerprint
        for _, result in self.decoder([str(path)]):
            if isinstance(result, MediaError):
                raise ValueError(result.reason)
            fp = self.embedder.embed_many([result])[0]
            self._model_used_at = time.monotonic()
            self.wake()  # the idle timer starts again
            return digest, fp
        raise ValueError("the decoder returned nothing")

    def query(self, path: Path, k: int) -> list[dict[str, Any]]:
        digest, fp = self.fingerprint_of(path)
        out: list[dict[str, Any]] = []
        same = [p for p in self.catalog.paths_for_hash(digest) if p != str(path)]
        if same:
            out.append({"hash": digest, "paths": same, "path": same[0], "score": 1.0,
                        "similarity": 1.0, "kind": EXACT,
                        "duplicate": True, "segments": []})
        for h, m, sim in self.nearest(fp, k, exclude_hash=digest):
            paths = self.catalog.paths_for_hash(h)
            out.append({"hash": h, "paths": paths, "path": paths[0] if paths else None,
                        "score": round(m.score, 4), "similarity": round(sim, 4), "kind": m.kind,
                        "duplicate": m.score >= self.settings.threshold and m.kind != NONE,
                        "segments": _segments(m)})
        return out[:k]


@dataclass(frozen=True)
class Reconciled:
    """What a reconcile did. `queued` counts every job it added, `stale` those of them for
    unchanged files whose content lacks a fingerprint of the current model."""

    queued: int
    moved: int
    removed: int
    stale: int = 0


def reconcile(catalog: Catalog, roots: Sequence[Path], flt: Filter,
              priority: int = PRIORITY_BACKLOG, retry_failed: bool = False,
              model_version: str | None = None) -> Reconciled:
    """Compare folders on disk with the catalog: queue new and changed files (stat differs),
    follow files moved while we were away (same device, inode, size and mtime: no re-hash), and
    forget files that are gone. With `model_version`, unchanged files whose content has no
    fingerprint of that version (the model or preset changed) are queued too: the pipeline
    re-embeds their stored frames, or decodes them when there are none of the current sampling.
    Files that failed stay failed unless `retry_failed` (a rescan the user asked for)."""
    queued: list[tuple[str, str]] = []
    moved = removed = 0
    current: dict[str, bool] = {}  # content hash -> has a fingerprint of model_version

    def lacks_fingerprint(rec: FileRecord) -> bool:
        if model_version is None or rec.hash is None or rec.state != FILE_OK:
            return False
        if rec.hash not in current:
            current[rec.hash] = catalog.has_fingerprint(rec.hash, model_version)
        return not current[rec.hash]

    for root in roots:
        if not root.is_dir():
            continue
        on_disk = {path: FileStat.from_stat_result(st) for path, st in walk(root, flt)}
        known = {rec.path: rec for rec in catalog.iter_files(str(root))}
        new = {p: s for p, s in on_disk.items() if p not in known}
        by_inode = {(s.device, s.inode): p for p, s in new.items()}
        for path, rec in known.items():
            if path in on_disk:
                if rec.stat != on_disk[path]:
                    queued.append((path, "reconcile"))
                elif lacks_fingerprint(rec):
                    queued.append((path, REASON_MODEL))
                continue
            dest = by_inode.get((rec.stat.device, rec.stat.inode))
            if (dest is not None and rec.hash is not None
                    and (new[dest].size, new[dest].mtime_ns) == (rec.stat.size,
                                                                 rec.stat.mtime_ns)):
                catalog.move_file(path, dest, new[dest])
                del new[dest]
                moved += 1
                if lacks_fingerprint(rec):
                    queued.append((dest, REASON_MODEL))
            else:
                catalog.remove_file(path)
                removed += 1
        queued.extend((p, "reconcile") for p in new)
    jobs = {j.path: j.state for j in catalog.iter_jobs(None)}
    fresh = [(p, why) for p, why in queued
             if p not in jobs or (retry_failed and jobs[p] == JOB_FAILED)]
    catalog.enqueue_many(fresh, priority)
    return Reconciled(len(fresh), moved, removed, sum(why == REASON_MODEL for _, why in fresh))
