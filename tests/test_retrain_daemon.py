"""Retraining through the real daemon: real training process, real APScheduler, real SQLite.
A tiny budget keeps each run to seconds; the gate's margin ([retrain] min_gain) decides whether
a run is promoted (-1: any candidate not worse on the regression suite) or kept aside (1: none)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.daemon import Daemon, NotifyListener, WebhookServer, wait_until
from harness.processes import ended
from media_factory import encode, make_video, read_frames, sample_clip

from vfpd.catalog import Catalog
from vfpd.catalog.schedule import CatalogJobStore
from vfpd.client import Client, ControlError

LIBRARY = 6
# Long enough for one training step of the shipped network on a busy CPU to finish, so a run
# always has an epoch behind it; the gate and the re-embedding come on top.
TINY_BUDGET_MINUTES = 0.02
TINY_STEPS = 1  # the same candidate on any machine: the gate's verdict does not depend on speed
RUN_TIMEOUT = 300.0  # a deadline only: a run takes ~10-30 s here


def retrain_section(min_gain: float, minutes: float = TINY_BUDGET_MINUTES,
                    schedule: str = "") -> str:
    steps = f"max_steps = {TINY_STEPS}\n" if minutes == TINY_BUDGET_MINUTES else ""
    return (f"[retrain]\nmax_minutes = {minutes}\nmin_videos = 4\nthreads = 1\n"
            f"min_gain = {min_gain}\nschedule = \"{schedule}\"\n{steps}")


class RetrainDaemon(Daemon):
    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        with Client(self.home / "ctl.sock") as c:
            return c.call(cmd, args or {})

    def restart(self, extra: str) -> None:
        self.stop()
        self.write_config(self.roots, extra)
        self.start()

    def finished(self, after: float) -> dict[str, Any]:
        """Wait for a run that started after `after` to end; its result."""
        def done() -> dict[str, Any] | None:
            st = self.call("retrain", {"action": "status"})
            last = st["last"]
            if st["current"] is None and last and (last.get("started_at") or 0) > after:
                return last
            return None
        return wait_until(done, RUN_TIMEOUT, lambda: f"the retrain's end; log:\n{self.text()[-4000:]}")


def _library_daemon(tmp_path_factory: pytest.TempPathFactory, extra: str) -> RetrainDaemon:
    """A daemon watching a small library (two real clips, made scenes, a copy of bikes), started
    and done with it: the copy announced."""
    media = tmp_path_factory.mktemp("retrain-media")
    home = Path(tempfile.mkdtemp(prefix="vfpd-r-", dir="/tmp"))
    root = home / "videos"
    lib = root / "library"
    lib.mkdir(parents=True)
    shutil.copyfile(sample_clip("bikes"), lib / "bikes.mp4")
    shutil.copyfile(sample_clip("carphone_pristine"), lib / "carphone.mp4")
    for seed in range(LIBRARY - 2):
        make_video(lib / f"scene{seed}.mp4", seconds=6, width=160, height=120, seed=40 + seed)
    bikes = [f for _, f in read_frames(sample_clip("bikes"))]
    # MP4, not Matroska: its muxer writes the date into the file, which would change the
    # library's hashes, so its training split and the candidate, from one run to the next.
    encode(root / "bikes-copy.mp4", bikes, fps=25, options={"crf": "28"})
    encode(media / "late-copy.mp4", [f[::2, ::2] for f in bikes], fps=25,
           options={"crf": "26"})
    hook, notify = WebhookServer(), NotifyListener(str(home / "notify.sock"))
    d = RetrainDaemon(home, [root], hook, notify, extra=extra)
    d.media = media  # type: ignore[attr-defined]
    try:
        d.start()
        wait_until(lambda: d.call("status")["fingerprints"] == LIBRARY + 1
                   and d.call("status")["queue"] == 0, what="the library fingerprinted")
        wait_until(lambda: d.hook.for_path(root / "bikes-copy.mp4") or
                   d.hook.for_path(lib / "bikes.mp4"), what="the copy announced")
    except BaseException:
        d.close()
        raise
    return d


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RetrainDaemon]:
    d = _library_daemon(tmp_path_factory, retrain_section(1.0))
    try:
        yield d
    finally:
        d.close()


def _pairs(d: RetrainDaemon) -> set[frozenset[str]]:
    with Client(d.home / "ctl.sock") as c:
        groups = list(c.call("duplicates").items)
    return {frozenset(m["path"] for m in g["members"]) for g in groups}


def test_a_rejected_candidate_is_kept_aside(daemon: RetrainDaemon) -> None:
    before = daemon.call("status")
    assert before["last_retrain"] is None
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "vfpd.cli.ctl", "retrain", "--wait",
                          "--socket", str(daemon.home / "ctl.sock")],
                         capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    assert out.returncode == 0, out.stderr
    assert "last:" in out.stdout and "rejected" in out.stdout, out.stdout
    last = daemon.finished(t0)
    assert last["outcome"] == "rejected" and last["trigger"] == "manual"
    assert "kept aside" in last["reason"] and "not above" in last["reason"]
    for who in ("current", "candidate"):
        for name in ("library", "suite"):
            s = last["scores"][who][name]
            assert 0.0 <= s["ap"] <= 1.0 and s["positives"] > 0
    after = daemon.call("status")
    assert after["model_version"] == before["model_version"]
    assert after["last_retrain"]["outcome"] == "rejected"
    text = subprocess.run([sys.executable, "-m", "vfpd.cli.ctl", "status", "--socket",
                           str(daemon.home / "ctl.sock")], capture_output=True, text=True,
                          check=False).stdout
    assert "last retrain:   rejected at " in text and "(manual)" in text, text
    listed = subprocess.run([sys.executable, "-m", "vfpd.cli.ctl", "model", "list", "--socket",
                             str(daemon.home / "ctl.sock")], capture_output=True, text=True,
                            check=False)
    assert listed.returncode == 0 and "kept-aside" in listed.stdout and "active" in listed.stdout
    versions = daemon.call("models")["versions"]
    assert versions[0]["status"] == "active" and versions[0]["version"] == _weights(before)
    (aside,) = [v for v in versions if v["status"] == "kept-aside"]
    assert aside["version"] == last["version"] and aside["scores"] == last["scores"]
    # The training process ran at the lowest priority.
    assert "running without: nice" not in (daemon.state / "retrain/last-run/worker.log").read_text()


def test_killed_training_leaves_the_old_model_and_duplicates_answer(daemon: RetrainDaemon
                                                                     ) -> None:
    daemon.restart(retrain_section(-1.0, minutes=30))
    before = daemon.call("status")
    pairs = _pairs(daemon)
    t0 = time.time()
    daemon.call("retrain")
    with pytest.raises(ControlError, match="in progress") as err:
        daemon.call("retrain")  # never two at once
    assert err.value.code == "busy"
    cur = wait_until(lambda: (c := daemon.call("retrain", {"action": "status"})["current"])
                     and c.get("phase") == "training" and c.get("step", 0) >= 1 and c,
                     RUN_TIMEOUT, "a training step")
    # Served throughout: the duplicates and a query answer while the model trains.
    assert _pairs(daemon) == pairs
    with Client(daemon.home / "ctl.sock") as c:
        q = c.call("query", {"path": str(daemon.roots[0] / "bikes-copy.mp4"), "k": 3})
    assert any(m["duplicate"] for m in q["matches"])
    assert daemon.call("retrain", {"action": "status"})["current"] is not None
    os.kill(cur["pid"], signal.SIGKILL)
    last = daemon.finished(t0)
    assert last["outcome"] == "failed" and "killed by signal 9" in last["reason"]
    assert "running model stays" in last["reason"]
    st = daemon.call("status")
    assert st["model_version"] == before["model_version"]
    assert st["last_retrain"]["outcome"] == "failed" and st["health"]["state"] == "ok"

    t1 = time.time()
    daemon.call("retrain")
    wait_until(lambda: (daemon.call("retrain", {"action": "status"})["current"] or {})
               .get("phase") == "training", RUN_TIMEOUT, "training")
    assert daemon.call("retrain", {"action": "cancel"})["running"]
    last = daemon.finished(t1)
    assert last["outcome"] == "cancelled"
    assert daemon.call("status")["model_version"] == before["model_version"]

    # The daemon killed mid-run: the training process dies with it, and the next start says so.
    t2 = time.time()
    daemon.call("retrain")
    cur = wait_until(lambda: (c := daemon.call("retrain", {"action": "status"})["current"])
                     and c.get("phase") == "training" and c, RUN_TIMEOUT, "training")
    daemon.stop(signal.SIGKILL)
    wait_until(lambda: ended(cur["pid"]), what="the training process to die with the daemon")
    daemon.start()
    st = daemon.call("status")
    assert st["model_version"] == before["model_version"]
    last = st["last_retrain"]
    assert last["outcome"] == "failed" and "interrupted" in last["reason"]
    assert last["started_at"] > t2 and last["trigger"] == "manual" and last["running"] is None

    # The daemon stopped (SIGTERM) mid-run: it ends the training process before it exits.
    t3 = time.time()
    daemon.call("retrain")
    cur = wait_until(lambda: (c := daemon.call("retrain", {"action": "status"})["current"])
                     and c.get("phase") == "training" and c, RUN_TIMEOUT, "training")
    assert daemon.stop() == 0
    assert ended(cur["pid"])
    daemon.start()
    last = daemon.call("status")["last_retrain"]
    assert last["started_at"] > t3 and last["outcome"] == "cancelled", last
    assert daemon.call("status")["model_version"] == before["model_version"]


def _weights(status: dict) -> str:
    """The weights' version in a status: its model version names the fingerprints (the
    weights' version, then the sampling's and the picture rules' suffixes, vfpd/presets.py)."""
    return status["model_version"].split("+", 1)[0]


