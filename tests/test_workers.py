"""vfpd.workers: real child processes decoding real files; hangs, crashes and memory are real too."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest

from media_factory import make_video
from vfpd import media
from vfpd.workers import DecodePool, PoolSettings


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def _assert_clean(pids: list[int], threads_before: int) -> None:
    assert pids and all(_gone(p) for p in pids), "decode workers left behind"
    assert multiprocessing.active_children() == []
    assert threading.active_count() == threads_before


def _vm_size(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize")


def test_map_decodes_good_files_and_reports_bad_ones(tmp_path: Path, bikes: Path) -> None:
    good = [make_video(tmp_path / f"g{i}.mp4", seconds=2.0, seed=i) for i in range(3)]
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 10)
    empty = tmp_path / "empty.mkv"
    empty.touch()
    fifo = tmp_path / "never-written.mp4"  # opening it for reading would block forever
    os.mkfifo(fifo)
    threads = threading.active_count()
    with DecodePool(PoolSettings(workers=2)) as pool:
        results = list(pool.map([*good, text, bikes, empty, fifo]))
        pids = pool.pids()
    _assert_clean(pids, threads)
    by_path = {r.path: r for r in results}
    assert len(results) == 7 and set(by_path) == {str(p) for p in [*good, text, bikes, empty, fifo]}
    assert by_path[str(fifo)].error.kind == "unreadable" and "pipe" in by_path[str(fifo)].error.reason
    for p in [*good, bikes]:
        r = by_path[str(p)]
        assert r.ok and r.sampled is not None and r.seconds > 0
        direct = media.sample(p)
        np.testing.assert_array_equal(r.sampled.frames, direct.frames)
        np.testing.assert_array_equal(r.sampled.timestamps, direct.timestamps)
    assert isinstance(by_path[str(text)].error, media.NotAVideo)
    assert by_path[str(empty)].error.kind == "not-a-video" and "empty" in by_path[str(empty)].error.reason
    assert by_path[str(text)].sampled is None


def test_timeout_kills_the_worker_and_the_rest_goes_on(tmp_path: Path, bunny: Path) -> None:
    """A real 720p decode under a limit far too small for it stands in for a hung decoder."""
    small = make_video(tmp_path / "s.mp4", seconds=1.0)
    threads = threading.active_count()
    with DecodePool(PoolSettings(workers=1, per_video_second=0)) as pool:
        assert pool.decode(small).ok  # the worker has started: the limit is spent on decoding
        first = pool.pids()
        r = pool.decode(bunny, timeout=0.02)
        assert r.error is not None and r.error.kind == "timeout" and "0.02 s" in r.error.reason
        assert all(_gone(p) for p in first), "the hung worker was not killed"
        again = pool.decode(small)
        assert again.ok, again.error
        pids = pool.pids()
        assert pids != first
    _assert_clean(pids + first, threads)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_crashed_worker_gives_an_error_for_its_file_only(tmp_path: Path, bunny: Path, sig: int) -> None:
    small = make_video(tmp_path / "s.mp4", seconds=1.0)
    threads = threading.active_count()
    settings = PoolSettings(workers=1, sampling=media.SamplingSettings(keyframes="all"))
    with DecodePool(settings) as pool, ThreadPoolExecutor(1) as ex:
        assert pool.decode(small).ok
        [pid] = pool.pids()
        busy = ex.submit(pool.decode, bunny)
        time.sleep(0.05)
        os.kill(pid, sig)
        r = busy.result(timeout=30)
        assert r.error is not None and r.error.kind == "crashed", r
        assert signal.Signals(sig).name in r.error.reason
        after = pool.decode(small)
        assert after.ok and pool.pids() != [pid]
        pids = pool.pids() + [pid]
    _assert_clean(pids, threads)


def test_memory_limit_gives_out_of_memory(tmp_path: Path) -> None:
    """An 8K picture (50 MB per decoded frame) cannot be decoded in a worker allowed only 40 MB more
    than its start-up size."""
    big = tmp_path / "8k.mp4"
    with av.open(str(big), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 7680, 4320, "yuv420p"
        s.options = {"preset": "ultrafast"}
        img = np.zeros((4320, 7680, 3), np.uint8)
        img[::16] = 200  # a plain picture: cheap to encode, as costly to hold as any
        for _ in range(2):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    small = make_video(tmp_path / "s.mp4", seconds=1.0, width=160, height=120)
    one_thread = media.SamplingSettings(decoder_threads=1)  # no per-thread malloc arenas
    with DecodePool(PoolSettings(workers=1, sampling=one_thread)) as pool:
        # An answer for a missing file means the worker is up, and has decoded nothing yet.
        assert pool.decode(tmp_path / "missing.mp4").error.kind == "unreadable"
        baseline = _vm_size(pool.pids()[0])
    threads = threading.active_count()
    with DecodePool(PoolSettings(workers=1, memory_limit=baseline + (40 << 20), sampling=one_thread)) as pool:
        r = pool.decode(big)
        assert r.error is not None and r.error.kind == "out-of-memory", r
        assert r.error.reason.startswith("out of memory (limit ")
        ok = pool.decode(small)
        assert ok.ok, ok.error
        pids = pool.pids()
    _assert_clean(pids, threads)


def test_close_kills_a_busy_worker(bunny: Path) -> None:
    threads = threading.active_count()
    pool = DecodePool(PoolSettings(workers=1, sampling=media.SamplingSettings(keyframes="all")))
    with ThreadPoolExecutor(1) as ex:
        busy = ex.submit(pool.decode, bunny)
        time.sleep(0.3)
        pids = pool.pids()
        pool.close()
        r = busy.result(timeout=30)
    assert r.ok or r.error.kind == "crashed"
    _assert_clean(pids, threads)
    with pytest.raises(RuntimeError, match="closed"):
        pool.decode(bunny)


def test_long_files_get_more_time(tmp_path: Path, bunny: Path) -> None:
    """The limit grows with the length the worker reports (5.3 s of video at 10 s per second of
    video); the base limit only has to cover opening the file."""
    with DecodePool(PoolSettings(workers=1, timeout=30, per_video_second=10)) as pool:
        assert pool.decode(tmp_path / "missing.mp4").error.kind == "unreadable"  # worker is up
        r = pool.decode(bunny, timeout=0.5)
        assert r.ok, r.error


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        PoolSettings(workers=0)
    with pytest.raises(ValueError):
        PoolSettings(timeout=0)
    with pytest.raises(ValueError):
        PoolSettings(per_video_second=-1)


LATE_READER = """
import sys
from vfpd import media
from vfpd.workers import DecodePool, PoolSettings

