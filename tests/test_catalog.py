"""The SQLite catalog: files, contents, fingerprints, frames, jobs, duplicates, outbox, migrations."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from catalog_checks import integrity_problems, schema_version
from vfpd.catalog import (
    MIGRATIONS,
    PRIORITY_BACKLOG,
    PRIORITY_NEW,
    SCHEMA_VERSION,
    Catalog,
    CatalogError,
    ContentInfo,
    JobState,
    RetryPolicy,
    migrate,
)
from vfpd.fingerprint import FRAME_DIM, VECTOR_DIM, Fingerprint
from vfpd.hashing import FileStat, hash_bytes
from vfpd.media import SampledVideo, VideoInfo

MODEL = "base-1"


def make_fp(seed: int, n: int = 6, model: str = MODEL) -> Fingerprint:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(VECTOR_DIM).astype(np.float32)
    f = rng.standard_normal((n, FRAME_DIM)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return Fingerprint(v / np.linalg.norm(v), f, np.arange(n) * 1.0, rng.random(n) > 0.3,
                       n * 1.0, model)


def make_sampled(seed: int, n: int = 4) -> SampledVideo:
    rng = np.random.default_rng(seed)
    info = VideoInfo("mp4", "h264", 320, 240, 4.0, 25.0, 0)
    return SampledVideo(rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8), np.arange(n) * 1.0,
                        np.ones(n, bool), float(n), info)


def stat(i: int, size: int = 1000) -> FileStat:
    return FileStat(size=size, mtime_ns=1_000_000 + i, inode=100 + i, device=7)


def h(i: int) -> str:
    return hash_bytes(str(i).encode())


@pytest.fixture
def cat(tmp_path: Path):
    with Catalog(tmp_path / "catalog.db") as c:
        yield c


def test_open_creates_wal_database_at_current_schema(cat: Catalog) -> None:
    conn = sqlite3.connect(cat.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert schema_version(cat.path) == SCHEMA_VERSION
    assert integrity_problems(cat.path) == []


def test_store_result_round_trips_fingerprint_frames_and_file(cat: Catalog) -> None:
    fp, sampled = make_fp(1), make_sampled(1)
    cat.enqueue("/v/a.mp4", "new")
    job = cat.claim_jobs(1)
    fid = cat.store_result("/v/a.mp4", stat(1), h(1), fingerprint=fp, frames=sampled,
                           info=ContentInfo(1000, 6.0, "h264", 320, 240), job=job[0])
    assert fid is not None
    rec = cat.file_by_path("/v/a.mp4")
    assert rec.hash == h(1) and rec.stat == stat(1) and rec.state == "ok"
    got = cat.fingerprint(h(1), MODEL)
    assert got.id == fid
    np.testing.assert_array_equal(got.fingerprint.vector, fp.vector)  # float32: exact
    np.testing.assert_allclose(got.fingerprint.frame_features, fp.frame_features, atol=1e-3)
    np.testing.assert_array_equal(got.fingerprint.informative, fp.informative)
    np.testing.assert_array_equal(got.fingerprint.timestamps, fp.timestamps)
    back = cat.load_frames(h(1))
    np.testing.assert_array_equal(back.frames, sampled.frames)
    assert back.info == sampled.info
    content = cat.content(h(1))
    assert (content.codec, content.width, content.duration) == ("h264", 320, 6.0)
    assert cat.job("/v/a.mp4") is None, "the job leaves the queue with its result"


def test_same_hash_at_two_paths_is_an_alias_without_new_fingerprint(cat: Catalog) -> None:
    cat.store_result("/v/a.mp4", stat(1), h(1), fingerprint=make_fp(1))
    assert cat.store_result("/v/copy.mp4", stat(2), h(1)) is None
    assert cat.paths_for_hash(h(1)) == ["/v/a.mp4", "/v/copy.mp4"]
    assert cat.model_versions() == {MODEL: 1} and cat.counts().fingerprints == 1


def test_move_keeps_hash_delete_keeps_history_purge_removes(cat: Catalog) -> None:
    cat.store_result("/v/a.mp4", stat(1), h(1), fingerprint=make_fp(1))
    assert cat.move_file("/v/a.mp4", "/w/b.mp4")
    assert cat.file_by_path("/v/a.mp4") is None
    assert cat.file_by_path("/w/b.mp4").hash == h(1)
    assert not cat.move_file("/nope", "/x")
    assert cat.remove_file("/w/b.mp4")
    assert cat.paths_for_hash(h(1)) == []
    assert cat.has_fingerprint(h(1), MODEL), "a hash without paths is kept as history"
    seq = cat.sequence()
    assert cat.purge_orphans() == 1
    assert cat.content(h(1)) is None and not cat.has_fingerprint(h(1), MODEL)
    changes = list(cat.changes_since(MODEL, seq))
    assert [c.op for c in changes] == ["remove"]
    assert integrity_problems(cat.path) == []


def test_replacing_a_fingerprint_logs_remove_then_add(cat: Catalog) -> None:
    first = cat.store_result("/v/a.mp4", stat(1), h(1), fingerprint=make_fp(1))
    second = cat.store_result("/v/a.mp4", stat(1), h(1), fingerprint=make_fp(2))
    assert second > first
    ops = [(c.op, c.fingerprint_id) for c in cat.changes_since(MODEL, 0)]
    assert ops == [("add", first), ("remove", first), ("add", second)]
    seq, batches = cat.snapshot_vectors(MODEL)
    assert seq == 3 and [i for batch, _ in batches for i in batch] == [second]


def test_contents_in_bulk_for_duplicate_groups(cat: Catalog) -> None:
    info = ContentInfo(100, 5.0, "h264", 320, 240)
    cat.store_result("/v/a.mp4", stat(1, 100), h(1), info=info, now=10.0)
    cat.store_result("/v/b.mp4", stat(2, 100), h(1), now=20.0)  # the same bytes again
    cat.store_result("/w/c.mp4", stat(3, 50), h(2), now=30.0)
    # More hashes than one IN (...) list takes, most of them unknown.
    many = [h(i) for i in range(1, 1200)]
    assert cat.paths_for_hashes(many) == {h(1): ["/v/a.mp4", "/v/b.mp4"], h(2): ["/w/c.mp4"]}
    assert cat.sizes_and_path_counts(many) == {h(1): (100, 2), h(2): (50, 1)}
    got = cat.contents(many)
    assert sorted(got) == sorted([h(1), h(2)])
    assert (got[h(1)].size, got[h(1)].duration, got[h(1)].width) == (100, 5.0, 320)
    assert cat.aliased_contents() == [h(1)]
    assert cat.aliased_contents(since=15.0) == [h(1)], "b.mp4 came at 20"
    assert cat.aliased_contents(since=25.0) == []
    assert cat.aliased_contents(path_prefix="/v") == [h(1)]
    assert cat.aliased_contents(path_prefix="/w") == []


def test_counts_leave_rejected_pairs_out_and_see_their_own_transaction(cat: Catalog) -> None:
    cat.store_result("/a", stat(1), h(1), fingerprint=make_fp(1))
    cat.store_result("/b", stat(2), h(2), fingerprint=make_fp(2, model="other"))
    cat.add_duplicate(h(1), h(2), 0.9, "near")
    cat.enqueue("/c", "created")
    cat.outbox_enqueue({"a": 1}, ["log", "webhook"])
    counts = cat.counts()
    assert (counts.files, counts.contents, counts.fingerprints, counts.duplicates) == (2, 2, 2, 1)
    assert (counts.jobs_queued, counts.jobs_failed, counts.outbox_pending) == (1, 0, 2)
    cat.set_verdict(h(1), h(2), "not_duplicate")
    with cat.transaction():
        cat.store_result("/c", stat(3), h(3))
        assert cat.counts().files == 3, "inside a transaction: its own writes"
        assert (cat.counts().duplicates, cat.counts().jobs_queued) == (0, 0)
    cat.close()
    with pytest.raises(CatalogError, match="closed"):
        cat.counts()


def test_jobs_new_before_backlog_and_leased_once(cat: Catalog) -> None:
    cat.enqueue("/v/old.mp4", "reconcile", PRIORITY_BACKLOG, now=1.0)
    cat.enqueue("/v/new.mp4", "created", PRIORITY_NEW, now=2.0)
    first = cat.claim_jobs(1, now=10.0)
    assert [j.path for j in first] == ["/v/new.mp4"]
    second = cat.claim_jobs(5, now=10.0)
    assert [j.path for j in second] == ["/v/old.mp4"], "a leased job is not handed out twice"
    assert cat.claim_jobs(5, now=10.0) == []
    cat.release_job(second[0])
    assert [j.path for j in cat.claim_jobs(5, now=10.0)] == ["/v/old.mp4"]


def test_leases_are_released_when_the_writer_reopens(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.db") as c:
        c.enqueue("/v/a.mp4", "new")
        assert len(c.claim_jobs(1)) == 1
    with Catalog(tmp_path / "c.db") as c:
        assert [j.path for j in c.claim_jobs(1)] == ["/v/a.mp4"]


def test_fail_job_backs_off_then_fails_with_reason(tmp_path: Path) -> None:
    policy = RetryPolicy(max_attempts=3, backoff_s=10.0, backoff_max_s=15.0)
    with Catalog(tmp_path / "c.db", jobs=policy) as cat:
        cat.store_result("/v/bad.mp4", stat(1), h(1))
        cat.enqueue("/v/bad.mp4", "changed", now=0.0)
        job = cat.claim_jobs(1, now=0.0)[0]
        job = cat.fail_job(job, "Truncated: moov atom not found", content_hash=h(1), now=0.0)
        assert (job.state, job.attempts, job.next_try) == (JobState.QUEUED, 1, 10.0)
        assert cat.claim_jobs(1, now=5.0) == [], "not due before the back-off"
        job = cat.fail_job(cat.claim_jobs(1, now=10.0)[0], "again", now=10.0)
        assert job.next_try == 25.0, "back-off doubles, capped at backoff_max_s"
        job = cat.fail_job(cat.claim_jobs(1, now=25.0)[0], "Truncated: final", now=25.0)
        assert (job.state, job.attempts, job.last_error) == (JobState.FAILED, 3, "Truncated: final")
        assert cat.claim_jobs(1, now=1e9) == []
        assert [j.path for j in cat.iter_jobs(JobState.FAILED)] == ["/v/bad.mp4"]
        assert cat.file_by_path("/v/bad.mp4").state == "failed"
        assert cat.content(h(1)).decode_failures == 1
        assert cat.counts().jobs_failed == 1
        cat.enqueue("/v/bad.mp4", "changed", now=30.0)
        again = cat.job("/v/bad.mp4")
        assert (again.state, again.attempts) == (JobState.QUEUED, 0), \
            "a changed file gets new tries"


def test_a_permanent_failure_uses_up_the_tries_in_one_call(tmp_path: Path) -> None:
    policy = RetryPolicy(max_attempts=3, backoff_s=10.0)
    with Catalog(tmp_path / "c.db", jobs=policy) as cat:
        cat.store_result("/v/text.mp4", stat(1), h(1))
        cat.enqueue("/v/text.mp4", "changed", now=0.0)
        cat.enqueue("/v/flaky.mp4", "created", now=0.0)
        flaky, text = sorted(cat.claim_jobs(2, now=0.0), key=lambda j: j.path)
        failed = cat.fail_job(text, "not a video", content_hash=h(1), now=0.0, permanent=True)
        assert (failed.state, failed.attempts, failed.last_error) == (
            JobState.FAILED, 3, "not a video")
        assert cat.file_by_path("/v/text.mp4").state == "failed"
        assert cat.content(h(1)).decode_failures == 1, "one failure, not one per used-up try"
        retried = cat.fail_job(flaky, "timeout", now=0.0)
        assert (retried.state, retried.attempts) == (JobState.QUEUED, 1), "not permanent: retried"
        # A later permanent reason ends the tries left, whatever was counted before.
        retried = cat.fail_job(retried, "not a video", now=20.0, permanent=True)
        assert (retried.state, retried.attempts) == (JobState.FAILED, 3)
        assert {j.path for j in cat.iter_jobs(JobState.FAILED)} == {"/v/flaky.mp4", "/v/text.mp4"}


def test_next_job_due_is_the_earliest_claimable_queued_job(cat: Catalog) -> None:
    assert cat.next_job_due() is None, "an empty queue: nothing to wake up for"
    cat.enqueue("/v/a.mp4", "created", now=50.0)
    cat.enqueue("/v/b.mp4", "created", PRIORITY_BACKLOG, now=40.0)
    assert cat.next_job_due() == 40.0, "the earliest, whatever its priority"
    leased = cat.claim_jobs(2, now=45.0)
    assert [j.path for j in leased] == ["/v/b.mp4"]
    # The leased job cannot be claimed before its lease ends: a.mp4 is next.
    assert cat.next_job_due() == 50.0
    cat.fail_job(cat.claim_jobs(1, now=60.0)[0], "timeout", now=60.0)
    cat.release_job(leased[0])
    assert cat.next_job_due() == 40.0
    retry = cat.job("/v/a.mp4").next_try
    assert retry == 60.0 + cat.job_policy.backoff_s
    cat.complete_job(leased[0])
    assert cat.next_job_due() == retry, "a retry waiting for its back-off"
    failed = cat.fail_job(cat.claim_jobs(1, now=retry)[0], "bad", now=retry, permanent=True)
    assert failed.state == JobState.FAILED
    assert cat.next_job_due() is None, "failed jobs are never due"


def test_job_re_enqueued_while_processing_is_not_dropped(cat: Catalog) -> None:
    cat.enqueue("/v/a.mp4", "created")
    job = cat.claim_jobs(1)[0]
    cat.enqueue("/v/a.mp4", "modified")  # the file changed while we hashed it
    cat.store_result("/v/a.mp4", stat(1), h(1), job=job)
    assert cat.job("/v/a.mp4") is not None
    again = cat.claim_jobs(1)[0]
    cat.store_result("/v/a.mp4", stat(2), h(2), job=again)
    assert cat.job("/v/a.mp4") is None


def test_duplicates_ordered_refreshed_filtered_and_verdict_survives_rename(cat: Catalog) -> None:
    for i, p in enumerate(["/lib/a.mp4", "/lib/b.mp4", "/other/c.mp4", "/libx/d.mp4"], 1):
        cat.store_result(p, stat(i), h(i))
    assert cat.add_duplicate(h(2), h(1), 0.91, "near", segments=[[0, 5, 10, 15]], now=100.0)
    assert not cat.add_duplicate(h(1), h(2), 0.93, "near", now=200.0), "known pair: no new event"
    assert cat.add_duplicate(h(3), h(1), 1.0, "exact", now=150.0)
    assert cat.add_duplicate(h(4), h(3), 0.7, "partial", now=160.0)
    d = cat.duplicate(h(1), h(2))
    assert (d.hash_a, d.hash_b) == tuple(sorted([h(1), h(2)]))
    assert (d.score, d.first_seen, d.last_seen, d.segments) == (0.93, 100.0, 200.0, [[0, 5, 10, 15]])
    assert len(list(cat.duplicates())) == 3
    assert [x.kind for x in cat.duplicates(kind="exact")] == ["exact"]
    assert {x.kind for x in cat.duplicates(since=150.0)} == {"exact", "partial"}
    assert {x.kind for x in cat.duplicates(min_score=0.9)} == {"exact", "near"}
    assert {x.kind for x in cat.duplicates(path_prefix="/lib")} == {"near", "exact"}, \
        "/libx is not inside /lib"
    assert {x.kind for x in cat.duplicates(path_prefix="/libx/")} == {"partial"}
    assert [x.kind for x in cat.duplicates(content_hash=h(4))] == ["partial"]
    assert cat.set_verdict(h(1), h(2), "not_duplicate", now=300.0)
    assert cat.move_file("/lib/a.mp4", "/lib/renamed.mp4")
    cat.add_duplicate(h(1), h(2), 0.95, "near", now=400.0)
    assert cat.duplicate(h(2), h(1)).verdict == "not_duplicate"
    assert {x.kind for x in cat.duplicates()} == {"exact", "partial"}, "rejected pairs hidden"
    assert len(list(cat.duplicates(include_rejected=True))) == 3
    assert [d.verdict for d in cat.duplicates(include_rejected=True) if d.verdict] == [
        "not_duplicate"]
    assert not cat.set_verdict(h(1), h(4), "confirmed")
    with pytest.raises(ValueError, match="kind"):
        cat.add_duplicate(h(1), h(4), 0.5, "similar")
    with pytest.raises(ValueError, match="verdict"):
        cat.set_verdict(h(1), h(3), "maybe")
    with pytest.raises(ValueError, match="two different"):
        cat.add_duplicate(h(1), h(1), 1.0, "exact")


def test_transaction_groups_duplicate_and_event_and_rolls_back_together(cat: Catalog) -> None:
    cat.store_result("/a", stat(1), h(1))
    cat.store_result("/b", stat(2), h(2))
    with pytest.raises(RuntimeError):
        with cat.transaction():
            cat.add_duplicate(h(1), h(2), 0.9, "near")
            cat.outbox_enqueue({"event": "duplicate"}, ["log"])
            raise RuntimeError("crash before commit")
    assert cat.duplicate(h(1), h(2)) is None and cat.outbox_claim("log") == []
    with cat.transaction():
        cat.add_duplicate(h(1), h(2), 0.9, "near")
        cat.outbox_enqueue({"event": "duplicate"}, ["log"])
    assert cat.duplicate(h(1), h(2)) is not None and len(cat.outbox_claim("log")) == 1


def test_outbox_per_sink_delivery_with_backoff_and_give_up(tmp_path: Path) -> None:
    policy = RetryPolicy(max_attempts=2, backoff_s=5.0)
    with Catalog(tmp_path / "c.db", deliveries=policy) as cat:
        oid = cat.outbox_enqueue({"a": 1}, ["log", "webhook"], now=0.0)
        assert [i.payload for i in cat.outbox_claim("log", now=0.0)] == [{"a": 1}]
        cat.outbox_ack(oid, "log", now=1.0)
        assert cat.outbox_claim("log", now=2.0) == []
        assert not cat.outbox_fail(oid, "webhook", "connection refused", now=1.0)
        assert cat.outbox_claim("webhook", now=3.0) == []
        assert [i.attempts for i in cat.outbox_claim("webhook", now=6.0)] == [1]
        assert cat.counts().outbox_pending == 1
        assert cat.outbox_fail(oid, "webhook", "still refused", now=6.0)
        assert cat.outbox_claim("webhook", now=1e9) == []
        assert cat.outbox_prune(older_than=100.0) == 1


def test_outbox_next_due_per_sink_and_prune_keeps_what_is_pending(tmp_path: Path) -> None:
    policy = RetryPolicy(max_attempts=3, backoff_s=5.0)
    with Catalog(tmp_path / "c.db", deliveries=policy) as cat:
        assert cat.outbox_next_due("log") is None
        old = cat.outbox_enqueue({"a": 1}, ["log", "webhook"], now=10.0)
        new = cat.outbox_enqueue({"a": 2}, ["log"], now=20.0)
        assert (cat.outbox_next_due("log"), cat.outbox_next_due("webhook")) == (10.0, 10.0)
        assert cat.outbox_next_due("exec") is None, "no event for that sink"
        cat.outbox_ack(old, "log", now=21.0)
        assert cat.outbox_next_due("log") == 20.0
        cat.outbox_ack(new, "log", now=21.0)
        assert cat.outbox_next_due("log") is None
        assert not cat.outbox_fail(old, "webhook", "refused", now=30.0)
        assert cat.outbox_next_due("webhook") == 30.0 + policy.delay(1), "the retry's time"
        # Both events are old enough; `old` still waits for its webhook delivery.
        assert cat.outbox_prune(older_than=1000.0) == 1
        assert cat.outbox_next_due("webhook") == 35.0
        assert [i.id for i in cat.outbox_claim("webhook", now=1e9)] == [old]
        assert cat.outbox_prune(older_than=15.0) == 0, "pending: never pruned, however old"
        assert cat.outbox_fail(old, "webhook", "refused", now=40.0) is False
        assert cat.outbox_fail(old, "webhook", "refused", now=50.0), "given up"
        assert cat.outbox_next_due("webhook") is None
        assert cat.outbox_prune(older_than=5.0) == 0, "given up, but not older than the cut"
        assert cat.outbox_prune(older_than=15.0) == 1
        assert integrity_problems(cat.path) == []
        conn = sqlite3.connect(f"file:{cat.path}?mode=ro", uri=True)
        try:  # the deliveries went with their events
            assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 0
        finally:
            conn.close()


def test_reader_snapshot_never_blocks_the_writer(cat: Catalog) -> None:
    cat.store_result("/a", stat(1), h(1))
    reader = sqlite3.connect(f"file:{cat.path}?mode=ro", uri=True, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 1
    started = time.monotonic()
    cat.store_result("/b", stat(2), h(2))  # would wait for busy_timeout if readers blocked
    assert time.monotonic() - started < 2.0
    assert reader.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 1, "stable snapshot"
    reader.execute("COMMIT")
    reader.close()
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(cat.counts().files))
    t.start()
    t.join()
    assert seen == [2]


def test_clear_errors_for_unusable_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogError, match="cannot open catalog"):
        Catalog(garbage)
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(CatalogError, match="newer than this vfpd"):
        Catalog(newer)
    with pytest.raises(CatalogError, match="no catalog"):
        Catalog(tmp_path / "missing.db", readonly=True)


def test_readonly_catalog_reads_but_refuses_writes(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.db") as c:
        c.store_result("/a", stat(1), h(1))
    with Catalog(tmp_path / "c.db", readonly=True) as ro:
        assert ro.paths_for_hash(h(1)) == ["/a"]
        with pytest.raises(CatalogError, match="read-only"):
            ro.enqueue("/b", "new")


# ---------------------------------------------------------------------------------------------
# Migrations: build every earlier schema with representative rows, then open with this code.

def _fill_v1(conn: sqlite3.Connection) -> None:
    vec = make_fp(5).vector.astype("<f4").tobytes()
    conn.executescript(f"""
        INSERT INTO contents(hash, size, first_seen) VALUES ('{h(1)}', 10, 1.0), ('{h(2)}', 20, 1.0);
        INSERT INTO files(path, device, inode, size, mtime_ns, hash, first_seen, last_seen)
            VALUES ('/v/a.mp4', 7, 1, 10, 5, '{h(1)}', 1.0, 1.0),
                   ('/v/sub/café ☕.mp4', 7, 2, 20, 6, '{h(2)}', 1.0, 1.0),
                   ('/v0/outside.mp4', 7, 3, 20, 6, '{h(2)}', 1.0, 1.0);
        INSERT INTO duplicates(hash_a, hash_b, score, kind, first_seen)
            VALUES ('{min(h(1), h(2))}', '{max(h(1), h(2))}', 0.9, 'near', 3.0);
        INSERT INTO jobs(path, reason, next_try) VALUES ('/v/queued.mp4', 'created', 0.0);
    """)
    conn.execute("INSERT INTO fingerprints(hash, model_version, vector, created) "
                 "VALUES (?, ?, ?, 2.0)", (h(1), MODEL, vec))


def _fill_v2(conn: sqlite3.Connection) -> None:
    _fill_v1(conn)
    conn.execute("UPDATE duplicates SET verdict = 'confirmed', verdict_at = 4.0")


def _fill_v3(conn: sqlite3.Connection) -> None:
    _fill_v2(conn)
    conn.execute("UPDATE jobs SET priority = 0, generation = 2, created = 5.0")
    # v3's writer logs every fingerprint it stores (the v3 step did this for older ones).
    conn.execute("INSERT INTO fingerprint_changes(fingerprint_id, model_version, op) "
                 "SELECT id, model_version, 'add' FROM fingerprints")
    conn.execute("INSERT INTO jobs(path, reason, next_try, state, attempts, last_error) "
                 "VALUES ('/v/sub/ünï.mp4', 'created', 0.0, 'failed', 3, 'truncated: x')")


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
def test_migrates_from_every_earlier_version(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    # v4 rebuilt files and jobs with BLOB paths: a v4 (or v5) catalog is a filled v3 taken there.
    assert migrate(conn, target=min(version, 3)) == 0
    fillers = {1: _fill_v1, 2: _fill_v2, 3: _fill_v3, 4: _fill_v3, 5: _fill_v3}
    if version in fillers:
        fillers[version](conn)
    migrate(conn, target=version)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version
    conn.close()
    with Catalog(path) as cat:
        assert schema_version(cat.path) == SCHEMA_VERSION == len(MIGRATIONS)
        assert integrity_problems(cat.path) == []
        if version >= 1:
            assert cat.file_by_path("/v/a.mp4").hash == h(1)
            stored = cat.fingerprint(h(1), MODEL)
            np.testing.assert_array_equal(stored.fingerprint.vector, make_fp(5).vector)
            assert stored.fingerprint.frame_features.shape == (0, FRAME_DIM)
            assert stored.fingerprint.stills is None, "stored before still pictures were kept"
            assert [c.fingerprint_id for c in cat.changes_since(MODEL, 0)] == [stored.id], \
                "old fingerprints enter the change log, so the index can be built from them"
            d = cat.duplicate(h(1), h(2))
            assert d.last_seen == 3.0
            assert d.verdict == ("confirmed" if version >= 2 else None)
            # Names stored as text come back as the same str, and folder ranges still work.
            assert cat.file_by_path("/v/sub/café ☕.mp4").hash == h(2)
            assert [f.path for f in cat.iter_files("/v")] == ["/v/a.mp4", "/v/sub/café ☕.mp4"]
            assert cat.paths_for_hash(h(2)) == ["/v/sub/café ☕.mp4", "/v0/outside.mp4"]
            (queued,) = cat.claim_jobs(5)
            assert queued.path == "/v/queued.mp4"
            if version >= 3:
                assert (queued.priority, queued.generation) == (0, 2)
                (failed,) = cat.iter_jobs(JobState.FAILED)
                assert (failed.path, failed.attempts, failed.last_error) == (
                    "/v/sub/ünï.mp4", 3, "truncated: x")
        # The migrated catalog is fully usable.
        cat.store_result("/v/new.mp4", stat(9), h(9), fingerprint=make_fp(9), frames=make_sampled(9))
        cat.outbox_enqueue({"x": 1}, ["log"])
        assert cat.counts().files == (4 if version >= 1 else 1)
