"""The one-shot scan: the shared chain (vfpd/chain.py: identity -> frames -> fingerprint) fed by a
walk, an in-memory Library (vfpd/library.py: candidates + verification, as in the daemon), then
grouping. No daemon; an optional catalog caches hashes, frames and fingerprints between runs."""

from __future__ import annotations

import heapq
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from vfpd import chain, files, grouping
from vfpd.catalog import Catalog, ContentInfo, FileState
from vfpd.chain import Decoder, Fingerprinter, Work
from vfpd.files import FileRules
from vfpd.fingerprint import Fingerprint
from vfpd.hashing import FileStat
from vfpd.library import DEFAULT_CANDIDATES, Library, LibrarySettings
from vfpd.grouping import Pair
from vfpd.matching import DEFAULT_THRESHOLD, EXACT, MatchSettings
from vfpd.media import SampledVideo, SamplingSettings

CLUSTER_METHODS = ("components", "dbscan")


@dataclass(frozen=True)
class ScanSettings:
    roots: tuple[str, ...]
    rules: FileRules = FileRules()
    threshold: float = DEFAULT_THRESHOLD
    cluster: str = "components"
    workers: int = max(1, os.cpu_count() or 1)
    candidates: int = DEFAULT_CANDIDATES
    maybe_band: float = 0.0
    """Pairs this much below the threshold are kept apart as "maybe" (the review page's near
    misses, vfpd.report.MAYBE_BAND): never grouped, never acted on."""
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

    @property
    def library(self) -> LibrarySettings:
        return LibrarySettings(max(0.0, self.threshold - self.maybe_band), self.candidates,
                               self.match)


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
    # The scan's catalog already holds this path with this stat, content and state OK (a file
    # unchanged since the last scan): a cached result needs no row written for it.
    recorded: bool = False
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
    maybe: list[Pair] = field(default_factory=list)
    """Pairs in the settings' maybe band just below the threshold (not in `pairs` or `groups`)."""


class Embedder(Fingerprinter, Protocol):
    """The scan's model: fingerprints, and the background frame feature the library centres
    frames with (vfpd.model.embed.Embedder)."""

    @property
    def frame_center(self) -> np.ndarray | None: ...


Progress = Callable[[str, int | None], Callable[[int], None]]
"""progress(stage, total) -> advance(n): how the pipeline reports progress (tqdm in the CLI).
The stages, in order, each advanced by one as each file (or content) is done, never a batch at
once: "walking" (total None: files found so far), "hashing" (files), "fingerprinting" (contents:
advanced as each is decoded or fails, before it waits for its embedding batch) and "matching"
(contents matched against the library)."""


def no_progress(stage: str, total: int | None) -> Callable[[int], None]:
    return lambda n: None


# --- walk -----------------------------------------------------------------------------------------

def walk(roots: Sequence[str], rules: FileRules, found: Callable[[int], None] = lambda n: None
         ) -> tuple[list[str], list[ScanError]]:
    """Every video under the roots by vfpd/files.py's rules (the daemon's too), in order;
    `found(1)` as each is found."""
    paths: dict[str, None] = {}
    errors: list[ScanError] = []
    for root in roots:
        for p, _ in files.walk(root, rules, lambda p, why: errors.append(ScanError(p, why))):
            if p not in paths:
                paths[p] = None
                found(1)
    return list(paths), errors


# --- identify: stat, hardlinks, hashes ---------------------------------------------------------------

