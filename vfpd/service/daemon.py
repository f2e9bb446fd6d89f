"""The daemon: wires catalog, index, model, decoder, watcher, pipeline, notifier and control socket,
owns the lifecycle (start, SIGHUP reload, SIGTERM/SIGINT stop) and talks to systemd.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfpd import config as config_mod
from vfpd.catalog import (
    JOB_FAILED,
    PRIORITY_NEW,
    Catalog,
    CatalogError,
    FileRecord,
    RetryPolicy,
)
from vfpd.config import DEFAULT_WEBHOOK_RETRIES, Config, ConfigError
from vfpd.frame_index import BuildCancelled, FrameIndex, build_frame_index, load_frame_index
from vfpd.hashing import FileStat
from vfpd.index import VectorIndex, open_index
from vfpd.matching import NEAR, verify
from vfpd.media import MediaError, SampledVideo
from vfpd.presets import PRESETS, Preset
from vfpd.service import logging as vlog
from vfpd.service.context import RootState
from vfpd.service.notify import Notifier, delivery_policy
from vfpd.service.pipeline import Decoder, Embedder, Pipeline, PipelineSettings, reconcile
from vfpd.service.sdnotify import SystemdNotifier
from vfpd.service.watcher import (
    DirDeleted,
    FileDeleted,
    FileMoved,
    FileSettled,
    RootAppeared,
    Watcher,
    WatchEvent,
)

log = logging.getLogger("vfpd.daemon")

CATALOG_NAME = "catalog.db"
LOCK_NAME = "vfpd.lock"
INDEX_NAME = "index.faiss"
FRAME_INDEX_NAME = "frames.faiss"
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

# A file deleted from one root and settled in another within this time, with the same inode,
# size and mtime, was moved: settle time plus a margin for a busy event queue.
MOVE_PAIRING_SECONDS = 60.0

STOP = "stop"
RELOAD = "reload"


class StartupError(Exception):
    """The daemon cannot start (socket taken, catalog unusable); the message says why."""


EXIT_ALREADY_RUNNING = 3
"""Another vfpd holds the state folder (docs/protocol.md): a restart cannot help."""


class AlreadyRunning(StartupError):
    """Another daemon holds the state directory's lock."""


@dataclass(frozen=True)
class Parts:
    """What the daemon is made of, built by `build_parts` (the only place that imports the
    model and the worker pool, so tests and benchmarks can choose how to build them)."""

    embedder: Embedder
    decoder: Decoder
    close: Callable[[], None]


def build_parts(cfg: Config) -> Parts:
    from vfpd.model.embed import Embedder as ModelEmbedder

    from vfpd.model.network import load_blob

    # [model] batch_size counts videos per batch (the pipeline's); the embedder's own batch is
    # frames per forward pass, which it sizes itself. The preset's suffix keeps fingerprints of
    # another sampling apart (another model version: re-fingerprinted after a change).
    embedder = ModelEmbedder(weights=cfg.model.weights, device=cfg.model.device,
                             version_suffix=preset(cfg).version_suffix)
    # The model itself loads when work arrives; a weights file that cannot be read must stop
    # start-up now, not fail every file later.
    load_blob(embedder.weights)
    decoder, close = _decode_pool(cfg)
    return Parts(embedder, decoder, close)


