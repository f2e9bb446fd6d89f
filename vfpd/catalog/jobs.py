"""The job queue: paths waiting to be processed, with priorities, leases and bounded retries."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vfpd.catalog.codecs import path_key, path_text
from vfpd.catalog.core import CatalogCore, stream
from vfpd.catalog.vocabulary import FileState, JobState

PRIORITY_NEW = 0
"""Priority of a file that just appeared or changed: the user is waiting for it."""

PRIORITY_BACKLOG = 10
"""Priority of files found by a start-up reconcile or a rescan: done when nothing new waits."""


@dataclass(frozen=True)
class Job:
    id: int
    path: str
    reason: str
    priority: int
    attempts: int
    next_try: float
    last_error: str | None
    state: JobState
    generation: int
    """Bumped each time the path is enqueued again; a result for an older generation does not
    remove the job (the file changed while it was processed, so it is processed again)."""


_JOB_COLS = ("id, path, reason, priority, attempts, next_try, last_error, state, generation")


def _job(row: tuple) -> Job:
    return Job(row[0], path_text(row[1]), *row[2:7], JobState(row[7]), row[8])


class JobStore(CatalogCore):
    """The queue of paths to process."""

    def enqueue(self, path: str, reason: str, priority: int = PRIORITY_NEW,
                now: float | None = None) -> int:
        """Queue `path` for processing. If already queued: keep one job, at the more urgent
        priority, due now, with a new generation. A failed job is retried from zero attempts.
        Returns the job id."""
        now = time.time() if now is None else now
        with self.transaction() as w:
            w.execute(
                "INSERT INTO jobs(path, reason, priority, attempts, next_try, state, generation, "
                f"created) VALUES (?, ?, ?, 0, ?, '{JobState.QUEUED}', 0, ?) "
                "ON CONFLICT(path) DO UPDATE SET reason = excluded.reason, "
                "priority = MIN(priority, excluded.priority), next_try = excluded.next_try, "
                f"attempts = CASE WHEN state = '{JobState.FAILED}' THEN 0 ELSE attempts END, "
                f"state = '{JobState.QUEUED}', generation = generation + 1",
                (path_key(path), reason, priority, now, now))
            return w.execute("SELECT id FROM jobs WHERE path = ?",
                             (path_key(path),)).fetchone()[0]

    def enqueue_many(self, items: Iterable[tuple[str, str]], priority: int = PRIORITY_BACKLOG,
                     now: float | None = None) -> int:
        """Queue many (path, reason) in one transaction (start-up reconcile)."""
        n = 0
        with self.transaction():
            for path, reason in items:
                self.enqueue(path, reason, priority, now)
                n += 1
        return n

    def claim_jobs(self, limit: int, now: float | None = None) -> list[Job]:
        """Hand out up to `limit` due jobs, most urgent first, and lease them so no other caller
        gets them. The job stays in the queue until store_result / complete_job / fail_job."""
        now = time.time() if now is None else now
        with self.transaction() as w:
            rows = w.execute(
                f"SELECT {_JOB_COLS} FROM jobs WHERE state = '{JobState.QUEUED}' "
                "AND next_try <= ? AND (leased_until IS NULL OR leased_until <= ?) "
                "ORDER BY priority, next_try, id LIMIT ?", (now, now, limit)).fetchall()
            w.executemany("UPDATE jobs SET leased_until = ? WHERE id = ?",
                          [(now + self.job_policy.lease_s, r[0]) for r in rows])
        return [_job(r) for r in rows]

    def release_job(self, job: Job) -> None:
        """Give a claimed job back without counting an attempt (shutdown, model busy)."""
        with self.transaction() as w:
            w.execute("UPDATE jobs SET leased_until = NULL WHERE id = ?", (job.id,))

    def job(self, path: str) -> Job | None:
        row = self._reader().execute(f"SELECT {_JOB_COLS} FROM jobs WHERE path = ?",
                                     (path_key(path),)).fetchone()
        return _job(row) if row else None

    def iter_jobs(self, state: JobState | None = JobState.QUEUED) -> Iterator[Job]:
        """Jobs in one state (queued or failed; None: all), in the order they would run."""
        where = "" if state is None else "WHERE state = ?"
        args = () if state is None else (state,)
        sql = f"SELECT {_JOB_COLS} FROM jobs {where} ORDER BY priority, next_try, id"
        yield from (_job(r) for r in stream(self._reader(), sql, args))

    def next_job_due(self) -> float | None:
        """When the next queued job can be claimed (its next try, or the end of its lease if
        later), or None when the queue is empty: how long an idle pipeline may sleep."""
        return self._reader().execute(
            "SELECT MIN(MAX(next_try, COALESCE(leased_until, next_try))) FROM jobs "
            f"WHERE state = '{JobState.QUEUED}'").fetchone()[0]

    def complete_job(self, job: Job) -> None:
        """The job needs no result (file vanished, not a video we keep): it leaves the queue."""
        with self.transaction() as w:
            finish_job(w, job, job.path)

    def fail_job(self, job: Job, error: str, content_hash: str | None = None,
                 now: float | None = None, *, permanent: bool = False) -> Job:
        """Record a failed try. Retried after a back-off; after max_attempts, or at once when
        `permanent` (a reason that will not change: not a video, truncated), the job stays in
        the table in state 'failed' with the reason (shown by status) and the file is marked
        failed. `content_hash` (if known) counts a decode failure on the content. Returns the
        job as it now is."""
        now = time.time() if now is None else now
        policy = self.job_policy
        with self.transaction() as w:
            row = w.execute("SELECT attempts FROM jobs WHERE id = ?", (job.id,)).fetchone()
            attempts = (row[0] if row else job.attempts) + 1
            if permanent:
                attempts = max(attempts, policy.max_attempts)  # the tries are used up
            state = JobState.FAILED if attempts >= policy.max_attempts else JobState.QUEUED
            w.execute("UPDATE jobs SET attempts = ?, last_error = ?, state = ?, next_try = ?, "
                      "leased_until = NULL WHERE id = ?",
                      (attempts, error, state, now + policy.delay(attempts), job.id))
            if content_hash is not None:
                w.execute("UPDATE contents SET decode_failures = decode_failures + 1, "
                          "last_error = ? WHERE hash = ?", (error, content_hash))
            if state == JobState.FAILED:
                w.execute(f"UPDATE files SET state = '{FileState.FAILED}' WHERE path = ?",
                          (path_key(job.path),))
            row = w.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?", (job.id,)).fetchone()
        return _job(row) if row else job


def finish_job(w: sqlite3.Connection, job: Job | None, path: str) -> None:
    """Take `job` (or, without one, the unclaimed queued job of `path`) out of the queue."""
    if job is None:
        w.execute(f"DELETE FROM jobs WHERE path = ? AND state = '{JobState.QUEUED}' "
                  "AND leased_until IS NULL", (path_key(path),))
        return
    gone = w.execute("DELETE FROM jobs WHERE id = ? AND generation = ?",
                     (job.id, job.generation)).rowcount
    if not gone:
        # Re-enqueued while we worked on it: the file changed, so it runs again.
        w.execute("UPDATE jobs SET leased_until = NULL WHERE id = ?", (job.id,))
