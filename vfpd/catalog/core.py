"""The catalog's connections: one writer serialised by a lock, one reader per thread, transactions.

Every store (files, jobs, outbox, duplicates, fingerprints) reads through `_reader()` and writes
inside `transaction()`; nothing else opens the database.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

from vfpd.catalog.schema import SCHEMA_VERSION, CatalogError, migrate

BUSY_TIMEOUT_MS = 10_000
"""How long a connection waits for another process's write lock before failing. Writes here are
single-row or one job's result (milliseconds), so 10 s only runs out if something is stuck."""

ITER_BATCH = 4096
"""Rows fetched per step when streaming (fingerprints, duplicates): bounds memory, and ~4 MB of
vectors per step keeps the Python overhead per row small."""

IN_CHUNK = 500
"""Values per IN (...) list: under SQLite's default limit of 999 bound parameters."""

STATUS_CACHE_KIB = 32768
"""Page cache of the connection counts() reads on: the covering indexes the totals scan take
~20 MB per 100k files; kept warm, `vfpctl status` costs well under a millisecond instead of
re-reading them (the per-thread readers keep SQLite's default 2 MB)."""

T = TypeVar("T")


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


class CatalogCore:
    """The SQLite connections of one catalog file. Thread-safe: writes are serialised on one
    connection, reads use one connection per thread. Use as a context manager or call close().

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
        self._warm: sqlite3.Connection | None = None
        self._warm_lock = threading.Lock()
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

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction on the long-lived connection with a large cache (see
        STATUS_CACHE_KIB), shared under a lock; inside our own transaction, the writer."""
        if self._owner == threading.get_ident() and self._w is not None:
            yield self._w  # already a consistent view, with our own writes
            return
        with self._warm_lock:
            if self._warm is None:
                if self._closed:
                    raise CatalogError("catalog is closed")
                self._warm = self._connect(readonly=True)
                self._warm.execute(f"PRAGMA cache_size = -{STATUS_CACHE_KIB}")
            self._warm.execute("BEGIN")
            try:
                yield self._warm
            finally:
                self._warm.execute("COMMIT")

    def close(self) -> None:
        """Close every connection (readers of all threads too)."""
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._warm_lock:
            if self._warm is not None:
                self._warm.close()
                self._warm = None
        if self._w is not None:
            with self._lock:
                self._w.close()
                self._w = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def checkpoint(self) -> None:
        """Fold the WAL back into the main file (call when idle; keeps the WAL small)."""
        with self._lock:
            if self._w is not None:
                self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def stream(conn: sqlite3.Connection, sql: str, args: Sequence) -> Iterator[tuple]:
    """Rows of `sql`, fetched ITER_BATCH at a time."""
    cur = conn.execute(sql, args)
    try:
        while rows := cur.fetchmany(ITER_BATCH):
            yield from rows
    finally:
        cur.close()


def chunks(items: Sequence[T]) -> Iterator[tuple[Sequence[T], str]]:
    """`items` in slices of at most IN_CHUNK, each with its "?,?,..." placeholders."""
    for start in range(0, len(items), IN_CHUNK):
        part = items[start:start + IN_CHUNK]
        yield part, ",".join("?" * len(part))
