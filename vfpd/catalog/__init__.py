"""The catalog: SQLite (WAL) record of files, contents, fingerprints, duplicates, jobs and outbox.

It is the truth; the FAISS index is a cache derived from it (see vfpd/index.py). One writer
connection per process, serialised by a lock; every reading thread gets its own connection, so
readers never block the writer (WAL) and never see half a transaction (core.py).

One module per thing stored, each a mixin over the shared connections, composed here into the
one `Catalog` callers use: schema.py (tables and migrations), codecs.py (how paths, vectors and
frames are stored), files.py (paths and contents), jobs.py (the work queue), outbox.py
(notifications), duplicates.py (pairs and verdicts), fingerprints.py (fingerprints and frames),
vocabulary.py (the states and labels stored, as StrEnums).
No SQL is written outside this package.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vfpd.catalog.codecs import (
    UNTAGGED_SAMPLING,
    encode_frames,
    frames_sampling,
    path_key,
    path_text,
    prefix_bounds,
    sampling_tag,
)
from vfpd.catalog.core import RetryPolicy
from vfpd.catalog.duplicates import Duplicate, DuplicateStore
from vfpd.catalog.files import ContentInfo, ContentRecord, FileRecord, FileStore
from vfpd.catalog.fingerprints import Change, FingerprintStore, StoredFingerprint
from vfpd.catalog.jobs import PRIORITY_BACKLOG, PRIORITY_NEW, Job, JobStore
from vfpd.catalog.outbox import OutboxItem, OutboxStore
from vfpd.catalog.schema import MIGRATIONS, SCHEMA_VERSION, CatalogError, migrate
from vfpd.catalog.vocabulary import DeliveryState, FileState, JobState, Kind, Verdict

__all__ = [
    "MIGRATIONS", "PRIORITY_BACKLOG", "PRIORITY_NEW", "SCHEMA_VERSION", "UNTAGGED_SAMPLING",
    "Catalog", "CatalogCounts", "CatalogError", "Change", "ContentInfo", "ContentRecord",
    "DeliveryState", "Duplicate", "FileRecord", "FileState", "Job", "JobState", "Kind",
    "OutboxItem", "RetryPolicy", "StoredFingerprint", "Verdict", "encode_frames",
    "frames_sampling", "migrate", "path_key", "path_text", "prefix_bounds", "sampling_tag",
]


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


class Catalog(FileStore, JobStore, OutboxStore, DuplicateStore, FingerprintStore):
    """The SQLite catalog: every store over one set of connections (see CatalogCore)."""

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
                               f"OR verdict != '{Verdict.NOT_DUPLICATE}'"),
                jobs_queued=one(f"SELECT COUNT(*) FROM jobs WHERE state = '{JobState.QUEUED}'"),
                jobs_failed=one(f"SELECT COUNT(*) FROM jobs WHERE state = '{JobState.FAILED}'"),
                outbox_pending=one("SELECT COUNT(*) FROM deliveries "
                                   f"WHERE state = '{DeliveryState.PENDING}'"),
                sequence=one("SELECT COALESCE(MAX(seq), 0) FROM fingerprint_changes"),
            )
        finally:
            if not own:
                conn.execute("COMMIT")
