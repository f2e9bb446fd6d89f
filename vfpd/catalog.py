"""The catalog: SQLite (WAL) record of files, contents, fingerprints, duplicates, jobs and outbox.

It is the truth; the FAISS index is a cache derived from it (see vfpd/index.py). One writer
connection per process, serialised by a lock; every reading thread gets its own connection, so
readers never block the writer (WAL) and never see half a transaction.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vfpd.fingerprint import FRAME_DIM, VECTOR_DIM, Fingerprint
from vfpd.hashing import FileStat
from vfpd.media import SampledVideo, SamplingSettings, VideoInfo

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
"""How long a connection waits for another process's write lock before failing. Writes here are
single-row or one job's result (milliseconds), so 10 s only runs out if something is stuck."""

ITER_BATCH = 4096
"""Rows fetched per step when streaming (fingerprints, duplicates): bounds memory, and ~4 MB of
vectors per step keeps the Python overhead per row small."""

PRIORITY_NEW = 0
"""Priority of a file that just appeared or changed: the user is waiting for it."""

PRIORITY_BACKLOG = 10
"""Priority of files found by a start-up reconcile or a rescan: done when nothing new waits."""

KINDS = ("exact", "near", "partial")
VERDICTS = ("confirmed", "not_duplicate")
JOB_QUEUED = "queued"
JOB_FAILED = "failed"
FILE_OK = "ok"
FILE_FAILED = "failed"
DELIVERY_PENDING = "pending"
DELIVERY_DONE = "done"
DELIVERY_FAILED = "failed"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential back-off, for jobs and for notification deliveries."""

    max_attempts: int = 3
    """A file that fails 3 times (a crash, a timeout, a bad stream) is marked failed: enough to
    ride over a transient error (disk busy, file still being copied), few enough to not waste
    minutes of decoding on a broken file."""
    backoff_s: float = 30.0
    """First retry after 30 s: long enough for a copy in progress to settle."""
    backoff_max_s: float = 3600.0
    """Never wait longer than an hour between tries."""
    lease_s: float = 3600.0
    """A claimed job is not handed out again for an hour; longer than any decode time limit. At
    start-up the writer releases all leases (their holder died with the previous process)."""

    def delay(self, attempts: int) -> float:
        """Seconds to wait before try number `attempts + 1`."""
        return min(self.backoff_max_s, self.backoff_s * 2.0 ** max(0, attempts - 1))


class CatalogError(Exception):
    """The catalog file cannot be used (newer schema, corrupt, read-only needing migration)."""


@dataclass(frozen=True)
class FileRecord:
    path: str
    stat: FileStat
    hash: str | None
    first_seen: float
    last_seen: float
    state: str


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


@dataclass(frozen=True)
class Job:
    id: int
    path: str
    reason: str
    priority: int
    attempts: int
    next_try: float
    last_error: str | None
    state: str
    generation: int
    """Bumped each time the path is enqueued again; a result for an older generation does not
    remove the job (the file changed while it was processed, so it is processed again)."""


@dataclass(frozen=True)
class Duplicate:
    hash_a: str
    """The smaller of the two hashes (pairs are stored ordered)."""
    hash_b: str
    score: float
    kind: str
    segments: Any
    """JSON value from the matcher (e.g. [[a_start, a_end, b_start, b_end], ...] seconds) or None."""
    first_seen: float
    last_seen: float
    verdict: str | None
    verdict_at: float | None


@dataclass(frozen=True)
class StoredFingerprint:
    id: int
    """Catalog row id: the id of this vector in the FAISS index."""
    hash: str
    fingerprint: Fingerprint


@dataclass(frozen=True)
class Change:
    """One entry of the fingerprint change log, in sequence order."""

    seq: int
    op: str  # "add" | "remove"
    fingerprint_id: int
    vector: np.ndarray | None  # for "add" (unless the fingerprint was removed since)


@dataclass(frozen=True)
class OutboxItem:
    id: int
    sink: str
    payload: dict
    attempts: int
    created: float


@dataclass(frozen=True)
class CatalogCounts:
    files: int
    contents: int
    fingerprints: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    jobs_queued: int = 0
    jobs_failed: int = 0
    outbox_pending: int = 0
    sequence: int = 0


def path_key(path: str | os.PathLike[str]) -> bytes:
    """How a path is stored: its exact bytes on disk (os.fsencode). A name need not be UTF-8 —
    Python hands such a name over as a str with surrogate escapes (PEP 383), which sqlite3
    refuses to store as TEXT. Bytes are lossless for every name the kernel accepts, sort like
    the kernel's names, and need no escaping convention of our own (a text escape would have to
    escape itself, changing names that are valid UTF-8)."""
    return os.fsencode(path)


def path_text(key: bytes) -> str:
    """A stored path as the str every other part uses (undecodable bytes as surrogates)."""
    return os.fsdecode(key)


def ordered(hash_a: str, hash_b: str) -> tuple[str, str]:
    """The stored order of a pair of hashes."""
    if hash_a == hash_b:
        raise ValueError("a duplicate pair needs two different hashes")
    return (hash_a, hash_b) if hash_a < hash_b else (hash_b, hash_a)


# ---------------------------------------------------------------------------------------------
# Schema. MIGRATIONS[i] takes the database from user_version i to i + 1. Never edit a released
# step: add a new one. tests/test_catalog.py builds every earlier version and migrates it.

_V1 = """
CREATE TABLE contents(
    hash TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    duration REAL,
    codec TEXT,
    width INTEGER,
    height INTEGER,
    decode_failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    first_seen REAL NOT NULL
);
CREATE TABLE files(
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT REFERENCES contents(hash),
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'ok'
);
CREATE INDEX files_hash ON files(hash);
CREATE INDEX files_inode ON files(device, inode);
CREATE TABLE fingerprints(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash TEXT NOT NULL REFERENCES contents(hash),
    model_version TEXT NOT NULL,
    vector BLOB NOT NULL,
    created REAL NOT NULL,
    UNIQUE(hash, model_version)
);
CREATE TABLE duplicates(
    hash_a TEXT NOT NULL REFERENCES contents(hash),
    hash_b TEXT NOT NULL REFERENCES contents(hash),
    score REAL NOT NULL,
    kind TEXT NOT NULL CHECK(kind IN ('exact', 'near', 'partial')),
    first_seen REAL NOT NULL,
    PRIMARY KEY(hash_a, hash_b),
    CHECK(hash_a < hash_b)
);
CREATE TABLE jobs(
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'queued'
);
"""

# v2: what the matcher and retraining need without decoding again, and user verdicts.
_V2 = """
ALTER TABLE fingerprints ADD COLUMN frame_features BLOB;
ALTER TABLE fingerprints ADD COLUMN timestamps BLOB;
ALTER TABLE fingerprints ADD COLUMN informative BLOB;
ALTER TABLE fingerprints ADD COLUMN duration REAL;
CREATE TABLE frames(
    hash TEXT PRIMARY KEY REFERENCES contents(hash),
    data BLOB NOT NULL,
    created REAL NOT NULL
);
ALTER TABLE duplicates ADD COLUMN segments TEXT;
ALTER TABLE duplicates ADD COLUMN last_seen REAL;
ALTER TABLE duplicates ADD COLUMN verdict TEXT CHECK(verdict IN ('confirmed', 'not_duplicate'));
ALTER TABLE duplicates ADD COLUMN verdict_at REAL;
UPDATE duplicates SET last_seen = first_seen;
CREATE INDEX duplicates_b ON duplicates(hash_b);
CREATE INDEX duplicates_first_seen ON duplicates(first_seen);
"""

# v3: job priorities and leases, the notification outbox, and the fingerprint change log whose
# sequence tells the index which catalog state it covers.
_V3 = """
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 10;
ALTER TABLE jobs ADD COLUMN leased_until REAL;
ALTER TABLE jobs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN created REAL NOT NULL DEFAULT 0;
CREATE INDEX jobs_due ON jobs(state, priority, next_try);
CREATE TABLE outbox(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE deliveries(
    outbox_id INTEGER NOT NULL REFERENCES outbox(id) ON DELETE CASCADE,
    sink TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK(state IN ('pending', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL,
    PRIMARY KEY(outbox_id, sink)
);
CREATE INDEX deliveries_due ON deliveries(sink, state, next_try);
CREATE TABLE fingerprint_changes(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint_id INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    op TEXT NOT NULL CHECK(op IN ('add', 'remove'))
);
CREATE INDEX fingerprint_changes_version ON fingerprint_changes(model_version, seq);
INSERT INTO fingerprint_changes(fingerprint_id, model_version, op)
    SELECT id, model_version, 'add' FROM fingerprints ORDER BY id;
"""

# v4: paths as BLOBs of their bytes on disk (see path_key), so a file name that is not UTF-8 can
# be stored. SQLite cannot change a column's type: files and jobs are rebuilt. CAST(text AS BLOB)
# gives the text's UTF-8 bytes, which is what os.fsencode gives for every name stored so far
# (sqlite3 refused the undecodable ones). The CHECK keeps a stray str parameter from creating a
# TEXT row that no BLOB lookup would ever find again.
_V4 = """
CREATE TABLE files_v4(
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE CHECK(typeof(path) = 'blob'),
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT REFERENCES contents(hash),
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'ok'
);
INSERT INTO files_v4(id, path, device, inode, size, mtime_ns, hash, first_seen, last_seen, state)
    SELECT id, CAST(path AS BLOB), device, inode, size, mtime_ns, hash, first_seen, last_seen,
           state FROM files;
DROP TABLE files;
ALTER TABLE files_v4 RENAME TO files;
CREATE INDEX files_hash ON files(hash);
CREATE INDEX files_inode ON files(device, inode);
CREATE TABLE jobs_v4(
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE CHECK(typeof(path) = 'blob'),
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'queued',
    priority INTEGER NOT NULL DEFAULT 10,
    leased_until REAL,
    generation INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL DEFAULT 0
);
INSERT INTO jobs_v4(id, path, reason, attempts, next_try, last_error, state, priority,
                    leased_until, generation, created)
    SELECT id, CAST(path AS BLOB), reason, attempts, next_try, last_error, state, priority,
           leased_until, generation, created FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v4 RENAME TO jobs;
CREATE INDEX jobs_due ON jobs(state, priority, next_try);
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring `conn`'s database up to schema `target`, one step per transaction. Returns the
    version found. Raises CatalogError for a database newer than this code."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise CatalogError(
            f"catalog schema version {found} is newer than this vfpd ({SCHEMA_VERSION}); "
            "upgrade vfpd or point it at another state directory"
        )
    for version in range(found, target):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if version:
            log.info("catalog migrated from schema %d to %d", version, version + 1)
    return found


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


# ---------------------------------------------------------------------------------------------
# Compact BLOB encodings.

def _f32(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def _frames_blob(features: np.ndarray) -> bytes:
    # float16 keeps ~3 significant digits, far below the matcher's score resolution, at half size.
    return np.ascontiguousarray(features, dtype="<f2").tobytes()


def _fingerprint_from_row(row: sqlite3.Row | tuple) -> Fingerprint:
    vector, features, timestamps, informative, duration, model_version = row
    ts = np.frombuffer(timestamps, dtype="<f8") if timestamps is not None else np.zeros(0)
    n = len(ts)
    feats = (
        np.frombuffer(features, dtype="<f2").astype(np.float32).reshape(n, FRAME_DIM)
        if features is not None
        else np.zeros((0, FRAME_DIM), np.float32)
    )
    info = (
        np.frombuffer(informative, dtype=np.uint8).astype(bool)
        if informative is not None
        else np.zeros(0, bool)
    )
    return Fingerprint(
        vector=np.frombuffer(vector, dtype="<f4").copy(),
        frame_features=feats,
        timestamps=ts.astype(np.float64),
        informative=info,
        duration=float(duration or 0.0),
        model_version=model_version,
    )


UNTAGGED_SAMPLING: dict[str, Any] = {"interval": 1.0, "max_frames": 512, "keyframes": "auto",
                                     "remove_bars": True}
"""How frames stored without a sampling tag were sampled: SamplingSettings' defaults (the
"accurate" preset), the only sampling the daemon used before the tag was written. Spelt out, not
read from SamplingSettings(), so a later change of the defaults cannot relabel old frames."""


def sampling_tag(settings: SamplingSettings) -> dict[str, Any]:
    """The fields of `settings` that decide which frames a file gives (the others only limit the
    decoder): frames sampled with equal tags can stand in for a new decode."""
    return {"interval": float(settings.interval), "max_frames": int(settings.max_frames),
            "keyframes": settings.keyframes, "remove_bars": bool(settings.remove_bars)}


def _json_bytes(value: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(value, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def encode_frames(sampled: SampledVideo, sampling: SamplingSettings | None = None) -> bytes:
    """Compressed, self-describing bytes for a SampledVideo (npz + its probe info as JSON), with
    the sampling that made it (`sampling`; None: untagged, read back as UNTAGGED_SAMPLING)."""
    buf = io.BytesIO()
    extra = {} if sampling is None else {"sampling": _json_bytes(sampling_tag(sampling))}
    np.savez_compressed(
        buf,
        frames=np.ascontiguousarray(sampled.frames, dtype=np.uint8),
        timestamps=np.asarray(sampled.timestamps, dtype=np.float64),
        informative=np.asarray(sampled.informative, dtype=bool),
        duration=np.float64(sampled.duration),
        info=_json_bytes(sampled.info.__dict__),
        **extra,
    )
    return buf.getvalue()


def frames_sampling(data: bytes) -> dict[str, Any]:
    """The sampling tag of encoded frames (UNTAGGED_SAMPLING for frames stored without one),
    read without decompressing the frames."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        if "sampling" not in z.files:
            return dict(UNTAGGED_SAMPLING)
        return json.loads(z["sampling"].tobytes().decode("utf-8"))


def decode_frames(data: bytes) -> SampledVideo:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        info = VideoInfo(**json.loads(z["info"].tobytes().decode("utf-8")))
        return SampledVideo(
            frames=z["frames"],
            timestamps=z["timestamps"],
            informative=z["informative"],
            duration=float(z["duration"]),
            info=info,
        )


# ---------------------------------------------------------------------------------------------


class Catalog:
    """The SQLite catalog. Thread-safe: writes are serialised on one connection, reads use one
    connection per thread. Use as a context manager or call close().

    Every write method commits on its own, unless called inside `with catalog.transaction():`,
    which groups several writes into one atomic commit (e.g. a duplicate and its outbox event).
    """

    def __init__(self, path: Path | str, *, readonly: bool = False,
                 jobs: RetryPolicy = RetryPolicy(), deliveries: RetryPolicy = RetryPolicy(
                     max_attempts=8, backoff_s=10.0, backoff_max_s=3600.0)) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.job_policy = jobs
        self.delivery_policy = deliveries
        self._lock = threading.RLock()
        self._depth = 0
        self._owner: int | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._w: sqlite3.Connection | None = None
        if readonly:
            if not self.path.exists():
                raise CatalogError(f"{self.path}: no catalog here")
            version = self._reader().execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                self.close()
                raise CatalogError(
                    f"{self.path}: schema version {version}, this vfpd needs {SCHEMA_VERSION}; "
                    "open it once read-write (start the daemon) to migrate"
                )
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._w = self._connect(readonly=False)
            self._w.execute("PRAGMA journal_mode=WAL")
            migrate(self._w)
        except sqlite3.DatabaseError as e:
            self.close()
            raise CatalogError(f"{self.path}: cannot open catalog: {e}") from e
        except BaseException:
            self.close()
            raise
        # Leases belong to the process that took them; this one is the writer now.
        self._w.execute("UPDATE jobs SET leased_until = NULL WHERE leased_until IS NOT NULL")

    # -- connections and transactions ------------------------------------------------------------

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        if readonly:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                   isolation_level=None, check_same_thread=False)
        else:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        # FULL: a committed job result survives a power cut, not only a crash (DESIGN.md).
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self._owner == threading.get_ident() and self._w is not None:
            return self._w  # inside our own transaction: see our own writes
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise CatalogError("catalog is closed")
            conn = self._connect(readonly=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Group writes into one atomic commit. Re-entrant; the outermost block commits."""
        if self._w is None:
            raise CatalogError("catalog is open read-only")
        with self._lock:
            if self._depth == 0:
                self._w.execute("BEGIN IMMEDIATE")
                self._owner = threading.get_ident()
            self._depth += 1
            try:
                yield self._w
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None
                    self._w.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._w.execute("COMMIT")

    def close(self) -> None:
        """Close every connection (readers of all threads too)."""
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        if self._w is not None:
            with self._lock:
                self._w.close()
                self._w = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def checkpoint(self) -> None:
        """Fold the WAL back into the main file (call when idle; keeps the WAL small)."""
        with self._lock:
            if self._w is not None:
                self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def integrity_check(self) -> list[str]:
        """Problems found by SQLite's integrity check and the foreign-key check; [] when sound."""
        conn = self._reader()
        problems = [r[0] for r in conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {r[0]} row {r[1]} -> {r[2]}"
                     for r in conn.execute("PRAGMA foreign_key_check")]
        return problems

    def schema_version(self) -> int:
        return self._reader().execute("PRAGMA user_version").fetchone()[0]

    # -- files and contents ----------------------------------------------------------------------

    def file_by_path(self, path: str) -> FileRecord | None:
        row = self._reader().execute(
            "SELECT path, size, mtime_ns, inode, device, hash, first_seen, last_seen, state "
            "FROM files WHERE path = ?", (path_key(path),)).fetchone()
        return _file(row) if row else None

    def files_by_inode(self, device: int, inode: int) -> list[FileRecord]:
        """Files recorded with this (device, inode): finds the old path of a moved file."""
        rows = self._reader().execute(
            "SELECT path, size, mtime_ns, inode, device, hash, first_seen, last_seen, state "
            "FROM files WHERE device = ? AND inode = ?", (device, inode)).fetchall()
        return [_file(r) for r in rows]

    def iter_files(self, prefix: str | None = None) -> Iterator[FileRecord]:
        """All recorded files, or those inside directory `prefix`, in path order (reconcile)."""
        sql = ("SELECT path, size, mtime_ns, inode, device, hash, first_seen, last_seen, state "
               "FROM files")
        where, args = _prefix_clause("path", prefix)
        yield from (_file(r) for r in _stream(self._reader(), f"{sql} {where} ORDER BY path",
                                              args))

    def paths_for_hash(self, content_hash: str) -> list[str]:
        return [path_text(r[0]) for r in self._reader().execute(
            "SELECT path FROM files WHERE hash = ? ORDER BY path", (content_hash,))]

    def content(self, content_hash: str) -> ContentRecord | None:
        row = self._reader().execute(
            "SELECT hash, size, duration, codec, width, height, decode_failures, last_error, "
            "first_seen FROM contents WHERE hash = ?", (content_hash,)).fetchone()
        return ContentRecord(*row) if row else None

    def touch_file(self, path: str, stat: FileStat, now: float | None = None) -> None:
        """The file at `path` was seen unchanged: update last_seen (and inode/device if the
        filesystem renumbered them)."""
        now = time.time() if now is None else now
        with self.transaction() as w:
            w.execute("UPDATE files SET last_seen = ?, inode = ?, device = ? WHERE path = ?",
                      (now, stat.inode, stat.device, path_key(path)))

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
        where, args = _prefix_clause("path", prefix)
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
                self._delete_fingerprints(w, "hash = ?", (h,))
                w.execute("DELETE FROM frames WHERE hash = ?", (h,))
                w.execute("DELETE FROM duplicates WHERE hash_a = ? OR hash_b = ?", (h, h))
                w.execute("DELETE FROM contents WHERE hash = ?", (h,))
            return len(orphans)

    # -- fingerprints ----------------------------------------------------------------------------

    def has_fingerprint(self, content_hash: str, model_version: str) -> bool:
        return self._reader().execute(
            "SELECT 1 FROM fingerprints WHERE hash = ? AND model_version = ?",
            (content_hash, model_version)).fetchone() is not None

    def fingerprint(self, content_hash: str, model_version: str) -> StoredFingerprint | None:
        row = self._reader().execute(
            "SELECT id, hash, vector, frame_features, timestamps, informative, duration, "
            "model_version FROM fingerprints WHERE hash = ? AND model_version = ?",
            (content_hash, model_version)).fetchone()
        return StoredFingerprint(row[0], row[1], _fingerprint_from_row(row[2:])) if row else None

    def fingerprints_by_ids(self, ids: Iterable[int]) -> dict[int, StoredFingerprint]:
        """Fingerprints for index ids (k-NN results); unknown ids are left out."""
        ids = [int(i) for i in ids if int(i) >= 0]
        out: dict[int, StoredFingerprint] = {}
        conn = self._reader()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                    "SELECT id, hash, vector, frame_features, timestamps, informative, duration, "
                    f"model_version FROM fingerprints WHERE id IN ({marks})", chunk):
                out[row[0]] = StoredFingerprint(row[0], row[1], _fingerprint_from_row(row[2:]))
        return out

    def hashes_for_ids(self, ids: Iterable[int]) -> dict[int, str]:
        """Content hash of each fingerprint id (cheap: no vectors)."""
        ids = [int(i) for i in ids if int(i) >= 0]
        out: dict[int, str] = {}
        conn = self._reader()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            out.update(conn.execute(
                f"SELECT id, hash FROM fingerprints WHERE id IN ({marks})", chunk).fetchall())
        return out

    def iter_fingerprints(self, model_version: str) -> Iterator[StoredFingerprint]:
        """Every fingerprint of one model version, in id order, streamed."""
        sql = ("SELECT id, hash, vector, frame_features, timestamps, informative, duration, "
               "model_version FROM fingerprints WHERE model_version = ? ORDER BY id")
        for row in _stream(self._reader(), sql, (model_version,)):
            yield StoredFingerprint(row[0], row[1], _fingerprint_from_row(row[2:]))

    def iter_vectors(self, model_version: str, batch: int = ITER_BATCH
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64 (n,), vectors float32 (n, VECTOR_DIM)) batches of one model version: what
        an index rebuild reads. Snapshot-consistent with sequence() read in the same call."""
        for ids, vectors, _ in self._iter_vectors(self._reader(), model_version, batch):
            yield ids, vectors

    def snapshot_vectors(self, model_version: str, batch: int = ITER_BATCH
                         ) -> tuple[int, Iterator[tuple[np.ndarray, np.ndarray]]]:
        """(sequence, batches) read in one read transaction, so the vectors are exactly the
        catalog state at that sequence (an index rebuilt from them covers it). Exhaust or close
        the iterator promptly: it holds a read snapshot."""
        conn = self._connect(readonly=True)
        conn.execute("BEGIN")
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM fingerprint_changes").fetchone()[0]

        def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            try:
                for ids, vectors, _ in self._iter_vectors(conn, model_version, batch):
                    yield ids, vectors
            finally:
                conn.close()
        return seq, gen()

    @staticmethod
    def _iter_vectors(conn: sqlite3.Connection, model_version: str, batch: int
                      ) -> Iterator[tuple[np.ndarray, np.ndarray, None]]:
        cur = conn.execute("SELECT id, vector FROM fingerprints WHERE model_version = ? "
                           "ORDER BY id", (model_version,))
        while rows := cur.fetchmany(batch):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(
                len(rows), VECTOR_DIM)
            yield ids, vectors, None

    def sequence(self) -> int:
        """The catalog's fingerprint sequence: grows with every fingerprint added or removed."""
        return self._reader().execute(
            "SELECT COALESCE(MAX(seq), 0) FROM fingerprint_changes").fetchone()[0]

    def changes_since(self, model_version: str, seq: int) -> Iterator[Change]:
        """Fingerprint adds and removes of one model version after `seq`, in order (index
        catch-up). An add whose fingerprint was removed later comes with vector None."""
        sql = ("SELECT c.seq, c.op, c.fingerprint_id, f.vector FROM fingerprint_changes c "
               "LEFT JOIN fingerprints f ON f.id = c.fingerprint_id "
               "WHERE c.model_version = ? AND c.seq > ? ORDER BY c.seq")
        for s, op, fid, vec in _stream(self._reader(), sql, (model_version, seq)):
            yield Change(s, op, fid, np.frombuffer(vec, dtype="<f4") if vec is not None else None)

    def model_versions(self) -> dict[str, int]:
        """Fingerprint count per model version."""
        return dict(self._reader().execute(
            "SELECT model_version, COUNT(*) FROM fingerprints GROUP BY model_version"))

    def hashes_without_fingerprint(self, model_version: str) -> Iterator[str]:
        """Contents that have sampled frames but no fingerprint of `model_version` (re-embed)."""
        sql = ("SELECT s.hash FROM frames s WHERE NOT EXISTS (SELECT 1 FROM fingerprints f "
               "WHERE f.hash = s.hash AND f.model_version = ?) ORDER BY s.hash")
        yield from (r[0] for r in _stream(self._reader(), sql, (model_version,)))

    def count_unfingerprinted(self, model_version: str) -> int:
        """Contents that a path in good standing points at and that have no fingerprint of
        `model_version`: what re-fingerprinting after a model change still has to do."""
        return self._reader().execute(
            "SELECT COUNT(*) FROM (SELECT DISTINCT hash FROM files WHERE state = 'ok' AND "
            "hash IS NOT NULL) h WHERE NOT EXISTS (SELECT 1 FROM fingerprints f "
            "WHERE f.hash = h.hash AND f.model_version = ?)", (model_version,)).fetchone()[0]

    def add_fingerprint(self, content_hash: str, fingerprint: Fingerprint,
                        now: float | None = None) -> int:
        """Store (or replace) the fingerprint of a known content. Returns its id. Re-embedding
        uses this; the pipeline uses store_result."""
        with self.transaction() as w:
            return self._put_fingerprint(w, content_hash, fingerprint,
                                         time.time() if now is None else now)

    def delete_model_version(self, model_version: str) -> int:
        """Drop every fingerprint of a superseded model version (after a promotion)."""
        with self.transaction() as w:
            return self._delete_fingerprints(w, "model_version = ?", (model_version,))

    def _put_fingerprint(self, w: sqlite3.Connection, content_hash: str, fp: Fingerprint,
                         now: float) -> int:
        vector = np.asarray(fp.vector, dtype=np.float32)
        if not np.all(np.isfinite(vector)):
            raise ValueError("fingerprint vector has NaN or infinite values")
        self._delete_fingerprints(w, "hash = ? AND model_version = ?",
                                  (content_hash, fp.model_version))
        cur = w.execute(
            "INSERT INTO fingerprints(hash, model_version, vector, frame_features, timestamps, "
            "informative, duration, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (content_hash, fp.model_version, _f32(vector), _frames_blob(fp.frame_features),
             np.asarray(fp.timestamps, dtype="<f8").tobytes(),
             np.asarray(fp.informative, dtype=np.uint8).tobytes(), float(fp.duration), now))
        fid = cur.lastrowid
        w.execute("INSERT INTO fingerprint_changes(fingerprint_id, model_version, op) "
                  "VALUES (?, ?, 'add')", (fid, fp.model_version))
        return fid

    @staticmethod
    def _delete_fingerprints(w: sqlite3.Connection, where: str, args: tuple) -> int:
        rows = w.execute(f"SELECT id, model_version FROM fingerprints WHERE {where}",
                         args).fetchall()
        w.executemany("INSERT INTO fingerprint_changes(fingerprint_id, model_version, op) "
                      "VALUES (?, ?, 'remove')", rows)
        w.executemany("DELETE FROM fingerprints WHERE id = ?", [(r[0],) for r in rows])
        return len(rows)

    # -- sampled frames ---------------------------------------------------------------------------

    def store_frames(self, content_hash: str, sampled: SampledVideo,
                     now: float | None = None, sampling: SamplingSettings | None = None) -> None:
        with self.transaction() as w:
            self._put_frames(w, content_hash, sampled, time.time() if now is None else now,
                             sampling)

    def load_frames(self, content_hash: str, sampling: SamplingSettings | None = None
                    ) -> SampledVideo | None:
        """The frames sampled from this content, as stored (no decoding of the video). With
        `sampling`: only if they were sampled that way (else None, as if none were stored)."""
        row = self._reader().execute("SELECT data FROM frames WHERE hash = ?",
                                     (content_hash,)).fetchone()
        if row is None:
            return None
        if sampling is not None and frames_sampling(row[0]) != sampling_tag(sampling):
            return None
        return decode_frames(row[0])

    def iter_frame_hashes(self) -> Iterator[str]:
        yield from (r[0] for r in _stream(self._reader(),
                                          "SELECT hash FROM frames ORDER BY hash", ()))

    @staticmethod
    def _put_frames(w: sqlite3.Connection, content_hash: str, sampled: SampledVideo,
                    now: float, sampling: SamplingSettings | None = None) -> None:
        w.execute("INSERT OR REPLACE INTO frames(hash, data, created) VALUES (?, ?, ?)",
                  (content_hash, encode_frames(sampled, sampling), now))

    # -- jobs -------------------------------------------------------------------------------------

    def enqueue(self, path: str, reason: str, priority: int = PRIORITY_NEW,
                now: float | None = None) -> int:
        """Queue `path` for processing. If already queued: keep one job, at the more urgent
        priority, due now, with a new generation. A failed job is retried from zero attempts.
        Returns the job id."""
        now = time.time() if now is None else now
        with self.transaction() as w:
            w.execute(
                "INSERT INTO jobs(path, reason, priority, attempts, next_try, state, generation, "
                "created) VALUES (?, ?, ?, 0, ?, 'queued', 0, ?) "
                "ON CONFLICT(path) DO UPDATE SET reason = excluded.reason, "
                "priority = MIN(priority, excluded.priority), next_try = excluded.next_try, "
                "attempts = CASE WHEN state = 'failed' THEN 0 ELSE attempts END, "
                "state = 'queued', generation = generation + 1",
                (path_key(path), reason, priority, now, now))
            return w.execute("SELECT id FROM jobs WHERE path = ?",
                             (path_key(path),)).fetchone()[0]

    def enqueue_many(self, items: Iterable[tuple[str, str]], priority: int = PRIORITY_BACKLOG,
                     now: float | None = None) -> int:
        """Queue many (path, reason) in one transaction (start-up reconcile)."""
        n = 0
        with self.transaction():
            for path, reason in items:
                self.enqueue(path, reason, priority, now)
                n += 1
        return n

    def claim_jobs(self, limit: int, now: float | None = None) -> list[Job]:
        """Hand out up to `limit` due jobs, most urgent first, and lease them so no other caller
        gets them. The job stays in the queue until store_result / complete_job / fail_job."""
        now = time.time() if now is None else now
        with self.transaction() as w:
            rows = w.execute(
                f"SELECT {_JOB_COLS} FROM jobs WHERE state = 'queued' AND next_try <= ? "
                "AND (leased_until IS NULL OR leased_until <= ?) "
                "ORDER BY priority, next_try, id LIMIT ?", (now, now, limit)).fetchall()
            w.executemany("UPDATE jobs SET leased_until = ? WHERE id = ?",
                          [(now + self.job_policy.lease_s, r[0]) for r in rows])
        return [_job(r) for r in rows]

    def release_job(self, job: Job) -> None:
        """Give a claimed job back without counting an attempt (shutdown, model busy)."""
        with self.transaction() as w:
            w.execute("UPDATE jobs SET leased_until = NULL WHERE id = ?", (job.id,))

    def job(self, path: str) -> Job | None:
        row = self._reader().execute(f"SELECT {_JOB_COLS} FROM jobs WHERE path = ?",
                                     (path_key(path),)).fetchone()
        return _job(row) if row else None

    def iter_jobs(self, state: str | None = JOB_QUEUED) -> Iterator[Job]:
        """Jobs in one state (queued or failed; None: all), in the order they would run."""
        where = "" if state is None else "WHERE state = ?"
        args = () if state is None else (state,)
        sql = f"SELECT {_JOB_COLS} FROM jobs {where} ORDER BY priority, next_try, id"
        yield from (_job(r) for r in _stream(self._reader(), sql, args))

    def _finish_job(self, w: sqlite3.Connection, job: Job | None, path: str) -> None:
        if job is None:
            w.execute("DELETE FROM jobs WHERE path = ? AND state = 'queued' "
                      "AND leased_until IS NULL", (path_key(path),))
            return
        gone = w.execute("DELETE FROM jobs WHERE id = ? AND generation = ?",
                         (job.id, job.generation)).rowcount
        if not gone:
            # Re-enqueued while we worked on it: the file changed, so it runs again.
            w.execute("UPDATE jobs SET leased_until = NULL WHERE id = ?", (job.id,))

    def complete_job(self, job: Job) -> None:
        """The job needs no result (file vanished, not a video we keep): it leaves the queue."""
        with self.transaction() as w:
            self._finish_job(w, job, job.path)

    def fail_job(self, job: Job, error: str, content_hash: str | None = None,
                 now: float | None = None) -> Job:
        """Record a failed try. Retried after a back-off; after max_attempts the job stays in
        the table in state 'failed' with the reason (shown by status) and the file is marked
        failed. `content_hash` (if known) counts a decode failure on the content. Returns the
        job as it now is."""
        now = time.time() if now is None else now
        policy = self.job_policy
        with self.transaction() as w:
            row = w.execute("SELECT attempts FROM jobs WHERE id = ?", (job.id,)).fetchone()
            attempts = (row[0] if row else job.attempts) + 1
            state = JOB_FAILED if attempts >= policy.max_attempts else JOB_QUEUED
            w.execute("UPDATE jobs SET attempts = ?, last_error = ?, state = ?, next_try = ?, "
                      "leased_until = NULL WHERE id = ?",
                      (attempts, error, state, now + policy.delay(attempts), job.id))
            if content_hash is not None:
                w.execute("UPDATE contents SET decode_failures = decode_failures + 1, "
                          "last_error = ? WHERE hash = ?", (error, content_hash))
            if state == JOB_FAILED:
                w.execute("UPDATE files SET state = 'failed' WHERE path = ?",
                          (path_key(job.path),))
            row = w.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?", (job.id,)).fetchone()
        return _job(row) if row else job

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
                self._put_frames(w, content_hash, frames, now, sampling)
            if fingerprint is not None:
                fid = self._put_fingerprint(w, content_hash, fingerprint, now)
            w.execute(
                "INSERT INTO files(path, device, inode, size, mtime_ns, hash, first_seen, "
                "last_seen, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ok') "
                "ON CONFLICT(path) DO UPDATE SET device = excluded.device, "
                "inode = excluded.inode, size = excluded.size, mtime_ns = excluded.mtime_ns, "
                "hash = excluded.hash, last_seen = excluded.last_seen, state = 'ok'",
                (path_key(path), stat.device, stat.inode, stat.size, stat.mtime_ns, content_hash,
                 now, now))
            self._finish_job(w, job, path)
        return fid

    # -- duplicates -------------------------------------------------------------------------------

    def add_duplicate(self, hash_a: str, hash_b: str, score: float, kind: str,
                      segments: Any = None, now: float | None = None) -> bool:
        """Record (or refresh) a duplicate pair. Returns True when the pair is new, i.e. worth
        an event. A user verdict on the pair is kept."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        a, b = ordered(hash_a, hash_b)
        now = time.time() if now is None else now
        seg = None if segments is None else json.dumps(segments)
        with self.transaction() as w:
            new = w.execute(
                "INSERT INTO duplicates(hash_a, hash_b, score, kind, segments, first_seen, "
                "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (a, b, float(score), kind, seg, now, now)).rowcount > 0
            if not new:
                w.execute("UPDATE duplicates SET score = ?, kind = ?, "
                          "segments = COALESCE(?, segments), last_seen = ? "
                          "WHERE hash_a = ? AND hash_b = ?", (float(score), kind, seg, now, a, b))
        return new

    def duplicate(self, hash_a: str, hash_b: str) -> Duplicate | None:
        a, b = ordered(hash_a, hash_b)
        row = self._reader().execute(f"SELECT {_DUP_COLS} FROM duplicates d "
                                     "WHERE hash_a = ? AND hash_b = ?", (a, b)).fetchone()
        return _dup(row) if row else None

    def duplicates(self, *, since: float | None = None, kind: str | None = None,
                   min_score: float | None = None, path_prefix: str | None = None,
                   content_hash: str | None = None, include_rejected: bool = False
                   ) -> Iterator[Duplicate]:
        """Duplicate pairs, newest first, streamed. Filters: first seen at or after `since`,
        `kind`, score >= `min_score`, either side has a path inside directory `path_prefix`,
        either side is `content_hash`. Pairs the user marked not-a-duplicate are left out unless
        `include_rejected`."""
        where, args = [], []
        if since is not None:
            where.append("d.first_seen >= ?")
            args.append(since)
        if kind is not None:
            where.append("d.kind = ?")
            args.append(kind)
        if min_score is not None:
            where.append("d.score >= ?")
            args.append(min_score)
        if content_hash is not None:
            where.append("(d.hash_a = ? OR d.hash_b = ?)")
            args += [content_hash, content_hash]
        if not include_rejected:
            where.append("(d.verdict IS NULL OR d.verdict != 'not_duplicate')")
        if path_prefix is not None:
            clause, pargs = _prefix_clause("f.path", path_prefix)
            where.append("EXISTS (SELECT 1 FROM files f WHERE f.hash IN (d.hash_a, d.hash_b) "
                         f"AND {clause.removeprefix('WHERE ')})")
            args += pargs
        sql = f"SELECT {_DUP_COLS} FROM duplicates d"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY d.first_seen DESC, d.hash_a, d.hash_b"
        yield from (_dup(r) for r in _stream(self._reader(), sql, tuple(args)))

    def set_verdict(self, hash_a: str, hash_b: str, verdict: str | None,
                    now: float | None = None) -> bool:
        """The user says the pair is a duplicate ('confirmed'), is not ('not_duplicate'), or
        takes it back (None). Stored by content hash, so it survives renames. False if the pair
        was never recorded."""
        if verdict is not None and verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS} or None, not {verdict!r}")
        a, b = ordered(hash_a, hash_b)
        now = time.time() if now is None else now
        with self.transaction() as w:
            return w.execute("UPDATE duplicates SET verdict = ?, verdict_at = ? "
                             "WHERE hash_a = ? AND hash_b = ?",
                             (verdict, None if verdict is None else now, a, b)).rowcount > 0

    def verdicts(self) -> Iterator[Duplicate]:
        """Every pair the user judged (training signal for retraining)."""
        sql = f"SELECT {_DUP_COLS} FROM duplicates d WHERE verdict IS NOT NULL ORDER BY verdict_at"
        yield from (_dup(r) for r in _stream(self._reader(), sql, ()))

    # -- notification outbox ----------------------------------------------------------------------

    def outbox_enqueue(self, payload: dict, sinks: Sequence[str],
                       now: float | None = None) -> int:
        """Persist an event for delivery to each sink. Call inside the transaction that records
        what the event is about, so the two are committed together."""
        now = time.time() if now is None else now
        with self.transaction() as w:
            oid = w.execute("INSERT INTO outbox(created, payload) VALUES (?, ?)",
                            (now, json.dumps(payload, sort_keys=True))).lastrowid
            w.executemany("INSERT INTO deliveries(outbox_id, sink, next_try) VALUES (?, ?, ?)",
                          [(oid, s, now) for s in dict.fromkeys(sinks)])
        return oid

    def outbox_claim(self, sink: str, limit: int = 100,
                     now: float | None = None) -> list[OutboxItem]:
        """Due, undelivered events for `sink`, oldest first. Deliver, then ack or fail each."""
        now = time.time() if now is None else now
        rows = self._reader().execute(
            "SELECT o.id, d.sink, o.payload, d.attempts, o.created FROM deliveries d "
            "JOIN outbox o ON o.id = d.outbox_id WHERE d.sink = ? AND d.state = 'pending' "
            "AND d.next_try <= ? ORDER BY o.id LIMIT ?", (sink, now, limit)).fetchall()
        return [OutboxItem(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]

    def outbox_ack(self, outbox_id: int, sink: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.transaction() as w:
            w.execute("UPDATE deliveries SET state = 'done', delivered_at = ?, "
                      "attempts = attempts + 1 WHERE outbox_id = ? AND sink = ?",
                      (now, outbox_id, sink))

    def outbox_fail(self, outbox_id: int, sink: str, error: str,
                    now: float | None = None) -> bool:
        """A delivery attempt failed: retry later with back-off, or give up after the policy's
        max attempts. Returns True when it gave up."""
        now = time.time() if now is None else now
        policy = self.delivery_policy
        with self.transaction() as w:
            row = w.execute("SELECT attempts FROM deliveries WHERE outbox_id = ? AND sink = ?",
                            (outbox_id, sink)).fetchone()
            if row is None:
                return True
            attempts = row[0] + 1
            gave_up = attempts >= policy.max_attempts
            w.execute("UPDATE deliveries SET attempts = ?, last_error = ?, next_try = ?, "
                      "state = ? WHERE outbox_id = ? AND sink = ?",
                      (attempts, error, now + policy.delay(attempts),
                       DELIVERY_FAILED if gave_up else DELIVERY_PENDING, outbox_id, sink))
        return gave_up

    def outbox_prune(self, older_than: float) -> int:
        """Delete events created before `older_than` whose deliveries are all finished."""
        with self.transaction() as w:
            return w.execute(
                "DELETE FROM outbox WHERE created < ? AND NOT EXISTS (SELECT 1 FROM deliveries "
                "d WHERE d.outbox_id = outbox.id AND d.state = 'pending')",
                (older_than,)).rowcount

    # -- status ------------------------------------------------------------------------------------

    def counts(self) -> CatalogCounts:
        conn = self._reader()
        own = conn is self._w  # inside our own transaction: already a consistent view
        if not own:
            conn.execute("BEGIN")
        try:
            one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
            return CatalogCounts(
                files=one("SELECT COUNT(*) FROM files"),
                contents=one("SELECT COUNT(*) FROM contents"),
                fingerprints=dict(conn.execute(
                    "SELECT model_version, COUNT(*) FROM fingerprints GROUP BY model_version")),
                duplicates=one("SELECT COUNT(*) FROM duplicates WHERE verdict IS NULL "
                               "OR verdict != 'not_duplicate'"),
                jobs_queued=one("SELECT COUNT(*) FROM jobs WHERE state = 'queued'"),
                jobs_failed=one("SELECT COUNT(*) FROM jobs WHERE state = 'failed'"),
                outbox_pending=one("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'"),
                sequence=one("SELECT COALESCE(MAX(seq), 0) FROM fingerprint_changes"),
            )
        finally:
            if not own:
                conn.execute("COMMIT")


_JOB_COLS = ("id, path, reason, priority, attempts, next_try, last_error, state, generation")
_DUP_COLS = ("d.hash_a, d.hash_b, d.score, d.kind, d.segments, d.first_seen, d.last_seen, "
             "d.verdict, d.verdict_at")


def _file(row: tuple) -> FileRecord:
    path, size, mtime_ns, inode, device, h, first, last, state = row
    return FileRecord(path_text(path), FileStat(size, mtime_ns, inode, device), h, first, last,
                      state)


def _job(row: tuple) -> Job:
    return Job(row[0], path_text(row[1]), *row[2:])


def _dup(row: tuple) -> Duplicate:
    a, b, score, kind, seg, first, last, verdict, verdict_at = row
    return Duplicate(a, b, score, kind, None if seg is None else json.loads(seg), first,
                     last if last is not None else first, verdict, verdict_at)


def prefix_bounds(prefix: str | os.PathLike[str]) -> tuple[bytes, bytes, bytes]:
    """(the folder, its start, its end) as stored keys: a stored path is the folder itself or
    inside it when it equals the first or lies in [start, end). A range on the path uses the
    UNIQUE index, unlike LIKE, whose wildcards a path may contain."""
    base = path_key(prefix).rstrip(b"/") or b"/"
    inside = base if base.endswith(b"/") else base + b"/"
    # Every path inside `inside` sorts in [inside, inside[:-1] + "0") since "0" follows "/"
    # (BLOBs compare bytewise, like the kernel's names).
    return base, inside, inside[:-1] + bytes([ord("/") + 1])


def _prefix_clause(column: str, prefix: str | None) -> tuple[str, list]:
    """WHERE clause for "`column` is directory `prefix` or inside it"."""
    if prefix is None:
        return "", []
    return f"WHERE ({column} = ? OR ({column} >= ? AND {column} < ?))", list(prefix_bounds(prefix))


def _stream(conn: sqlite3.Connection, sql: str, args: Sequence) -> Iterator[tuple]:
    cur = conn.execute(sql, args)
    try:
        while rows := cur.fetchmany(ITER_BATCH):
            yield from rows
    finally:
        cur.close()
