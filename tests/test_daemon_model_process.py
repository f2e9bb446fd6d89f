"""The real daemon with its model in a process of its own (vfpd/service/embed_process.py): torch is
never mapped into the daemon's process, the model process exits when the daemon lets the model go
and when the daemon stops, and a SIGKILL of it costs a retry, never a file or the daemon."""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.daemon import process_tree
from harness.daemon import Daemon, NotifyListener, WebhookServer, wait_until
from harness.processes import ended
from media_factory import make_video, sample_clip

IDLE_UNLOAD = 2.0
"""Seconds without work before the daemon lets the model go: the test waits for it."""

STARTED = re.compile(r"model process (\d+) started")


def _model_pids(d: Daemon) -> list[int]:
    """Model processes the daemon started, in order (its log)."""
    return [int(m.group(1)) for m in map(STARTED.search, d.lines("model process")) if m]


def _maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    home = Path(tempfile.mkdtemp(prefix="vfpd-mp-", dir="/tmp"))
    (home / "videos").mkdir()
    # One job a batch: the files go through the model one by one, so a model process killed
    # at any moment still leaves files for the next one.
    d = Daemon(home, [home / "videos"], WebhookServer(), NotifyListener(str(home / "notify.sock")),
               extra="retry_seconds = 0.5\n",
               model=f"batch_size = 1\nidle_unload_seconds = {IDLE_UNLOAD}\n")
    try:
        yield d
    finally:
        d.close()


def test_the_model_lives_and_dies_in_a_process_of_its_own(daemon: Daemon,
                                                           tmp_path: Path) -> None:
    d = daemon
    d.start()
    # Start-up: a model process read the weights (background, device) and exited again.
    first = _model_pids(d)
    assert len(first) == 1 and ended(first[0])
    assert not _maps_torch(d.proc.pid)

    sources = [sample_clip("bikes"), sample_clip("carphone_pristine")] + [
        make_video(tmp_path / f"p{i}.mp4", seconds=3, width=160, height=120, seed=40 + i)
        for i in range(3)]
    for i, src in enumerate(sources):
        shutil.copyfile(src, d.home / "videos" / f"v{i}{src.suffix}")
    # The model process is killed as soon as it serves: every file is fingerprinted anyway.
    wait_until(lambda: len(_model_pids(d)) >= 2, what="a model process for the files")
    killed = _model_pids(d)[1]
    os.kill(killed, signal.SIGKILL)
    assert not _maps_torch(d.proc.pid)  # the model works, not in the daemon
    d.wait_log("fingerprinted", count=len(sources))
    assert len(_model_pids(d)) >= 3, "no model process took over from the killed one"
    with d.catalog() as cat:
        assert cat.counts().jobs_failed == 0
    assert d.proc.poll() is None

    # Idle: the model process exits with the model; torch never came into the daemon.
    d.wait_log("model released")
    assert all(ended(p) for p in _model_pids(d))
    assert not _maps_torch(d.proc.pid)

    # A stop while the model works leaves no process behind.
    make_video(d.home / "videos" / "last.mp4", seconds=3, width=160, height=120, seed=50)
    n = len(_model_pids(d))
    wait_until(lambda: len(_model_pids(d)) > n, what="the model process for one more file")
    tree = process_tree(d.proc.pid)
    assert _model_pids(d)[-1] in tree
    assert d.stop() == 0
    deadline = time.monotonic() + 10
    while not all(ended(p) for p in tree):
        assert time.monotonic() < deadline, f"left behind: {[p for p in tree if not ended(p)]}"
        time.sleep(0.05)
