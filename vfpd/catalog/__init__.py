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

from dataclasses import dataclass

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
    """The totals `vfpctl status` shows."""

    files: int
    contents: int
    fingerprints: int
    """Of every model version (model_versions() splits them)."""
    duplicates: int
    """Pairs, those the user marked not-a-duplicate left out."""
    jobs_queued: int
    """Including the jobs in progress: a job leaves the queue only with its result."""
    jobs_failed: int
    outbox_pending: int
    """Deliveries of events still to be made."""


class Catalog(FileStore, JobStore, OutboxStore, DuplicateStore, FingerprintStore):
    """The SQLite catalog: every store over one set of connections (see CatalogCore)."""

    def counts(self) -> CatalogCounts:
        """The totals, from one read snapshot (about a millisecond: no GROUP BY, warm cache)."""
        with self._snapshot() as conn:
            def one(sql: str) -> int:
                return conn.execute(sql).fetchone()[0]
            return CatalogCounts(
                files=one("SELECT COUNT(*) FROM files"),
                contents=one("SELECT COUNT(*) FROM contents"),
                fingerprints=one("SELECT COUNT(*) FROM fingerprints"),
                duplicates=one("SELECT COUNT(*) FROM duplicates WHERE verdict IS NULL "
                               f"OR verdict != '{Verdict.NOT_DUPLICATE}'"),
                jobs_queued=one(f"SELECT COUNT(*) FROM jobs WHERE state = '{JobState.QUEUED}'"),
                jobs_failed=one(f"SELECT COUNT(*) FROM jobs WHERE state = '{JobState.FAILED}'"),
                outbox_pending=one("SELECT COUNT(*) FROM deliveries "
                                   f"WHERE state = '{DeliveryState.PENDING}'"),
            )
