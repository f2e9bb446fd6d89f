"""The daemon's model in a process of its own. `ProcessEmbedder` keeps the contract the pipeline,
promotion and wiring use (embed_many, unload, model_version, frame_center, device, weights) while
torch lives only in a child process: the daemon never maps torch (about 180 MiB that it could not
give back), and letting the model go when idle is the child's exit.

The child (vfpd.model.embed.Embedder, with its device and CPU-thread rules) is started with
"spawn" (the daemon runs threads) on first use, runs at the daemon's priority (inherited), and
exits when asked by unload(), or by itself when the daemon is gone (its end of the pipe closes).
A child that dies (a crash in a native library, the out-of-memory killer, SIGKILL) fails the
request in flight with ModelProcessError, which the chain counts as a transient embedding error
(retried video by video, then the job with back-off); the next request starts a new child.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from pathlib import Path

import numpy as np

from vfpd.fingerprint import Fingerprint
from vfpd.media import SampledVideo
from vfpd.model.version import weights_version

log = logging.getLogger("vfpd.model")

START_TIMEOUT = 300.0
"""How long a new model process may take to answer: importing torch and reading the weights takes
seconds, many on a loaded machine; a child that says nothing by then is killed."""

STOP_GRACE_SECONDS = 5.0
"""How long unload() lets the child exit by itself (releasing its GPU context) before killing it."""


class ModelProcessError(RuntimeError):
    """The model process could not start, failed on a batch, or died: worth another try later (a
    RuntimeError, not a ValueError, which would say the video itself cannot be fingerprinted)."""


@dataclass(frozen=True)
class Device:
    """The device the model runs on, named as torch.device's `type` names it ("cpu", "cuda")."""

    type: str


@dataclass(frozen=True)
class ModelFacts:
    """What the child reads from the weights as it starts; kept for the embedder's lifetime."""

    device: str
    frame_center: np.ndarray | None
    model_version: str


