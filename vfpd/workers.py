"""Decode untrusted videos in isolated child processes with a time limit and a memory limit.

One file that hangs the decoder, crashes it or eats memory costs its worker, which is killed and
replaced; the file gets an error record and every other file goes on. Workers are started with
"spawn" (a clean interpreter) because the daemon that owns the pool runs threads, and forking a
threaded process can deadlock the child.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from multiprocessing import get_context, reduction
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from pathlib import Path
from queue import SimpleQueue

from vfpd import media, sandbox
from vfpd.media import MediaError, SampledVideo, SamplingSettings

STOP_GRACE_SECONDS = 2.0
"""How long close() lets an idle worker exit by itself before killing it."""


WORKER_START_TIMEOUT = 120.0
"""How long a new worker may take to start: a fresh interpreter importing numpy and PyAV takes
about a second, many on a loaded machine. Not counted in any file's time limit, or a replacement
starting after one timeout would spend the next file's limit and time it out too."""

QUEUED_PER_WORKER = 2
"""Files handed to map()'s threads per worker: the one it decodes and the next, so a worker starts
its next file while the caller embeds and matches the last result (with one, it waited for the
caller: a whole scan's verification ran while a worker sat idle)."""

MAX_COUNTED_LENGTH = 6 * 3600.0
"""Seconds of declared length that earn extra time at most: a header can lie about the length."""


WORKER_OOM_SCORE_ADJ = 500
"""Added to a decode worker's oom_score_adj (-1000..1000) at its start: under memory pressure the
kernel kills a worker (one file fails and is tried again later) before the daemon (every job
stops). Raising one's own score needs no privilege, so this works in any unit or none."""


def _prefer_for_oom_kill() -> None:
    try:
        with open("/proc/self/oom_score_adj", "r+") as f:
            current = int(f.read())
            f.seek(0)
            f.write(str(min(1000, current + WORKER_OOM_SCORE_ADJ)))
    except (OSError, ValueError):
        pass  # no /proc: the kernel's own choice stands


class DecodeTimeout(MediaError):
    kind = "timeout"


class WorkerCrashed(MediaError):
    kind = "crashed"


class OutOfMemory(MediaError):
    kind = "out-of-memory"


@dataclass(frozen=True)
class PoolSettings:
    """How many decode workers run and what each one may spend on one file."""

    workers: int = 2
    timeout: float = 300.0  # seconds for one file, plus per_video_second for each second it lasts
    # The slowest path (every reference frame of 1080p H.264) runs at about 4x realtime on one
    # busy core, so a long film gets a quarter second per second of its declared length.
    per_video_second: float = 0.25
    # Address space of a worker; a 4K decode with frame threads needs well under 1 GiB, the
    # interpreter with numpy and PyAV reserves about 0.5 GiB of it.
    memory_limit: int = 3 << 30
    sampling: SamplingSettings = field(default_factory=SamplingSettings)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if not self.timeout > 0:
            raise ValueError("timeout must be positive")
        if self.per_video_second < 0:
            raise ValueError("per_video_second must not be negative")


@dataclass(frozen=True)
class DecodeResult:
    """What decoding one file gave: frames, or the error that says why not."""

    path: str
    sampled: SampledVideo | None
    error: MediaError | None
    seconds: float  # wall time spent on the file

    @property
    def ok(self) -> bool:
        return self.error is None


FRAME_HEADROOM = 4
"""A decoder holds at least this many pictures at once (reference, output, conversion)."""


def _oom(path: str, memory_limit: int) -> OutOfMemory:
    return OutOfMemory(path, f"out of memory (limit {memory_limit >> 20} MB)")


def _short_of_address_space(e: OSError) -> bool:
    """Under RLIMIT_AS a decoder that cannot map a thread's stack or a buffer fails with EAGAIN
    (pthread_create) or ENOMEM (mmap), which PyAV raises as an OSError such as BlockingIOError."""
    return e.errno in (errno.EAGAIN, errno.ENOMEM)


