"""The daemon's side of retraining: one run at a time (scheduled, manual or a `model use`), the
training process started, watched, cancelled and killed with the daemon; a candidate that passed
the gate promoted; the last result kept in <state>/retrain/last.json for `vfpctl status`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vfpd.atomic import atomic_writer
from vfpd.model.version import weights_version
from vfpd.retrain.models import KEPT_ASIDE, ModelStore
from vfpd.retrain.worker import CANDIDATE_NAME, PROGRESS_NAME, RESULT_NAME, Spec

log = logging.getLogger("vfpd.retrain")

RETRAIN_DIR = "retrain"
RUN_DIR = "run"
LAST_RUN_DIR = "last-run"  # the run folder (worker.log, spec) once its result is recorded
LAST_NAME = "last.json"

STOP_GRACE_SECONDS = 5.0
"""On cancel or daemon stop the training process gets this long to end its step and exit after
SIGTERM, then SIGKILL (a step on a CPU takes about a second)."""


STOP_RECORD_SECONDS = 30.0
"""How long the daemon's stop waits for the ended run's result to be recorded."""


class Busy(Exception):
    """A retrain or a model change is already in progress."""


Promote = Callable[[Path, Callable[[], bool], Callable[[int, int], None]], str]
"""(weights, should_stop, progress(done, total)) -> the model version now serving."""


class Retrainer:
    """Runs one retrain or model change at a time; thread-safe."""

    def __init__(self, spec: Callable[[Path], Spec], models: ModelStore, state: Path,
                 promote: Promote, running_weights: Callable[[], Path]) -> None:
        """`spec(run_dir)`: the worker's settings for a run in run_dir."""
        self._spec = spec
        self.models = models
        self.dir = state / RETRAIN_DIR
        self._promote = promote
        self._running_weights = running_weights
        self._lock = threading.Lock()
        self._busy: dict[str, Any] | None = None  # the run in progress
        self._proc: subprocess.Popen[bytes] | None = None
        self._cancel = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._done = threading.Condition(self._lock)
        self._recover()

    def _recover(self) -> None:
        """A run folder whose result was never recorded: the daemon died during the run (the
        training process died with it, PR_SET_PDEATHSIG); say so in the last result."""
        run_dir = self.dir / RUN_DIR
        try:
            run = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):
            return
        with self._lock:
            self._busy = {"trigger": run.get("trigger"), "kind": "retrain",
                          "started_at": run.get("started_at")}
        self._finish({"outcome": "failed", "reason": "interrupted: the daemon stopped without "
                                                     "ending the run; the running model stays"})

    # -- what is going on -------------------------------------------------------------------------

    def last(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.dir / LAST_NAME).read_text())
        except (OSError, ValueError):
            return None

    def status(self) -> dict[str, Any]:
        with self._lock:
            busy = dict(self._busy) if self._busy else None
        if busy is not None and busy.get("phase") in ("starting", "training", "gate", "loading"):
            try:
                p = json.loads((self.dir / RUN_DIR / PROGRESS_NAME).read_text())
                busy.update({k: v for k, v in p.items() if k not in ("pid", "started_at")})
            except (OSError, ValueError):
                pass
        return {"running": busy is not None, "current": busy, "last": self.last()}

    def _set(self, **kw: Any) -> None:
        with self._lock:
            if self._busy is not None:
                self._busy.update(kw)

    # -- starting ---------------------------------------------------------------------------------

    def _claim(self, trigger: str, **kw: Any) -> None:
        with self._lock:
            if self._stopping:
                raise Busy("the daemon is stopping")
            if self._busy is not None:
                raise Busy(f"a {self._busy['kind']} started by {self._busy['trigger']} is in "
                           f"progress (phase {self._busy['phase']})")
            self._cancel.clear()
            self._busy = {"trigger": trigger, "started_at": time.time(), **kw}

    def start(self, trigger: str) -> dict[str, Any]:
        """Start a retrain (Busy if one is running, or a model change)."""
        self._claim(trigger, kind="retrain", phase="starting")
        try:
            run_dir = self.dir / RUN_DIR
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True, mode=0o700)
            spec = self._spec(run_dir)
            (run_dir / "spec.json").write_text(json.dumps(asdict(spec)))
            with self._lock:
                started = self._busy["started_at"]  # type: ignore[index]
            (run_dir / "run.json").write_text(json.dumps({"trigger": trigger,
                                                          "started_at": started}))
            with open(run_dir / "worker.log", "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "vfpd.retrain.worker", str(run_dir / "spec.json")],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, close_fds=True)
        except Exception:
            with self._lock:
                self._busy = None
            raise
        with self._lock:
            self._proc = proc
            self._busy.update(pid=proc.pid)  # type: ignore[union-attr]
        log.info("retrain started (%s): training process %d, up to %.1f min", trigger,
                 proc.pid, spec.max_minutes)
        self._thread = threading.Thread(target=self._watch, args=(proc, run_dir, trigger),
                                        name="vfpd-retrain", daemon=True)
        self._thread.start()
        return self.status()["current"] or {}

    def use(self, version: str) -> dict[str, Any]:
        """Switch to a known version (a rollback), re-embedding and swapping in the background."""
        weights = self.models.weights_of(version)  # KeyError: unknown
        self._claim("model use", kind="model change", phase="re-embedding", version=version)
        self._thread = threading.Thread(target=self._use, args=(weights, version),
                                        name="vfpd-model-use", daemon=True)
        self._thread.start()
        return self.status()["current"] or {}

    # -- the run ----------------------------------------------------------------------------------

    def _finish(self, result: dict[str, Any]) -> None:
        """Record the result, then free the slot: whoever sees no run in progress sees its
        result (and a new run cannot take the run folder before it is moved aside)."""
        with self._lock:
            busy = dict(self._busy or {})
        result = {**result, "trigger": busy.get("trigger"), "kind": busy.get("kind"),
                  "started_at": busy.get("started_at")}
        result.setdefault("finished_at", time.time())
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            with atomic_writer(self.dir / LAST_NAME) as f:
                f.write(json.dumps(result, indent=1, default=str).encode())
            if (self.dir / RUN_DIR).exists():
                shutil.rmtree(self.dir / LAST_RUN_DIR, ignore_errors=True)
                os.replace(self.dir / RUN_DIR, self.dir / LAST_RUN_DIR)
        except OSError:
            log.exception("cannot record the retrain's result")
        finally:
            with self._lock:
                self._busy, self._proc = None, None
                self._done.notify_all()
        log.info("%s %s: %s", result.get("kind") or "retrain", result.get("outcome"),
                 result.get("reason"))

    def _watch(self, proc: subprocess.Popen[bytes], run_dir: Path, trigger: str) -> None:
        try:
            rc = proc.wait()
            try:
                result = json.loads((run_dir / RESULT_NAME).read_text())
            except (OSError, ValueError):
                how = f"killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
                why = " (the daemon is stopping)" if self._stopping else ""
                result = {"outcome": "cancelled" if self._cancel.is_set() else "failed",
                          "reason": f"the training process was {how}{why}; the running model "
                                    "stays"}
            if self._cancel.is_set() and result.get("outcome") in ("passed", "rejected"):
                result.update(outcome="cancelled", reason="cancelled after the gate")
            outcome = result.get("outcome")
            if outcome in ("passed", "rejected") and (run_dir / CANDIDATE_NAME).exists():
                rec = self.models.record(run_dir / CANDIDATE_NAME, KEPT_ASIDE,
                                         result.get("scores") or {}, result.get("reason", ""),
                                         parent=weights_version(self._running_weights()))
                result["version"] = rec["version"]
                if outcome == "passed":
                    self._set(phase="re-embedding", done=0, total=None, version=rec["version"])
                    try:
                        result["model_version"] = self._promote(
                            self.models.weights_of(rec["version"]),
                            lambda: self._cancel.is_set() or self._stopping, self._progress)
                        self.models.activate(rec["version"])
                        result.update(outcome="promoted")
                    except Exception as e:
                        log.exception("promotion of %s failed", rec["version"])
                        result.update(outcome="failed", reason=f"passed the gate, but the "
                                      f"promotion stopped: {e}; the running model stays")
                else:
                    result["reason"] = f"kept aside: {result.get('reason')}"
        except Exception as e:
            log.exception("retrain bookkeeping failed")
            result = {"outcome": "failed", "reason": f"{type(e).__name__}: {e}"}
        self._finish(result)

    def _progress(self, done: int, total: int) -> None:
        self._set(done=done, total=total)

    def _use(self, weights: Path, version: str) -> None:
        try:
            mv = self._promote(weights, lambda: self._cancel.is_set() or self._stopping,
                               self._progress)
            self.models.activate(self.models.base_version if weights == self.models.configured
                                 else weights.stem)
            result = {"outcome": "switched", "reason": f"now serving model {mv}",
                      "model_version": mv}
        except Exception as e:
            log.exception("model change to %s failed", version)
            result = {"outcome": "failed", "reason": f"{e}; the running model stays"}
        self._finish(result)

    # -- stopping ---------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Ask the run in progress to stop (SIGTERM to the training process); False if none."""
        with self._lock:
            if self._busy is None:
                return False
            self._cancel.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no run is in progress; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._busy is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._done.wait(left)
        return True

    def stop(self) -> None:
        """The daemon stops: the training process is ended (SIGTERM, then SIGKILL) and waited for."""
        with self._lock:
            self._stopping = True
            proc = self._proc
        self.cancel()
        if proc is not None:
            try:
                proc.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        if self._thread is not None:
            # Recording the result is quick once the process has ended (a run that passed the
            # gate is not promoted while stopping); a bound all the same, for systemd's stop.
            self._thread.join(STOP_RECORD_SECONDS)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
