"""The training videos: found in a folder, decoded once into a cache of densely sampled frames, and
split into training and validation videos."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vfpd import files, media
from vfpd.atomic import atomic_writer
from vfpd.files import VIDEO_EXTENSIONS, FileRules

CACHE_INTERVAL = 0.25
"""Seconds between cached frames: four times denser than the 1-s sampling of fingerprints, so a
view can be sampled at any phase, speed or jitter from real decoded frames."""

CACHE_MAX_FRAMES = 4096
"""Cap on cached frames per video (17 min at CACHE_INTERVAL; 48 MB): longer videos are sampled
more sparsely by media's interval doubling."""


class TrainingError(Exception):
    """A user-caused problem with training input (no videos, too few, unreadable checkpoint)."""


@dataclass(frozen=True)
class CachedVideo:
    """Densely sampled frames of one training video."""

    name: str
    frames: np.ndarray  # (N, 64, 64, 3) uint8
    times: np.ndarray  # (N,) seconds
    thumbs: np.ndarray  # (N, 64) float32 8x8 gray thumbnails, for spotting identical pictures

    @property
    def duration(self) -> float:
        return float(self.times[-1]) if len(self.times) else 0.0


def list_videos(data_dir: Path) -> list[Path]:
    if not data_dir.is_dir():
        raise TrainingError(f"{data_dir}: not a directory")
    return [Path(p) for p, _ in files.walk(data_dir, FileRules())]


def _cache_name(path: Path, data_dir: Path) -> str:
    st = path.stat()
    key = f"{path.relative_to(data_dir)}|{st.st_size}|{st.st_mtime_ns}|{CACHE_INTERVAL}"
    return f"{path.stem[:40]}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"


def thumbnails(frames: np.ndarray) -> np.ndarray:
    gray = frames.astype(np.float32).mean(axis=3) / 255.0
    n, h, w = gray.shape
    return gray.reshape(n, 8, h // 8, 8, w // 8).mean(axis=(2, 4)).reshape(n, 64)


DENSE_SAMPLING = media.SamplingSettings(interval=CACHE_INTERVAL, max_frames=CACHE_MAX_FRAMES, keyframes="all")


def _decode_all(paths: list[Path], workers: int) -> Iterator[tuple[Path, media.SampledVideo | Exception]]:
    """Decode in `workers` isolated processes (vfpd.workers: a file that hangs or crashes fails
    alone), or in this process when workers is 0; yields results as they finish."""
    if workers <= 0:
        for p in paths:
            try:
                yield p, media.sample(p, DENSE_SAMPLING)
            except media.MediaError as e:
                yield p, e
        return
    from vfpd.workers import DecodePool, PoolSettings

    with DecodePool(PoolSettings(workers=workers, sampling=DENSE_SAMPLING)) as pool:
        for r in pool.map(paths):
            yield Path(r.path), (r.sampled if r.sampled is not None else r.error or ValueError("no result"))


def build_cache(data_dir: Path, cache_dir: Path, workers: int,
                log: Callable[[str], None] = print) -> list[CachedVideo]:
    """Every video of `data_dir` as densely sampled frames, decoding only those not cached yet."""
    paths = list_videos(data_dir)
    if not paths:
        raise TrainingError(f"{data_dir}: no video files found (looked for {', '.join(VIDEO_EXTENSIONS)})")
    cache_dir.mkdir(parents=True, exist_ok=True)
    names = {p: _cache_name(p, data_dir) for p in paths}
    todo = [p for p in paths if not (cache_dir / names[p]).exists()]
    if todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="decoding", unit="video")
        for p, res in _decode_all(todo, workers):
            bar.update(1)
            if isinstance(res, Exception):
                log(f"skipped {p}: {getattr(res, 'reason', res)}")
                continue
            with atomic_writer(cache_dir / names[p]) as f:
                np.savez(f, frames=res.frames, times=res.timestamps.astype(np.float64))
        bar.close()
    videos = []
    for p in paths:
        f = cache_dir / names[p]
        if not f.exists():
            continue
        with np.load(f) as z:
            frames, times = z["frames"], z["times"]
        if len(frames) >= 2:
            videos.append(CachedVideo(str(p.relative_to(data_dir)), frames, times, thumbnails(frames)))
    return videos


def split_videos(videos: list[CachedVideo], val_fraction: float, seed: int) -> tuple[list[CachedVideo], list[CachedVideo]]:
    """Held-out videos for validation: a fixed, seeded choice of whole videos."""
    order = list(range(len(videos)))
    random.Random(seed).shuffle(order)
    n_val = min(len(videos) - 2, max(2, round(val_fraction * len(videos)))) if val_fraction > 0 else 0
    if n_val < 2:
        return videos, []
    val = [videos[i] for i in sorted(order[:n_val])]
    train = [videos[i] for i in sorted(order[n_val:])]
    return train, val
