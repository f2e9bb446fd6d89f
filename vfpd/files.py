"""Which files vfpd looks at — for the scan, the daemon and training alike: one list of video
extensions, one set of folders skipped, one walker that never follows symbolic links."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
    ".wmv", ".flv", ".3gp", ".ogv", ".vob",
)
"""The containers media.py decodes (DESIGN.md), plus the camera and DVD variants of them."""

DEFAULT_EXCLUDE = (".*",)
"""Hidden files and folders: rsync's in-flight temporary names (.name.XXXXXX), desktop trash
(.Trash-1000), thumbnail caches. Users add their own globs ([watch] exclude, scan --exclude)."""

ALWAYS_SKIPPED = ("$RECYCLE.BIN", "@eaDir", "#recycle", "#snapshot", "@Recycle", "lost+found",
                  ".Trash-*", ".Trashes", ".snapshot")
"""Folders that hold deleted files, snapshots or NAS thumbnails, never a user's videos: skipped
whatever the user's exclude says (a copy in the recycle bin is not a duplicate to report, and
acting on it would touch files the user already threw away)."""

OnError = Callable[[str, str], None]
"""on_error(path, reason): a folder that cannot be listed."""


def normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """'MP4', 'mp4' and '.mp4' all mean '.mp4'."""
    return frozenset(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)


def _glob_hits(rel: str, patterns: Iterable[str]) -> bool:
    parts = rel.split("/")
    for pattern in patterns:
        if "/" in pattern:
            if fnmatch.fnmatchcase(rel, pattern):
                return True
        elif any(fnmatch.fnmatchcase(part, pattern) for part in parts):
            return True
    return False


@dataclass(frozen=True)
class FileRules:
    """What counts as a video to look at, below a root. `exclude` globs match a path relative
    to its root (with a '/') or any one of its components (without)."""

    extensions: frozenset[str] = normalise_extensions(VIDEO_EXTENSIONS)
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    recursive: bool = True

    @classmethod
    def of(cls, extensions: Iterable[str] = VIDEO_EXTENSIONS,
           exclude: Iterable[str] = DEFAULT_EXCLUDE, recursive: bool = True) -> FileRules:
        return cls(normalise_extensions(extensions), tuple(exclude), recursive)

    def excluded(self, rel: str) -> bool:
        """A path (relative to its root) that the rules skip, file or folder."""
        return _glob_hits(rel, ALWAYS_SKIPPED) or _glob_hits(rel, self.exclude)

    def wants(self, rel: str) -> bool:
        """A file (relative to its root) that is a video to look at."""
        if os.path.splitext(rel)[1].lower() not in self.extensions:
            return False
        if not self.recursive and "/" in rel:
            return False
        return not self.excluded(rel)


def walk(root: str | Path, rules: FileRules, on_error: OnError | None = None,
         base: str | Path | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """Every regular video file under `root` with its lstat, in sorted order. Symbolic links are
    never followed, to files or to folders: a link is not a second copy (and must never count as
    space to reclaim), a linked folder can loop or be swapped for another mid-way, and its target
    is found where it lies if it is under a root. `root` itself may be a link the user named.
    `base`: the folder the rules' relative paths start from, when `root` lies below it (a folder
    that arrived inside a watched root)."""
    root = os.path.abspath(root)
    start = os.path.relpath(root, os.path.abspath(base)) if base is not None else "."
    try:
        st = os.stat(root)
    except OSError as e:
        if on_error is not None:
            on_error(root, f"cannot open: {e.strerror}")
        return
    if stat.S_ISREG(st.st_mode):
        # A file the user named is looked at whatever its name, through any link they named.
        yield os.path.realpath(root), st
        return

    def failed(e: OSError) -> None:
        if on_error is not None:
            on_error(e.filename or root, f"cannot list the folder: {e.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=failed, followlinks=False):
        rel_dir = os.path.normpath(os.path.join(start, os.path.relpath(dirpath, root)))
        prefix = "" if rel_dir == "." else f"{rel_dir}/"
        if rules.recursive:
            dirnames[:] = sorted(d for d in dirnames if not rules.excluded(prefix + d))
        else:
            dirnames.clear()
        for name in sorted(filenames):
            if not rules.wants(prefix + name):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue  # deleted while we looked
            if stat.S_ISREG(st.st_mode):
                yield path, st
