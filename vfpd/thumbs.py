"""Thumbnails of untrusted videos: small WebP frames at given times, decoded in a child process
with a time limit and a memory limit, so a hostile file costs one child and not the report.

One child serves many files in turn (starting an interpreter with PyAV per file would cost more
than decoding); a child that overruns THUMB_TIMEOUT_SECONDS on a file is killed and replaced, and
that file gets no thumbnails.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing import get_context
from multiprocessing.connection import Connection

THUMB_WIDTH = 240
"""Pixels across: two columns of a phone screen, or a filmstrip of four on a laptop, at about
3 kB each (a 5,000-group report holds ~50,000 of them: 150 MB or so, so they are files beside
the page, not data: URIs inside it)."""

THUMB_QUALITY = 70
"""libwebp quality (0..100): 70 keeps faces and captions readable at this size, about 3 kB a
frame of real footage (JPEG at the same look: 4-5 kB)."""

THUMB_TIMEOUT_SECONDS = 60.0
"""Per file, for a handful of seeks: a sane file takes well under a second; a decoder stuck on a
crafted file is killed after this."""

THUMB_MEMORY_LIMIT = 2 << 30
"""Address space of a thumbnail child: one decoder at a time needs far less; the interpreter with
PyAV and numpy reserves about 0.5 GiB of it."""


@dataclass(frozen=True)
class ThumbJob:
    """Frames of `path` at `times` (seconds), written as WebP files to `outputs` (same order);
    no times: only the frame rate is read."""

    path: str
    times: tuple[float, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class ThumbResult:
    job: ThumbJob
    written: tuple[bool, ...]  # per output: whether the file was written
    error: str | None = None
    fps: float | None = None  # the video stream's average frame rate, when the container says
    codec: str | None = None


def _webp(frame: object, width: int) -> bytes:
    import av

    src = frame  # an av.VideoFrame
    height = max(2, int(round(src.height * width / max(src.width, 1) / 2)) * 2)  # type: ignore[attr-defined]
    small = src.reformat(width=width, height=height, format="yuv420p")  # type: ignore[attr-defined]
    ctx = av.CodecContext.create("libwebp", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"quality": str(THUMB_QUALITY)}
    small.pts = 0
    data = b"".join(bytes(p) for p in [*ctx.encode(small), *ctx.encode(None)])
    if not data:
        raise ValueError("the WebP encoder produced nothing")
    return data


def extract(job: ThumbJob, width: int = THUMB_WIDTH) -> ThumbResult:
    """Decode the frame at or just after each time (the last frame when a time is past the end)
    and write it as WebP. Runs in the child; raises nothing a bad file can cause."""
    import av

    written = [False] * len(job.times)
    fps = codec = None
    try:
        with av.open(job.path, metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else None
            codec = stream.codec_context.name
            tb = stream.time_base or Fraction(1, 1000)
            for i in sorted(range(len(job.times)), key=lambda i: job.times[i]):
                t = max(0.0, job.times[i])
                container.seek(int(t / tb) + (stream.start_time or 0), stream=stream,
                               backward=True, any_frame=False)
                chosen = None
                for frame in container.decode(stream):
                    chosen = frame
                    if frame.time is None or frame.time + 1e-3 >= t:
                        break
                if chosen is None:
                    continue
                data = _webp(chosen, width)
                tmp = f"{job.outputs[i]}.part"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, job.outputs[i])
                written[i] = True
    except Exception as e:  # noqa: BLE001 - whatever a hostile file makes PyAV raise
        return ThumbResult(job, tuple(written), f"{type(e).__name__}: {e}", fps, codec)
    return ThumbResult(job, tuple(written), fps=fps, codec=codec)


def _child_main(conn: Connection, memory_limit: int, width: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(extract(job, width))


class _Child:
    """One thumbnail process; replaced when it overruns or dies."""

    def __init__(self, memory_limit: int, width: int) -> None:
        ctx = get_context("spawn")  # a clean interpreter: callers may run threads
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child_conn, memory_limit, width),
                                daemon=True)
        self.proc.start()
        child_conn.close()

    def run(self, job: ThumbJob, timeout: float) -> ThumbResult | None:
        """The result, or None when the child overran the time limit or died (it is then gone)."""
        try:
            self.conn.send(job)
            if self.conn.poll(timeout):
                result = self.conn.recv()
                assert isinstance(result, ThumbResult)
                return result
        except (EOFError, OSError):
            pass
        self.kill()
        return None

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout=5)
        self.kill()


def extract_all(jobs: Iterable[ThumbJob], workers: int = 2,
                timeout: float = THUMB_TIMEOUT_SECONDS, memory_limit: int = THUMB_MEMORY_LIMIT,
                width: int = THUMB_WIDTH) -> Iterator[ThumbResult]:
    """Run the jobs in `workers` isolated children; yields each result as it finishes (in any
    order). A job whose child overran `timeout` or crashed yields an error result."""
    jobs = list(jobs)
    if not jobs:
        return
    import queue

    todo: queue.SimpleQueue[ThumbJob | None] = queue.SimpleQueue()
    for job in jobs:
        todo.put(job)
    n = max(1, min(workers, len(jobs)))
    for _ in range(n):
        todo.put(None)
    done: queue.SimpleQueue[ThumbResult] = queue.SimpleQueue()

    def serve() -> None:
        child: _Child | None = None
        try:
            while (job := todo.get()) is not None:
                result = None
                try:
                    child = child or _Child(memory_limit, width)
                    result = child.run(job, timeout)
                    why = (f"no thumbnail within {timeout:.0f} s (the decoder hung or crashed); "
                           "the child was killed")
                except OSError as e:  # no process could be started: every job still answers
                    why = f"no thumbnail process could be started: {e}"
                if result is None:
                    result = ThumbResult(job, (False,) * len(job.times), why)
                    child = None  # run() killed it; the next job gets a fresh one
                done.put(result)
        finally:
            if child is not None:
                child.stop()

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(serve) for _ in range(n)]
        for _ in jobs:
            yield done.get()
        for f in futures:
            f.result()


def filmstrip_times(start: float, end: float, count: int) -> list[float]:
    """`count` moments spread over [start, end): the middle of equal slices, so neither a fade-in
    at the start nor the credits at the end fill the strip."""
    span = max(end - start, 0.0)
    return [start + span * (i + 0.5) / count for i in range(count)]



def frame_rates(paths: Iterable[str], workers: int = 2) -> dict[str, float | None]:
    """Each file's frame rate, read in the isolated children (for --keep best): a hostile file
    costs its child and gets None."""
    return {r.job.path: r.fps for r in extract_all(
        (ThumbJob(p, (), ()) for p in sorted(paths)), workers=workers)}
