"""How the daemon's parts are put together from a config: model and decoders, the persisted
Library (video index, in FAISS or Milvus, + frame index over the catalog), the pipeline and the
notifier. The daemon and the tests call the same functions."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vfpd.catalog import Catalog
from vfpd.chain import Decoder, PoolDecoder
from vfpd.config import Config
from vfpd.frame_index import build_frame_index, load_frame_index
from vfpd.library import Library, LibrarySettings
from vfpd.presets import PRESETS, Preset, decoding_for
from vfpd.service.embed_process import ProcessEmbedder
from vfpd.service.notify import Notifier
from vfpd.service.pipeline import Embedder, Pipeline, PipelineSettings
from vfpd.service.video_indexes import FaissIndexes, MilvusIndexes, VideoIndexes

if TYPE_CHECKING:
    from vfpd.retrain.models import ModelStore

log = logging.getLogger("vfpd.daemon")

CATALOG_NAME = "catalog.db"
INDEX_NAME = "index.faiss"
FRAME_INDEX_NAME = "frames.faiss"
FRAME_INDEX_SYNC_MAX = 5000
"""Up to this many stored fingerprints a missing frame index is built before the daemon takes work
(about a second): the first start and small libraries then search frames from the first file on,
as the scan does. Larger ones are rebuilt in the background while the daemon serves."""


@dataclass(frozen=True)
class Parts:
    """What the daemon computes with, built by `build_parts` (the only place that starts the
    model's process and the worker pool, so tests and benchmarks can choose how to build them)."""

    embedder: Embedder
    decoder: Decoder
    close: Callable[[], None]


def preset(cfg: Config) -> Preset:
    return PRESETS[cfg.model.preset]


def threshold(cfg: Config, running: Preset | None = None) -> float:
    """[detect] threshold, or the default of the preset (`running`, else the configured one)."""
    if cfg.detect.threshold is not None:
        return cfg.detect.threshold
    return (running or preset(cfg)).threshold


def pipeline_settings(cfg: Config, running: Preset | None = None) -> PipelineSettings:
    """The pipeline's settings; `running` is the preset the daemon started with (a changed
    [model] preset takes effect at the next restart, with the embedder it belongs to)."""
    p = running or preset(cfg)
    return PipelineSettings(
        batch_size=cfg.model.batch_size,
        library=LibrarySettings(threshold(cfg, p), cfg.detect.candidates, p.match),
        idle_unload_seconds=cfg.model.idle_unload_seconds, sampling=p.sampling)


def model_store(cfg: Config) -> ModelStore:
    """The model versions retraining made from the configured (or shipped) weights."""
    from vfpd.model.version import DEFAULT_WEIGHTS
    from vfpd.retrain.models import ModelStore

    return ModelStore(cfg.storage.state_dir, cfg.model.weights or DEFAULT_WEIGHTS)


def make_embedder(cfg: Config, weights: Path) -> ProcessEmbedder:
    """An embedder of `weights` as the daemon runs them ([model] device, the preset's suffix), in
    a process of its own: torch never enters the daemon's (vfpd/service/embed_process.py)."""
    return ProcessEmbedder(weights, device=cfg.model.device,
                           version_suffix=preset(cfg).version_suffix)


def build_parts(cfg: Config) -> Parts:
    from vfpd.workers import PoolSettings

    # [model] batch_size counts videos per batch (the pipeline's); the embedder's own batch is
    # frames per forward pass, which it sizes itself. The preset's suffix keeps fingerprints of
    # another sampling apart (another model version: re-fingerprinted after a change).
    # The version retraining promoted (or `vfpctl model use` chose), else the configured weights.
    embedder = make_embedder(cfg, model_store(cfg).active_weights())
    # The model process reads the weights now (their background, the device torch chooses) and
    # exits: a weights file that cannot be read stops start-up here, not every file later, and
    # the model runs only when work arrives.
    device = embedder.device.type
    embedder.unload()
    decoder = PoolDecoder(PoolSettings(workers=cfg.decode.workers,
                                       timeout=cfg.decode.timeout_seconds,
                                       per_video_second=cfg.decode.timeout_per_video_second,
                                       memory_limit=cfg.decode.memory_mb << 20,
                                       sampling=decoding_for(preset(cfg).sampling,
                                                             device)))
    return Parts(embedder, decoder, decoder.close)


def video_indexes(cfg: Config) -> VideoIndexes:
    """Where the video index lives, by [index] backend: the FAISS file in the state directory or
    Milvus collections (pymilvus is imported only then: the `scale` extra)."""
    if cfg.index.backend == "milvus":
        return MilvusIndexes(cfg.index.uri or "", cfg.index.collection)
    return FaissIndexes(cfg.storage.state_dir / INDEX_NAME)


def open_library(catalog: Catalog, embedder: Embedder, settings: LibrarySettings,
                 state: Path, indexes: VideoIndexes) -> Library:
    """The persisted library: the video index opened from `indexes` (caught up, or rebuilt from
    the catalog); the frame index loaded, or None in it when it must be rebuilt (in the
    background: at a million videos that reads every stored fingerprint)."""
    mv = embedder.model_version
    center = embedder.frame_center  # type: ignore[attr-defined]
    index = indexes.open(catalog, mv)
    path = state / FRAME_INDEX_NAME
    frame_index = load_frame_index(catalog, mv, center, path)
    if frame_index is None and catalog.model_versions().get(mv, 0) <= FRAME_INDEX_SYNC_MAX:
        frame_index = build_frame_index(catalog, mv, center, path)
    return Library(mv, settings, center, index, frame_index, catalog,
                   background=(s.fingerprint for s in catalog.iter_fingerprints(mv)))


@dataclass(frozen=True)
class Wired:
    library: Library
    pipeline: Pipeline
    notifier: Notifier
    indexes: VideoIndexes  # closed by the owner after the pipeline's last save


def wire(cfg: Config, catalog: Catalog, parts: Parts, env: Mapping[str, str],
         running: Preset | None = None) -> Wired:
    """Library, notifier and pipeline over an open catalog, as the daemon runs them."""
    state = cfg.storage.state_dir
    settings = pipeline_settings(cfg, running)
    indexes = video_indexes(cfg)
    try:
        library = open_library(catalog, parts.embedder, settings.library, state, indexes)
    except BaseException:
        indexes.close()
        raise
    notifier = Notifier(catalog, cfg.notify, env)
    # The pipeline's library, not this one: a promoted model swaps it (vfpd/service/promotion.py).
    pipeline = Pipeline(catalog, library, parts.embedder, parts.decoder, settings,
                        notifier.sinks, notifier.wake,
                        save=lambda: pipeline.library.save(state / INDEX_NAME,
                                                           state / FRAME_INDEX_NAME))
    return Wired(library, pipeline, notifier, indexes)
