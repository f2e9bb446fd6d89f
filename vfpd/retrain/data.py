"""The library as training data: the catalog's stored sampled frames (no decoding) as training
videos, and the user's verdicts as links between them."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from vfpd.catalog import Catalog, Verdict
from vfpd.model.batches import Link
from vfpd.model.frame_cache import CachedVideo, thumbnails

MIN_FRAMES = 2
"""A video needs two sampled frames to give two views of one moment's neighbourhood."""

MAX_VIDEOS = 1000
"""Videos one run trains and judges on, drawn at random from a larger library: their frames are
held in memory (12 KB each; a minute-long video ~0.7 MB, a thousand of them ~0.7 GB), and a run of
an hour sees each of a thousand videos a few hundred times already."""


def library_videos(catalog: Catalog, should_stop: Callable[[], bool] = lambda: False,
                   limit: int = MAX_VIDEOS, seed: int = 0) -> list[CachedVideo]:
    """The contents with stored frames and a file in good standing (at most `limit`, a seeded
    draw), named by hash, in hash order (a fixed order: the same library gives the same split)."""
    hashes = catalog.hashes_with_frames()
    if len(hashes) > limit:
        hashes = sorted(random.Random(seed).sample(hashes, limit))
    out = []
    for h in hashes:
        if should_stop():
            break
        sampled = catalog.load_frames(h)
        if sampled is None or len(sampled.frames) < MIN_FRAMES:
            continue
        times = np.asarray(sampled.timestamps, np.float64)
        out.append(CachedVideo(h, np.ascontiguousarray(sampled.frames), times,
                               thumbnails(sampled.frames)))
    return out


def verdict_links(catalog: Catalog, index: dict[str, int]) -> list[Link]:
    """The user's verdicts between videos of `index` (hash -> position): confirmed pairs are
    positives, pairs marked "not a duplicate" hard negatives."""
    links = []
    for a, b, verdict in catalog.verdict_pairs():
        if a in index and b in index:
            links.append(Link(index[a], index[b], same=verdict == Verdict.CONFIRMED))
    return links
