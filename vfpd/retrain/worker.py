"""The retraining process: `python -m vfpd.retrain.worker SPEC.json`. It lowers its own priority,
trains a candidate from the running weights on the catalog's stored frames, runs the gate, and
writes progress.json while it works and result.json at the end, in the run folder."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfpd.atomic import atomic_writer

log = logging.getLogger("vfpd.retrain")

NICE = 19
"""The lowest CPU priority: the daemon's own work (new files, queries) always comes first."""

IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "i686": 289, "armv7l": 314}
"""ioprio_set's system call number (not in Python's os module) per machine."""
IOPRIO_WHO_PROCESS = 1
IOPRIO_CLASS_IDLE = 3
IOPRIO_CLASS_SHIFT = 13
PR_SET_PDEATHSIG = 1

HELD_OUT_SHARE = 0.2
"""Share of the library's videos kept out of training for the gate (at least 2)."""

RETRAIN_LR = 3e-5
"""A third of `vfpctl train`'s peak rate: fine-tuning trained weights, not learning from scratch;
larger steps on a small library forget the general case the base weights learnt."""

FREEZE_NORM = True
"""BatchNorm statistics stay the base weights': a library's few hundred videos would otherwise
re-centre every feature on themselves (one step moved weights by 0.05 and the regression suite's
AP by 0.01: all of it the running statistics)."""

RETRAIN_BATCH = 8
"""Videos per step, as `vfpctl train`: other videos in the batch are the negatives."""

PROGRESS_EVERY = 0.5
"""Seconds between progress.json writes: `vfpctl retrain --status` stays current, the disk quiet."""

PROGRESS_NAME = "progress.json"
RESULT_NAME = "result.json"
CANDIDATE_NAME = "candidate.pt"


@dataclass(frozen=True)
class Spec:
    """What the daemon asks of one run (written as JSON into the run folder)."""

    catalog: str
    weights: str
    run_dir: str
    max_minutes: float
    min_videos: int
    device: str
    threads: int
    min_gain: float
    threshold: float
    preset: str
    parent_pid: int
    max_steps: int = 0
    seed: int = 0


def write_json(path: Path, obj: object) -> None:
    with atomic_writer(path) as f:
        f.write(json.dumps(obj, indent=1, default=str).encode())


def lower_priority(parent_pid: int) -> list[str]:
    """nice 19, idle I/O class, and death with the daemon; returns what could not be done."""
    missed = []
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    except OSError as e:
        missed.append(f"nice: {e}")
    libc = ctypes.CDLL(None, use_errno=True)
    nr = IOPRIO_SET.get(platform.machine())
    if nr is None or libc.syscall(nr, IOPRIO_WHO_PROCESS, 0,
                                  IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT) != 0:
        missed.append("idle I/O class")
    # The daemon killed with SIGKILL cannot stop us: the kernel does (and a parent gone before
    # this line is seen below).
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        missed.append("parent-death signal")
    if os.getppid() != parent_pid:
        sys.exit(1)
    return missed


