"""Promotion without downtime: every stored fingerprint re-embedded from its stored frames with
another model in the background, that model's indexes built beside the running ones, and both
swapped into the pipeline at once. The old fingerprints stay in the catalog (a rollback)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from vfpd.catalog import Catalog
from vfpd.frame_index import build_frame_index
from vfpd.library import Library
from vfpd.media import SamplingSettings
from vfpd.service.pipeline import Embedder, Pipeline
from vfpd.service.video_indexes import VideoIndexes
from vfpd.service.wiring import FRAME_INDEX_NAME, INDEX_NAME

log = logging.getLogger("vfpd.retrain")

REEMBED_BATCH = 16
"""Videos embedded per call: the embedder batches their frames; small enough that a stop or a
cancel is heard within a second or two."""

PREVIOUS_SUFFIX = ".previous"
"""The indexes of the model before the last promotion are kept under this suffix."""

ALL = 1 << 62


class PromotionCancelled(Exception):
    """Stopped before the swap: the running model and its indexes are untouched."""


def _reembed(catalog: Catalog, old: str, embedder: Embedder, sampling: SamplingSettings,
             skipped: set[str], should_stop: Callable[[], bool],
             progress: Callable[[int, int], None]) -> int:
    """Fingerprints of `embedder`'s version for every content that has one of `old`, from its
    stored frames (contents without frames sampled like `sampling` are left in `skipped`: the
    reconcile after the swap decodes them). Returns how many were made."""
    new = embedder.model_version
    todo = [h for h in catalog.fingerprinted_without(old, new, ALL) if h not in skipped]
    made = 0
    for i in range(0, len(todo), REEMBED_BATCH):
        if should_stop():
            raise PromotionCancelled("cancelled while re-embedding")
        hashes, videos = [], []
        for h in todo[i:i + REEMBED_BATCH]:
            sampled = catalog.load_frames(h, sampling)
            if sampled is None or len(sampled.frames) == 0:
                skipped.add(h)
                continue
            hashes.append(h)
            videos.append(sampled)
        if videos:
            catalog.put_fingerprints(zip(hashes, embedder.embed_many(videos)))
            made += len(videos)
        progress(min(i + REEMBED_BATCH, len(todo)), len(todo))
    return made


def promote(catalog: Catalog, pipeline: Pipeline, embedder: Embedder,
            sampling: SamplingSettings, state: Path, indexes: VideoIndexes,
            should_stop: Callable[[], bool], progress: Callable[[int, int], None]) -> Library:
    """Re-embed, build, swap. Queries and new files are served by the old model until the swap;
    files the pipeline fingerprints meanwhile are re-embedded in the last catch-up, which holds
    the pipeline between two batches for as long as that takes (those few files)."""
    old = pipeline.embedder.model_version
    new = embedder.model_version
    skipped: set[str] = set()
    n = _reembed(catalog, old, embedder, sampling, skipped, should_stop, progress)
    log.info("re-embedded %d stored fingerprint(s) with model %s (%d without stored frames)",
             n, new, len(skipped))
    if should_stop():
        raise PromotionCancelled("cancelled while building the indexes")
    center = embedder.frame_center  # type: ignore[attr-defined]
    index = indexes.build(catalog, new)
    frames = build_frame_index(catalog, new, center, None, should_stop=should_stop)
    library = Library(new, pipeline.library.settings, center, index, frames, catalog,
                      background=(s.fingerprint for s in catalog.iter_fingerprints(new)))
    with pipeline.model_lock:
        if should_stop():
            raise PromotionCancelled("cancelled before the swap")
        _reembed(catalog, old, embedder, sampling, skipped, lambda: False, lambda *_: None)
        library.catch_up(catalog)
        for name in (INDEX_NAME, FRAME_INDEX_NAME):
            path = state / name
            if path.exists():
                os.replace(path, path.with_name(name + PREVIOUS_SUFFIX))
        pipeline.swap(library, embedder)
    pipeline.checkpoint()
    try:
        indexes.keep_only({old, new})
    except Exception:  # the swap is done; an index left behind only costs space
        log.exception("dropping the indexes of older models")
    return library
