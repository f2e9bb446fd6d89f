"""The one-shot scan as a small pipeline: walk -> stat/dedupe hardlinks -> hash -> exact groups ->
decode in parallel -> embed -> index -> verify -> group. No daemon; an optional catalog caches
hashes and fingerprints between runs."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vfpd import hashing, matching
from vfpd.catalog import Catalog, ContentInfo
from vfpd.fingerprint import Fingerprint
from vfpd.hashing import FileStat
from vfpd.matching import DEFAULT_THRESHOLD, EXACT, MatchSettings, Pair
from vfpd.media import MediaError, SampledVideo, SamplingSettings

DEFAULT_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".mpeg", ".ts",
                      ".wmv", ".flv", ".3gp", ".ogv", ".vob", ".mts", ".m2ts")
"""Extensions scanned by default: the containers media.py decodes (DESIGN.md), plus common
camera/DVD variants of them."""

EMBED_BATCH_FILES = 8
"""Decoded videos embedded together: enough frames to fill the model's batches, few enough that
memory stays small (a sampled video is at most ~6 MB). Progress counts each file as it is decoded."""

CLUSTER_METHODS = ("components", "dbscan")


@dataclass(frozen=True)
class ScanSettings:
    roots: tuple[str, ...]
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    threshold: float = DEFAULT_THRESHOLD
    cluster: str = "components"
    workers: int = max(1, os.cpu_count() or 1)
    match: MatchSettings = MatchSettings()
    sampling: SamplingSettings = SamplingSettings()
    preset: str = "accurate"  # vfpd/presets.py: names the sampling + match pair above, for reports

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, not {self.threshold}")
        if self.cluster not in CLUSTER_METHODS:
            raise ValueError(f"cluster must be one of {', '.join(CLUSTER_METHODS)}")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")


@dataclass(frozen=True)
class ScanError:
    path: str
    reason: str
    kind: str = "unreadable"


@dataclass
class FileEntry:
    """One file (one inode) found by the walk; `aliases` are its other hard-linked paths."""

    path: str
    stat: FileStat
    aliases: list[str] = field(default_factory=list)
    hash: str | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None


@dataclass
class ScanResult:
    settings: ScanSettings
    model_version: str
    files: list[FileEntry]
    pairs: list[Pair]
    groups: list[list[str]]
    errors: list[ScanError]
    seconds: float
    fingerprinted: int = 0
    cached: int = 0


class Embedder(Protocol):
    model_version: str

    def embed_many(self, videos: list[SampledVideo]) -> list[Fingerprint]: ...


Decoder = Callable[[Sequence[str]], Iterator[tuple[str, SampledVideo | MediaError]]]
"""Decodes paths (in parallel, isolated) and yields (path, sampled video or the error) as each
finishes, in any order."""

Progress = Callable[[str, int | None], Callable[[int], None]]
"""progress(stage, total) -> advance(n): how the pipeline reports progress (tqdm in the CLI).
The stages, in order, each advanced by one as each file (or pair) is done, never a batch at once:
"walking" (total None: files found so far), "hashing" (files), "fingerprinting" (contents to
decode: advanced as each is decoded or fails, before it waits for its embedding batch) and
"matching" (candidate pairs verified)."""


def no_progress(stage: str, total: int | None) -> Callable[[int], None]:
    return lambda n: None


# --- walk -----------------------------------------------------------------------------------------

def _link_reason(path: str) -> tuple[str, str]:
    """Why a symbolic link cannot be followed: (kind, reason)."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink-loop", "symbolic link loop: the link leads back to itself"
        if e.errno == errno.ENOENT:
            return "broken-symlink", f"broken symbolic link: its target {os.readlink(path)!r} does not exist"
        return "unreadable", f"cannot follow the symbolic link: {e.strerror}"
    return "unreadable", "cannot follow the symbolic link"


def walk(roots: Sequence[str], extensions: Sequence[str],
         found: Callable[[int], None] = lambda n: None) -> tuple[list[str], list[ScanError]]:
    """Every file under the roots whose name ends in one of `extensions` (case-insensitive),
    following directory symlinks but never into a directory already visited (loops). `found(1)`
    is called for each file found."""
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    files: list[str] = []
    errors: list[ScanError] = []
    visited: dict[tuple[int, int], str] = {}

    def wanted(name: str) -> bool:
        return name.lower().endswith(exts)

    def visit_dir(d: str) -> None:
        try:
            st = os.stat(d)
        except OSError as e:
            errors.append(ScanError(d, f"cannot open the folder: {e.strerror}"))
            return
        key = (st.st_dev, st.st_ino)
        if key in visited:
            if os.path.islink(d):
                errors.append(ScanError(d, "symbolic link loop: leads back to the folder "
                                        f"{visited[key]}, already scanned", "symlink-loop"))
            return
        visited[key] = d
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            errors.append(ScanError(d, f"cannot list the folder: {e.strerror}"))
            return
        for e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=True)
                is_file = e.is_file(follow_symlinks=True)
            except OSError:
                is_dir = is_file = False
            if is_dir:
                visit_dir(e.path)
            elif is_file:
                if wanted(e.name):
                    files.append(e.path)
                    found(1)
            elif e.is_symlink():
                if wanted(e.name):
                    kind, reason = _link_reason(e.path)
                    errors.append(ScanError(e.path, reason, kind))

    for root in roots:
        root = os.path.abspath(root)
        if os.path.isfile(root):
            files.append(root)
            found(1)
        else:
            visit_dir(root)
    return files, errors


