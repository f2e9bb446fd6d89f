"""Thumbnails from real videos, and hostile files that must cost one child, not the report."""

from __future__ import annotations

import os
import time
from pathlib import Path

import av

from vfpd.thumbs import THUMB_WIDTH, ThumbJob, extract_all, filmstrip_times


def _job(video: Path, out: Path, times: tuple[float, ...]) -> ThumbJob:
    return ThumbJob(str(video), times, tuple(str(out / f"{video.stem}-{i}.webp")
                                             for i in range(len(times))))


def test_frames_at_the_asked_moments_become_webp_files(bikes: Path, tmp_path: Path) -> None:
    job = _job(bikes, tmp_path, (0.5, 4.0, 9.95, 60.0))
    [r] = list(extract_all([job], workers=1))
    assert r.error is None and r.written == (True,) * 4
    assert r.fps and 20 < r.fps < 31 and r.codec == "h264"
    pictures = []
    for out in job.outputs:
        with av.open(out) as c:
            frame = next(c.decode(video=0))
        assert frame.width == THUMB_WIDTH and frame.height > 50
        pictures.append(frame.to_ndarray(format="gray").astype(float))
    # Different moments of moving footage are different pictures; past the end is the last frame.
    assert abs(pictures[0] - pictures[1]).mean() > 5
    assert abs(pictures[2] - pictures[3]).mean() < 5


def test_a_hanging_or_broken_file_costs_its_child_and_the_others_go_on(
        bikes: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "never-written.mp4"
    os.mkfifo(fifo)  # opening it blocks forever: a decoder that never returns
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    jobs = [_job(fifo, tmp_path, (1.0,)), _job(garbage, tmp_path, (1.0,)),
            _job(bikes, tmp_path, (2.0,))]
    started = time.monotonic()
    results = {Path(r.job.path).name: r for r in extract_all(jobs, workers=1, timeout=5.0)}
    assert time.monotonic() - started < 60
    assert results["never-written.mp4"].written == (False,)
    assert "within 5 s" in (results["never-written.mp4"].error or "")
    assert results["garbage.mp4"].written == (False,) and results["garbage.mp4"].error
    assert results["bikes.mp4"].written == (True,) and results["bikes.mp4"].error is None


def test_filmstrip_moments_are_the_middles_of_equal_slices() -> None:
    assert filmstrip_times(2.0, 6.0, 4) == [2.5, 3.5, 4.5, 5.5]
    assert filmstrip_times(3.0, 3.0, 2) == [3.0, 3.0]