def _serve(conn: Connection, weights: str, device: str, version_suffix: str) -> None:
    """The child: read the weights, say what they are, then embed each batch it is sent until it
    is told to stop or the daemon's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the daemon, which stops us
    try:
        from vfpd.model.embed import Embedder

        embedder = Embedder(Path(weights), device=device, version_suffix=version_suffix)
        facts = ModelFacts(embedder.device.type, embedder.frame_center, embedder.model_version)
    except Exception as e:  # an unreadable weights file, CUDA asked for and absent, ...
        conn.send(("error", str(e)))
        return
    conn.send(("ready", facts))
    while True:
        try:
            videos = conn.recv()
        except (EOFError, OSError):
            return  # the daemon is gone
        if videos is None:
            return
        try:
            reply: tuple[str, object] = ("ok", embedder.embed_many(videos))
        except ValueError as e:  # the videos themselves cannot be fingerprinted
            reply = ("refused", str(e))
        except Exception as e:  # noqa: BLE001 - out of GPU memory and the like: this batch's
            reply = ("failed", f"{type(e).__name__}: {e}")
        try:
            conn.send(reply)
        except OSError:
            return


class _Child:
    """One model process and the daemon's end of its pipe."""

    def __init__(self, weights: Path, device: str, version_suffix: str) -> None:
        ctx = get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, str(weights), device, version_suffix),
                                name="vfpd-model", daemon=True)
        self.proc.start()
        child.close()  # the child's end lives in the child only: its death reads as EOF here
        self.pid: int = self.proc.pid  # type: ignore[assignment]

    def end(self, grace: float) -> int | None:
        """Ask the child to exit, kill it after `grace` seconds, reap it; its exit code. Once:
        every caller has let go of the child first."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass  # already gone
        self.proc.join(grace)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        code = self.proc.exitcode
        self.conn.close()
        self.proc.close()
        return code


def _how(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class ProcessEmbedder:
    """An Embedder whose model runs in a child process. Thread-safe: one request at a time."""

    def __init__(self, weights: Path, device: str = "auto", version_suffix: str = "") -> None:
        """The weights' version is read here (no torch): a missing file raises WeightsError."""
        self.weights = Path(weights)
        self._device = device
        self._suffix = version_suffix
        self.model_version = weights_version(self.weights) + version_suffix
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._facts: ModelFacts | None = None

    # -- what the model is ----------------------------------------------------------------------

    def describe(self) -> ModelFacts:
        """What the weights say (read by the model process once, which is started if need be)."""
        with self._lock:
            if self._facts is None:
                self._running()
            assert self._facts is not None
            return self._facts

    @property
    def frame_center(self) -> np.ndarray | None:
        """The model's background frame feature (vfpd.model.center), None when the weights carry
        none."""
        return self.describe().frame_center

    @property
    def device(self) -> Device:
        return Device(self.describe().device)

    @property
    def pid(self) -> int | None:
        """The running model process's id (None when there is none)."""
        with self._lock:
            return None if self._child is None else self._child.pid

    # -- the Embedder contract ------------------------------------------------------------------

    def embed_many(self, videos: list[SampledVideo]) -> list[Fingerprint]:
        """Fingerprints of several videos, embedded together by the model process. Raises
        ValueError for videos that cannot be fingerprinted, ModelProcessError when the process
        fails or dies (then the next call starts a new one)."""
        for v in videos:
            if len(v.frames) == 0:
                raise ValueError("a sampled video without frames cannot be fingerprinted")
        if not videos:
            return []
        with self._lock:
            child = self._running()
            try:
                child.conn.send(videos)
                kind, value = child.conn.recv()
            except (EOFError, OSError):
                self._child = None
                how = _how(child.end(0.0))
                log.warning("model process %d ended (%s) while embedding %d video(s)",
                            child.pid, how, len(videos))
                raise ModelProcessError(f"the model process ended ({how}) while embedding") from None
        if kind == "refused":
            raise ValueError(value)
        if kind != "ok":
            raise ModelProcessError(f"the model failed: {value}")
        return value  # type: ignore[return-value]

    def unload(self) -> None:
        """Let the model go: the process exits (it is started again by the next request)."""
        with self._lock:
            child, self._child = self._child, None
            if child is not None:
                how = _how(child.end(STOP_GRACE_SECONDS))
                log.info("model process %d stopped (%s)", child.pid, how)

    # -- the process ----------------------------------------------------------------------------

    def _running(self) -> _Child:
        """The live model process, started (and waited for) if there is none. Caller holds the
        lock."""
        child = self._child
        if child is not None:
            if child.proc.is_alive():
                return child
            # Died while idle (the OOM killer, a signal): said now, replaced below.
            log.warning("model process %d ended while idle (%s)", child.pid,
                        _how(child.end(0.0)))
            self._child = None
        started = time.monotonic()
        child = _Child(self.weights, self._device, self._suffix)
        ready = wait_ready([child.conn, child.proc.sentinel], START_TIMEOUT)
        try:
            kind, value = child.conn.recv() if child.conn in ready else ("error", None)
        except (EOFError, OSError):
            kind, value = "error", None
        if kind != "ready":
            code = child.end(STOP_GRACE_SECONDS)  # (one that said why exits by itself)
            if isinstance(value, str):  # the child's own words (they name the weights file)
                raise ModelProcessError(value)
            why = _how(code) if ready else f"no answer in {START_TIMEOUT:g} s"
            raise ModelProcessError(f"the model process did not start ({why})")
        facts: ModelFacts = value  # type: ignore[assignment]
        if facts.model_version != self.model_version:
            child.end(STOP_GRACE_SECONDS)
            raise ModelProcessError(f"{self.weights} changed while the daemon ran (model "
                                    f"{facts.model_version}, not {self.model_version})")
        self._facts = facts
        self._child = child
        log.info("model process %d started in %.1f s (model %s on %s)", child.pid,
                 time.monotonic() - started, self.model_version, facts.device)
        return child