# --- identify: stat, hardlinks, hashes ---------------------------------------------------------------

def _os_reason(e: OSError) -> tuple[str, str]:
    if isinstance(e, hashing.FileChanged):
        return "changed", "the file changed while it was being read; scan again when it is complete"
    if isinstance(e, FileNotFoundError):
        return "vanished", "the file disappeared during the scan"
    if isinstance(e, PermissionError):
        return "unreadable", "permission denied"
    return "unreadable", f"cannot read the file: {e.strerror or e}"


def identify(paths: Iterable[str], catalog: Catalog | None, progress: Progress = no_progress
             ) -> tuple[list[FileEntry], list[ScanError]]:
    """Stat each path, fold hard links (same device and inode) into one entry, and hash the
    content, reusing the catalog's hash when size, mtime and inode are unchanged."""
    by_inode: dict[tuple[int, int], FileEntry] = {}
    errors: list[ScanError] = []
    paths = list(paths)
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as e:
            kind, reason = _os_reason(e)
            errors.append(ScanError(path, reason, kind))
            continue
        if not stat.S_ISREG(st.st_mode):
            errors.append(ScanError(path, "not a regular file"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in by_inode:
            entry = by_inode[key]
            # A file's own name represents it rather than a symbolic link to it: actions only
            # ever touch regular files.
            if os.path.islink(entry.path) and not os.path.islink(path):
                entry.aliases.append(entry.path)
                entry.path = path
            else:
                entry.aliases.append(path)
            continue
        by_inode[key] = FileEntry(path, FileStat.from_stat_result(st))
    entries = list(by_inode.values())
    advance = progress("hashing", len(entries))
    out = []
    for entry in entries:
        advance(1)
        if entry.stat.size == 0:
            errors.append(ScanError(entry.path, "the file is empty (0 bytes)", "not-a-video"))
            continue
        known = catalog.file_by_path(entry.path) if catalog is not None else None
        if known is not None and known.hash and not hashing.changed(entry.stat, known.stat):
            entry.hash = known.hash
        else:
            try:
                entry.hash, entry.stat = hashing.hash_and_stat(entry.path)
            except OSError as e:
                kind, reason = _os_reason(e)
                errors.append(ScanError(entry.path, reason, kind))
                continue
        out.append(entry)
    return out, errors


# --- fingerprints ------------------------------------------------------------------------------------

def fingerprint_contents(entries: Sequence[FileEntry], embedder: Embedder, decode: Decoder,
                         catalog: Catalog | None, progress: Progress = no_progress
                         ) -> tuple[dict[str, Fingerprint], list[ScanError], int]:
    """One fingerprint per distinct content hash: from the catalog when it has one for this model
    version, otherwise decoded and embedded (and stored). Returns (fingerprints by hash, errors,
    number taken from the cache)."""
    by_hash: dict[str, list[FileEntry]] = defaultdict(list)
    for e in entries:
        assert e.hash is not None
        by_hash[e.hash].append(e)
    fps: dict[str, Fingerprint] = {}
    errors: list[ScanError] = []
    todo: dict[str, str] = {}  # representative path -> hash
    seen: list[FileEntry] = []  # files whose fingerprint the cache has: their stat is refreshed
    for h, group in by_hash.items():
        stored = catalog.fingerprint(h, embedder.model_version) if catalog is not None else None
        content = catalog.content(h) if stored is not None and catalog is not None else None
        if stored is not None and content is not None:
            fps[h] = stored.fingerprint
            for e in group:
                e.duration, e.width, e.height, e.codec = (
                    stored.fingerprint.duration, content.width, content.height, content.codec)
            seen += group
        else:
            todo[group[0].path] = h
    if catalog is not None and seen:
        with catalog.transaction():  # one commit (one fsync) for the whole cached part
            for e in seen:
                assert e.hash is not None
                catalog.store_result(e.path, e.stat, e.hash)
    cached = len(fps)
    advance = progress("fingerprinting", len(todo))
    batch: list[tuple[str, SampledVideo]] = []

    def embed(batch: list[tuple[str, SampledVideo]]) -> list[tuple[str, SampledVideo, Fingerprint]]:
        try:
            return [(p, v, fp) for (p, v), fp in
                    zip(batch, embedder.embed_many([v for _, v in batch]))]
        except ValueError:
            if len(batch) == 1:
                fail(batch[0][0], "no frame of it could be fingerprinted", "not-a-video")
                return []
            # One video the model refuses spoils its batch: retry one by one to find it.
            return [r for item in batch for r in embed([item])]

    def fail(path: str, reason: str, kind: str) -> None:
        # Every byte-identical copy of a failed file fails the same way; each is listed.
        for e in by_hash[todo[path]]:
            errors.append(ScanError(e.path, reason, kind))

    def flush() -> None:
        if not batch:
            return
        for path, video, fp in embed(batch):
            h = todo[path]
            fps[h] = fp
            info = video.info
            for e in by_hash[h]:
                e.duration, e.width, e.height, e.codec = (
                    video.duration, info.width, info.height, info.codec)
            if catalog is not None:
                with catalog.transaction():
                    for e in by_hash[h]:
                        catalog.store_result(
                            e.path, e.stat, h,
                            info=ContentInfo(e.stat.size, video.duration, info.codec, info.width,
                                             info.height),
                            fingerprint=fp if e is by_hash[h][0] else None)
        batch.clear()

    pending = list(todo)
    while pending:
        retry = []
        for path, result in decode(pending):
            if not isinstance(result, MediaError):
                advance(1)
                batch.append((path, result))
                if len(batch) >= EMBED_BATCH_FILES:
                    flush()
                continue
            h = todo[path]
            group = by_hash[h]
            if result.kind == "unreadable" and len(group) > 1:
                # This copy is gone or unreadable, not the content: try the next copy.
                errors.append(ScanError(path, result.reason, result.kind))
                group[:] = [e for e in group if e.path != path]
                todo[group[0].path] = h
                retry.append(group[0].path)
                continue
            fail(path, result.reason, result.kind)
            advance(1)
        pending = retry
    flush()
    return fps, errors, cached


# --- matching and grouping ------------------------------------------------------------------------

def find_pairs(entries: Sequence[FileEntry], fps: dict[str, Fingerprint],
               settings: ScanSettings, progress: Progress = no_progress) -> list[Pair]:
    """Exact pairs (same content hash) and verified pairs at or above the threshold, path-level."""
    paths_of: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        if e.hash in fps:
            paths_of[e.hash].append(e.path)  # type: ignore[index]
    pairs: list[Pair] = []
    for paths in paths_of.values():
        for i, a in enumerate(paths):
            for b in paths[i + 1:]:
                pairs.append(Pair(a, b, 1.0, EXACT))
    hashes = sorted(paths_of)
    for i, j, m in matching.match_all([fps[h] for h in hashes], settings.match, progress):
        if m.score < settings.threshold:
            continue
        for a in paths_of[hashes[i]]:
            for b in paths_of[hashes[j]]:
                pairs.append(Pair(a, b, round(m.score, 4), m.kind, m.segments))
    return sorted(pairs, key=lambda p: (-p.score, p.a, p.b))


def group(pairs: Sequence[Pair], settings: ScanSettings) -> list[list[str]]:
    if settings.cluster == "dbscan":
        return matching.group_dbscan(pairs, settings.threshold)
    return matching.group_components(pairs)


def waste(group_paths: Sequence[str], files: dict[str, FileEntry]) -> int:
    """Bytes freed by keeping only the largest copy of a group."""
    sizes = [files[p].stat.size for p in group_paths]
    return sum(sizes) - max(sizes)


def scan(settings: ScanSettings, embedder: Embedder, decode: Decoder,
         catalog: Catalog | None = None, progress: Progress = no_progress) -> ScanResult:
    """Run the whole pipeline; every file that cannot be used ends up in `errors`."""
    started = time.monotonic()
    paths, errors = walk(settings.roots, settings.extensions, progress("walking", None))
    entries, id_errors = identify(paths, catalog, progress)
    fps, fp_errors, cached = fingerprint_contents(entries, embedder, decode, catalog, progress)
    errors += id_errors + fp_errors
    failed = {e.path for e in fp_errors}
    good = [e for e in entries if e.hash in fps and e.path not in failed]
    pairs = find_pairs(good, fps, settings, progress)
    by_path = {e.path: e for e in good}
    groups = sorted(group(pairs, settings), key=lambda g: (-waste(g, by_path), g))
    return ScanResult(settings, embedder.model_version, good, pairs, groups,
                      sorted(errors, key=lambda e: e.path), time.monotonic() - started,
                      fingerprinted=len(fps) - cached, cached=cached)


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("vfpd")) / "scan"


def pool_decoder(workers: int, settings: SamplingSettings) -> Decoder:
    """Decode in vfpd.workers' isolated processes: a file that hangs or crashes its decoder gets
    an error record after the pool's time limit, and every other file goes on."""
    from vfpd.workers import DecodePool, PoolSettings

    def decode(paths: Sequence[str]) -> Iterator[tuple[str, SampledVideo | MediaError]]:
        if not paths:
            return
        pool_settings = PoolSettings(workers=min(workers, len(paths)), sampling=settings)
        with DecodePool(pool_settings) as pool:
            for r in pool.map(paths):
                assert r.sampled is not None or r.error is not None
                yield r.path, r.sampled if r.error is None else r.error

    return decode
