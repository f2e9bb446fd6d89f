"""Watch the roots (inotify, or polling for network mounts) and turn raw events into settled facts.

A file is reported only once it has settled. On an inotify root a file we saw being written is
taken when it is closed after writing (IN_CLOSE_WRITE) and left alone for a moment: every writer's
descriptor ends in that close, so a slow copy that stalls for minutes is still not taken half
written. A file that arrives complete (moved in, found in a folder moved in) and every file on a
polled root, which has no close events, is taken when its size and mtime stay unchanged for
`settle_seconds`. Moves, deletes and roots that appear later are reported as immutable events. With nothing pending the settle thread sleeps on a
condition variable, so an idle daemon spends no CPU here.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from vfpd import files
from vfpd.config import WatchConfig
from vfpd.files import FileRules
from vfpd.service.context import RootState

log = logging.getLogger("vfpd.watcher")

# After IN_CLOSE_WRITE a writer that re-opens to append (some downloaders do) shows up within
# milliseconds; a quarter second of quiet before taking the file costs nothing a person notices.
CLOSE_GRACE_SECONDS = 0.25
# A file moved in from outside the root is taken after this long: watchdog holds an unmatched
# IN_MOVED_FROM for 0.5 s to pair it, and a move between two roots must show its departure first
# so that the daemon records one move rather than a delete and a new file.
ARRIVAL_GRACE_SECONDS = 0.75
# A root that is missing (an unmounted NAS) is looked for again this often; only while missing.
MISSING_ROOT_RETRY_SECONDS = 30.0
# Only these reach us: opens and reads (our own hashing and decoding) would wake us for nothing.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
    DirCreatedEvent, DirDeletedEvent, DirMovedEvent,
]
# Errors that mean the kernel's inotify limits are used up: the root is polled instead.
INOTIFY_EXHAUSTED = (errno.ENOSPC, errno.EMFILE)


@dataclass(frozen=True)
class FileSettled:
    """A video file finished being written; `how` is "closed" or "stable"."""

    path: str
    how: str


@dataclass(frozen=True)
class FileMoved:
    """A video moved or was renamed inside the roots (content unchanged)."""

    src: str
    dest: str


@dataclass(frozen=True)
class FileDeleted:
    """A video left the roots (deleted, or moved outside / to a name that is not watched)."""

    path: str


@dataclass(frozen=True)
class DirDeleted:
    """A folder and everything under it left the roots."""

    path: str


@dataclass(frozen=True)
class RootAppeared:
    """A root that was missing exists now (e.g. a NAS got mounted): it needs a reconcile."""

    path: str


WatchEvent = FileSettled | FileMoved | FileDeleted | DirDeleted | RootAppeared
Sink = Callable[[WatchEvent], None]


@dataclass(frozen=True)
class Filter:
    """Which paths are videos we watch: under a root, and wanted by the file rules (vfpd/files.py,
    the scan's rules too)."""

    roots: tuple[str, ...]
    rules: FileRules

    @classmethod
    def of(cls, config: WatchConfig) -> Filter:
        return cls(tuple(str(p) for p in config.paths), config.rules)

    def root_of(self, path: str) -> str | None:
        for root in self.roots:
            if path == root or path.startswith(root.rstrip("/") + "/"):
                return root
        return None

    def is_video(self, path: str) -> bool:
        root = self.root_of(path)
        if root is None or path == root:
            return False
        return self.rules.wants(os.path.relpath(path, root))

    def walk(self, folder: str | Path) -> Iterator[tuple[str, os.stat_result]]:
        """Every watched video under `folder` (a root or a folder below one) with its lstat;
        unreadable folders are skipped, logged."""
        root = self.root_of(str(folder))
        if root is None:
            return iter(())
        return files.walk(folder, self.rules, _log_unlistable, base=root)


def _log_unlistable(path: str, reason: str) -> None:
    log.warning("%s: %s", path, reason)


def inotify_watch_count() -> int:
    """inotify watches this process holds now, from the kernel's fdinfo of its inotify fds."""
    count = 0
    try:
        fds = os.listdir("/proc/self/fdinfo")
    except OSError:
        return -1
    for fd in fds:
        try:
            with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
                count += sum(1 for line in f if line.startswith(b"inotify wd:"))
        except OSError:
            continue  # closed meanwhile
    return count


def count_dirs(root: str) -> int:
    """Folders a recursive inotify watch of `root` needs (root included, links not followed)."""
    n = 1
    for dirpath, dirnames, _ in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        n += len(dirnames)
    return n


@dataclass
class _Pending:
    deadline: float  # math.inf: waiting for IN_CLOSE_WRITE, no timer
    size: int
    mtime_ns: int
    closed: bool


def _stat_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


class Watcher(FileSystemEventHandler):
    """Watches the configured roots; calls `sink` with WatchEvents from its own threads."""

    def __init__(self, config: WatchConfig, sink: Sink) -> None:
        super().__init__()
        self._sink = sink
        self._lock = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._config = config
        self._filter = Filter.of(config)
        self._states: dict[str, RootState] = {}
        self._watches: dict[str, tuple[BaseObserver, ObservedWatch]] = {}
        self._inotify: InotifyObserver | None = None
        self._polling: PollingObserver | None = None
        self._stopping = False
        self._missing_checked = time.monotonic()
        self._thread = threading.Thread(target=self._settle_loop, name="vfpd-settle", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self.configure(self._config)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for obs in (self._inotify, self._polling):
            if obs is not None:
                obs.stop()
        for obs in (self._inotify, self._polling):
            if obs is not None and obs.is_alive():
                obs.join(timeout=5)
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def configure(self, config: WatchConfig) -> tuple[list[str], list[str]]:
        """Apply a (re)loaded [watch] section: start watching added roots, stop removed ones.
        Returns (added, removed) root paths."""
        new_roots = [str(p) for p in config.paths]
        poll = {str(p) for p in config.poll}
        with self._lock:
            old = dict(self._states)
            self._config = config
            self._filter = Filter.of(config)
        removed = [r for r in old if r not in new_roots]
        for root in removed:
            self._unschedule(root)
            with self._lock:
                self._states.pop(root, None)
                for p in [p for p in self._pending if p.startswith(root.rstrip("/") + "/")]:
                    del self._pending[p]
            log.info("stopped watching %s", root)
        added = []
        for root in new_roots:
            want_poll = root in poll
            state = old.get(root)
            if state is not None and state.mode != "missing" and (
                    (state.mode == "polling" and state.reason == "configured poll") == want_poll):
                continue
            if state is not None:
                self._unschedule(root)
            else:
                added.append(root)
            self._schedule(root, want_poll)
        with self._lock:
            self._lock.notify_all()
        return added, removed

    def roots(self) -> list[RootState]:
        with self._lock:
            return [self._states[str(p)] for p in self._config.paths if str(p) in self._states]

    @property
    def filter(self) -> Filter:
        with self._lock:
            return self._filter

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- scheduling --------------------------------------------------------------------------

    def _observer(self, polling: bool) -> BaseObserver:
        if polling:
            if self._polling is None:
                self._polling = PollingObserver(timeout=self._config.poll_interval)
                self._polling.name = "vfpd-poll"
                self._polling.start()
            return self._polling
        if self._inotify is None:
            self._inotify = InotifyObserver(generate_full_events=True)
            self._inotify.name = "vfpd-inotify"
            self._inotify.start()
        return self._inotify

    def _schedule(self, root: str, want_poll: bool) -> None:
        if not os.path.isdir(root):
            self._set_state(root, "missing", "folder does not exist (not mounted?)")
            log.warning("watch root %s does not exist; looking for it every %.0f s", root,
                        MISSING_ROOT_RETRY_SECONDS)
            return
        recursive = self._config.recursive
        if not want_poll:
            try:
                obs = self._observer(False)
                before = inotify_watch_count()
                watch = obs.schedule(self, root, recursive=recursive, event_filter=EVENT_FILTER)
                # watchdog skips sub-folders it cannot watch without a word; the kernel's count
                # of our watches tells whether every folder got one.
                if recursive and before >= 0 and (
                        inotify_watch_count() - before < count_dirs(root)):
                    obs.unschedule(watch)
                    raise OSError(errno.ENOSPC, "inotify watch limit reached")
                self._watches[root] = (obs, watch)
                self._set_state(root, "inotify", "local filesystem")
                log.info("watching %s (inotify)", root)
                return
            except OSError as e:
                if e.errno not in INOTIFY_EXHAUSTED:
                    raise
                reason = ("inotify watch limit reached (raise fs.inotify.max_user_watches)"
                          if e.errno == errno.ENOSPC else
                          "inotify instance limit reached (raise fs.inotify.max_user_instances)")
                log.warning("%s for %s; polling it every %.0f s instead", reason, root,
                            self._config.poll_interval)
        else:
            reason = "configured poll"
        obs = self._observer(True)
        watch = obs.schedule(self, root, recursive=recursive)
        self._watches[root] = (obs, watch)
        self._set_state(root, "polling", reason)
        log.info("watching %s (polling every %.0f s: %s)", root, self._config.poll_interval, reason)

    def _unschedule(self, root: str) -> None:
        entry = self._watches.pop(root, None)
        if entry is not None:
            obs, watch = entry
            try:
                obs.unschedule(watch)
            except KeyError:
                pass  # the emitter already stopped itself (its root was deleted)

    def _set_state(self, root: str, mode: str, reason: str) -> None:
        with self._lock:
            self._states[root] = RootState(path=root, mode=mode, reason=reason)

    # -- raw events (observer threads) -------------------------------------------------------

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:  # one odd event must not kill the observer thread
            log.exception("error handling %r", event)

    def _handle(self, event: FileSystemEvent) -> None:
        # With full events an unmatched half of a move has "" on the other side: a move across
        # the boundary of a watched tree (or between two roots).
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        flt = self.filter
        if event.is_directory:
            if isinstance(event, DirDeletedEvent) or (isinstance(event, DirMovedEvent)
                                                      and not dest):
                self._dir_gone(src, flt)
            elif isinstance(event, DirMovedEvent) and not src:
                self._dir_arrived(dest, flt)
            elif isinstance(event, DirCreatedEvent):
                self._dir_arrived(src, flt)
            # A folder moved inside the roots: its files come as their own move events.
            return
        if isinstance(event, FileMovedEvent):
            if not src:
                if flt.is_video(dest):
                    self._mark(dest, closed=True, arrived=True)  # moved in: complete already
                return
            was = self._forget(src)
            src_video, dest_video = flt.is_video(src), bool(dest) and flt.is_video(dest)
            if dest_video and (was is not None or not src_video):
                # Renamed while still being written, or a temp name (.part) became a video.
                self._mark(dest, closed=was.closed if was is not None else True,
                           keep=was)
            elif src_video and dest_video:
                self._sink(FileMoved(src, dest))
            elif src_video:
                self._sink(FileDeleted(src))
            return
        if not flt.is_video(src):
            return
        if isinstance(event, FileDeletedEvent):
            self._forget(src)
            self._sink(FileDeleted(src))
        elif isinstance(event, FileClosedEvent):
            self._mark(src, closed=True)
        elif isinstance(event, FileCreatedEvent):
            with self._lock:
                known = src in self._pending
            if not known:  # (watchdog also sends these for the files of a folder moved in)
                self._mark(src, closed=False, writing=self._has_close_events(src))
        elif isinstance(event, FileModifiedEvent):
            self._mark(src, closed=False, writing=self._has_close_events(src))

    def _has_close_events(self, path: str) -> bool:
        root = self.filter.root_of(path)
        with self._lock:
            state = self._states.get(root) if root else None
        return state is not None and state.mode == "inotify"

    def _dir_gone(self, path: str, flt: Filter) -> None:
        if path in flt.roots:
            self._unschedule(path)
            self._set_state(path, "missing", "folder was removed")
            log.warning("watch root %s was removed; looking for it every %.0f s", path,
                        MISSING_ROOT_RETRY_SECONDS)
            with self._lock:
                self._lock.notify_all()
        self._forget_under(path)
        if flt.root_of(path) is not None:
            self._sink(DirDeleted(path))

    def _dir_arrived(self, path: str, flt: Filter) -> None:
        """A folder appeared with files in it (moved in, or created and filled at once): each
        file is taken once it is stable; one still being written sends its own events."""
        if flt.root_of(path) is None or not os.path.isdir(path):
            return
        for file, _ in flt.walk(path):
            with self._lock:
                if file in self._pending:
                    continue
            self._mark(file, closed=False)

    def _mark(self, path: str, closed: bool, writing: bool = False,
              keep: _Pending | None = None, arrived: bool = False) -> None:
        """Note activity on `path`. closed: IN_CLOSE_WRITE (taken after a short grace);
        writing: open for writing on an inotify root (wait for the close, no timer); neither:
        taken when stable for settle_seconds."""
        key = _stat_key(path)
        if key is None:
            self._forget(path)
            return
        with self._lock:
            now = time.monotonic()
            if arrived:
                deadline = now + ARRIVAL_GRACE_SECONDS
            elif closed:
                deadline = now + min(CLOSE_GRACE_SECONDS, self._config.settle_seconds)
            elif writing or (keep is not None and keep.deadline == math.inf):
                deadline = math.inf
            else:
                deadline = now + self._config.settle_seconds
            self._pending[path] = _Pending(deadline, key[0], key[1], closed)
            self._lock.notify_all()

    def _forget(self, path: str) -> _Pending | None:
        with self._lock:
            return self._pending.pop(path, None)

    def _forget_under(self, folder: str) -> None:
        prefix = folder.rstrip("/") + "/"
        with self._lock:
            for p in [p for p in self._pending if p.startswith(prefix)]:
                del self._pending[p]

    # -- settling (own thread) ---------------------------------------------------------------

    def _settle_loop(self) -> None:
        while True:
            settled: list[FileSettled] = []
            appeared: list[str] = []
            with self._lock:
                if self._stopping:
                    return
                now = time.monotonic()
                for path, p in list(self._pending.items()):
                    if p.deadline > now:
                        continue  # not yet, or waiting for its writer to close it
                    key = _stat_key(path)
                    if key is None:
                        del self._pending[path]  # gone before it settled; the delete event tells
                    elif key == (p.size, p.mtime_ns):
                        del self._pending[path]
                        settled.append(FileSettled(path, "closed" if p.closed else "stable"))
                    else:
                        # Still growing (a poll-only root has no close events): look again later.
                        self._pending[path] = _Pending(now + self._config.settle_seconds, key[0],
                                                       key[1], False)
                missing = [r for r, s in self._states.items() if s.mode == "missing"]
                timeout: float | None = None
                timers = [p.deadline for p in self._pending.values() if p.deadline != math.inf]
                if timers:
                    timeout = max(0.0, min(timers) - now)
                if missing:
                    timeout = min(timeout if timeout is not None else MISSING_ROOT_RETRY_SECONDS,
                                  MISSING_ROOT_RETRY_SECONDS)
                if not settled:
                    if missing and self._missing_checked + MISSING_ROOT_RETRY_SECONDS <= now:
                        appeared = [r for r in missing if os.path.isdir(r)]
                        self._missing_checked = now
                    if not appeared:
                        self._lock.wait(timeout)
                        continue
            for ev in settled:
                self._sink(ev)
            for root in appeared:
                self._unschedule(root)
                self._schedule(root, root in {str(p) for p in self._config.poll})
                if self._states[root].mode != "missing":
                    log.info("watch root %s is back", root)
                    self._sink(RootAppeared(root))
