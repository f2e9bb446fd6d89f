"""kill -9 at random moments: a real writer process is killed while it queues jobs, stores
fingerprints, records duplicates with their events and saves the index. After every restart the
catalog is sound and nothing committed is lost or doubled.

Run as a script, this file is the writer: python test_crash.py DB INDEX ROUND.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

MODEL = "crash-model"
ROUNDS = 21
"""At least 20 kills (issue 4); each round costs one interpreter start-up (1-2.5 s here)."""


def writer(db: str, index_path: str, round_no: int) -> None:
    """Work forever, printing a line after each commit; the parent kills us with SIGKILL."""
    from vfpd.catalog import PRIORITY_BACKLOG, PRIORITY_NEW, Catalog
    from vfpd.fingerprint import FRAME_DIM, VECTOR_DIM, Fingerprint
    from vfpd.hashing import FileStat, hash_bytes
    from vfpd.index import open_index

    rng = np.random.default_rng(round_no)
    cat = Catalog(db)
    index = open_index(cat, MODEL, index_path)
    print("ready", flush=True)
    previous: str | None = None
    for n in range(10**6):
        paths = [f"/r{round_no}/{n}-{j}.mp4" for j in range(2)]
        cat.enqueue_many([(p, "created") for p in paths],
                         priority=PRIORITY_NEW if n % 2 else PRIORITY_BACKLOG)
        print("queued", *paths, flush=True)
        # One of the two is left queued: jobs pile up, as in a busy back-log.
        job = cat.claim_jobs(1)[0]
        content = hash_bytes(job.path.encode())
        vector = rng.standard_normal(VECTOR_DIM).astype(np.float32)
        fp = Fingerprint(vector / np.linalg.norm(vector),
                         rng.standard_normal((3, FRAME_DIM)).astype(np.float32),
                         np.arange(3.0), np.ones(3, bool), 3.0, MODEL)
        fid = cat.store_result(job.path, FileStat(100, n, n, 1), content, fingerprint=fp, job=job)
        print("stored", job.path, fid, flush=True)
        if n % 2:
            index.add([fid], fp.vector[None])  # the daemon's fast path: covered_seq lags
        else:
            index.catch_up(cat)
        if previous is not None:
            with cat.transaction():
                cat.add_duplicate(previous, content, 0.9, "near")
                cat.outbox_enqueue({"a": previous, "b": content}, ["log"])
            print("dup", previous, content, flush=True)
        previous = content
        if n % 5 == 4:
            index.save(index_path)


def run_round(db: Path, index: Path, round_no: int, rng: random.Random) -> list[list[str]]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen([sys.executable, __file__, str(db), str(index), str(round_no)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()
        assert first == "ready\n", proc.stderr.read()
        time.sleep(rng.uniform(0.0, 0.5))
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err
    # A line is a promise only once complete: a kill mid-print leaves a partial last line.
    lines = out.split("\n")[:-1]
    return [line.split() for line in lines]


@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_doubles_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from catalog_checks import integrity_problems
    from vfpd.catalog import Catalog
    from vfpd.index import open_index

    db, index_path = tmp_path / "catalog.db", tmp_path / "index.faiss"
    rng = random.Random(1234)
    queued: set[str] = set()
    stored: dict[str, int] = {}
    dups: list[tuple[str, str]] = []
    for round_no in range(ROUNDS):
        for rec in run_round(db, index_path, round_no, rng):
            if rec[0] == "queued":
                queued.update(rec[1:])
            elif rec[0] == "stored":
                stored[rec[1]] = int(rec[2])
            elif rec[0] == "dup":
                dups.append((rec[1], rec[2]))
        with Catalog(db) as cat:
            assert integrity_problems(cat.path) == [], f"round {round_no}"
            for path, fid in stored.items():
                rec = cat.file_by_path(path)
                assert rec is not None, f"round {round_no}: committed file {path} lost"
                assert cat.fingerprint(rec.hash, MODEL).id == fid
            for a, b in dups:
                assert cat.duplicate(a, b) is not None, f"round {round_no}: duplicate lost"
            waiting = {j.path for j in cat.iter_jobs()}
            for path in queued:
                assert path in stored or path in waiting or cat.file_by_path(path), \
                    f"round {round_no}: queued job {path} vanished without its result"
            assert waiting.isdisjoint(stored), "a job outlived its stored result"
            assert cat.counts().outbox_pending >= len(dups)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="vfpd.index"):
                index = open_index(cat, MODEL, index_path)
            if round_no:
                # The file exists since round 0's check; atomic saves never leave it torn.
                assert "rebuilding" not in caplog.text, f"round {round_no}: {caplog.text}"
            assert index.verify() == [], f"round {round_no}"
            in_catalog = sorted(int(i) for ids, _ in cat.snapshot_vectors(MODEL)[1] for i in ids)
            assert index.ids().tolist() == in_catalog, f"round {round_no}: index != catalog"
    assert len(stored) > ROUNDS, "the writer got work done between kills"
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files left after the last open"


def test_atomic_writer_keeps_old_file_on_error_and_leaves_no_temp(tmp_path: Path) -> None:
    from vfpd.atomic import atomic_writer, write_text

    target = tmp_path / "state.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    write_text(target, "new", mode=0o600)
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o600


if __name__ == "__main__":
    writer(sys.argv[1], sys.argv[2], int(sys.argv[3]))