def _short_of_memory(path: str, sampling: SamplingSettings) -> bool:
    """Whether this worker could not even hold a few pictures of the file's size: FFmpeg's
    decoders drop a picture whose buffer cannot be allocated instead of failing, so a decode that
    "found no picture" under the memory limit is checked here."""
    try:
        info = media.probe(path, sampling)
    except MediaError:
        return False
    except MemoryError:
        return True
    try:
        block = bytearray(info.width * info.height * 3 // 2 * FRAME_HEADROOM)
    except MemoryError:
        return True
    del block
    return False


def _length(path: str, sampling: SamplingSettings) -> float | None:
    """The file's declared duration, sent ahead so that the parent can give a long film more time."""
    try:
        return media.probe(path, sampling).duration
    except MediaError:
        return None  # sample() will say why


def _child_main(conn: Connection, memory_limit: int, sampling: SamplingSettings) -> None:
    """A worker: decode each path it is sent, answer with (sampled, error), until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which closes the pool
    _prefer_for_oom_kill()
    try:
        sandbox.confine()  # no writes, no TCP: the catalog and the network are the daemon's
    except OSError:
        pass  # Landlock present but refusing (a kernel quirk): decode unconfined, as before
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash on untrusted media leaves no core file
    conn.send(("started",))
    while True:
        try:
            path = conn.recv()
            if isinstance(path, tuple):  # ("fd", name): a descriptor of the parent's follows
                fd = reduction.recv_handle(conn)
                path = f"/proc/self/fd/{fd}"
            else:
                fd = -1
        except (EOFError, OSError):
            return
        if path is None:
            return
        # The worker's own clock decides whether the decode kept to its limit: the parent may
        # read the answer late (a loaded machine, a busy interpreter), which must not turn an
        # over-long decode into a success.
        start = time.monotonic()
        try:
            conn.send(("length", _length(path, sampling)))
            reply: tuple[SampledVideo | None, MediaError | None] = (media.sample(path, sampling), None)
        except MediaError as e:
            reply = (None, e)
            if e.kind in ("not-a-video", "truncated") and _short_of_memory(path, sampling):
                reply = (None, _oom(path, memory_limit))
        except MemoryError:
            reply = (None, _oom(path, memory_limit))
        except OSError as e:
            reply = (None, _oom(path, memory_limit) if _short_of_address_space(e) else
                     WorkerCrashed(path, f"the decoder failed: {type(e).__name__}: {e}"))
        except Exception as e:  # noqa: BLE001 - any decoder failure is this file's, not the pool's
            reply = (None, WorkerCrashed(path, f"the decoder failed: {type(e).__name__}: {e}"))
        finally:
            if fd >= 0:
                os.close(fd)
        try:
            conn.send(("done", *reply, time.monotonic() - start))
        except MemoryError:
            conn.send(("done", None, _oom(path, memory_limit), time.monotonic() - start))


def _timeout(path: str, limit: float, took: float | None = None) -> DecodeTimeout:
    if took is None:
        return DecodeTimeout(path, f"decoding took longer than {limit:g} s and was stopped")
    return DecodeTimeout(path, f"decoding took {took:.2f} s, longer than its limit of {limit:g} s")


def _own_descriptor(path: str) -> int | None:
    """The descriptor number when `path` is /proc/<this pid>/fd/N, else None."""
    prefix = f"/proc/{os.getpid()}/fd/"
    if path.startswith(prefix) and path[len(prefix):].isdigit():
        return int(path[len(prefix):])
    return None


class _Worker:
    """One child process and the parent's end of its pipe."""

    def __init__(self, settings: PoolSettings) -> None:
        ctx = get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child, settings.memory_limit, settings.sampling),
                                name="vfpd-decode", daemon=True)
        self.proc.start()
        child.close()
        self._lock = threading.Lock()
        self._gone = False
        self._started = False

    def _wait_started(self, path: str) -> MediaError | None:
        """Wait (once) until the child has started; the error if it never does."""
        if self._started:
            return None
        ready = wait_ready([self.conn, self.proc.sentinel], WORKER_START_TIMEOUT)
        if self.conn not in ready:
            if not ready:
                self.kill()
                return WorkerCrashed(path, f"the decoder did not start within "
                                           f"{WORKER_START_TIMEOUT:g} s")
            return self._death(path)
        try:
            self.conn.recv()
        except (EOFError, OSError):
            return self._death(path)
        self._started = True
        return None

    def run(self, path: str, timeout: float, per_video_second: float
            ) -> tuple[SampledVideo | None, MediaError | None, bool]:
        """Decode one file; the bool says whether this worker is still usable. A path naming one
        of this process's open descriptors (hashing.OpenFile.proc_path) is sent as the descriptor
        itself: the sandboxed worker may not look into another process's /proc entry, and must
        read the file that was opened, not whatever a name holds now."""
        own_fd = _own_descriptor(path)
        not_started = self._wait_started(path)
        if not_started is not None:
            return None, not_started, False
        try:
            if own_fd is None:
                self.conn.send(path)
            else:
                self.conn.send(("fd", path))
                reduction.send_handle(self.conn, own_fd, self.proc.pid)
        except (BrokenPipeError, OSError):
            return None, self._death(path), False
        start = time.monotonic()
        deadline = start + timeout
        while True:
            ready = wait_ready([self.conn, self.proc.sentinel], max(0.0, deadline - time.monotonic()))
            if not ready:
                self.kill()
                return None, _timeout(path, deadline - start), False
            if self.conn not in ready:
                return None, self._death(path), False
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                return None, self._death(path), False
            if message[0] == "length":
                if message[1]:
                    deadline = start + timeout + min(message[1], MAX_COUNTED_LENGTH) * per_video_second
                continue
            _, sampled, error, took = message
            if took > deadline - start:
                return None, _timeout(path, deadline - start, took), True
            # After running out of memory the worker's heap is in an unknown state: replace it.
            return sampled, error, not isinstance(error, OutOfMemory)

    def _death(self, path: str) -> MediaError:
        # Reaped under the lock only: two threads waiting on one child (this one, and close()
        # killing it at a SIGTERM) race in waitpid, and the loser's Process.close() then raises
        # "Cannot close a process while it is still running".
        with self._lock:
            if self._gone:
                return WorkerCrashed(path, "the decode pool was closed")
            self.proc.join(1.0)
            code = self.proc.exitcode
        self.kill()
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            if -code == signal.SIGKILL:
                return WorkerCrashed(path, f"the decoder was killed ({name}), possibly by the "
                                           "system's out-of-memory killer")
            return WorkerCrashed(path, f"the decoder crashed ({name})")
        return WorkerCrashed(path, f"the decoder exited unexpectedly (exit code {code})")

    def ask_to_stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError, ValueError):
            pass

    def kill(self) -> None:
        """Kill (if still running), reap and release; safe to call twice and from two threads."""
        with self._lock:
            if self._gone:
                return
            self._gone = True
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join()
            self.conn.close()
            self.proc.close()


