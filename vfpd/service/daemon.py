"""The daemon's lifecycle: start (catalog, then the parts vfpd/service/wiring.py puts together,
watcher, control socket), SIGHUP reload, SIGTERM/SIGINT stop, health and systemd's watchdog.
Watch events go to vfpd/service/intake.py.

The main thread only waits: for watcher events, signals and watchdog ticks. Work happens on the
pipeline thread, deliveries on the notifier threads, requests on the control server's threads.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vfpd import config as config_mod
from vfpd.catalog import (
    PRIORITY_NEW,
    Catalog,
    CatalogError,
    JobState,
    RetryPolicy,
)
from vfpd.chain import with_stills
from vfpd.config import DEFAULT_WEBHOOK_RETRIES, Config, ConfigError
from vfpd.frame_index import BuildCancelled, build_frame_index
from vfpd.hashing import OpenFile
from vfpd.library import Library
from vfpd.matching import NEAR, PARTIAL
from vfpd.service import logging as vlog
from vfpd.service.context import RootState
from vfpd.service.intake import Intake, reconcile
from vfpd.service.notify import Notifier, delivery_policy
from vfpd.service.pipeline import Pipeline
from vfpd.service.retrainer import Retrainer
from vfpd.service.schedule import Schedule
from vfpd.service.sdnotify import SystemdNotifier
from vfpd.service.video_indexes import IndexBackendUnavailable, VideoIndexes
from vfpd.service.watcher import RootAppeared, Watcher, WatchEvent
from vfpd.service.wiring import (
    CATALOG_NAME,
    FRAME_INDEX_NAME,
    Parts,
    build_parts,
    make_embedder,
    model_store,
    pipeline_settings,
    preset,
    threshold,
    wire,
)

log = logging.getLogger("vfpd.daemon")

LOCK_NAME = "vfpd.lock"
# Webhook back-off: 2 s before the first retry, then x4 each time (2, 8, 32, 128, 512 s): a
# receiver restarting is covered by the first tries, a day-long outage is not waited out.
WEBHOOK_BACKOFF_SECONDS = 2.0
WEBHOOK_BACKOFF_MAX_SECONDS = 600.0
# How often STATUS= is refreshed while there is work; with none, not at all (idle is idle).
STATUS_INTERVAL = 2.0
# Stopping: the pipeline gets this long to finish or give back its batch (systemd's default
# TimeoutStopSec is 90 s; "a few seconds" is what a person waits for).
STOP_PIPELINE_SECONDS = 5.0

# The count of contents lacking a current fingerprint reads every file row (~0.2 s at 100k
# files): while it is not zero, it is computed again only after 20 times the time the last
# count took, so polling `vfpctl status` spends at most ~5 % of a core on it.
MISSING_RECOUNT_FACTOR = 20.0

# The systemd watchdog is fed only while the pipeline thread is alive and has finished a round
# (work, or a wait that ended) within this long; its longest wait is an idle sleep, woken by
# the next file, so a busy back-log file (a long decode) stays well inside it.
PROGRESS_STALE_SECONDS = 600.0

STOP = "stop"
RELOAD = "reload"


class StartupError(Exception):
    """The daemon cannot start (socket taken, catalog unusable); the message says why."""


EXIT_ALREADY_RUNNING = 3
"""Another vfpd holds the state folder (docs/protocol.md): a restart cannot help."""


class AlreadyRunning(StartupError):
    """Another daemon holds the state directory's lock."""