class PoolDecoder:
    """The pipeline's decoder: vfpd.workers' isolated pool, started when work arrives and stopped
    when the pipeline goes idle (idle workers hold ~100 MB each for nothing)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pool: Any = None
        self._closed = False

    def _get(self) -> Any:
        from vfpd.workers import DecodePool

        with self._lock:
            if self._closed:
                raise RuntimeError("the decoder is closed")
            if self._pool is None:
                self._pool = DecodePool(self.settings)
            return self._pool

    def __call__(self, paths: Sequence[str]) -> Iterator[tuple[str, SampledVideo | MediaError]]:
        for r in self._get().map(paths):
            yield r.path, (r.sampled if r.error is None else r.error)

    def unload(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.unload()


def _decode_pool(cfg: Config) -> tuple[Decoder, Callable[[], None]]:
    from vfpd.workers import PoolSettings

    decoder = PoolDecoder(PoolSettings(workers=cfg.decode.workers,
                                       timeout=cfg.decode.timeout_seconds,
                                       per_video_second=cfg.decode.timeout_per_video_second,
                                       memory_limit=cfg.decode.memory_mb << 20,
                                       sampling=preset(cfg).sampling))
    return decoder, decoder.close


def preset(cfg: Config) -> Preset:
    return PRESETS[cfg.model.preset]


def threshold(cfg: Config, running: Preset | None = None) -> float:
    """[detect] threshold, or the default of the preset (`running`, else the configured one)."""
    if cfg.detect.threshold is not None:
        return cfg.detect.threshold
    return (running or preset(cfg)).threshold


def pipeline_settings(cfg: Config, running: Preset | None = None) -> PipelineSettings:
    """The pipeline's settings; `running` is the preset the daemon started with (a changed
    [model] preset takes effect at the next restart, with the embedder it belongs to)."""
    p = running or preset(cfg)
    return PipelineSettings(batch_size=cfg.model.batch_size, threshold=threshold(cfg, p),
                            candidates=cfg.detect.candidates,
                            idle_unload_seconds=cfg.model.idle_unload_seconds,
                            match=p.match, sampling=p.sampling)


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
        self._gone: dict[tuple[int, int], tuple[FileRecord, float]] = {}
        self.catalog: Catalog
        self.index: VectorIndex
        self.frame_index: FrameIndex | None = None
        self._stopping = threading.Event()
        self.pipeline: Pipeline
        self.notifier: Notifier
        self.watcher: Watcher
        self.control: Any = None
        self._lock_fd: int | None = None
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
        mv = self._parts.embedder.model_version
        self.index = open_index(self.catalog, mv, state / INDEX_NAME)
        log.info("catalog %s: index of model %s (preset %s) holds %d fingerprints (%s)",
                 state / CATALOG_NAME, mv, self.preset.name, len(self.index), self.index.kind)
        # A missing or unusable frame index is rebuilt in the background once running (see
        # _build_frame_index): at a million videos that reads every stored fingerprint.
        self.frame_index = load_frame_index(self.catalog, mv, state / FRAME_INDEX_NAME)
        self.notifier = Notifier(self.catalog, cfg.notify, self.env)
        self.pipeline = Pipeline(self.catalog, self.index, state / INDEX_NAME,
                                 self._parts.embedder, self._parts.decoder,
                                 pipeline_settings(cfg, self.preset), self.notifier.sinks,
                                 self.notifier.wake,
                                 self.frame_index, state / FRAME_INDEX_NAME)
        self.watcher = Watcher(cfg.watch, self._events.put)

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
            except StartupError as e:
                log.error("cannot start: %s", e)
                return EXIT_ALREADY_RUNNING if isinstance(e, AlreadyRunning) else 1
            self._background(self._reconcile_all, "vfpd-reconcile")
            if self.frame_index is None:
                self._background(self._build_frame_index, "vfpd-frame-index")
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
        for name in ("watcher", "control"):
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
        mv = self.pipeline.embedder.model_version
        try:
            index = build_frame_index(self.catalog, mv, self.pipeline.frame_index_path,
                                      should_stop=self._stopping.is_set)
        except BuildCancelled as e:
            log.info("%s (the daemon is stopping); it is rebuilt at the next start", e)
            return
        except Exception:
            log.exception("cannot build the frame index; clips of longer videos are found "
                          "only through the video index until the next start")
            return
        self.frame_index = index
        self.pipeline.frame_index = index
        index.catch_up(self.catalog)  # (what the pipeline committed while it was adopted)

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
        return f"{queued} queued, {len(self.index)} fingerprints{paused}"

    def _update_status(self) -> None:
        self._queued = self.queue_length()
        if not self._sd.enabled:
            return
        status = self._status(self._queued)
        if status != self._last_status:
            self._sd.status(status)
            self._last_status = status

    def _on_watch_event(self, ev: WatchEvent) -> None:
        cat = self.catalog
        try:
            if isinstance(ev, FileSettled):
                if self._came_back(ev.path):
                    return
                cat.enqueue(ev.path, "new", PRIORITY_NEW)
                log.debug("queued %s (%s)", ev.path, ev.how)
                self.pipeline.wake()
            elif isinstance(ev, FileMoved):
                try:
                    fstat: FileStat | None = FileStat.of(ev.dest)
                except OSError:
                    fstat = None
                if cat.move_file(ev.src, ev.dest, fstat):
                    log.info("moved %s -> %s", ev.src, ev.dest)
                else:
                    cat.enqueue(ev.dest, "new", PRIORITY_NEW)
                    self.pipeline.wake()
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
            elif isinstance(ev, RootAppeared):
                self._background(lambda p=Path(ev.path): self._reconcile([p]), "vfpd-reconcile")
        except Exception:
            log.exception("cannot record %s", ev)

    def _came_back(self, path: str) -> bool:
        """A file that left one root and arrived in another is one move (inotify sees two
        halves): same device, inode, size and mtime as a file deleted moments ago. Its path is
        recorded at once, with no re-hash and no duplicate announced."""
        now = time.monotonic()
        for key, (_, when) in list(self._gone.items()):
            if now - when > MOVE_PAIRING_SECONDS:
                del self._gone[key]
        try:
            fstat = FileStat.of(path)
        except OSError:
            return False
        entry = self._gone.get((fstat.device, fstat.inode))
        if entry is None:
            return False
        rec = entry[0]
        if (rec.stat.size, rec.stat.mtime_ns) != (fstat.size, fstat.mtime_ns) or rec.hash is None:
            return False
        del self._gone[(fstat.device, fstat.inode)]
        self.catalog.store_result(path, fstat, rec.hash)
        log.info("moved %s -> %s", rec.path, path)
        return True

    # -- reconcile and reload --------------------------------------------------------------------

    def _reconcile_all(self) -> None:
        self._reconcile(list(self.config.watch.paths))

    def _reconcile(self, roots: list[Path], retry_failed: bool = False) -> int:
        self._reconciling.set()
        try:
            started = time.monotonic()
            mv = self.pipeline.embedder.model_version
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
        for section in ("storage", "control", "model", "decode"):
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
        if job is None or job.state != JOB_FAILED:
            return False
        self.catalog.enqueue(str(path), "retry", PRIORITY_NEW)
        self.pipeline.wake()
        return True

    def index_info(self) -> dict[str, object]:
        info = self.index.info()
        return {"type": info.kind, "size": info.size, "model_version": info.model_version,
                "dim": info.dim, "covered_seq": info.covered_seq,
                "preset": self.preset.name, "missing_fingerprints": self.missing_fingerprints(),
                "fingerprinted": {"decoded": self.pipeline.decoded,
                                  "from_stored_frames": self.pipeline.reembedded},
                "frames": (self.frame_index.info().to_json() if self.frame_index is not None
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

    def query(self, path: Path, k: int) -> list[dict[str, object]]:
        return self.pipeline.query(Path(path), k)  # type: ignore[return-value]

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
                # Never detected: record the pair so the verdict has a home and detection obeys.
                mv = self.pipeline.embedder.model_version
                fa, fb = cat.fingerprint(ha, mv), cat.fingerprint(hb, mv)
                m = (verify(fa.fingerprint, fb.fingerprint, self.preset.match)
                     if fa and fb else None)
                cat.add_duplicate(ha, hb, m.score if m else 0.0,
                                  m.kind if m and m.kind in ("near", "partial") else NEAR,
                                  [s.to_json() for s in m.segments] if m else None)
            cat.set_verdict(ha, hb, stored)
        log.info("verdict %s on %s and %s", stored, a, b)
        return {"a": str(a), "b": str(b), "hash_a": ha, "hash_b": hb,
                "verdict": "not-a-duplicate" if stored == "not_duplicate" else stored}

    def last_retrain(self) -> dict[str, object] | None:
        return None
