"""Under memory pressure the kernel should kill a decode worker, not the daemon: each worker raises
its own oom_score_adj above its parent's at start (no privilege needed)."""

from __future__ import annotations

import os
from pathlib import Path

from vfpd.workers import WORKER_OOM_SCORE_ADJ, DecodePool, PoolSettings


def oom_score_adj(pid: int | str) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def test_workers_are_the_oom_killers_first_choice(small_video: Path) -> None:
    ours = oom_score_adj("self")
    # One worker, so the one that decoded is surely past its start-up.
    with DecodePool(PoolSettings(workers=1)) as pool:
        assert pool.decode(small_video).error is None
        (pid,) = pool.pids()
        assert oom_score_adj(pid) == min(1000, ours + WORKER_OOM_SCORE_ADJ) > ours
    assert oom_score_adj(os.getpid()) == ours, "the daemon's own score is left alone"
