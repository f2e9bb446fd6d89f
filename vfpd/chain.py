"""The one chain from a file to its fingerprint, shared by `vfpctl scan` and the daemon:
identity (stat, BLAKE3 unless the catalog vouches for the content) -> frames (stored in the
catalog, or decoded in the isolated workers) -> fingerprint (embedded in batches).

Two producers feed it (the scan's walk, the daemon's job queue) and two consumers take what it
yields (the scan collects, the daemon commits and announces); the stages are these, once. The
library step (candidates + verification) is vfpd.library.Library, also shared.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from vfpd import hashing
from vfpd.detail import Stills, still_pictures
from vfpd.fingerprint import Fingerprint
from vfpd.hashing import FileStat
from vfpd.media import MediaError, NotAVideo, SampledVideo, SamplingSettings

if TYPE_CHECKING:
    from vfpd.catalog import Catalog, FileRecord, StoredFingerprint
    from vfpd.workers import DecodePool, PoolSettings

log = logging.getLogger(__name__)

EMBED_BATCH_FILES = 8
"""Decoded videos embedded together: enough frames to fill the model's batches, few enough that
memory stays small (a sampled video is at most ~6 MB)."""

TRANSIENT_KINDS = frozenset({"timeout", "crashed", "out-of-memory", "embedding"})
"""Outcomes that may not happen again (a crash under memory pressure, a machine so loaded that the
time limit ran out, the model failing on a batch): the daemon retries them with back-off. Every
other error says something about the file itself (not a video, truncated, ...) and trying again
would give the same answer."""

Source = Literal["cache", "stored-frames", "decoded"]
"""Where a fingerprint came from: the catalog's fingerprint of this content for this model, the
catalog's stored frames re-embedded (no decoding), or a decode of the file."""


class Decoder(Protocol):
    """Decodes paths in isolated workers; yields (path, sampled video or the error) as each
    finishes, in any order."""

    def __call__(self, paths: Sequence[str]) -> Iterator[tuple[str, SampledVideo | MediaError]]:
        ...


class Fingerprinter(Protocol):
    """Turns sampled videos into fingerprints (vfpd.model.embed.Embedder)."""

    model_version: str

    def embed_many(self, videos: list[SampledVideo]) -> list[Fingerprint]: ...


