"""APScheduler's persistent job store in the catalog: scheduled jobs (retraining) with their next
run time, so a run missed while the daemon was down is due at the next start."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError

from vfpd.catalog.core import CatalogCore

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
"""The job's state is written and read by the same installation: any protocol it knows."""


def _ts(when: datetime | None) -> float | None:
    return when.timestamp() if when is not None else None


class CatalogJobStore(BaseJobStore):
    """The jobs of one scheduler in the catalog's schedule_jobs table (what APScheduler's
    SQLAlchemyJobStore does, without SQLAlchemy, and in the one database the daemon keeps)."""

    def __init__(self, catalog: CatalogCore) -> None:
        super().__init__()
        self.catalog = catalog

    def _restore(self, state: bytes) -> Job:
        job = Job.__new__(Job)
        job.__setstate__(pickle.loads(state))
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        return job

    def _jobs(self, where: str = "", args: tuple = ()) -> list[Job]:
        rows = self.catalog._reader().execute(
            f"SELECT id, job_state FROM schedule_jobs {where} ORDER BY next_run_time IS NULL, "
            "next_run_time, id", args).fetchall()
        jobs = []
        for job_id, state in rows:
            try:
                jobs.append(self._restore(state))
            except Exception:
                self._logger.exception("unrestorable scheduled job %s: removed", job_id)
                self.remove_job(job_id)
        return jobs

    def lookup_job(self, job_id: str) -> Job | None:
        found = self._jobs("WHERE id = ?", (job_id,))
        return found[0] if found else None

    def get_due_jobs(self, now: datetime) -> list[Job]:
        return self._jobs("WHERE next_run_time <= ?", (now.timestamp(),))

    def get_next_run_time(self) -> datetime | None:
        row = self.catalog._reader().execute(
            "SELECT MIN(next_run_time) FROM schedule_jobs WHERE next_run_time IS NOT NULL"
        ).fetchone()
        return datetime.fromtimestamp(row[0], UTC) if row and row[0] is not None else None

    def get_all_jobs(self) -> list[Job]:
        jobs = self._jobs()
        self._fix_paused_jobs_sorting(jobs)
        return jobs

    def add_job(self, job: Job) -> None:
        with self.catalog.transaction() as w:
            if w.execute("SELECT 1 FROM schedule_jobs WHERE id = ?", (job.id,)).fetchone():
                raise ConflictingIdError(job.id)
            w.execute("INSERT INTO schedule_jobs(id, next_run_time, job_state) VALUES (?, ?, ?)",
                      (job.id, _ts(job.next_run_time),
                       pickle.dumps(job.__getstate__(), PICKLE_PROTOCOL)))

    def update_job(self, job: Job) -> None:
        with self.catalog.transaction() as w:
            cur = w.execute("UPDATE schedule_jobs SET next_run_time = ?, job_state = ? "
                            "WHERE id = ?", (_ts(job.next_run_time),
                                             pickle.dumps(job.__getstate__(), PICKLE_PROTOCOL),
                                             job.id))
            if cur.rowcount == 0:
                raise JobLookupError(job.id)

    def remove_job(self, job_id: str) -> None:
        with self.catalog.transaction() as w:
            if w.execute("DELETE FROM schedule_jobs WHERE id = ?", (job_id,)).rowcount == 0:
                raise JobLookupError(job_id)

    def remove_all_jobs(self) -> None:
        with self.catalog.transaction() as w:
            w.execute("DELETE FROM schedule_jobs")

    def shutdown(self) -> None:  # the catalog is the daemon's to close
        pass

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} ({self.catalog.path})>"