def test_a_candidate_that_passes_is_promoted_without_losing_duplicates(daemon: RetrainDaemon
                                                                       ) -> None:
    daemon.restart(retrain_section(-1.0))
    root = daemon.roots[0]
    before = daemon.call("status")
    pairs = _pairs(daemon)
    assert frozenset({str(root / "library/bikes.mp4"), str(root / "bikes-copy.mp4")}) in pairs
    events = len(daemon.hook.events)
    t0 = time.time()
    daemon.call("retrain")
    last = daemon.finished(t0)
    assert last["outcome"] == "promoted", (last["reason"], last.get("scores"), last.get("steps"))
    st = daemon.call("status")
    assert st["model_version"] == last["model_version"] != before["model_version"]
    assert st["index"]["size"] == before["index"]["size"]  # every content re-embedded
    assert st["index"]["missing_fingerprints"] == 0
    assert _pairs(daemon) == pairs
    with Client(daemon.home / "ctl.sock") as c:  # found again by the new model's fingerprints
        q = c.call("query", {"path": str(root / "bikes-copy.mp4"), "k": 3})
    assert str(root / "library/bikes.mp4") in {p for m in q["matches"] if m["duplicate"]
                                               for p in m["paths"]}
    versions = {v["version"]: v for v in daemon.call("models")["versions"]}
    assert versions[last["version"]]["status"] == "active"
    assert versions[_weights(before)]["status"] == "previous"
    # A new copy is announced once, against the original; the old pair is not announced again.
    dest = root / "late-copy.mp4"
    shutil.copyfile(daemon.media / "late-copy.mp4", dest)  # type: ignore[attr-defined]
    # One event per pair found (the original and its first copy), each once, none of the old.
    # (Each event is delivered on its own: wait for both, however slowly they come.)
    def pairs_announced() -> list[tuple[str, str]]:
        return [(e["new"]["path"], x["path"]) for e in daemon.hook.events[events:]
                for x in e["existing"]]
    wait_until(lambda: len(pairs_announced()) >= 2,
               what=lambda: f"two announcements: {pairs_announced()}")
    announced = pairs_announced()
    assert sorted(announced) == sorted([(str(dest), str(root / "bikes-copy.mp4")),
                                        (str(dest), str(root / "library/bikes.mp4"))])
    pairs = _pairs(daemon)
    # The model survives a restart (the registry's active version).
    daemon.restart(retrain_section(-1.0))
    assert daemon.call("status")["model_version"] == last["model_version"]
    # And rolls back: re-embedded again in the background (the old fingerprints were kept).
    daemon.call("model_use", {"version": _weights(before)})
    wait_until(lambda: daemon.call("status")["model_version"] == before["model_version"]
               and daemon.call("retrain", {"action": "status"})["current"] is None,
               RUN_TIMEOUT, "the rollback")
    assert daemon.call("retrain", {"action": "status"})["last"]["outcome"] == "switched"
    assert _pairs(daemon) == pairs


