"""The scan meets files made to block it: a FIFO named like a video (no writer ever comes), a
15 TB sparse file, a file swapped for a FIFO between stat and open. Each is reported with its
reason and the scan ends; none is read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from vfpd.files import FileRules
from vfpd.scan import identify, walk

FIFTEEN_TB = 15 * 10**12

SCAN_TIMEOUT_S = 300
"""Bounds a regression (a scan stuck in open() or reading 15 TB of holes), not a speed claim:
the scan itself starts the interpreter and torch under a loaded machine."""


def _hostile_dir(d: Path) -> Path:
    os.mkfifo(d / "fifo.mp4")
    with open(d / "sparse.mp4", "wb"):
        pass
    os.truncate(d / "sparse.mp4", FIFTEEN_TB)
    return d


def test_walk_lists_a_fifo_named_like_a_video(tmp_path: Path) -> None:
    d = _hostile_dir(tmp_path)
    files, errors = walk([str(d)], FileRules.of([".mp4"]))
    assert sorted(os.path.basename(f) for f in files) == ["fifo.mp4", "sparse.mp4"]
    entries, errors = identify(files, None)
    assert entries == []
    reasons = {os.path.basename(e.path): (e.kind, e.reason) for e in errors}
    assert reasons["fifo.mp4"] == ("not-a-file", "not a regular file (a FIFO)")
    assert reasons["sparse.mp4"][0] == "too-large"


def test_file_swapped_for_a_fifo_after_its_stat(tmp_path: Path) -> None:
    p = tmp_path / "swapped.mp4"
    p.write_bytes(b"not yet a fifo" * 100)

    def swap_when_hashing_starts(stage: str, total: int) -> Callable[[int], None]:
        # identify stats every path first, then hashes: the name changes in between.
        if stage == "hashing":
            p.unlink()
            os.mkfifo(p)
        return lambda n: None

    entries, errors = identify([str(p)], None, swap_when_hashing_starts)
    assert entries == []
    assert [(e.kind, e.reason) for e in errors] == [("not-a-file", "not a regular file (a FIFO)")]


def test_vfpctl_scan_of_a_fifo_and_a_sparse_file_ends(tmp_path: Path) -> None:
    d = tmp_path / "videos"
    d.mkdir()
    _hostile_dir(d)
    proc = subprocess.run(
        [sys.executable, "-m", "vfpd.cli.ctl", "scan", str(d), "--json", "--no-cache",
         "--workers", "1"],
        capture_output=True, timeout=SCAN_TIMEOUT_S,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 1, proc.stderr.decode()
    errors = {os.path.basename(e["path"]): e for e in json.loads(proc.stdout)["errors"]}
    assert set(errors) == {"fifo.mp4", "sparse.mp4"}
    assert errors["fifo.mp4"]["kind"] == "not-a-file"
    assert "FIFO" in errors["fifo.mp4"]["reason"]
    assert errors["sparse.mp4"]["kind"] == "too-large"
    assert "larger than the limit" in errors["sparse.mp4"]["reason"]