class Progress:
    """progress.json: the phase and its numbers, written at most every PROGRESS_EVERY seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: dict[str, Any] = {"phase": "starting", "pid": os.getpid(),
                                      "started_at": time.time()}
        self._last = 0.0

    def update(self, force: bool = False, **kw: Any) -> None:
        self.state.update(kw)
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_EVERY:
            self._last = now
            write_json(self.path, self.state)


def retrain_settings(weights: Path, run_dir: Path, max_minutes: float, max_steps: int,
                     device: str, threads: int, seed: int = 0) -> Any:
    """vfpctl train's settings for fine-tuning `weights` (their network) in a retrain; the bench
    (bench/retrain.py) uses the same."""
    from vfpd.model.network import NetConfig, load_blob
    from vfpd.model.train import TrainSettings

    net = NetConfig.from_dict(load_blob(weights)["config"])
    return TrainSettings(data_dir=run_dir, checkpoint=run_dir / "checkpoint.pt",
                         batch_size=RETRAIN_BATCH, epochs=1_000_000, lr=RETRAIN_LR,
                         num_workers=0, device=device, val_fraction=0.0, threads=threads,
                         seed=seed, init=weights, max_minutes=max_minutes, max_steps=max_steps,
                         net=net, freeze_norm=FREEZE_NORM)


def run(spec: Spec, should_stop: Callable[[], bool]) -> dict[str, Any]:
    """One retrain: data, training, gate. Returns the result (also written to result.json)."""
    import torch

    from vfpd.catalog import Catalog
    from vfpd.model.frame_cache import split_videos
    from vfpd.model.train import best_path, fit, store_background
    from vfpd.presets import PRESETS
    from vfpd.retrain import data, gate, suite

    run_dir = Path(spec.run_dir)
    progress = Progress(run_dir / PROGRESS_NAME)
    started = time.monotonic()
    torch.set_num_threads(spec.threads)
    result: dict[str, Any] = {"started_at": progress.state["started_at"], "parent": spec.weights}

    def done(outcome: str, reason: str, **kw: Any) -> dict[str, Any]:
        result.update(outcome=outcome, reason=reason, finished_at=time.time(),
                      minutes=round((time.monotonic() - started) / 60, 3), **kw)
        progress.update(force=True, phase="finished", outcome=outcome)
        return result

    progress.update(force=True, phase="loading")
    with Catalog(Path(spec.catalog), readonly=True) as cat:
        videos = data.library_videos(cat, should_stop, seed=spec.seed)
        if should_stop():
            return done("cancelled", "cancelled while reading the library")
        if len(videos) < spec.min_videos:
            return done("skipped", f"the library has {len(videos)} videos with stored frames; "
                                   f"[retrain] min_videos is {spec.min_videos}")
        train_v, held = split_videos(videos, HELD_OUT_SHARE, spec.seed)
        index = {v.name: i for i, v in enumerate(train_v)}
        links = data.verdict_links(cat, index)
        everyone = {v.name: i for i, v in enumerate(videos)}
        judged_links = data.verdict_links(cat, everyone)
    # The gate's library set: the held-out videos and their transformed copies, plus the videos
    # the user judged (each verdict a labelled pair).
    originals = list(held)
    pos = {v.name: i for i, v in enumerate(originals)}
    judged = []
    for link in judged_links:
        for k in (link.a, link.b):
            if videos[k].name not in pos:
                pos[videos[k].name] = len(originals)
                originals.append(videos[k])
        judged.append((pos[videos[link.a].name], pos[videos[link.b].name], link.same))
    result.update(videos=len(videos), train_videos=len(train_v), held_out=len(held),
                  verdicts=len(judged))

    weights = Path(spec.weights)
    settings = retrain_settings(weights, run_dir, spec.max_minutes, spec.max_steps, spec.device,
                                spec.threads, spec.seed)
    progress.update(force=True, phase="training", epoch=0, step=0, loss=None,
                    max_minutes=spec.max_minutes)
    lines: list[str] = []
    summary = fit(train_v, [], settings, lines.append, links=tuple(links),
                  should_stop=should_stop, progress_bars=False,
                  on_step=lambda rec: progress.update(**rec))
    candidate = best_path(settings.checkpoint)
    result.update(epochs=summary["epochs"], steps=summary["steps"],
                  training_minutes=round((time.monotonic() - started) / 60, 3))
    if should_stop():
        return done("cancelled", "cancelled during training")
    if not candidate.exists():
        return done("failed", "no training epoch finished within max_minutes")
    store_background(candidate, train_v, spec.device, lines.append)
    final = run_dir / CANDIDATE_NAME
    candidate.replace(final)
    settings.checkpoint.unlink(missing_ok=True)  # optimiser state: not needed past this run

    progress.update(force=True, phase="gate")
    p = PRESETS[spec.preset]
    sets = {"library": gate.eval_set(originals, judged),
            "suite": gate.eval_set(suite.regression_videos())}
    scores: dict[str, dict[str, gate.Scores]] = {"current": {}, "candidate": {}}
    for who, w in (("current", weights), ("candidate", final)):
        embed = gate.embedder_for(w, spec.device)
        for name, es in sets.items():
            if should_stop():
                return done("cancelled", "cancelled during the gate")
            scores[who][name] = gate.score(embed, es, p.match, spec.threshold)
            progress.update(force=True, gate={k: {n: s.to_json() for n, s in v.items()}
                                              for k, v in scores.items()})
    decision = gate.decide(scores["current"], scores["candidate"], spec.min_gain)
    as_json = {k: {n: s.to_json() for n, s in v.items()} for k, v in scores.items()}
    return done("passed" if decision.promote else "rejected", decision.reason,
                scores=as_json, candidate=str(final), min_gain=spec.min_gain)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path = Path(argv[0])
    spec = Spec(**json.loads(spec_path.read_text()))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s retrain: %(message)s")
    missed = lower_priority(spec.parent_pid)
    if missed:
        log.info("running without: %s", ", ".join(missed))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_dir = Path(spec.run_dir)
    try:
        result = run(spec, stop.is_set)
    except Exception as e:
        log.exception("retrain failed")
        result = {"outcome": "failed", "reason": f"{type(e).__name__}: {e}",
                  "finished_at": time.time()}
    write_json(run_dir / RESULT_NAME, result)
    log.info("%s: %s", result["outcome"], result["reason"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