def identify(paths: Iterable[str], catalog: Catalog | None, progress: Progress = no_progress
             ) -> tuple[list[FileEntry], list[ScanError]]:
    """Stat each path, fold hard links (same device and inode) into one entry, and hash the
    content (chain.identify: the catalog's hash is reused when the stat is unchanged)."""
    by_inode: dict[tuple[int, int], FileEntry] = {}
    errors: list[ScanError] = []
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError as e:
            kind, reason = chain.os_error_reason(e)
            errors.append(ScanError(path, reason, kind))
            continue
        key = (st.st_dev, st.st_ino)
        if key in by_inode:
            by_inode[key].aliases.append(path)
            continue
        by_inode[key] = FileEntry(path, FileStat.from_stat_result(st))
    entries = list(by_inode.values())
    advance = progress("hashing", len(entries))
    out = []
    for entry in entries:
        advance(1)
        known = catalog.file_by_path(entry.path) if catalog is not None else None
        try:
            identity = chain.identify(entry.path, known)
        except OSError as e:
            kind, reason = chain.os_error_reason(e)
            errors.append(ScanError(entry.path, reason, kind))
            continue
        entry.hash, entry.stat = identity.hash, identity.stat
        entry.recorded = (known is not None and not identity.read and known.hash == identity.hash
                          and known.state == FileState.OK)
        out.append(entry)
    return out, errors


# --- fingerprints ------------------------------------------------------------------------------------

def _describe(entries: Sequence[FileEntry], fp: Fingerprint, info: ContentInfo | None,
              sampled: SampledVideo | None) -> None:
    for e in entries:
        e.duration = fp.duration
        if sampled is not None:
            e.width, e.height, e.codec = sampled.info.width, sampled.info.height, sampled.info.codec
        elif info is not None:
            e.width, e.height, e.codec = info.width, info.height, info.codec


def fingerprint_contents(entries: Sequence[FileEntry], embedder: Fingerprinter, decode: Decoder,
                         catalog: Catalog | None, sampling: SamplingSettings,
                         progress: Progress = no_progress,
                         finished: Callable[[str, Sequence[FileEntry], Fingerprint | None], None]
                         = lambda h, group, fp: None,
                         ) -> tuple[dict[str, Fingerprint], list[ScanError], int]:
    """One fingerprint per distinct content hash through the shared chain (cache, stored frames,
    decode); results are kept in the scan's catalog. `finished(hash, copies, fingerprint or None)`
    as each content is done (the copies that could be read). Returns (fingerprints by hash,
    errors, number taken from the cache)."""
    by_hash: dict[str, list[FileEntry]] = defaultdict(list)
    for e in entries:
        assert e.hash is not None
        by_hash[e.hash].append(e)
    works = [Work(h, [e.path for e in group], group) for h, group in by_hash.items()]
    fps: dict[str, Fingerprint] = {}
    errors: list[ScanError] = []
    cached = 0
    unchanged: list[str] = []
    advance = progress("fingerprinting", len(works))
    for w in chain.fingerprints(works, embedder, decode, catalog, sampling,
                                ready=lambda w: advance(1)):
        group: list[FileEntry] = w.tag  # type: ignore[assignment]
        errors += [ScanError(p, err.reason, err.kind) for p, err in w.unreadable]
        group[:] = [e for e in group if e.path in w.paths]
        if w.error is not None:
            # Every byte-identical copy of a failed file fails the same way; each is listed.
            errors += [ScanError(e.path, w.error.reason, w.error.kind) for e in group]
            finished(w.hash, (), None)
            continue
        assert w.fingerprint is not None
        fps[w.hash] = w.fingerprint
        info = None
        if w.source == "cache":
            cached += 1
            content = catalog.content(w.hash) if catalog is not None else None
            info = content and ContentInfo(content.size, content.duration, content.codec,
                                           content.width, content.height)
        _describe(group, w.fingerprint, info, w.sampled)
        if catalog is not None:
            unchanged += _keep(catalog, w, group, sampling)
        finished(w.hash, group, w.fingerprint)
    if catalog is not None and unchanged:
        catalog.seen(unchanged)
    return fps, errors, cached