class Daemon:
    """One running vfpd. Implements vfpd.service.context.ServiceContext for the control socket."""

    def __init__(self, cfg: Config, env: Mapping[str, str] | None = None,
                 parts: Parts | None = None, log_level: str | None = None) -> None:
        self.config = cfg
        self._log_level = log_level  # --log-level: wins over [log] level, also after reloads
        self.env = dict(os.environ if env is None else env)
        self.started_at = time.time()
        self._parts = parts
        # SimpleQueue.put is reentrant: signal handlers put into it safely.
        self._events: queue.SimpleQueue[WatchEvent | str] = queue.SimpleQueue()
        self._sd = SystemdNotifier(self.env)
        self._last_status = ""
        self._queued = 0
        self._reconciling = threading.Event()
        self._threads: list[threading.Thread] = []
        self.catalog: Catalog
        self.library: Library
        self._stopping = threading.Event()
        self.pipeline: Pipeline
        self.intake: Intake
        self.notifier: Notifier
        self.watcher: Watcher
        self.control: Any = None
        self.retrainer: Retrainer | None = None
        self.schedule: Schedule | None = None
        self._lock_fd: int | None = None
        self._indexes: VideoIndexes | None = None
        self.preset = preset(cfg)  # fixed for the life of the process, like the weights
        # Contents still lacking a fingerprint of the running model: counted (a query over every
        # file) until it reaches zero, which lasts until the next reconcile can find more.
        self._missing_lock = threading.Lock()
        self._missing_known_zero = False
        self._missing_last: tuple[int, float] | None = None  # (count, when it may be redone)

    # -- start and stop --------------------------------------------------------------------------

    def _open(self) -> None:
        cfg = self.config
        state = cfg.storage.state_dir
        try:
            state.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise StartupError(f"cannot create the state directory {state}: {e.strerror}") from e
        self._lock_state(state)
        hook = cfg.notify.webhook
        try:
            self.catalog = Catalog(
                state / CATALOG_NAME,
                jobs=RetryPolicy(max_attempts=cfg.decode.max_attempts,
                                 backoff_s=cfg.decode.retry_seconds),
                deliveries=delivery_policy(hook.retries if hook else DEFAULT_WEBHOOK_RETRIES,
                                           WEBHOOK_BACKOFF_SECONDS, WEBHOOK_BACKOFF_MAX_SECONDS))
        except CatalogError as e:
            raise StartupError(str(e)) from e
        if self._parts is None:
            try:
                self._parts = build_parts(cfg)
            except Exception as e:  # weights unreadable, CUDA asked for but absent, ...
                raise StartupError(f"cannot set up the model or decoders: {e}") from e
        try:
            wired = wire(cfg, self.catalog, self._parts, self.env, self.preset)
        except IndexBackendUnavailable as e:
            raise StartupError(str(e)) from e
        self.library, self.pipeline, self.notifier = wired.library, wired.pipeline, wired.notifier
        self._indexes = wired.indexes
        index = self.library.index
        log.info("catalog %s: index of model %s (preset %s) holds %d fingerprints (%s)",
                 state / CATALOG_NAME, index.model_version, self.preset.name, len(index),
                 index.kind)
        self.intake = Intake(self.catalog, self.pipeline.wake)
        self.watcher = Watcher(cfg.watch, self._events.put)
        self.retrainer = Retrainer(self._retrain_spec, model_store(cfg), state, self._promote,
                                   lambda: Path(self.pipeline.embedder.weights))  # type: ignore[attr-defined]
        self.schedule = Schedule(self.catalog, cfg.retrain.schedule,
                                 lambda trigger: self.retrainer.start(trigger))  # type: ignore[union-attr]

    def _lock_state(self, state: Path) -> None:
        """One daemon per state directory: a second one would be a second catalog writer."""
        path = state / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StartupError(f"cannot open {path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"another vfpd (pid {other}) is running with state directory "
                               f"{state}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd  # held (and the lock with it) until the process exits

    def _start_control(self) -> None:
        try:
            from vfpd.service.control import ControlServer
        except ImportError:
            log.warning("no control server in this build; vfpctl cannot reach the daemon")
            return
        c = self.config.control
        try:
            c.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.control = ControlServer(c.socket, self, mode=c.socket_mode,
                                         group=c.socket_group)
            self.control.start()
        except Exception as e:
            self.control = None
            raise StartupError(f"control socket {c.socket}: {e}") from e

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop. Returns the exit code."""
        previous = self._install_signals()
        try:
            try:
                self._open()
                self._start_control()
                self.notifier.start()
                self.pipeline.start()
                self.watcher.start()
                self.schedule.start()  # type: ignore[union-attr]
            except StartupError as e:
                log.error("cannot start: %s", e)
                return EXIT_ALREADY_RUNNING if isinstance(e, AlreadyRunning) else 1
            self._background(self._reconcile_all, "vfpd-reconcile")
            if self.library.frame_index is None:
                self._background(self._build_frame_index, "vfpd-frame-index")
            self._background(self._keep_stills, "vfpd-stills")
            status = self._status()
            self._sd.ready(status)
            log.info("ready: watching %d folder(s); %s", len(self.config.watch.paths), status)
            if not self.config.watch.paths:
                log.warning("no folders to watch: set [watch] paths in %s",
                            self.config.source or config_mod.default_config_path(self.env))
            self._loop()
            return 0
        finally:
            self._sd.stopping()
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _install_signals(self) -> dict[int, Any]:
        previous = {}
        for sig, what in ((signal.SIGTERM, STOP), (signal.SIGINT, STOP),
                          (signal.SIGHUP, RELOAD)):
            previous[sig] = signal.signal(sig, lambda *_a, _w=what: self._events.put(_w))
        return previous

    def _shutdown(self) -> None:
        log.info("stopping")
        self._stopping.set()
        # The training process ends with the daemon; then no new work is taken in or asked for.
        for name in ("schedule", "retrainer", "watcher", "control"):
            part = getattr(self, name, None)
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    log.exception("stopping %s", name)
        if hasattr(self, "pipeline"):
            self.pipeline.request_stop()
        if self._parts is not None:
            try:
                self._parts.close()  # kills a decode in progress: its job stays queued
            except Exception:
                log.exception("closing the decoder")
        if hasattr(self, "pipeline"):
            self.pipeline.stop(STOP_PIPELINE_SECONDS)
        if hasattr(self, "notifier"):
            self.notifier.stop()
        for t in self._threads:
            t.join(timeout=2.0)
        if self._indexes is not None:
            try:
                self._indexes.close()  # after the pipeline's last save
            except Exception:
                log.exception("closing the video index")
        if hasattr(self, "catalog"):
            try:
                self.catalog.checkpoint()
            except Exception:
                log.exception("catalog checkpoint")
            self.catalog.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("stopped")

    def _build_frame_index(self) -> None:
        """Rebuild the frame index from the catalog while the daemon serves; until it is there,
        candidates come from the video index alone."""
        lib = self.library
        try:
            index = build_frame_index(self.catalog, lib.model_version, lib.model_center,
                                      self.config.storage.state_dir / FRAME_INDEX_NAME,
                                      should_stop=self._stopping.is_set)
        except BuildCancelled as e:
            log.info("%s (the daemon is stopping); it is rebuilt at the next start", e)
            return
        except Exception:
            log.exception("cannot build the frame index; clips of longer videos are found "
                          "only through the video index until the next start")
            return
        lib.frame_index = index
        index.catch_up(self.catalog)  # (what the pipeline committed while it was adopted)

    def _keep_stills(self) -> None:
        """Give the fingerprints stored before still pictures were kept their stills, from the
        stored frames, while the daemon serves (chain.with_stills); until then a pair with one of
        them is compared by its features alone."""
        done = 0
        try:
            for fid in self.catalog.ids_without_stills(self.library.model_version):
                if self._stopping.is_set():
                    return
                stored = self.catalog.fingerprints_by_ids([fid]).get(fid)
                if stored is not None:
                    with_stills(self.catalog, stored)
                    done += 1
        except Exception:
            log.exception("cannot add still pictures to stored fingerprints; they are compared "
                          "by their features alone")
            return
        if done:
            log.info("still pictures added to %d stored fingerprint(s)", done)

    def _background(self, fn: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=fn, name=name, daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    # -- the main loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        ping = self._sd.watchdog_interval
        next_ping = time.monotonic() + ping if ping else None
        next_status = 0.0
        while True:
            now = time.monotonic()
            deadlines = [next_ping] if next_ping is not None else []
            if self._queued or self.pipeline.busy or self._reconciling.is_set():
                deadlines.append(next_status)
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            try:
                item = self._events.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item == STOP:
                return
            if item == RELOAD:
                self.reload()
            elif item:
                self._on_watch_event(item)  # type: ignore[arg-type]
            now = time.monotonic()
            if next_ping is not None and now >= next_ping:
                if self.healthy():
                    self._sd.watchdog()
                next_ping = now + ping  # type: ignore[operator]
            # Counting the queue reads the catalog: at most every STATUS_INTERVAL, and only
            # while there is work (or when asked with an empty item).
            if now >= next_status or item == "":
                self._update_status()
                next_status = now + STATUS_INTERVAL

    def _status(self, queued: int | None = None) -> str:
        queued = self.queue_length() if queued is None else queued
        paused = " (paused)" if self.pipeline.paused else ""
        problem = self.problem()
        degraded = f" (degraded: {problem})" if problem else ""
        return f"{queued} queued, {len(self.library.index)} fingerprints{paused}{degraded}"

    def _update_status(self) -> None:
        self._queued = self.queue_length()
        if not self._sd.enabled:
            return
        status = self._status(self._queued)
        if status != self._last_status:
            self._sd.status(status)
            self._last_status = status

    def _on_watch_event(self, ev: WatchEvent) -> None:
        try:
            if isinstance(ev, RootAppeared):
                self._background(lambda p=Path(ev.path): self._reconcile([p]), "vfpd-reconcile")
            else:
                self.intake.handle(ev)
        except Exception:
            log.exception("cannot record %s", ev)

    # -- reconcile and reload --------------------------------------------------------------------

    def _reconcile_all(self) -> None:
        self._reconcile(list(self.config.watch.paths))

    def _reconcile(self, roots: list[Path], retry_failed: bool = False) -> int:
        self._reconciling.set()
        try:
            started = time.monotonic()
            mv = self.library.model_version
            done = reconcile(self.catalog, roots, self.watcher.filter,
                             retry_failed=retry_failed, model_version=mv)
            log.info("reconciled %d folder(s) in %.1f s: %d queued, %d moved, %d gone",
                     len(roots), time.monotonic() - started, done.queued, done.moved,
                     done.removed)
            if done.stale:
                with self._missing_lock:
                    self._missing_known_zero = False
                    self._missing_last = None
                log.info("%d file(s) have no fingerprint of model %s yet: queued behind new "
                         "files (stored frames sampled like preset %s are re-embedded without "
                         "decoding)", done.stale, mv, self.preset.name)
            if done.queued:
                self.pipeline.wake()
            return done.queued
        except Exception:
            log.exception("reconcile of %s failed", ", ".join(map(str, roots)))
            return 0
        finally:
            self._reconciling.clear()
            self._events.put("")  # refresh STATUS

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply what can change while running."""
        self._sd.reloading()
        try:
            new = config_mod.load(self.config.source, self.env)
        except ConfigError as e:
            log.error("reload refused, keeping the running config: %s", e)
            self._sd.ready(self._status())
            return
        old = self.config
        for section in ("storage", "control", "model", "decode", "retrain"):
            if getattr(old, section) != getattr(new, section):
                log.warning("[%s] changed: takes effect at the next restart", section)
        self.config = new
        vlog.set_level(self._log_level or new.log.level)
        self.notifier.configure(new.notify)
        self.pipeline.update(pipeline_settings(new, self.preset))
        added, removed = self.watcher.configure(new.watch)
        for root in removed:
            n = self.catalog.remove_files_under(root)
            log.info("root %s removed from the config: %d file(s) forgotten", root, n)
        if added:
            self._background(lambda: self._reconcile([Path(p) for p in added]),
                             "vfpd-reconcile")
        log.info("config reloaded from %s (%d root(s) added, %d removed)", new.source,
                 len(added), len(removed))
        self._sd.ready(self._status())

    # -- ServiceContext --------------------------------------------------------------------------

    def roots(self) -> list[RootState]:
        return self.watcher.roots()

    def queue_length(self) -> int:
        return self.catalog.counts().jobs_queued

    def drain_eta(self, queued: int) -> float | None:
        return self.pipeline.throughput.eta(queued)

    def paused(self) -> bool:
        return self.pipeline.paused

    def pause(self) -> None:
        self.pipeline.pause()
        self._events.put("")

    def resume(self) -> None:
        self.pipeline.resume()
        self._events.put("")

    def rescan(self, path: Path | None) -> int:
        if path is not None and Path(path).is_file():
            if not self.watcher.filter.is_video(str(path)):
                return 0
            self.catalog.enqueue(str(path), "rescan", PRIORITY_NEW)
            self.pipeline.wake()
            return 1
        roots = list(self.config.watch.paths) if path is None else [Path(path)]
        return self._reconcile(roots, retry_failed=True)

    def retry(self, path: Path) -> bool:
        job = self.catalog.job(str(path))
        if job is None or job.state != JobState.FAILED:
            return False
        self.catalog.enqueue(str(path), "retry", PRIORITY_NEW)
        self.pipeline.wake()
        return True

    def problem(self) -> str | None:
        """Why the daemon cannot do its work now (None while it can): the pipeline thread died,
        or it keeps failing (disk full, catalog locked), or it has not finished a round for
        PROGRESS_STALE_SECONDS."""
        p = self.pipeline
        if not p.alive and not self._stopping.is_set():
            return "the processing thread stopped"
        if p.problem is not None:
            return p.problem
        if time.monotonic() - p.progress_at > PROGRESS_STALE_SECONDS and p.busy:
            return f"no progress for {PROGRESS_STALE_SECONDS:.0f} s"
        return None

    def healthy(self) -> bool:
        return self.problem() is None

    def health(self) -> dict[str, object]:
        problem = self.problem()
        return {"state": "degraded" if problem else "ok", "reason": problem}

    def index_info(self) -> dict[str, object]:
        frame_index = self.library.frame_index
        info = self.library.index.info()
        return {"type": info.kind, "size": info.size, "model_version": info.model_version,
                "dim": info.dim, "covered_seq": info.covered_seq,
                "preset": self.preset.name, "missing_fingerprints": self.missing_fingerprints(),
                "fingerprinted": {"decoded": self.pipeline.decoded,
                                  "from_stored_frames": self.pipeline.reembedded},
                "frames": (frame_index.info().to_json() if frame_index is not None
                           else {"type": "building"})}

    def missing_fingerprints(self) -> int:
        """Files' contents without a fingerprint of the running model (and preset) yet."""
        with self._missing_lock:
            if self._missing_known_zero:
                return 0
            if self._missing_last is not None and time.monotonic() < self._missing_last[1]:
                return self._missing_last[0]
        started = time.monotonic()
        n = self.catalog.count_unfingerprinted(self.pipeline.embedder.model_version)
        now = time.monotonic()
        with self._missing_lock:
            self._missing_last = (n, now + MISSING_RECOUNT_FACTOR * (now - started))
            if n == 0 and not self._reconciling.is_set():
                self._missing_known_zero = True
        return n

    def query(self, file: OpenFile, k: int, should_stop: Callable[[], bool]
              ) -> list[dict[str, object]]:
        return self.pipeline.query(file, k, should_stop)  # type: ignore[return-value]

    def _hash_of(self, path: Path) -> str:
        rec = self.catalog.file_by_path(str(path))
        if rec is None or rec.hash is None:
            raise KeyError(str(path))
        return rec.hash

    def set_verdict(self, a: Path, b: Path, verdict: str) -> dict[str, object]:
        stored = "not_duplicate" if verdict in ("not-a-duplicate", "not_duplicate") else verdict
        if stored not in ("confirmed", "not_duplicate"):
            raise ValueError(f"unknown verdict {verdict!r}")
        ha, hb = self._hash_of(a), self._hash_of(b)
        if ha == hb:
            raise ValueError("the two files have the same content (byte-identical copies)")
        cat = self.catalog
        with cat.transaction():
            if cat.duplicate(ha, hb) is None:
                # Never detected: record the pair, scored the one way every pair is (the
                # library), so the verdict has a home and detection obeys.
                mv = self.library.model_version
                fa, fb = cat.fingerprint(ha, mv), cat.fingerprint(hb, mv)
                m = self.library.score(fa.fingerprint, fb.fingerprint) if fa and fb else None
                cat.add_duplicate(ha, hb, m.score if m else 0.0,
                                  m.kind if m and m.kind in (NEAR, PARTIAL) else NEAR,
                                  [s.to_json() for s in m.segments] if m else None)
            cat.set_verdict(ha, hb, stored)
        log.info("verdict %s on %s and %s", stored, a, b)
        return {"a": str(a), "b": str(b), "hash_a": ha, "hash_b": hb,
                "verdict": "not-a-duplicate" if stored == "not_duplicate" else stored}

    # -- retraining ------------------------------------------------------------------------------

    def _retrain_spec(self, run_dir: Path) -> Any:
        from vfpd.retrain.worker import Spec

        cfg, r = self.config, self.config.retrain
        return Spec(catalog=str(cfg.storage.state_dir / CATALOG_NAME),
                    weights=str(self.pipeline.embedder.weights),  # type: ignore[attr-defined]
                    run_dir=str(run_dir), max_minutes=r.max_minutes, min_videos=r.min_videos,
                    device=r.device, threads=r.threads, min_gain=r.min_gain,
                    max_steps=r.max_steps,
                    threshold=threshold(cfg, self.preset), preset=self.preset.name,
                    parent_pid=os.getpid())

    def _promote(self, weights: Path, should_stop: Callable[[], bool],
                 progress: Callable[[int, int], None]) -> str:
        """Serve `weights` from now on: re-embedded, indexed and swapped in (promotion.py); the
        files whose stored frames could not serve are queued by a reconcile."""
        from vfpd.service.promotion import promote

        embedder = make_embedder(self.config, weights)
        try:
            self.library = promote(self.catalog, self.pipeline, embedder, self.preset.sampling,
                                   self.config.storage.state_dir,
                                   self._indexes,  # type: ignore[arg-type] # set by _open
                                   should_stop, progress)
        except BaseException:
            embedder.unload()  # its model process; the running model serves on
            raise
        with self._missing_lock:
            self._missing_known_zero = False
            self._missing_last = None
        log.info("now serving model %s", embedder.model_version)
        self._background(self._reconcile_all, "vfpd-reconcile")
        return embedder.model_version

    def last_retrain(self) -> dict[str, object] | None:
        if self.retrainer is None:
            return None
        st = self.retrainer.status()
        next_run = self.schedule.next_run() if self.schedule else None
        if st["last"] is None and not st["running"] and next_run is None:
            return None  # never ran, nothing scheduled
        return {**(st["last"] or {}), "running": st["current"], "next_run": next_run}
