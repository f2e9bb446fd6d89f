"""vfpd/service/embed_process.py: the daemon's model in a real child process. Same fingerprints as
the model in-process; the child exits when the model is let go, when it is killed mid-batch only
that batch fails (and the next one starts a new child), and it ends with a daemon that is killed.
The daemon itself, through its real process: tests/test_daemon_model_process.py."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.processes import ended
from media_factory import sample_clip
from vfpd import media
from vfpd.media import SampledVideo
from vfpd.model.embed import Embedder
from vfpd.model.version import DEFAULT_WEIGHTS
from vfpd.service.embed_process import ModelProcessError, ProcessEmbedder


def _gone(pid: int) -> bool:
    """Gone and reaped (a zombie still has its /proc entry)."""
    return not Path(f"/proc/{pid}").exists()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _longer(v: SampledVideo, n: int) -> SampledVideo:
    """`v`'s frames repeated to n: a batch that keeps the model busy for a second or more."""
    reps = -(-n // len(v.frames))
    return dataclasses.replace(v, frames=np.tile(v.frames, (reps, 1, 1, 1))[:n],
                               timestamps=np.arange(n, dtype=np.float64),
                               informative=np.ones(n, bool), duration=float(n))


@pytest.fixture(scope="module")
def videos() -> list[SampledVideo]:
    return [media.sample(str(sample_clip(c))) for c in ("bikes", "carphone_pristine")]


@pytest.fixture
def embedder() -> Iterator[ProcessEmbedder]:
    e = ProcessEmbedder(DEFAULT_WEIGHTS, device="cpu")
    yield e
    e.unload()
    assert multiprocessing.active_children() == []


def test_same_fingerprints_as_the_model_in_process(embedder: ProcessEmbedder,
                                                   videos: list[SampledVideo]) -> None:
    local = Embedder(DEFAULT_WEIGHTS, device="cpu")
    for a, b in zip(embedder.embed_many(videos), local.embed_many(videos)):
        assert np.array_equal(a.vector, b.vector)
        assert np.array_equal(a.frame_features, b.frame_features)
        assert a.model_version == b.model_version == embedder.model_version
    assert np.array_equal(embedder.frame_center, local.frame_center)
    assert embedder.device.type == "cpu"
    # Its priority is the daemon's (inherited), not lowered like the training process's.
    assert os.getpriority(os.PRIO_PROCESS, embedder.pid) == os.getpriority(os.PRIO_PROCESS, 0)
    with pytest.raises(ValueError):  # a video that cannot be fingerprinted, as in-process
        embedder.embed_many([dataclasses.replace(videos[0], frames=videos[0].frames[:0])])


def test_unload_ends_the_process_and_the_next_use_starts_one(embedder: ProcessEmbedder,
                                                              videos: list[SampledVideo]) -> None:
    center = embedder.frame_center
    first = embedder.pid
    assert first is not None and not _gone(first)
    embedder.unload()
    assert embedder.pid is None and _gone(first)
    # What the weights say is kept: asking it again starts nothing.
    assert embedder.frame_center is center and embedder.pid is None
    assert len(embedder.embed_many(videos[:1])) == 1
    assert embedder.pid not in (None, first)


def test_sigkill_mid_batch_fails_that_batch_only(embedder: ProcessEmbedder,
                                                 videos: list[SampledVideo]) -> None:
    embedder.describe()  # started and idle: what it spends from here on is the batch
    pid = embedder.pid
    assert pid is not None
    busy = [_longer(videos[0], 600)] * 8  # about two seconds of one core
    idle_cpu = _cpu_seconds(pid)
    outcome: list[BaseException | list] = []
    t = threading.Thread(target=lambda: outcome.append(_run(embedder.embed_many, busy)))
    t.start()
    deadline = time.monotonic() + 60
    while _cpu_seconds(pid) < idle_cpu + 0.3:  # it is embedding
        assert time.monotonic() < deadline and t.is_alive(), "the batch never started"
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    t.join(60)
    assert isinstance(outcome[0], ModelProcessError), outcome
    assert "SIGKILL" in str(outcome[0])
    assert not isinstance(outcome[0], ValueError)  # not the videos' fault: tried again later
    assert _gone(pid) and embedder.pid is None
    fps = embedder.embed_many(videos)
    assert len(fps) == 2 and embedder.pid not in (None, pid)


def _run(fn, *args):  # noqa: ANN001, ANN202 - the thread's result or its exception
    try:
        return fn(*args)
    except BaseException as e:  # noqa: BLE001
        return e


def test_unreadable_weights_say_which_file(tmp_path: Path) -> None:
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"not a weights file")
    e = ProcessEmbedder(weights, device="cpu")
    with pytest.raises(ModelProcessError, match=str(weights)):
        e.describe()
    assert e.pid is None and multiprocessing.active_children() == []


DAEMON = """
import os, sys
from vfpd.service.embed_process import ProcessEmbedder
from vfpd.model.version import DEFAULT_WEIGHTS
if __name__ == "__main__":
    e = ProcessEmbedder(DEFAULT_WEIGHTS, device="cpu")
    e.describe()
    print(e.pid, flush=True)
    sys.stdin.read()  # until the test kills us
"""


def test_the_process_ends_with_a_killed_daemon(tmp_path: Path) -> None:
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    parent = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert not _gone(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.monotonic() + 30
        while not ended(child):  # it reads EOF where the daemon's end of the pipe was
            assert time.monotonic() < deadline, "the model process outlived the daemon"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
