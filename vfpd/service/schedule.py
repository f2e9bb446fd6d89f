"""APScheduler runs retraining on the [retrain] schedule: a persistent job store in the catalog,
one run at a time, and a run missed while the daemon was down run once at the next start."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from vfpd.cron import cron_trigger

if TYPE_CHECKING:
    from vfpd.catalog import Catalog

log = logging.getLogger("vfpd.schedule")

JOB_ID = "retrain"

_RUN: Callable[[str], Any] | None = None


def scheduled_retrain() -> None:
    """The scheduled job (stored by reference, module:function): starts a retrain unless one is
    running (manual ones included), which is then this run's answer in the log."""
    if _RUN is None:
        return
    from vfpd.service.retrainer import Busy

    try:
        _RUN("schedule")
    except Busy as e:
        log.info("scheduled retrain not started: %s", e)
    except Exception:  # a failed start must not end the scheduler's thread
        log.exception("scheduled retrain could not start")


class Schedule:
    """The daemon's scheduler: starts with the daemon, stops with it."""

    def __init__(self, catalog: Catalog, cron: str, run: Callable[[str], Any]) -> None:
        self.catalog = catalog
        self.cron = cron
        self.run = run
        self._scheduler: Any = None

    def start(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        from vfpd.catalog.schedule import CatalogJobStore

        global _RUN
        store = CatalogJobStore(self.catalog)
        if not self.cron:
            store.remove_all_jobs()  # a schedule taken out of the config fires no more
            return
        _RUN = self.run
        # coalesce + no grace time: however many runs were missed while the daemon was down,
        # one runs at the start; max_instances=1 and one thread: never two at once.
        self._scheduler = BackgroundScheduler(
            jobstores={"default": store}, executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        self._scheduler.start(paused=True)
        trigger = cron_trigger(self.cron)  # (checked when the config was read)
        job = self._scheduler.get_job(JOB_ID)
        if job is None or str(job.trigger) != str(trigger):
            # A new or changed schedule starts from now; an unchanged one keeps its stored next
            # run time, so a run missed while the daemon was down is due now.
            self._scheduler.add_job(scheduled_retrain, trigger, id=JOB_ID, name="retrain",
                                    replace_existing=True)
        job = self._scheduler.get_job(JOB_ID)
        log.info("retraining scheduled (%s): next run %s", self.cron,
                 job.next_run_time if job else "never")
        self._scheduler.resume()

    def next_run(self) -> float | None:
        if self._scheduler is None:
            return None
        job = self._scheduler.get_job(JOB_ID)
        when: datetime | None = job.next_run_time if job else None
        return when.timestamp() if when else None

    def stop(self) -> None:
        global _RUN
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        _RUN = None
