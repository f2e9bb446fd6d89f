"""The fixed regression suite: procedural videos drawn from a seed (nothing downloaded, the same
frames on every machine), so that a library cannot teach the model to forget the general case."""

from __future__ import annotations

import numpy as np

from vfpd.model.frame_cache import CachedVideo, thumbnails

SUITE_SEED = 20261207
"""Fixed: the suite is part of the package, like the base weights; changing it changes every
stored gate score's meaning."""

SCENES = 8
"""Distinct scenes (textured backgrounds with moving shapes, panned or still)."""

FIXED_CAMERA_SCENES = 2
"""Of those, scenes filmed twice from a still camera with different things moving: two clips of
one view are not duplicates (DESIGN.md), the hard negatives of the suite."""

FRAMES = 16
"""Frames per video at the fingerprints' 1 s interval: long enough for the matcher's evidence
rule, short enough that scoring both models takes seconds on a CPU."""

SIZE = 64
CANVAS = 128


def _background(rng: np.random.Generator) -> np.ndarray:
    """Low-frequency colour field with a few rectangles: texture the network can hold on to."""
    coarse = rng.random((6, 6, 3)).astype(np.float32)
    idx = np.linspace(0, 5, CANVAS)
    lo = np.floor(idx).astype(int)
    hi = np.minimum(lo + 1, 5)
    f = (idx - lo)[:, None]
    rows = coarse[lo] * (1 - f[:, :, None]) + coarse[hi] * f[:, :, None]
    img = rows[:, lo] * (1 - f.T[:, :, None]) + rows[:, hi] * f.T[:, :, None]
    for _ in range(6):
        y, x = rng.integers(0, CANVAS - 16, 2)
        h, w = rng.integers(8, 40, 2)
        img[y:y + h, x:x + w] = rng.random(3)
    return img


def _movers(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray, float, np.ndarray]]:
    """(start, velocity per frame, radius, colour) of moving discs."""
    return [(rng.uniform(8, SIZE - 8, 2), rng.uniform(-3, 3, 2), float(rng.uniform(4, 10)),
             rng.random(3)) for _ in range(n)]


def _render(bg: np.ndarray, pan: tuple[np.ndarray, np.ndarray], movers: list, frames: int
            ) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    out = np.empty((frames, SIZE, SIZE, 3), np.uint8)
    for t in range(frames):
        oy, ox = np.clip(pan[0] + pan[1] * t, 0, CANVAS - SIZE).astype(int)
        img = bg[oy:oy + SIZE, ox:ox + SIZE].copy()
        for p0, v, r, c in movers:
            py, px = np.mod(p0 + v * t, SIZE)
            img[(yy - py) ** 2 + (xx - px) ** 2 <= r * r] = c
        out[t] = (img * 255).round().astype(np.uint8)
    return out


def regression_videos(seed: int = SUITE_SEED) -> list[CachedVideo]:
    """The suite's originals, always the same for one seed."""
    rng = np.random.default_rng(seed)
    times = np.arange(FRAMES, dtype=np.float64)
    videos = []
    for scene in range(SCENES):
        bg = _background(rng)
        still = scene < FIXED_CAMERA_SCENES
        takes = 2 if still else 1
        start = rng.uniform(0, CANVAS - SIZE, 2)  # a still camera's takes share the view
        for take in range(takes):
            pan = (start, np.zeros(2) if still else rng.uniform(-3, 3, 2))
            frames = _render(bg, pan, _movers(rng, 3), FRAMES)
            videos.append(CachedVideo(f"suite-{scene}-{take}", frames, times, thumbnails(frames)))
    return videos
