"""The real daemon's log on ordinary occasions says only what is true and useful: a first start
on an empty state folder, a download still being written, and a SIGTERM while a decode runs give
no WARNING, ERROR or traceback."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from media_factory import encode, sample_clip
from test_daemon import Daemon, NotifyListener, WebhookServer, looped, wait_until

NOISE = ("WARNING", "ERROR", "CRITICAL", "Traceback")


def _noise(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if any(word in ln for word in NOISE)]


def _decoding(daemon_pid: int, path: Path) -> bool:
    """Whether a decode worker of the daemon has `path` open."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == daemon_pid and any(str(path) == str(fd.readlink())
                                          for fd in (proc / "fd").iterdir()):
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


class SlowWriter(threading.Thread):
    """A download in progress: part of a video at once, then a byte every few tenths of a second
    until finish(), then the rest, and the close."""

    def __init__(self, src: Path, dest: Path) -> None:
        super().__init__(daemon=True)
        self.data = src.read_bytes()
        self.out = open(dest, "wb")  # noqa: SIM115 - closed by run()
        self.written = len(self.data) * 4 // 10
        self.out.write(self.data[:self.written])
        self.out.flush()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.3) and self.written < len(self.data) - 1:
            self.out.write(self.data[self.written:self.written + 1])
            self.out.flush()
            self.written += 1
        self.out.write(self.data[self.written:])
        self.out.close()

    def finish(self) -> None:
        self.done.set()
        self.join()


@pytest.fixture
def fresh() -> Iterator[Daemon]:
    home = Path(tempfile.mkdtemp(prefix="vfpd-l-", dir="/tmp"))
    root = home / "watched"
    root.mkdir()
    hook, notify = WebhookServer(), NotifyListener(str(home / "notify.sock"))
    d = Daemon(home, [root], hook, notify, extra="timeout_seconds = 600\n")
    try:
        yield d
    finally:
        if d.proc is not None:
            d.stop(signal.SIGKILL)
        hook.close()
        notify.close()
        shutil.rmtree(home, ignore_errors=True)


def test_first_start_a_download_and_sigterm_during_a_decode_log_no_warning(
        fresh: Daemon, tmp_path: Path) -> None:
    # A video whose decode takes many seconds: one keyframe, every frame has to be decoded.
    base = encode(tmp_path / "base.mp4", (np.full((64, 64, 3), i * 7 % 256, np.uint8)
                                          for i in range(3000)), fps=250,
                  options={"preset": "ultrafast"}, gop=100000)
    long = looped(base, tmp_path / "long.mp4", 40)
    download = fresh.roots[0] / "download.mp4"
    writer = SlowWriter(sample_clip("carphone_pristine"), download)
    writer.start()
    try:
        assert not fresh.state.exists()
        fresh.start()
        fresh.wait_log("ready")
        # The download is found at start, looked at while it grows: tried again later, quietly.
        fresh.wait_log(f"will retry {download}")
    finally:
        writer.finish()
    fresh.wait_log(f"fingerprinted {download}")
    assert _noise(fresh.text()) == [], fresh.text()

    dest = fresh.roots[0] / "long.mp4"
    shutil.copyfile(long, dest)
    wait_until(lambda: _decoding(fresh.proc.pid, dest), what="a decode worker with the file open")
    started = time.monotonic()
    assert fresh.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    assert _noise(fresh.text()) == [], fresh.text()