class DecodePool:
    """N decode workers. `decode(path)` is thread-safe and blocks for one file; `map(paths)` yields
    results in completion order. Use as a context manager: close() leaves no process behind."""

    def __init__(self, settings: PoolSettings = PoolSettings()) -> None:
        if settings.sampling.decoder_threads == 0:
            # Files run in parallel across workers, which uses the cores better than threads
            # inside one decoder; the threads share what is left over.
            per = max(1, (os.cpu_count() or 1) // settings.workers)
            settings = replace(settings, sampling=replace(settings.sampling, decoder_threads=per))
        self.settings = settings
        self._idle: SimpleQueue[_Worker | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._all: set[_Worker] = set()
        self._closed = False
        for _ in range(settings.workers):
            self._idle.put(self._spawn())  # never None: the pool is not closed yet

    def _spawn(self) -> _Worker | None:
        w = _Worker(self.settings)
        with self._lock:
            if not self._closed:
                self._all.add(w)
                return w
        w.kill()  # close() ran while this replacement was starting
        return None

    def _retire(self, w: _Worker) -> None:
        with self._lock:
            self._all.discard(w)

    def decode(self, path: str | Path, timeout: float | None = None) -> DecodeResult:
        """Sample one file in a worker; never raises for a bad file, only returns its error.
        `timeout` overrides the pool's limit for this file (e.g. scaled by its size)."""
        if self._closed:
            raise RuntimeError("the decode pool is closed")
        worker = self._idle.get()
        if worker is None:
            self._idle.put(None)  # wake the other waiters too
            raise RuntimeError("the decode pool is closed")
        start = time.monotonic()
        try:
            sampled, error, alive = worker.run(str(path), timeout or self.settings.timeout,
                                             self.settings.per_video_second)
        except (ValueError, OSError):  # close() killed this worker while it was busy
            sampled, error, alive = None, WorkerCrashed(path, "the decode pool was closed"), False
        if not alive:
            self._retire(worker)
            worker = self._spawn() if not self._closed else None
        if worker is not None:
            with self._lock:
                back = not self._closed
            if back:
                self._idle.put(worker)
        return DecodeResult(str(path), sampled, error, time.monotonic() - start)

    def map(self, paths: Iterable[str | Path]) -> Iterator[DecodeResult]:
        """Decode every path, `workers` at a time; results come in completion order."""
        it = iter(paths)
        ahead = QUEUED_PER_WORKER * self.settings.workers
        with ThreadPoolExecutor(self.settings.workers, thread_name_prefix="vfpd-decode") as ex:
            pending: set[Future[DecodeResult]] = set()
            try:
                for path in it:
                    pending.add(ex.submit(self.decode, path))
                    if len(pending) >= ahead:
                        break
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        for nxt in it:  # before the caller gets the result and goes off with it
                            pending.add(ex.submit(self.decode, nxt))
                            break
                        yield fut.result()
            finally:
                for fut in pending:
                    fut.cancel()  # files not started yet: a caller that stops waits for none

    def pids(self) -> list[int]:
        """Process ids of the live workers (for status and tests)."""
        with self._lock:
            return [w.proc.pid for w in self._all if w.proc.pid is not None]

    def close(self) -> None:
        """Stop every worker; a worker busy with a file is killed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        idle = []
        while not self._idle.empty():
            w = self._idle.get()
            if w is not None:
                idle.append(w)
        for w in idle:
            w.ask_to_stop()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for w in idle:
            try:
                w.proc.join(max(0.0, deadline - time.monotonic()))
            except ValueError:
                pass
        for w in workers + idle:
            w.kill()
        self._idle.put(None)

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
