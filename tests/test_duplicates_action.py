"""`vfpctl duplicates --action`: the daemon's groups acted on with the safety of `scan --action`
(issue 14): a dry run by default, only members matched directly with the kept file, content
proven at the moment of acting (a file rewritten since the daemon saw it is left), a sealed
journal that `vfpctl undo` reverses. Through a real daemon, its socket and real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.daemon import Daemon, NotifyListener, WebhookServer, wait_until
from media_factory import encode, read_frames, sample_clip


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    home = Path(tempfile.mkdtemp(prefix="vfpd-da-", dir="/tmp"))
    root = home / "videos"
    root.mkdir()
    shutil.copyfile(sample_clip("bikes"), root / "a-bikes.mp4")
    os.utime(root / "a-bikes.mp4", (1_000_000_000, 1_000_000_000))  # the oldest: kept
    shutil.copyfile(sample_clip("bikes"), root / "b-copy.mp4")
    encode(root / "c-reencoded.mp4", [f for _, f in read_frames(sample_clip("bikes"))], fps=25,
           options={"crf": "30"})
    shutil.copyfile(sample_clip("carphone_pristine"), root / "d-other.mp4")
    hook, notify = WebhookServer(), NotifyListener(str(home / "notify.sock"))
    d = Daemon(home, [root], hook, notify)
    try:
        d.start()
        with d.catalog() as cat:
            wait_until(lambda: cat.counts().files == 4 and cat.counts().jobs_queued == 0, 300,
                       lambda: f"the back-log drained; log:\n{d.stacks()}")
        yield d, root
    finally:
        d.close()


def _vfpctl(d: Daemon, *argv: str, daemon: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_STATE_HOME": str(d.home / "user-state")}
    socket = ["--socket", str(d.home / "ctl.sock")] if daemon else []
    return subprocess.run([sys.executable, "-m", "vfpd.cli.ctl", *argv, *socket],
                          capture_output=True, text=True, timeout=300, env=env)


def test_dry_run_then_apply_then_undo(live: tuple[Daemon, Path]) -> None:
    d, root = live
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    groups = json.loads(_vfpctl(d, "duplicates", "--json").stdout)
    (group,) = groups
    assert {Path(m["path"]).name for m in group["members"]} == {
        "a-bikes.mp4", "b-copy.mp4", "c-reencoded.mp4"}
    assert group["pairs"] and all({"a", "b", "score", "kind"} <= set(p) for p in group["pairs"])

    dry = _vfpctl(d, "duplicates", "--action", "move:" + str(d.home / "moved"))
    assert dry.returncode == 0, dry.stderr
    assert "Dry run" in dry.stdout and "would move" in dry.stdout
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before  # nothing changed

    done = _vfpctl(d, "duplicates", "--action", "move:" + str(d.home / "moved"), "--apply",
                   "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["actions"]
    assert report["kept"][0]["keep"] == str(root / "a-bikes.mp4")
    moved = {Path(s["path"]).name for s in report["steps"] if s["done"]}
    assert moved == {"b-copy.mp4", "c-reencoded.mp4"}
    assert sorted(p.name for p in root.iterdir()) == ["a-bikes.mp4", "d-other.mp4"]
    assert sorted(p.name for p in (d.home / "moved").iterdir()) == ["b-copy.mp4",
                                                                     "c-reencoded.mp4"]

    undone = _vfpctl(d, "undo", report["journal"], daemon=False)
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before


def test_a_file_rewritten_since_the_daemon_saw_it_is_left(live: tuple[Daemon, Path]) -> None:
    d, root = live
    assert _vfpctl(d, "pause").returncode == 0  # the daemon does not learn of the rewrite
    victim = root / "b-copy.mp4"
    unique = (root / "d-other.mp4").read_bytes()
    victim.write_bytes(unique + b"unique tail")
    done = _vfpctl(d, "duplicates", "--action", "delete", "--apply", "--json")
    assert done.returncode == 1, done.stderr  # a planned step was refused
    steps = {Path(s["path"]).name: s for s in json.loads(done.stdout)["actions"]["steps"]}
    assert not steps["b-copy.mp4"]["done"] and "changed" in steps["b-copy.mp4"]["detail"]
    assert victim.read_bytes() == unique + b"unique tail"  # the unique content is still there
    assert steps["c-reencoded.mp4"]["done"] and not (root / "c-reencoded.mp4").exists()


def test_bad_action_options_are_usage_errors(live: tuple[Daemon, Path]) -> None:
    d, _ = live
    p = _vfpctl(d, "duplicates", "--apply")
    assert p.returncode == 2 and "--apply needs an --action" in p.stderr
    p = _vfpctl(d, "duplicates", "--action", "shred")
    assert p.returncode == 2
