"""The daemon's consumer of the shared chain: jobs from the catalog queue -> identity (vfpd/chain.py)
-> known content: path alias | new content: frames -> fingerprint (chain) -> the Library's
verified duplicates -> one catalog transaction (result, duplicates, outbox, job removal) ->
the library catches up.

One thread runs the queue; it sleeps on a condition variable when nothing is due, so an idle
daemon spends no CPU here, and it lets the model go after `idle_unload_seconds` without work. It
survives every error: a failure it cannot get past (disk full, a locked catalog) is retried with
back-off and reported as `degraded` until work goes through again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vfpd import chain, hashing
from vfpd.catalog import (
    Catalog,
    ContentInfo,
    FileRecord,
    FileState,
    Job,
    JobState,
)
from vfpd.chain import Decoder, Fingerprinter, Identity, Work
from vfpd.events import DuplicateEvent, FileRef
from vfpd.fingerprint import Fingerprint
from vfpd.hashing import FileStat
from vfpd.library import Library, LibrarySettings
from vfpd.matching import EXACT
from vfpd.media import SamplingSettings
from vfpd.memory import release_free_memory
from vfpd.service.throughput import Throughput

log = logging.getLogger("vfpd.pipeline")

# The index is saved after this many added fingerprints even while busy, so a crash in a long
# back-log replays at most this many catalog changes at the next start.
CHECKPOINT_EVERY = 200
# Jobs whose file is read again even when its stat is unchanged: a file written (close-write or
# settled) or a rescan the user asked for may have been rewritten keeping size and mtime.
REREAD_REASONS = frozenset({"new", "rescan", "retry"})
# After an error the loop could not get past (catalog locked, disk full), it waits this long,
# doubling up to the maximum, before trying again: persistent errors must not spin.
ERROR_BACKOFF_SECONDS = 1.0
ERROR_BACKOFF_MAX_SECONDS = 60.0


class Embedder(Fingerprinter, Protocol):
    def unload(self) -> None: ...


@dataclass(frozen=True)
class PipelineSettings:
    batch_size: int
    library: LibrarySettings
    idle_unload_seconds: float
    sampling: SamplingSettings = SamplingSettings()
    """How the decoder samples: stored frames sampled the same way are re-embedded instead of
    decoding the file again."""


STILL_WRITING_SECONDS = 10.0
"""A file found by a walk (no close event says its writer is done), modified this recently and
decoding as cut off or unreadable, is taken for one still being written rather than a broken one:
a download that appends a little every few seconds can be hashed and decoded between two writes,
so it need not have grown meanwhile. Its close queues it again; a file that really is broken
fails at a later try, once it is older than this."""

PARTIAL_WRITE_KINDS = frozenset({"truncated"})
"""What a half-written video decodes as (its first bytes already say it is a video)."""

FOUND_BY_WALK = frozenset({"reconcile"})
"""Job reasons that say nothing of the file's writer (a walk at start or a rescan found it);
"new" comes from a close-write or a settled file."""


def _still_written(path: str, hashed: FileStat, error_kind: str, reason: str) -> bool:
    """Whether a failed file looks like one a writer is still at: no longer what was hashed, or
    found by a walk, modified moments ago and failing the way a half-written file does."""
    try:
        now = FileStat.from_stat_result(os.stat(path))
    except OSError:
        return False
    if hashing.changed(now, hashed):
        return True
    recent = time.time() - now.mtime_ns / 1e9 < STILL_WRITING_SECONDS
    return recent and reason in FOUND_BY_WALK and error_kind in PARTIAL_WRITE_KINDS


@dataclass(frozen=True)
class _Job:
    """The daemon's handle on a Work: its job and what the catalog knew of the path."""

    job: Job
    stat: FileStat
    old: FileRecord | None