class PoolDecoder:
    """The Decoder of both producers: vfpd.workers' isolated pool (a file that hangs or crashes
    its decoder gets an error record after the time limit; every other file goes on), started
    when work arrives and stopped by `unload` (idle workers hold ~100 MB each for nothing)."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pool: DecodePool | None = None
        self._closed = False

    def _get(self) -> DecodePool:
        from vfpd.workers import DecodePool

        with self._lock:
            if self._closed:
                raise RuntimeError("the decoder is closed")
            if self._pool is None:
                self._pool = DecodePool(self.settings)
            return self._pool

    def __call__(self, paths: Sequence[str]) -> Iterator[tuple[str, SampledVideo | MediaError]]:
        if not paths:
            return
        for r in self._get().map(paths):
            yield r.path, (r.sampled if r.error is None else r.error)

    def unload(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.unload()


def pool_decoder(workers: int, sampling: SamplingSettings) -> PoolDecoder:
    """A PoolDecoder with the pool's default limits (the scan's)."""
    from vfpd.workers import PoolSettings

    return PoolDecoder(PoolSettings(workers=workers, sampling=sampling))


# --- identity ----------------------------------------------------------------------------------

class EmptyFile(hashing.HashRefused):
    """A file of 0 bytes: nothing to look at (a download that never started, a placeholder)."""

    kind = "not-a-video"  # type: ignore[assignment]


PERMANENT_REFUSALS = frozenset({"not-a-file", "not-a-video", "too-large"})
"""Refusals that say something about the file as it is (hashing.HashRefused kinds): the daemon
fails such a job at once. The others may pass later: a sparse file may be a download still being
filled in, a slow read a busy disk, a changed file one still being written."""


@dataclass(frozen=True)
class Identity:
    """One version of a file: its stat and the hash of its content."""

    path: str
    stat: FileStat
    hash: str
    read: bool
    """The content was read now (False: the catalog's record vouched for the hash)."""


def vouched(current: FileStat, known: FileRecord | None) -> str | None:
    """The catalog's hash for a file whose stat has not changed since it was hashed."""
    if known is None or known.hash is None or hashing.changed(current, known.stat):
        return None
    return known.hash


def identify(path: str, known: FileRecord | None, reread: bool = False,
             should_stop: Callable[[], bool] | None = None) -> Identity:
    """Open `path` once (hashing.open_regular: never blocks, regular files only, no link as the
    last component) and hash its content through that descriptor, unless the catalog's record of
    it (`known`) vouches for the hash and `reread` is not asked (a close-write or a rescan the
    user asked for re-reads: a rewrite can keep size and mtime). Raises OSError:
    hashing.HashRefused (with EmptyFile) for files not worth reading, else I/O errors."""
    with hashing.open_regular(path) as opened:
        fstat = opened.file_stat
        if fstat.size == 0:
            raise EmptyFile(path, "the file is empty (0 bytes)")
        digest = None if reread else vouched(fstat, known)
        if digest is not None:
            return Identity(path, fstat, digest, read=False)
        digest, fstat = hashing.hash_open(opened, should_stop=should_stop)
        return Identity(path, fstat, digest, read=True)


def os_error_reason(e: OSError) -> tuple[str, str]:
    """(kind, reason) for a file that could not be identified."""
    if isinstance(e, hashing.HashRefused):
        return e.kind, e.reason
    if isinstance(e, FileNotFoundError):
        return "vanished", "the file disappeared before it was read"
    if isinstance(e, PermissionError):
        return "unreadable", "permission denied"
    if e.errno == errno.ELOOP:
        return "not-a-file", "a symbolic link (not followed)"
    return "unreadable", f"cannot read the file: {e.strerror or e}"


# --- fingerprints ----------------------------------------------------------------------------------

class EmbeddingFailed(MediaError):
    """The model failed on this video (out of GPU memory, ...): worth another try later."""

    kind = "embedding"


class Lost(MediaError):
    """The decoder gave no answer for a file (its worker went away): worth another try later."""

    kind = "crashed"


@dataclass
class Work:
    """One content on its way to a fingerprint. `paths` are the files holding it, best first: when
    one cannot be read, the next is decoded (the content is not at fault)."""

    hash: str
    paths: list[str]
    tag: object = None
    """The producer's own handle (the daemon's job, the scan's file entries)."""
    sampled: SampledVideo | None = None
    fingerprint: Fingerprint | None = None
    source: Source | None = None
    error: MediaError | None = None
    unreadable: list[tuple[str, MediaError]] = field(default_factory=list)
    """Copies that could not be read on the way (each listed by the scan)."""

    @property
    def path(self) -> str:
        return self.paths[0]

    @property
    def transient(self) -> bool:
        return self.error is not None and self.error.kind in TRANSIENT_KINDS


def fingerprints(works: Sequence[Work], fingerprinter: Fingerprinter, decoder: Decoder,
                 catalog: Catalog | None, sampling: SamplingSettings,
                 should_stop: Callable[[], bool] = lambda: False,
                 use_cache: bool = True,
                 ready: Callable[[Work], None] = lambda w: None) -> Iterator[Work]:
    """Give each work a fingerprint or an error, yielding works as they finish (a batch at a
    time). In order of cost: the catalog's fingerprint of the content for this model
    (`use_cache`), the catalog's stored frames of this sampling re-embedded, a decode. Works left
    when `should_stop` says so are not yielded (the caller gives them back). `ready(w)` is called
    once per work as soon as its frames are in hand or it failed, before its embedding batch fills
    (a progress bar that moves file by file)."""
    mv = fingerprinter.model_version
    to_decode: list[Work] = []
    stored: list[Work] = []
    for w in works:
        cached = catalog.fingerprint(w.hash, mv) if catalog is not None and use_cache else None
        if cached is not None:
            w.fingerprint, w.source = with_stills(catalog, cached), "cache"
            ready(w)
            yield w
            continue
        frames = _stored_frames(catalog, w, sampling) if catalog is not None else None
        if frames is not None:
            w.sampled, w.source = frames, "stored-frames"
            ready(w)
            stored.append(w)
        else:
            to_decode.append(w)
    for i in range(0, len(stored), EMBED_BATCH_FILES):
        if should_stop():
            return
        yield from _embed(stored[i:i + EMBED_BATCH_FILES], fingerprinter)
    batch: list[Work] = []
    for w in _decode(to_decode, decoder, should_stop):
        ready(w)
        if w.error is not None:
            yield w
            continue
        w.source = "decoded"
        batch.append(w)
        if len(batch) >= EMBED_BATCH_FILES:
            yield from _embed(batch, fingerprinter)
            batch = []
    if batch and not should_stop():
        yield from _embed(batch, fingerprinter)


def with_stills(catalog: Catalog, stored: StoredFingerprint) -> Fingerprint:
    """A stored fingerprint with its still pictures: one stored before they were kept gets them
    from the content's stored frames (no decode, no model), and they are stored with it. Without
    frames of the same moments it gets none (compared by its features alone, as before), stored
    too, so that no later read or daemon start looks for them again."""
    fp = stored.fingerprint
    if fp.stills is not None:
        return fp
    try:
        frames = catalog.load_frames(stored.hash)
    except Exception as e:  # a damaged blob: the fingerprint serves by its features
        log.warning("stored frames of %s unusable (%s)", stored.hash[:12], e)
        frames = None
    if frames is None or not np.array_equal(frames.timestamps, fp.timestamps):
        stills = Stills.none(len(fp.timestamps))
    else:
        stills = still_pictures(frames.frames, frames.informative)
    try:
        catalog.put_stills(stored.id, stills)
    except Exception as e:  # read-only, full or locked: they serve now, the next read tries again
        log.warning("cannot store the still pictures of %s (%s)", stored.hash[:12], e)
    return replace(fp, stills=stills)


def _stored_frames(catalog: Catalog, w: Work, sampling: SamplingSettings) -> SampledVideo | None:
    """Frames of this content sampled the way the decoder would sample them now: as good as a new
    decode (DESIGN.md: re-embedding never decodes again)."""
    try:
        frames = catalog.load_frames(w.hash, sampling)
    except Exception as e:  # a damaged blob: decoding the file again repairs it
        log.warning("stored frames of %s unusable (%s); decoding %s", w.hash[:12], e, w.path)
        return None
    return frames if frames is not None and len(frames.frames) else None


def _decode(works: list[Work], decoder: Decoder, should_stop: Callable[[], bool]
            ) -> Iterator[Work]:
    """Decode each work's first readable copy; yields works with `sampled` or `error`."""
    pending = {w.path: w for w in works}
    while pending and not should_stop():
        retry: dict[str, Work] = {}
        results = decoder(list(pending))
        try:
            for path, result in results:
                if should_stop():
                    return  # (a worker killed by the shutdown is not the file's fault)
                w = pending.pop(path, None)
                if w is None:
                    continue
                if not isinstance(result, MediaError):
                    w.sampled = result
                    yield w
                elif result.kind == "unreadable" and len(w.paths) > 1:
                    # This copy is gone or unreadable, not the content: try the next copy.
                    w.unreadable.append((w.paths.pop(0), result))
                    retry[w.path] = w
                else:
                    w.error = result
                    yield w
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
        for path, w in pending.items():  # the decoder lost track of a file
            w.error = Lost(w.path, "the decoder returned no result for this file")
            yield w
        pending = retry


def _embed(batch: list[Work], fingerprinter: Fingerprinter) -> Iterator[Work]:
    """Embed a batch; when it fails, embed one by one so that one video the model refuses does
    not spoil the others."""
    try:
        fps = fingerprinter.embed_many([w.sampled for w in batch])  # type: ignore[misc]
    except Exception as e:
        if len(batch) > 1:
            for w in batch:
                yield from _embed([w], fingerprinter)
            return
        w = batch[0]
        if isinstance(e, ValueError):
            w.error = NotAVideo(w.path, "no frame of it could be fingerprinted")
        else:
            log.exception("embedding %s failed", w.path)
            w.error = EmbeddingFailed(w.path, f"embedding failed: {e}")
        yield w
        return
    for w, fp in zip(batch, fps):
        w.fingerprint = fp
        yield w