if __name__ == "__main__":
    every = media.SamplingSettings(keyframes="all")
    with DecodePool(PoolSettings(workers=1, per_video_second=0, sampling=every)) as pool:
        first = pool.decode(sys.argv[1])
        print(first.seconds, flush=True)
        r = pool.decode(sys.argv[1], timeout=float(sys.stdin.readline()))
        print(r.error.kind if r.error else "ok", flush=True)
"""


def _spawned_children(pid: int) -> list[int]:
    """Processes `pid` started with multiprocessing's spawn (not its resource tracker)."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(proc.name))
    return out


def _has_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def test_a_decode_over_its_limit_is_a_timeout_even_when_the_parent_reads_it_late(
        tmp_path: Path, bunny: Path) -> None:
    """The parent is stopped (as a loaded machine can stall it) while the worker decodes: the
    worker's answer is waiting when the parent looks again, after the deadline. The decode took
    longer than its limit, so it is a timeout, as it would have been had the parent been awake."""
    video = tmp_path / "bunny.mp4"
    video.write_bytes(bunny.read_bytes())
    parent = subprocess.Popen([sys.executable, "-c", LATE_READER, str(video)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        took = float(parent.stdout.readline())
        [worker] = _spawned_children(parent.pid)
        parent.stdin.write(f"{took / 3:.3f}\n")
        parent.stdin.flush()
        deadline = time.monotonic() + 30
        while not _has_open(worker, video):
            assert time.monotonic() < deadline, "the worker never opened the file"
            time.sleep(0.002)
        os.kill(parent.pid, signal.SIGSTOP)
        time.sleep(3 * took + 1)  # the worker finishes meanwhile
        os.kill(parent.pid, signal.SIGCONT)
        assert parent.stdout.readline().strip() == "timeout"
        assert parent.wait(30) == 0
    finally:
        if parent.poll() is None:
            os.kill(parent.pid, signal.SIGCONT)
            parent.kill()
            parent.wait()


def test_decoder_threads_that_do_not_fit_the_memory_limit_are_out_of_memory(bunny: Path) -> None:
    """Sixteen frame threads each need a stack and a malloc arena: under a limit 300 MB above the
    worker's start-up size, starting them fails with EAGAIN, which PyAV raises as
    BlockingIOError. That is the memory limit speaking, and is said so."""
    threads16 = media.SamplingSettings(decoder_threads=16)
    with DecodePool(PoolSettings(workers=1, sampling=threads16)) as pool:
        assert pool.decode("/nonexistent.mp4").error.kind == "unreadable"  # the worker is up
        baseline = _vm_size(pool.pids()[0])
    limit = baseline + (300 << 20)
    with DecodePool(PoolSettings(workers=1, memory_limit=limit, sampling=threads16)) as pool:
        r = pool.decode(bunny)
    assert r.error is not None and r.error.kind == "out-of-memory", r.error
    assert r.error.reason == f"out of memory (limit {limit >> 20} MB)"
