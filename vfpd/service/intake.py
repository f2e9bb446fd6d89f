"""How files come into the daemon's queue: watch events and start-up reconciles turned into
catalog jobs, with one rule for moves (a file that left one path and appeared at another with the
same device, inode, size and mtime is the same file: its path changes, its content is not read
again)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vfpd.catalog import (
    PRIORITY_BACKLOG,
    PRIORITY_NEW,
    Catalog,
    FileRecord,
    FileState,
    JobState,
)
from vfpd.hashing import FileStat
from vfpd.service.watcher import (
    DirDeleted,
    FileDeleted,
    FileMoved,
    FileSettled,
    Filter,
    WatchEvent,
)

log = logging.getLogger("vfpd.intake")

# Job reason of a file queued only because its content has no fingerprint of the model (or
# preset) the daemon runs now.
REASON_MODEL = "new model"

# A file deleted from one root and settled in another within this time, with the same inode,
# size and mtime, was moved: settle time plus a margin for a busy event queue.
MOVE_PAIRING_SECONDS = 60.0


def same_file(rec: FileRecord, now: FileStat) -> bool:
    """The one rule for moves: the record's file is the one now at another path (same device,
    inode, size and mtime), so its hash still holds."""
    return rec.hash is not None and (rec.stat.device, rec.stat.inode, rec.stat.size,
                                     rec.stat.mtime_ns) == (now.device, now.inode, now.size,
                                                            now.mtime_ns)


class Intake:
    """Watch events -> catalog (jobs, moves, deletions). Runs on the daemon's main thread."""

    def __init__(self, catalog: Catalog, wake: Callable[[], None]) -> None:
        self.catalog = catalog
        self._wake = wake
        self._gone: dict[tuple[int, int], tuple[FileRecord, float]] = {}

    def handle(self, ev: WatchEvent) -> None:
        cat = self.catalog
        if isinstance(ev, FileSettled):
            if self._came_back(ev.path):
                return
            cat.enqueue(ev.path, "new", PRIORITY_NEW)
            log.debug("queued %s (%s)", ev.path, ev.how)
            self._wake()
        elif isinstance(ev, FileMoved):
            rec = cat.file_by_path(ev.src)
            try:
                now: FileStat | None = FileStat.of(ev.dest)
            except OSError:
                now = None
            if rec is not None and now is not None and same_file(rec, now):
                cat.move_file(ev.src, ev.dest, now)
                log.info("moved %s -> %s", ev.src, ev.dest)
                return
            if rec is not None:
                cat.remove_file(ev.src)
            cat.enqueue(ev.dest, "new", PRIORITY_NEW)
            self._wake()
        elif isinstance(ev, FileDeleted):
            rec = cat.file_by_path(ev.path)
            if cat.remove_file(ev.path):
                log.info("deleted %s", ev.path)
                if rec is not None and rec.hash is not None:
                    self._gone[(rec.stat.device, rec.stat.inode)] = (rec, time.monotonic())
        elif isinstance(ev, DirDeleted):
            n = cat.remove_files_under(ev.path)
            if n:
                log.info("folder %s left: %d file(s) forgotten", ev.path, n)

    def _came_back(self, path: str) -> bool:
        """A file that left one root and arrived in another is one move (inotify sees two
        halves): recorded at once, with no re-hash and no duplicate announced."""
        now = time.monotonic()
        for key, (_, when) in list(self._gone.items()):
            if now - when > MOVE_PAIRING_SECONDS:
                del self._gone[key]
        try:
            fstat = FileStat.of(path)
        except OSError:
            return False
        entry = self._gone.get((fstat.device, fstat.inode))
        if entry is None or not same_file(entry[0], fstat):
            return False
        rec = entry[0]
        del self._gone[(fstat.device, fstat.inode)]
        self.catalog.store_result(path, fstat, rec.hash)  # type: ignore[arg-type]
        log.info("moved %s -> %s", rec.path, path)
        return True


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
    follow files moved while we were away (same_file: no re-hash), and forget files that are
    gone. With `model_version`, unchanged files whose content has no fingerprint of that version
    (the model or preset changed) are queued too: the pipeline re-embeds their stored frames, or
    decodes them when there are none of the current sampling. Files that failed stay failed
    unless `retry_failed` (a rescan the user asked for)."""
    queued: list[tuple[str, str]] = []
    moved = removed = 0
    current: dict[str, bool] = {}  # content hash -> has a fingerprint of model_version

    def lacks_fingerprint(rec: FileRecord) -> bool:
        if model_version is None or rec.hash is None or rec.state != FileState.OK:
            return False
        if rec.hash not in current:
            current[rec.hash] = catalog.has_fingerprint(rec.hash, model_version)
        return not current[rec.hash]

    for root in roots:
        if not root.is_dir():
            continue
        on_disk = {path: FileStat.from_stat_result(st) for path, st in flt.walk(root)}
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
            if dest is not None and same_file(rec, new[dest]):
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
             if p not in jobs or (retry_failed and jobs[p] == JobState.FAILED)]
    catalog.enqueue_many(fresh, priority)
    return Reconciled(len(fresh), moved, removed, sum(why == REASON_MODEL for _, why in fresh))