def _keep(catalog: Catalog, w: Work, group: Sequence[FileEntry], sampling: SamplingSettings
          ) -> list[str]:
    """Remember what was learnt about each copy in the scan's catalog (one transaction); returns
    the paths with nothing new to remember, whose rows are only marked seen, all at the end of
    the scan: a commit per unchanged file was a third of a cached rescan."""
    sampled = w.sampled
    if w.source == "cache" and all(e.recorded for e in group):
        return [e.path for e in group]
    with catalog.transaction():
        for i, e in enumerate(group):
            if w.source == "cache" or sampled is None:
                catalog.store_result(e.path, e.stat, w.hash)
                continue
            first = i == 0
            catalog.store_result(
                e.path, e.stat, w.hash,
                info=ContentInfo(e.stat.size, sampled.duration, sampled.info.codec,
                                 sampled.info.width, sampled.info.height),
                fingerprint=w.fingerprint if first else None,
                frames=sampled if first and w.source == "decoded" else None, sampling=sampling)
    return []


# --- matching and grouping ------------------------------------------------------------------------

class WalkOrderMatcher:
    """Matches contents against an in-memory Library in walk order -- what the daemon does with
    the same folder's files as they are queued -- as soon as every content before one in that
    order is done, so matching runs while later files are still decoding (the decode workers
    keep the other cores) and gives the pairs of matching them all at the end.

    A content's place is its first readable copy's place in the walk; until a content is done,
    its first copy's place is a lower bound of it."""

    def __init__(self, entries: Sequence[FileEntry], settings: ScanSettings,
                 center: np.ndarray | None) -> None:
        self.settings, self.center = settings, center
        self.place = {e.path: i for i, e in enumerate(entries)}
        self.pending: dict[str, int] = {}  # content not done yet -> its earliest possible place
        for i, e in enumerate(entries):
            if e.hash is not None:
                self.pending.setdefault(e.hash, i)
        self.ready: list[tuple[int, str, list[str], Fingerprint]] = []  # heap by place
        self.pairs: list[Pair] = []
        self.library: Library | None = None
        self.paths_of: dict[str, list[str]] = {}
        self.matched = 0

    def finished(self, content_hash: str, copies: Sequence[FileEntry],
                 fp: Fingerprint | None) -> None:
        self.pending.pop(content_hash, None)
        paths = [e.path for e in copies]
        if fp is not None and paths:
            heapq.heappush(self.ready, (min(self.place[p] for p in paths), content_hash, paths, fp))

    def drain(self, advance: Callable[[int], None] = lambda n: None, last: bool = False) -> None:
        """Match every done content that no unfinished one can precede (`last`: every one; the
        producer is done, and a content it never finished is no content)."""
        first_pending = len(self.place) if last else min(self.pending.values(), default=len(self.place))
        while self.ready and self.ready[0][0] < first_pending:
            _, h, paths, fp = heapq.heappop(self.ready)
            self._match(h, paths, fp)
            advance(1)

    def _match(self, h: str, paths: list[str], fp: Fingerprint) -> None:
        for i, a in enumerate(paths):
            for b in paths[i + 1:]:
                self.pairs.append(Pair(a, b, 1.0, EXACT))
        if self.library is None:
            self.library = Library.in_memory(fp.model_version, self.settings.library, self.center)
        for v in self.library.duplicates(fp, h):
            # `a` is the later file, as the match's segments say (a_* in it, b_* in the other).
            for a in paths:
                for b in self.paths_of[v.hash]:
                    self.pairs.append(Pair(a, b, round(v.match.score, 4), v.match.kind,
                                           v.match.segments))
        self.library.add(self.matched, h, fp)
        self.paths_of[h] = paths
        self.matched += 1

    def result(self) -> list[Pair]:
        return sorted(self.pairs, key=lambda p: (-p.score, p.a, p.b))


