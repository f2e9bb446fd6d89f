"""File names that are not UTF-8: real files with such names go through the catalog (and the
scan cache built on it) losslessly, found by path, by folder and by content."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from vfpd import media, scan
from vfpd.catalog import Catalog, JobState, path_key, path_text
from vfpd.hashing import FileStat, hash_and_stat
from vfpd.media import MediaError, SampledVideo

# Latin-1 "é" alone, a stray continuation byte, and an overlong "/" (which must not count as a
# separator): three ways a name is not UTF-8.
WEIRD_NAMES = (b"caf\xe9.mp4", b"x\x80y.mp4", b"over\xc0\xaflong.mp4")


def raw(folder: Path, *parts: bytes) -> str:
    """The str Python uses for a path with these raw bytes (surrogate escapes, PEP 383)."""
    return os.fsdecode(os.path.join(os.fsencode(folder), *parts))


@pytest.fixture
def weird_dir(tmp_path: Path, carphone: Path) -> Path:
    """A real folder, itself not UTF-8, holding real copies of a clip under undecodable names
    and one with a plain name."""
    d = raw(tmp_path, b"lib\xff")
    os.mkdir(d)
    for name in WEIRD_NAMES:
        shutil.copyfile(carphone, os.path.join(os.fsencode(d), name))
    shutil.copyfile(carphone, os.path.join(d, "plain.mp4"))
    return Path(d)


def test_path_key_is_the_exact_bytes_and_back(weird_dir: Path) -> None:
    for name in WEIRD_NAMES:
        p = raw(weird_dir, name)
        assert path_key(p) == os.path.join(os.fsencode(weird_dir), name)
        assert path_text(path_key(p)) == p
        assert path_key(Path(p)) == path_key(p)


def test_files_round_trip_move_and_delete(tmp_path: Path, weird_dir: Path) -> None:
    with Catalog(tmp_path / "c.db") as cat:
        hashes = {}
        for name in (*WEIRD_NAMES, b"plain.mp4"):
            p = raw(weird_dir, name)
            hashes[p], st = hash_and_stat(p)
            cat.store_result(p, st, hashes[p])
        first = raw(weird_dir, WEIRD_NAMES[0])
        rec = cat.file_by_path(first)
        assert rec is not None and rec.path == first and rec.stat == FileStat.of(Path(first))
        assert os.path.exists(rec.path)
        # Same bytes on disk -> one content at every name: exact duplicates by hash.
        assert len(set(hashes.values())) == 1
        assert sorted(cat.paths_for_hash(hashes[first])) == sorted(hashes)
        # A folder that is not UTF-8 is a prefix like any other.
        assert sorted(f.path for f in cat.iter_files(str(weird_dir))) == sorted(hashes)
        assert list(cat.iter_files(raw(tmp_path, b"lib\xfe"))) == []
        assert sorted(f.path for f in cat.iter_files(str(tmp_path))) == sorted(hashes)
        # Stored as the exact bytes, not as some text form of them.
        conn = sqlite3.connect(tmp_path / "c.db")
        stored = {r[0] for r in conn.execute("SELECT path FROM files")}
        conn.close()
        assert stored == {os.fsencode(p) for p in hashes}

        renamed = raw(weird_dir, b"moved\xe9\xe9.mp4")
        os.rename(first, renamed)
        assert cat.move_file(first, renamed, FileStat.of(Path(renamed)))
        assert cat.file_by_path(first) is None
        assert cat.file_by_path(renamed).hash == hashes[first]
        assert cat.remove_file(renamed)
        assert cat.file_by_path(renamed) is None
        assert cat.remove_files_under(str(weird_dir)) == len(WEIRD_NAMES)
        assert cat.counts().files == 0


def test_jobs_with_undecodable_names(tmp_path: Path, weird_dir: Path) -> None:
    with Catalog(tmp_path / "c.db") as cat:
        p = raw(weird_dir, WEIRD_NAMES[1])
        jid = cat.enqueue(p, "created")
        assert cat.enqueue(p, "modified") == jid  # found again by the same bytes
        (job,) = cat.claim_jobs(5)
        assert job.path == p
        assert cat.job(p).id == jid
        job = cat.fail_job(job, "truncated: cut short")
        job = cat.fail_job(cat.claim_jobs(5, now=job.next_try)[0], "truncated: again",
                           now=job.next_try)
        job = cat.fail_job(cat.claim_jobs(5, now=job.next_try)[0], "truncated: again",
                           now=job.next_try)
        assert [j.path for j in cat.iter_jobs(JobState.FAILED)] == [p]


def test_a_text_path_is_refused_by_the_schema(tmp_path: Path) -> None:
    # A bug that bound a str instead of path_key() would store a row no lookup ever finds.
    with Catalog(tmp_path / "c.db") as cat, cat.transaction() as w:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            w.execute("INSERT INTO jobs(path, reason, next_try) VALUES ('/a.mp4', 'x', 0)")


def _decode(paths: Sequence[str]) -> Iterator[tuple[str, SampledVideo | MediaError]]:
    for p in paths:
        try:
            yield p, media.sample(p)
        except MediaError as e:
            yield p, e


def test_scan_cache_keeps_undecodable_names(tmp_path: Path, weird_dir: Path) -> None:
    from vfpd.model.embed import Embedder

    embedder = Embedder(device="cpu")
    settings = scan.ScanSettings(roots=(str(weird_dir),))
    with Catalog(tmp_path / "cache.sqlite") as cat:
        first = scan.scan(settings, embedder, _decode, cat)
        second = scan.scan(settings, embedder, _decode, cat)
        stored = sorted(f.path for f in cat.iter_files())
    names = sorted(raw(weird_dir, n) for n in (*WEIRD_NAMES, b"plain.mp4"))
    assert (first.fingerprinted, first.cached) == (1, 0)
    assert (second.fingerprinted, second.cached) == (0, 1)
    assert stored == names
    for result in (first, second):
        assert not result.errors
        assert sorted(p for g in result.groups for p in g) == names