def test_a_promotion_with_the_milvus_backend_keeps_the_duplicates(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """[index] backend = "milvus": a promoted model's vectors are built into Milvus from the
    catalog (a collection named after that model) while the old ones serve; every content is
    there, the duplicates found before are found after, no FAISS file is written, and the
    daemon restarts on the new model."""
    pytest.importorskip("pymilvus", reason="the milvus backend needs pip install 'vfpd[scale]'")
    pytest.importorskip("milvus_lite", reason="the milvus backend needs pip install 'vfpd[scale]'")
    d = _library_daemon(tmp_path_factory,
                        retrain_section(-1.0) + '\n[index]\nbackend = "milvus"\n')
    try:
        root = d.roots[0]
        before = d.call("status")
        assert before["index"]["type"] == "milvus-flat"
        pairs = _pairs(d)
        assert frozenset({str(root / "library/bikes.mp4"), str(root / "bikes-copy.mp4")}) in pairs
        t0 = time.time()
        d.call("retrain")
        last = d.finished(t0)
        assert last["outcome"] == "promoted", (last["reason"], last.get("scores"))
        st = d.call("status")
        assert st["model_version"] == last["model_version"] != before["model_version"]
        assert st["index"]["type"] == "milvus-flat"
        assert st["index"]["size"] == before["index"]["size"]
        assert st["index"]["missing_fingerprints"] == 0
        assert _pairs(d) == pairs
        d.restart(retrain_section(-1.0) + '\n[index]\nbackend = "milvus"\n')
        assert d.call("status")["model_version"] == last["model_version"]
        with Client(d.home / "ctl.sock") as c:
            q = c.call("query", {"path": str(root / "bikes-copy.mp4"), "k": 3})
        assert str(root / "library/bikes.mp4") in {p for m in q["matches"] if m["duplicate"]
                                                   for p in m["paths"]}
        assert not (d.home / "state" / "index.faiss").exists()
    finally:
        d.close()


def _at(when: dt.datetime) -> str:
    return f"{when.second} {when.minute} {when.hour} {when.day} {when.month} *"


def test_a_schedule_fires_once_and_a_missed_run_runs_once_at_start(daemon: RetrainDaemon
                                                                  ) -> None:
    t0 = time.time()
    for _ in range(3):  # a start slower than the lead time (a loaded machine) picks a new time
        when = dt.datetime.now().replace(microsecond=0) + dt.timedelta(seconds=20)
        daemon.restart(retrain_section(1.0, schedule=_at(when)))
        if dt.datetime.now() < when - dt.timedelta(seconds=2):
            break
    else:
        pytest.fail("the daemon never started within 18 s")
    last = daemon.finished(t0)
    assert last["trigger"] == "schedule"
    time.sleep(3)
    assert len(daemon.lines("retrain started (schedule)")) == 1
    assert daemon.call("status")["last_retrain"]["next_run"] > time.time() + 3600

    # Down over the run time: the stored next run lies in the past at the next start.
    daemon.stop()
    with Catalog(daemon.state / "catalog.db") as cat:
        store = CatalogJobStore(cat)
        (job,) = store.get_all_jobs()
        job.next_run_time = job.next_run_time.replace(year=dt.datetime.now().year - 1)
        store.update_job(job)
    t1 = time.time()
    daemon.start()
    last = daemon.finished(t1)
    assert last["trigger"] == "schedule"
    time.sleep(3)
    assert len(daemon.lines("retrain started (schedule)")) == 1, "once, not once per missed run"
