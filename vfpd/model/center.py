"""The model's background frame feature: the mean over many videos of each video's mean
informative frame feature, stored with the weights. The matcher removes it from every frame
feature before comparing (matching.centred), so what all footage shares (the network's own bias,
flat and dark pictures) does not count as similarity. It belongs to the model, not to a library:
a pair then scores the same in any library, in the scan and in the daemon."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from vfpd.fingerprint import FRAME_DIM, Fingerprint

META_KEY = "frame_center"

MIN_VIDEOS = 20
"""Fewest videos a background is estimated from: fewer let one video's look dominate it."""


def video_mean(fp: Fingerprint) -> np.ndarray | None:
    """A video's mean informative frame feature (None when no frame is informative)."""
    informative = np.asarray(fp.informative, bool)
    if not informative.any():
        return None
    return np.asarray(fp.frame_features, np.float64)[informative].mean(axis=0)


def estimate(fps: Iterable[Fingerprint]) -> np.ndarray:
    """The background of a collection: the mean of its videos' means, each video counted once
    however long it is. Raises ValueError with fewer than MIN_VIDEOS informative videos."""
    means = [m for m in (video_mean(fp) for fp in fps) if m is not None]
    if len(means) < MIN_VIDEOS:
        raise ValueError(f"a background needs at least {MIN_VIDEOS} videos with informative "
                         f"frames, got {len(means)}")
    return np.mean(means, axis=0).astype(np.float32)


def center_of(blob: dict[str, Any]) -> np.ndarray | None:
    """The background stored in a weights file's meta, checked; None when it has none."""
    raw = (blob.get("meta") or {}).get(META_KEY)
    if raw is None:
        return None
    c = np.asarray(raw, np.float32).reshape(-1)
    if c.shape != (FRAME_DIM,) or not np.isfinite(c).all():
        raise ValueError(f"weights meta {META_KEY!r} is not a {FRAME_DIM}-d vector")
    return c


def store(weights: Path, center: np.ndarray) -> None:
    """Write `center` into the meta of a weights file (atomically, as save_weights writes)."""
    import torch

    from vfpd.atomic import atomic_writer
    from vfpd.model.network import load_blob

    blob = load_blob(weights)
    blob["meta"] = {**dict(blob.get("meta") or {}),
                    META_KEY: [float(x) for x in np.asarray(center, np.float32)]}
    with atomic_writer(weights) as f:
        torch.save(blob, f)