class Pipeline:
    """Processes the catalog's job queue on its own thread."""

    def __init__(self, catalog: Catalog, library: Library, embedder: Embedder, decoder: Decoder,
                 settings: PipelineSettings, sinks: Callable[[], list[str]],
                 on_event: Callable[[], None],
                 save: Callable[[], None] = lambda: None) -> None:
        """`save` writes the library's indexes (checkpoints)."""
        self.catalog = catalog
        self.library = library
        self.embedder = embedder
        self.decoder = decoder
        self.settings = settings
        self._sinks = sinks
        self._on_event = on_event
        self._save = save
        self._cond = threading.Condition()
        self._save_lock = threading.Lock()
        # Held while a batch is processed or a query answered: swap() (a promoted model) waits
        # for it, so a batch never mixes two models' fingerprints or libraries.
        self._model_lock = threading.RLock()
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
        self.problem: str | None = None
        """Why the loop cannot make progress now (None while it can): `vfpctl status`."""
        self.progress_at = time.monotonic()
        """When the loop last finished a round (work or a wait): the watchdog's evidence."""
        self.throughput = Throughput()
        """Recent seconds per file: the back-log's time to drain (`vfpctl status`)."""

    # -- control ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def request_stop(self) -> None:
        """Ask the loop to stop: the file in hand is finished or its job given back."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (waiting up to `timeout`), save the indexes and let the model go (the
        model's process, vfpd/service/embed_process.py, ends with it)."""
        self.request_stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("pipeline still busy after %.0f s; its jobs stay queued", timeout)
        self.checkpoint()
        self.embedder.unload()

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
        self.library.update(settings.library)

    @property
    def model_lock(self) -> threading.RLock:
        """Hold it to keep the pipeline between batches (a promotion's last catch-up)."""
        return self._model_lock

    def swap(self, library: Library, embedder: Embedder) -> tuple[Library, Embedder]:
        """Serve another model from the next batch or query on; returns the old pair. The
        caller built `library` over the catalog for `embedder`'s model version."""
        with self._model_lock:
            old = self.library, self.embedder
            library.update(self.settings.library)
            self.library, self.embedder = library, embedder
            with self._cond:
                self._unsaved += 1  # the new model's indexes are saved at the next checkpoint
        old[1].unload()
        # The new model is loaded (promotion used it): let it go when idle, like one that
        # fingerprinted a file.
        self._model_used_at = time.monotonic()
        self.wake()
        return old

    def checkpoint(self) -> None:
        """Save the indexes (atomically) if they changed since the last save. A save in progress
        on another thread is waited for: the stop's checkpoint must not return (and the process
        exit) while the loop's own save is half written."""
        with self._save_lock:
            with self._cond:
                unsaved, self._unsaved = self._unsaved, 0
            if unsaved:
                try:
                    self._save()
                except OSError as e:
                    log.error("cannot save the indexes: %s", e)

    # -- the loop --------------------------------------------------------------------------------

    def _should_stop(self) -> bool:
        with self._cond:
            return self._stopping

    def _run(self) -> None:
        backoff = ERROR_BACKOFF_SECONDS
        while True:
            with self._cond:
                if self._stopping:
                    return
                paused = self._paused
                seen = self._wakeups
            try:
                worked = False if paused else self._round()
                if not worked:
                    self._idle(paused, seen)
                if self.problem is not None:
                    log.info("the pipeline makes progress again")
                self.problem, backoff = None, ERROR_BACKOFF_SECONDS
            except Exception as e:
                # Whatever happens (disk full, a catalog locked past its busy timeout), the
                # thread lives on: it says why it is stuck and tries again later.
                if self._should_stop():
                    return
                self.problem = f"{type(e).__name__}: {e}"
                log.exception("pipeline cannot make progress; trying again in %.0f s", backoff)
                with self._cond:
                    self._cond.wait(backoff)
                backoff = min(2 * backoff, ERROR_BACKOFF_MAX_SECONDS)
            self.progress_at = time.monotonic()

    def _round(self) -> bool:
        """Claim and process one batch of due jobs; False when none was due."""
        jobs = self.catalog.claim_jobs(self.settings.batch_size)
        if not jobs:
            return False
        with self._cond:
            self._busy = True
        started = time.monotonic()
        try:
            with self._model_lock:
                self._process(jobs)
            self.throughput.record(len(jobs), time.monotonic() - started)
        except Exception as e:
            if self._should_stop():  # (the decoders were closed under us)
                for job in jobs:
                    self._release(job)
                return True
            # Counted as a failed try: an error that follows a file is bounded by the retry
            # policy instead of looping on it.
            log.exception("pipeline error; the batch is tried again later")
            for job in jobs:
                try:
                    if self._job_still_ours(job):  # (not the ones already done)
                        self._fail(job, f"internal error: {e}", None, permanent=False)
                except Exception:
                    self._release(job)
            raise
        finally:
            with self._cond:
                self._busy = False
        if self._unsaved >= CHECKPOINT_EVERY:
            self.checkpoint()
        return True

    def _idle(self, paused: bool, seen: int) -> None:
        self.checkpoint()
        now = time.time()
        timeout: float | None = None
        if not paused:
            due = self.catalog.next_job_due()
            if due is not None:
                timeout = max(0.0, due - now)
        if self._model_used_at is not None:
            left = self._model_used_at + self.settings.idle_unload_seconds - time.monotonic()
            if left <= 0:
                self.embedder.unload()
                unload = getattr(self.decoder, "unload", None)
                if unload is not None:
                    unload()
                release_free_memory()
                self._model_used_at = None
                log.info("model released after %.0f s without work",
                         self.settings.idle_unload_seconds)
            else:
                timeout = left if timeout is None else min(timeout, left)
        with self._cond:
            if self._stopping or self._wakeups != seen:
                return
            self._cond.wait(timeout)

    def _release(self, job: Job) -> None:
        try:
            self.catalog.release_job(job)
        except Exception:
            log.exception("cannot give job %s back", job.path)

    # -- one batch -------------------------------------------------------------------------------

    def _process(self, jobs: list[Job]) -> None:
        todo: list[Work] = []
        hashes: set[str] = set()
        for i, job in enumerate(jobs):
            if self._should_stop():
                for rest in jobs[i:]:
                    self._release(rest)
                for w in todo:
                    self._release(w.tag.job)  # type: ignore[union-attr]
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
        # Results are committed in job order, whatever order the decoders finish in: each new
        # video is compared with the library as it stood before it, so the order decides which
        # of two files is "the new one" (and the recurring-content counts), as in the scan.
        done = {id(w): w for w in chain.fingerprints(todo, self.embedder, self.decoder,
                                                      self.catalog, self.settings.sampling,
                                                      self._should_stop)}
        for w in todo:
            handle: _Job = w.tag  # type: ignore[assignment]
            if id(w) not in done or self._should_stop():
                self._release(handle.job)  # stopped early: done again at the next start
                continue
            if w.error is not None and _still_written(w.path, handle.stat, w.error.kind,
                                                      handle.job.reason):
                # Still being written (its close queues it again): not the file's fault.
                log.info("%s looks still being written (changed or modified moments ago)",
                         w.path)
                self._fail(handle.job, "still being written? (it changed, or was modified moments "
                                       "ago)", None, permanent=False)
                continue
            if w.error is not None:
                self._fail(handle.job, f"{w.error.kind}: {w.error.reason}", w.hash,
                           permanent=not w.transient)
                continue
            if w.source != "cache":
                self._model_used_at = time.monotonic()
            self._commit(w, handle)

    def _prepare(self, job: Job) -> Work | None:
        """Identify one job's file. Returns the work still to do (frames + fingerprint), or None
        when the job was settled here (gone, unchanged, alias of known content, failed)."""
        path = job.path
        old = self.catalog.file_by_path(path)
        try:
            ident = chain.identify(path, old, reread=job.reason in REREAD_REASONS,
                                   should_stop=self._should_stop)
        except (FileNotFoundError, hashing.FileDeleted):
            self.catalog.complete_job(job)
            if old is not None:
                self.catalog.remove_file(path)
            return None
        except OSError as e:
            kind, reason = chain.os_error_reason(e)
            self._fail(job, f"{kind}: {reason}", None,
                       permanent=kind in chain.PERMANENT_REFUSALS)
            return None
        mv = self.embedder.model_version
        if self.catalog.has_fingerprint(ident.hash, mv):
            if old is not None and old.hash == ident.hash and old.state == FileState.OK:
                if old.stat == ident.stat:
                    self.catalog.complete_job(job)  # unchanged since it was fingerprinted
                else:
                    self.catalog.store_result(path, ident.stat, ident.hash, job=job)
                return None
            self._commit_alias(job, ident, old)
            return None
        return Work(ident.hash, [path], _Job(job, ident.stat, old))

    def _fail(self, job: Job, reason: str, content_hash: str | None, permanent: bool) -> None:
        # A reason that will not change (not a video, truncated) fails at once.
        now = self.catalog.fail_job(job, reason, content_hash, permanent=permanent)
        if now.state == JobState.FAILED:
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
            if rec is None or rec.state != FileState.OK:
                continue
            if fstat is not None and (rec.stat.device, rec.stat.inode) == (fstat.device,
                                                                           fstat.inode):
                continue
            out.append(p)
        return out

    def _job_still_ours(self, job: Job) -> bool:
        current = self.catalog.job(job.path)
        return current is not None and current.id == job.id

    def _announce(self, event: DuplicateEvent, sinks: list[str]) -> bool:
        if not sinks:
            return False
        self.catalog.outbox_enqueue(event.to_json(), sinks)
        return True

    def _commit_alias(self, job: Job, ident: Identity, old: FileRecord | None) -> None:
        cat = self.catalog
        announced = False
        with cat.transaction():
            if not self._job_still_ours(job):
                return  # deleted or moved while we hashed it; the move's own job redoes it
            others = self._live_others(ident.hash, ident.path, ident.stat)
            cat.store_result(ident.path, ident.stat, ident.hash, job=job)
            if (old is None or old.hash != ident.hash) and others:
                content = cat.content(ident.hash)
                duration = content.duration if content is not None else None
                announced = self._announce(DuplicateEvent.make(
                    EXACT, 1.0, FileRef(ident.path, ident.hash, ident.stat.size, duration),
                    [FileRef(p, ident.hash) for p in others], ()), self._sinks())
        log.info("%s: known content %s", ident.path, ident.hash[:12])
        if announced:
            self._on_event()

    def _commit(self, w: Work, handle: _Job) -> None:
        cat = self.catalog
        path = w.path
        fp = w.fingerprint
        assert fp is not None
        matches = self.library.duplicates(fp, w.hash)
        sampled = w.sampled
        duration = fp.duration
        announced = 0
        with cat.transaction():
            if not self._job_still_ours(handle.job):
                return
            # Other paths with these bytes, known from before the model changed (content
            # without a current fingerprint): an exact duplicate, as if it were an alias.
            same = (self._live_others(w.hash, path, handle.stat)
                    if handle.old is None or handle.old.hash != w.hash else [])
            info = None if sampled is None else ContentInfo(
                handle.stat.size, sampled.duration, sampled.info.codec, sampled.info.width,
                sampled.info.height)
            cat.store_result(path, handle.stat, w.hash, info=info,
                             fingerprint=fp if w.source != "cache" else None,
                             frames=sampled if w.source == "decoded" else None, job=handle.job,
                             sampling=self.settings.sampling)
            sinks = self._sinks()
            new = FileRef(path, w.hash, handle.stat.size, duration)
            if same and self._announce(DuplicateEvent.make(
                    EXACT, 1.0, new, [FileRef(p, w.hash) for p in same], ()), sinks):
                announced += 1
            for v in matches:
                others = self._live_others(v.hash, path, None)
                if not others:
                    continue  # only history (e.g. this path's own previous content)
                m = v.match
                segments = [s.to_json() for s in m.segments]
                if not cat.add_duplicate(w.hash, v.hash, m.score, m.kind, segments):
                    continue  # known pair (and any verdict on it) - nothing new to say
                if self._announce(DuplicateEvent.make(
                        m.kind, m.score, new, [FileRef(p, v.hash) for p in others],
                        tuple(m.segments)), sinks):
                    announced += 1
        self.library.catch_up(cat, fp)
        with self._cond:
            self._unsaved += 1
        self.processed += 1
        if w.source == "stored-frames":
            self.reembedded += 1
        else:
            self.decoded += 1
        log.info("%s %s (%.1f s, %d frames)%s",
                 "re-fingerprinted from stored frames" if w.source == "stored-frames"
                 else "fingerprinted", path, duration, len(fp.timestamps),
                 f"; {len(matches)} duplicate(s)" if matches else "")
        if announced:
            self._on_event()

    # -- queries (control socket threads) --------------------------------------------------------

    def fingerprint_of(self, file: hashing.OpenFile, should_stop: Callable[[], bool],
                       embedder: Embedder | None = None) -> tuple[str, Fingerprint]:
        """A file's (hash, fingerprint) through the chain: stored when the content is known,
        from stored frames, or decoded in a worker and embedded now (nothing is stored). Read
        through `file.fd` only (a decode worker opens the daemon's own descriptor, checked to be
        readable by the client: the file that was hashed, not whatever a name holds now);
        abandoned between stages (hashing.HashCancelled) once `should_stop()`."""
        digest, _ = hashing.hash_open(file, should_stop=should_stop)
        work = Work(digest, [file.proc_path])
        for w in chain.fingerprints([work], embedder or self.embedder, self.decoder, self.catalog,
                                    self.settings.sampling, should_stop):
            if w.error is not None:
                raise ValueError(w.error.reason)
            if w.source != "cache":
                self._model_used_at = time.monotonic()
                self.wake()  # the idle timer starts again
            assert w.fingerprint is not None
            return digest, w.fingerprint
        raise hashing.HashCancelled(file.path, "the client left before the answer")

    def query(self, file: hashing.OpenFile, k: int, should_stop: Callable[[], bool]
              ) -> list[dict[str, Any]]:
        """The k stored videos nearest to a file, verified; `duplicate` says whether each passes
        the library's accept rule (the threshold), so near misses are marked as such."""
        with self._model_lock:  # one model for the whole answer, even across a promotion
            library, embedder = self.library, self.embedder
        digest, fp = self.fingerprint_of(file, should_stop, embedder)
        out: list[dict[str, Any]] = []
        same = [p for p in self.catalog.paths_for_hash(digest) if p != file.path]
        if same:
            out.append({"hash": digest, "paths": same, "path": same[0], "score": 1.0,
                        "similarity": 1.0, "kind": EXACT,
                        "duplicate": True, "segments": []})
        for v in library.verified(fp, exclude_hash=digest, k=k):
            paths = self.catalog.paths_for_hash(v.hash)
            out.append({"hash": v.hash, "paths": paths, "path": paths[0] if paths else None,
                        "score": round(v.match.score, 4), "similarity": round(v.similarity, 4),
                        "kind": v.match.kind, "duplicate": v.duplicate,
                        "segments": [s.to_json() for s in v.match.segments]})
        return out[:k]
