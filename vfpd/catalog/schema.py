"""The catalog's schema: every migration step since the first release, and how to apply them."""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger("vfpd.catalog")


class CatalogError(Exception):
    """The catalog file cannot be used (newer schema, corrupt, read-only needing migration)."""


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

# Scheduled jobs (APScheduler's persistent job store, vfpd/catalog/schedule.py): a run missed
# while the daemon was down is still due at the next start.
_V5 = """
CREATE TABLE schedule_jobs(
    id TEXT PRIMARY KEY,
    next_run_time REAL,
    job_state BLOB NOT NULL
);
CREATE INDEX schedule_jobs_next ON schedule_jobs(next_run_time);
"""

# The pictures of a fingerprint's still stretches (vfpd.detail.Stills.encode); NULL for one stored
# before they were kept, which verification then compares by its features alone.
_V6 = """
ALTER TABLE fingerprints ADD COLUMN stills BLOB;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6)
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
