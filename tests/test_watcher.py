"""The watcher on real folders with real inotify and polling: settling, moves, deletes, roots."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from vfpd.config import WatchConfig
from vfpd.service.watcher import (
    DirDeleted,
    FileDeleted,
    FileMoved,
    FileSettled,
    Filter,
    Watcher,
    WatchEvent,
)

SETTLE = 0.6


class Recorder:
    def __init__(self) -> None:
        self.q: queue.Queue[WatchEvent] = queue.Queue()

    def __call__(self, ev: WatchEvent) -> None:
        self.q.put(ev)

    def next(self, timeout: float = 5.0) -> WatchEvent:
        return self.q.get(timeout=timeout)

    def empty_for(self, seconds: float) -> bool:
        try:
            ev = self.q.get(timeout=seconds)
        except queue.Empty:
            return True
        pytest.fail(f"unexpected event {ev}")


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    return a, b


@pytest.fixture
def watching(roots: tuple[Path, Path]):
    rec = Recorder()
    w = Watcher(WatchConfig(paths=roots, settle_seconds=SETTLE), rec)
    w.start()
    yield w, rec
    w.stop()


def test_slow_chunked_write_settles_once_after_close(watching, roots) -> None:
    w, rec = watching
    target = roots[0] / "slow.mp4"
    with open(target, "wb") as f:
        for gap in (0.3, 0.3, 1.5, 0.3):  # one stall longer than the settle time
            f.write(os.urandom(64 * 1024))
            f.flush()
            time.sleep(gap)
        assert rec.q.empty(), "reported while still being written"
        f.write(os.urandom(64 * 1024))
    ev = rec.next()
    assert ev == FileSettled(str(target), "closed")
    assert target.stat().st_size == 5 * 64 * 1024
    rec.empty_for(SETTLE + 0.5)


def test_copy_settles_and_ignores_other_files(watching, roots, small_video) -> None:
    w, rec = watching
    (roots[0] / "notes.txt").write_text("hello")
    (roots[0] / ".hidden.mp4").write_bytes(b"x")
    shutil.copy(small_video, roots[0] / "copy.mp4")
    assert rec.next() == FileSettled(str(roots[0] / "copy.mp4"), "closed")
    rec.empty_for(SETTLE + 0.3)


def test_rename_move_delete(watching, roots) -> None:
    w, rec = watching
    a, b = roots
    (a / "sub").mkdir()  # (its watch is added while x.mp4 settles)
    (a / "x.mp4").write_bytes(b"video")
    assert rec.next() == FileSettled(str(a / "x.mp4"), "closed")
    os.rename(a / "x.mp4", a / "y.mp4")
    assert rec.next() == FileMoved(str(a / "x.mp4"), str(a / "y.mp4"))
    os.rename(a / "y.mp4", a / "sub" / "y.mp4")
    assert rec.next() == FileMoved(str(a / "y.mp4"), str(a / "sub" / "y.mp4"))
    # Between two roots inotify sees two unrelated halves: gone here, new there (the pipeline
    # recognises the content by its stat and hash, so nothing is fingerprinted again).
    os.rename(a / "sub" / "y.mp4", b / "y.mp4")
    assert {rec.next(), rec.next()} == {FileDeleted(str(a / "sub" / "y.mp4")),
                                        FileSettled(str(b / "y.mp4"), "closed")}
    os.rename(b / "y.mp4", b / "y.txt")  # to a name that is not watched: gone for us
    assert rec.next() == FileDeleted(str(b / "y.mp4"))
    os.rename(b / "y.txt", b / "z.mp4")  # from an unwatched name: a new file
    assert rec.next() == FileSettled(str(b / "z.mp4"), "closed")
    (b / "z.mp4").unlink()
    assert rec.next() == FileDeleted(str(b / "z.mp4"))


def test_folder_moved_in_and_out(watching, roots, tmp_path) -> None:
    w, rec = watching
    outside = tmp_path / "outside" / "sub"
    outside.mkdir(parents=True)
    (outside / "v.mp4").write_bytes(b"v")
    os.rename(outside, roots[0] / "sub")
    ev = rec.next()
    assert ev == FileSettled(str(roots[0] / "sub" / "v.mp4"), "stable")
    os.rename(roots[0] / "sub", tmp_path / "gone")
    assert rec.next() == DirDeleted(str(roots[0] / "sub"))


def test_polled_root_settles_by_stability(roots) -> None:
    rec = Recorder()
    cfg = WatchConfig(paths=roots, poll=(roots[1],), poll_interval=0.2, settle_seconds=SETTLE)
    w = Watcher(cfg, rec)
    w.start()
    try:
        modes = {r.path: (r.mode, r.reason) for r in w.roots()}
        assert modes[str(roots[0])][0] == "inotify"
        assert modes[str(roots[1])] == ("polling", "configured poll")
        (roots[1] / "n.mp4").write_bytes(b"nas")
        assert rec.next() == FileSettled(str(roots[1] / "n.mp4"), "stable")
    finally:
        w.stop()


def test_reconfigure_adds_and_removes_roots(roots, tmp_path) -> None:
    rec = Recorder()
    w = Watcher(WatchConfig(paths=(roots[0],), settle_seconds=SETTLE), rec)
    w.start()
    try:
        (roots[1] / "before.mp4").write_bytes(b"1")
        rec.empty_for(SETTLE + 0.3)
        added, removed = w.configure(WatchConfig(paths=(roots[1],), settle_seconds=SETTLE))
        assert (added, removed) == ([str(roots[1])], [str(roots[0])])
        assert [r.path for r in w.roots()] == [str(roots[1])]
        (roots[0] / "ignored.mp4").write_bytes(b"2")
        (roots[1] / "after.mp4").write_bytes(b"3")
        assert rec.next() == FileSettled(str(roots[1] / "after.mp4"), "closed")
        rec.empty_for(SETTLE + 0.3)
    finally:
        w.stop()


def test_missing_root_is_reported(tmp_path) -> None:
    w = Watcher(WatchConfig(paths=(tmp_path / "nas",)), Recorder())
    w.start()
    try:
        (state,) = w.roots()
        assert state.mode == "missing"
    finally:
        w.stop()


def test_walk_filters(tmp_path: Path) -> None:
    (tmp_path / "d" / ".Trash-0").mkdir(parents=True)
    (tmp_path / "skip").mkdir()
    for p in ["a.mp4", "b.MKV", "c.txt", "d/e.mov", "d/.Trash-0/f.mp4", "skip/g.mp4", ".h.mp4"]:
        (tmp_path / p).write_bytes(b"x")
    os.symlink(tmp_path / "a.mp4", tmp_path / "link.mp4")
    cfg = WatchConfig(paths=(tmp_path,), exclude=(".*", "skip"))
    found = sorted(os.path.relpath(p, tmp_path) for p, _ in Filter.of(cfg).walk(tmp_path))
    assert found == ["a.mp4", "b.MKV", "d/e.mov"]
    flat = Filter.of(replace(cfg, recursive=False))
    assert sorted(os.path.relpath(p, tmp_path) for p, _ in flat.walk(tmp_path)) == [
        "a.mp4", "b.MKV"]


WATCH_LIMIT_PROBE = """
import json, sys, time
from pathlib import Path
from vfpd.config import WatchConfig
from vfpd.service.watcher import Watcher
root = Path(sys.argv[1])
got = []
w = Watcher(WatchConfig(paths=(root,), poll_interval=0.2, settle_seconds=0.3), got.append)
w.start()
(root / "d7" / "late.mp4").write_bytes(b"x")
deadline = time.monotonic() + 10
while not got and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"roots": [[r.mode, r.reason] for r in w.roots()],
                  "events": [type(e).__name__ for e in got]}))
w.stop()
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_inotify_watch_limit_falls_back_to_polling(tmp_path: Path) -> None:
    """A real limit: in a user namespace of its own the probe may hold only 3 inotify watches."""
    for i in range(10):
        (tmp_path / f"d{i}").mkdir()
    script = ("echo 3 > /proc/sys/user/max_inotify_watches && "
              f'exec "{sys.executable}" -c "$0" "$1"')
    done = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script,
                           WATCH_LIMIT_PROBE, str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip("user namespaces are not allowed here")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["roots"] == [["polling", "inotify watch limit reached (raise "
                                        "fs.inotify.max_user_watches)"]]
    assert out["events"] == ["FileSettled"]
    assert "inotify watch limit reached" in done.stderr
