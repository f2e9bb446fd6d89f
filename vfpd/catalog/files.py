"""Paths on disk and the contents (hashes) they hold; storing one processed file's result."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from vfpd.catalog.codecs import path_key, path_text, prefix_bounds, prefix_clause
from vfpd.catalog.core import CatalogCore, chunks, stream
from vfpd.catalog.fingerprints import delete_fingerprints, put_fingerprint, put_frames
from vfpd.catalog.jobs import Job, finish_job
from vfpd.catalog.vocabulary import FileState
from vfpd.fingerprint import Fingerprint
from vfpd.hashing import FileStat
from vfpd.media import SampledVideo, SamplingSettings


@dataclass(frozen=True)
class FileRecord:
    path: str
    stat: FileStat
    hash: str | None
    first_seen: float
    last_seen: float
    state: FileState


@dataclass(frozen=True)
class ContentInfo:
    """What the pipeline learned about a content (from probing/sampling) when it stores a result."""

    size: int
    duration: float | None = None
    codec: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class ContentRecord:
    hash: str
    size: int
    duration: float | None
    codec: str | None
    width: int | None
    height: int | None
    decode_failures: int
    last_error: str | None
    first_seen: float


_FILE_COLS = "path, size, mtime_ns, inode, device, hash, first_seen, last_seen, state"
_CONTENT_COLS = ("hash, size, duration, codec, width, height, decode_failures, last_error, "
                 "first_seen")


def _file(row: tuple) -> FileRecord:
    path, size, mtime_ns, inode, device, h, first, last, state = row
    return FileRecord(path_text(path), FileStat(size, mtime_ns, inode, device), h, first, last,
                      FileState(state))


class FileStore(CatalogCore):
    """Files (paths) and contents."""

    def file_by_path(self, path: str) -> FileRecord | None:
        row = self._reader().execute(f"SELECT {_FILE_COLS} FROM files WHERE path = ?",
                                     (path_key(path),)).fetchone()
        return _file(row) if row else None

    def iter_files(self, prefix: str | None = None) -> Iterator[FileRecord]:
        """All recorded files, or those inside directory `prefix`, in path order (reconcile)."""
        where, args = prefix_clause("path", prefix)
        sql = f"SELECT {_FILE_COLS} FROM files {where} ORDER BY path"
        yield from (_file(r) for r in stream(self._reader(), sql, args))

    def paths_for_hash(self, content_hash: str) -> list[str]:
        return [path_text(r[0]) for r in self._reader().execute(
            "SELECT path FROM files WHERE hash = ? ORDER BY path", (content_hash,))]

    def paths_for_hashes(self, hashes: Sequence[str]) -> dict[str, list[str]]:
        """The paths of each content that has any, in path order."""
        out: dict[str, list[str]] = {}
        conn = self._reader()
        for chunk, marks in chunks(hashes):
            for h, path in conn.execute(
                    f"SELECT hash, path FROM files WHERE hash IN ({marks}) ORDER BY path", chunk):
                out.setdefault(h, []).append(path_text(path))
        return out

    def content(self, content_hash: str) -> ContentRecord | None:
        row = self._reader().execute(f"SELECT {_CONTENT_COLS} FROM contents WHERE hash = ?",
                                     (content_hash,)).fetchone()
        return ContentRecord(*row) if row else None

    def contents(self, hashes: Sequence[str]) -> dict[str, ContentRecord]:
        """The known ones of these contents."""
        out: dict[str, ContentRecord] = {}
        conn = self._reader()
        for chunk, marks in chunks(hashes):
            for row in conn.execute(
                    f"SELECT {_CONTENT_COLS} FROM contents WHERE hash IN ({marks})", chunk):
                out[row[0]] = ContentRecord(*row)
        return out

    def sizes_and_path_counts(self, hashes: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(size, number of files) of each known content, hard links of one file counted once
        (they hold no space of their own): what ranking duplicate groups by the space they waste
        needs, without reading their paths. The scan counts the same way (one entry per inode)."""
        out: dict[str, tuple[int, int]] = {}
        conn = self._reader()
        for chunk, marks in chunks(hashes):
            out.update((h, (size, n)) for h, size, n in conn.execute(
                "SELECT c.hash, c.size, (SELECT COUNT(DISTINCT f.device || ':' || f.inode) "
                "FROM files f WHERE f.hash = c.hash) "
                f"FROM contents c WHERE c.hash IN ({marks})", chunk))
        return out

    def aliased_contents(self, since: float | None = None,
                         path_prefix: str | None = None) -> list[str]:
        """Contents stored at more than one path (each path an exact duplicate of the others);
        only those with a path first seen at or after `since`, and one inside directory
        `path_prefix`, when given."""
        sql = "SELECT hash FROM files WHERE hash IS NOT NULL GROUP BY hash HAVING COUNT(*) > 1"
        args: list = []
        if since is not None:
            sql += " AND MAX(first_seen) >= ?"
            args.append(since)
        if path_prefix is not None:
            sql += " AND SUM(path = ? OR (path >= ? AND path < ?)) > 0"
            args += list(prefix_bounds(path_prefix))
        return [r[0] for r in self._reader().execute(sql, args)]

    def move_file(self, old: str, new: str, stat: FileStat | None = None,
                  now: float | None = None) -> bool:
        """A rename: the content (hash) is kept, only the path changes. False if `old` unknown."""
        now = time.time() if now is None else now
        with self.transaction() as w:
            row = w.execute("SELECT id FROM files WHERE path = ?", (path_key(old),)).fetchone()
            if row is None:
                return False
            w.execute("DELETE FROM files WHERE path = ?", (path_key(new),))
            w.execute("UPDATE files SET path = ?, last_seen = ? WHERE id = ?",
                      (path_key(new), now, row[0]))
            if stat is not None:
                w.execute("UPDATE files SET inode = ?, device = ?, size = ?, mtime_ns = ? "
                          "WHERE id = ?", (stat.inode, stat.device, stat.size, stat.mtime_ns,
                                           row[0]))
            w.execute("UPDATE jobs SET path = ? WHERE path = ? AND NOT EXISTS "
                      "(SELECT 1 FROM jobs WHERE path = ?)",
                      (path_key(new), path_key(old), path_key(new)))
            return True

    def remove_file(self, path: str) -> bool:
        """A delete: the path goes, its content and fingerprints stay as history. Also drops a
        queued job for the path. False if the path was unknown."""
        with self.transaction() as w:
            w.execute("DELETE FROM jobs WHERE path = ?", (path_key(path),))
            return w.execute("DELETE FROM files WHERE path = ?", (path_key(path),)).rowcount > 0

    def remove_files_under(self, prefix: str) -> int:
        """Forget every path inside directory `prefix` (a root removed from the config)."""
        where, args = prefix_clause("path", prefix)
        with self.transaction() as w:
            w.execute(f"DELETE FROM jobs {where}", args)
            return w.execute(f"DELETE FROM files {where}", args).rowcount

    def purge_orphans(self) -> int:
        """Delete contents that no path refers to any more, with their fingerprints, frames and
        duplicates (the user's explicit purge). Returns the number of contents removed."""
        with self.transaction() as w:
            orphans = [r[0] for r in w.execute(
                "SELECT hash FROM contents c WHERE NOT EXISTS "
                "(SELECT 1 FROM files f WHERE f.hash = c.hash)")]
            for h in orphans:
                delete_fingerprints(w, "hash = ?", (h,))
                w.execute("DELETE FROM frames WHERE hash = ?", (h,))
                w.execute("DELETE FROM duplicates WHERE hash_a = ? OR hash_b = ?", (h, h))
                w.execute("DELETE FROM contents WHERE hash = ?", (h,))
            return len(orphans)

    def seen(self, paths: Sequence[str], now: float | None = None) -> None:
        """Mark the rows of `paths` seen now, in one transaction (files found unchanged)."""
        now = time.time() if now is None else now
        with self.transaction() as w:
            w.executemany("UPDATE files SET last_seen = ? WHERE path = ?",
                          [(now, path_key(p)) for p in paths])

    def store_result(self, path: str, stat: FileStat, content_hash: str, *,
                     info: ContentInfo | None = None, fingerprint: Fingerprint | None = None,
                     frames: SampledVideo | None = None, job: Job | None = None,
                     now: float | None = None,
                     sampling: SamplingSettings | None = None) -> int | None:
        """Record what processing `path` produced, in ONE transaction: the content (created if
        new), the sampled frames (tagged with `sampling`, see encode_frames) and fingerprint (if
        given), the file row pointing at the hash, and the removal of the job. Without a
        fingerprint it records a path alias of a known content (exact duplicate found by hash).
        Returns the new fingerprint id, or None."""
        now = time.time() if now is None else now
        fid = None
        with self.transaction() as w:
            w.execute("INSERT INTO contents(hash, size, first_seen) VALUES (?, ?, ?) "
                      "ON CONFLICT(hash) DO NOTHING", (content_hash, stat.size, now))
            if info is not None:
                w.execute("UPDATE contents SET size = ?, duration = COALESCE(?, duration), "
                          "codec = COALESCE(?, codec), width = COALESCE(?, width), "
                          "height = COALESCE(?, height) WHERE hash = ?",
                          (info.size, info.duration, info.codec, info.width, info.height,
                           content_hash))
            if frames is not None:
                put_frames(w, content_hash, frames, now, sampling)
            if fingerprint is not None:
                fid = put_fingerprint(w, content_hash, fingerprint, now)
            w.execute(
                "INSERT INTO files(path, device, inode, size, mtime_ns, hash, first_seen, "
                f"last_seen, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{FileState.OK}') "
                "ON CONFLICT(path) DO UPDATE SET device = excluded.device, "
                "inode = excluded.inode, size = excluded.size, mtime_ns = excluded.mtime_ns, "
                "hash = excluded.hash, last_seen = excluded.last_seen, "
                f"state = '{FileState.OK}'",
                (path_key(path), stat.device, stat.inode, stat.size, stat.mtime_ns, content_hash,
                 now, now))
            finish_job(w, job, path)
        return fid