def find_pairs(entries: Sequence[FileEntry], fps: dict[str, Fingerprint],
               settings: ScanSettings, center: np.ndarray | None,
               progress: Progress = no_progress) -> list[Pair]:
    """Exact pairs (same content hash) and the library's verified pairs, path-level, of contents
    already fingerprinted (WalkOrderMatcher, all at once)."""
    matcher = WalkOrderMatcher(entries, settings, center)
    copies: dict[str, list[FileEntry]] = defaultdict(list)
    for e in entries:
        if e.hash in fps:
            copies[e.hash].append(e)  # type: ignore[index]
    for h in list(matcher.pending):
        matcher.finished(h, copies.get(h, []), fps.get(h))
    matcher.drain(progress("matching", len(copies)), last=True)
    return matcher.result()


def group(pairs: Sequence[Pair], settings: ScanSettings,
          cannot_link: grouping.CannotLink = ()) -> list[list[str]]:
    if settings.cluster == "dbscan":
        return grouping.group_dbscan(pairs, settings.threshold, cannot_link)
    return grouping.group_components(pairs, cannot_link)


def rejected(entries: Sequence[FileEntry], catalog: Catalog | None) -> set[frozenset[str]]:
    """Path pairs whose contents a person marked "not a duplicate" (kept in the scan's catalog
    by `vfpctl apply`, or `vfpctl ignore` in the daemon's): never a pair, never one group."""
    if catalog is None:
        return set()
    paths_of: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        if e.hash is not None:
            paths_of[e.hash].append(e.path)
    return {frozenset((a, b)) for ha, hb in catalog.rejected_pairs()
            for a in paths_of.get(ha, ()) for b in paths_of.get(hb, ())}


def waste(group_paths: Sequence[str], files: dict[str, FileEntry]) -> int:
    """Bytes freed by keeping only the largest copy of a group (one entry per inode)."""
    return grouping.reclaimable([files[p].stat.size for p in group_paths])


def scan(settings: ScanSettings, embedder: Embedder, decode: Decoder,
         catalog: Catalog | None = None, progress: Progress = no_progress) -> ScanResult:
    """Run the whole pipeline; every file that cannot be used ends up in `errors`."""
    started = time.monotonic()
    paths, errors = walk(settings.roots, settings.rules, progress("walking", None))
    entries, id_errors = identify(paths, catalog, progress)
    matcher = WalkOrderMatcher(entries, settings, embedder.frame_center)

    def finished(h: str, copies: Sequence[FileEntry], fp: Fingerprint | None) -> None:
        matcher.finished(h, copies, fp)
        matcher.drain()  # (its progress is the fingerprinting bar's)

    fps, fp_errors, cached = fingerprint_contents(entries, embedder, decode, catalog,
                                                  settings.sampling, progress, finished)
    unload = getattr(decode, "unload", None)
    if unload is not None:
        unload()  # decoding is over: the workers' memory goes back before the last matches
    matcher.drain(progress("matching", len(matcher.ready)), last=True)
    errors += id_errors + fp_errors
    failed = {e.path for e in fp_errors}
    good = [e for e in entries if e.hash in fps and e.path not in failed]
    apart = rejected(good, catalog)
    found = [p for p in matcher.result() if frozenset((p.a, p.b)) not in apart]
    pairs, maybe = split_maybe(found, settings.threshold)
    by_path = {e.path: e for e in good}
    groups = sorted(group(pairs, settings, [tuple(sorted(p)) for p in apart]),
                    key=lambda g: (-waste(g, by_path), g))
    return ScanResult(settings, embedder.model_version, good, pairs, groups,
                      sorted(errors, key=lambda e: e.path), time.monotonic() - started,
                      fingerprinted=len(fps) - cached, cached=cached, maybe=maybe)


def split_maybe(pairs: Iterable[Pair], threshold: float) -> tuple[list[Pair], list[Pair]]:
    """(pairs at or above the threshold, the others: the maybe tier)."""
    sure, maybe = [], []
    for p in pairs:
        (sure if p.score >= threshold else maybe).append(p)
    return sure, maybe


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("vfpd")) / "scan"
