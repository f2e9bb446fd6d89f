"""The video index in Milvus ([index] backend = "milvus") against a real Milvus Lite started by
each test: the same results as FAISS's exact index, the index's calls, persistence with catch-up
from the catalog, rebuilds, and the daemon's wiring finding duplicates with it."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the milvus backend needs pymilvus: pip install "
                                       "'vfpd[scale]'")
pytest.importorskip("milvus_lite", reason="the milvus backend's tests run Milvus Lite: pip "
                                          "install 'vfpd[scale]'")

from harness.daemon import Daemon, NotifyListener, WebhookServer, wait_until
from media_factory import encode, make_video, read_frames, sample_clip
from test_index import MODEL, assert_matches_catalog, fill, unit
from test_pipeline import Env, clips, embedder  # noqa: F401 - fixtures

from vfpd import media
from vfpd.catalog import Catalog
from vfpd.config import IndexConfig
from vfpd.fingerprint import VECTOR_DIM
from vfpd.hashing import open_regular
from vfpd.index import VectorIndex
from vfpd.matching import DEFAULT_THRESHOLD
from vfpd.milvus_index import (
    COVERED_PROPERTY,
    KIND,
    MilvusIndex,
    open_milvus_index,
    rebuild_milvus_index,
)
from vfpd.service.video_indexes import IndexBackendUnavailable, MilvusIndexes

THREADS_GONE_SECONDS = 10.0
"""How long a closed Milvus Lite's gRPC threads get to end (its stop grants calls 2 s)."""


def no_new_threads(before: set[threading.Thread]) -> None:
    deadline = time.monotonic() + THREADS_GONE_SECONDS
    while (left := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"threads left running: {[t.name for t in left]}"


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[MilvusIndexes]:
    """A Milvus Lite in this process for one test; afterwards none of its threads is left."""
    before = set(threading.enumerate())
    indexes = MilvusIndexes(str(tmp_path / "milvus.db"), "vfpd_test")
    try:
        yield indexes
    finally:
        indexes.close()
        no_new_threads(before)


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(tmp_path / "catalog.db") as c:
        yield c


def empty_index(lite: MilvusIndexes, cat: Catalog, dim: int = VECTOR_DIM) -> MilvusIndex:
    return open_milvus_index(lite.client, lite.collection(MODEL), cat, MODEL, dim)


def test_same_neighbours_and_scores_as_faiss_exact(lite: MilvusIndexes, cat: Catalog) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((2000, VECTOR_DIM)).astype(np.float32)  # normalised by both
    ids = rng.permutation(10_000)[:2000]
    milvus, faiss_index = empty_index(lite, cat), VectorIndex(MODEL)
    for part in np.array_split(np.arange(2000), 3):
        assert milvus.add(ids[part], vectors[part]) == faiss_index.add(ids[part], vectors[part])
    queries = np.concatenate([vectors[:20] + 0.3 * rng.standard_normal((20, VECTOR_DIM)),
                              rng.standard_normal((30, VECTOR_DIM))]).astype(np.float32)

    def same() -> None:
        m_scores, m_ids = milvus.search(queries, 10)
        f_scores, f_ids = faiss_index.search(queries, 10)
        np.testing.assert_array_equal(m_ids, f_ids)
        np.testing.assert_allclose(m_scores, f_scores, atol=1e-5)
        for q in queries[:5]:
            (m_s, m_i), (f_s, f_i) = milvus.range_search(q, 0.1), faiss_index.range_search(q, 0.1)
            np.testing.assert_array_equal(m_i, f_i)
            np.testing.assert_allclose(m_s, f_s, atol=1e-5)

    same()
    gone = ids[::7]
    assert milvus.remove(gone) == faiss_index.remove(gone) == len(gone)
    same()
    assert milvus.ids().tolist() == faiss_index.ids().tolist()


def test_same_neighbours_on_real_fingerprints(lite: MilvusIndexes, cat: Catalog,
                                              embedder, clips) -> None:  # noqa: F811
    """The shipped model's video vectors (clustered, with copies among them) rank alike."""
    paths = [clips["orig"], clips["near"], clips["near2"], clips["other"], *clips["bg"]]
    vectors = np.stack([fp.vector for fp in embedder.embed_many([media.sample(p)
                                                                 for p in paths])])
    milvus, faiss_index = empty_index(lite, cat), VectorIndex(embedder.model_version)
    milvus.add(np.arange(len(paths)), vectors)
    faiss_index.add(np.arange(len(paths)), vectors)
    m_scores, m_ids = milvus.search(vectors, len(paths))
    f_scores, f_ids = faiss_index.search(vectors, len(paths))
    np.testing.assert_array_equal(m_ids, f_ids)
    np.testing.assert_allclose(m_scores, f_scores, atol=1e-5)
    assert (m_ids[:, 0] == np.arange(len(paths))).all(), "each video is its own nearest"


def test_add_remove_search(lite: MilvusIndexes, cat: Catalog) -> None:
    rng = np.random.default_rng(3)
    index = empty_index(lite, cat, dim=16)
    scores, ids = index.search(unit(rng, 2), 3)
    assert (ids == -1).all() and np.isneginf(scores).all(), "an empty index finds nothing"
    vectors = unit(rng, 40)
    assert index.add(range(40), vectors) == 40
    assert index.add([5, 40, 40], unit(rng, 3)) == 1, "known ids and repeats are skipped"
    assert len(index) == 41 and 40 in index and 41 not in index
    _, ids = index.search(vectors[5] * 3, 1)  # any length: vectors are normalised
    assert ids[0, 0] == 5, "the first vector stored under an id stays"
    scores, ids = index.search(vectors[:2], 50)
    assert (ids[:, :41] >= 0).all() and (ids[:, 41:] == -1).all()
    assert np.isneginf(scores[:, 41:]).all() and (np.diff(scores[:, :41]) <= 1e-6).all()
    assert index.remove([5, 5, 999]) == 1 and 5 not in index and len(index) == 40
    assert index.remove([5]) == 0
    _, ids = index.search(vectors[5], 40)
    assert 5 not in ids[0]
    assert index.ids().tolist() == [i for i in range(41) if i != 5]
    assert index.verify() == [] and index.kind == KIND
    with pytest.raises(ValueError):
        index.search(vectors[:1], 0)
    with pytest.raises(ValueError):
        index.add([1, 2], unit(rng, 3))
    with pytest.raises(ValueError):
        index.add([-1], unit(rng, 1))


def test_reopened_after_close_and_caught_up_with_the_catalog(
        tmp_path: Path, cat: Catalog, caplog: pytest.LogCaptureFixture) -> None:
    uri = str(tmp_path / "milvus.db")
    before = set(threading.enumerate())
    fill(cat, 0, 30)
    lite = MilvusIndexes(uri, "vfpd_test")
    index = lite.open(cat, MODEL)
    assert index.covered_seq == cat.sequence() and len(index) == 30
    index.save()
    lite.close()
    no_new_threads(before)
    # Meanwhile the catalog changes: more files, another model's, one file gone.
    fill(cat, 30, 10)
    fill(cat, 100, 5, model="other-model")
    cat.remove_file("/v/3.mp4")
    cat.purge_orphans()
    caplog.clear()
    lite = MilvusIndexes(uri, "vfpd_test")
    try:
        with caplog.at_level(logging.INFO, logger="vfpd.milvus_index"):
            again = lite.open(cat, MODEL)
        assert "rebuilding" not in caplog.text and "caught up 11 catalog changes" in caplog.text
        assert again.covered_seq == cat.sequence() and len(again) == 39
        assert_matches_catalog(again, cat)  # type: ignore[arg-type]
        assert again.catch_up(cat) == 0, "nothing newer: catching up twice changes nothing"
        assert again.info().covered_seq == cat.sequence() and again.info().size == 39
        assert again.verify() == []
        # Another model version is another collection, built from its own stored vectors.
        other = lite.build(cat, "other-model")
        assert len(other) == 5 and len(lite.open(cat, MODEL)) == 39
    finally:
        lite.close()
    no_new_threads(before)


def test_after_a_promotion_only_the_two_models_indexes_stay(lite: MilvusIndexes,
                                                            cat: Catalog) -> None:
    """keep_only (called by promotion with the old and the new model): every other collection
    of this prefix is dropped, another instance's whose prefix starts with this one is not."""
    for version in ("m1", "m2", "m3"):
        lite.open(cat, version)
    other = MilvusIndexes(lite.uri, "vfpd_test_other")
    other.open(cat, "m1")
    lite.keep_only({"m2", "m3"})
    assert sorted(lite.client.list_collections()) == sorted(
        [lite.collection("m2"), lite.collection("m3"), other.collection("m1")])
    assert len(lite.open(cat, "m3")) == 0  # still usable


@pytest.mark.parametrize("damage", ["missing", "other_model", "unfinished", "ahead_of_catalog"])
def test_unusable_collection_is_rebuilt_from_catalog(lite: MilvusIndexes, cat: Catalog,
                                                     damage: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    fill(cat, 0, 40)
    name = lite.collection(MODEL)
    if damage == "other_model":
        rebuild_milvus_index(lite.client, name, cat, "older-model")
    elif damage == "unfinished":
        lite.open(cat, MODEL)
        lite.client.drop_collection_properties(name, [COVERED_PROPERTY])
    elif damage == "ahead_of_catalog":
        lite.open(cat, MODEL)
        lite.client.alter_collection_properties(name, {COVERED_PROPERTY: str(cat.sequence() + 9)})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vfpd.milvus_index"):
        index = lite.open(cat, MODEL)
    assert "rebuilding index from catalog" in caplog.text
    assert index.covered_seq == cat.sequence() and index.verify() == []
    assert_matches_catalog(index, cat)  # type: ignore[arg-type]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vfpd.milvus_index"):
        assert len(lite.open(cat, MODEL)) == 40
    assert "rebuilding" not in caplog.text


def test_pipeline_with_the_milvus_backend_finds_copies(
        tmp_path: Path, embedder, clips) -> None:  # noqa: F811
    """The daemon's wiring with [index] backend = "milvus": an exact copy announced, a near copy
    found by a query, and the collection holds the catalog's fingerprints."""
    before = set(threading.enumerate())
    root = tmp_path / "root"
    root.mkdir()
    env = Env(root, tmp_path, embedder, index=IndexConfig("milvus", str(tmp_path / "m.db")))
    try:
        assert env.index.kind == KIND
        env.background(clips)
        a = env.add(clips["orig"], "a.mp4")
        env.add(clips["orig"], "b.mp4")
        env.drain()
        (event,) = [e for e in env.outbox() if e["kind"] == "exact"]
        assert event["new"]["path"] == str(root / "b.mp4")
        assert [e["path"] for e in event["existing"]] == [str(a)]
        with open_regular(clips["near"]) as f:
            results = env.pipeline.query(f, 5, lambda: False)
        assert results[0]["path"] == str(a)
        assert results[0]["duplicate"] and results[0]["score"] >= DEFAULT_THRESHOLD
        assert_matches_catalog(env.index, env.catalog, env.pipeline.embedder.model_version)
    finally:
        env.close()
    no_new_threads(before)


@pytest.mark.parametrize("uri", ["missing-folder/milvus.db", "http://127.0.0.1:9"])
def test_a_milvus_that_cannot_be_opened_says_where(tmp_path: Path, uri: str) -> None:
    """The daemon turns this into a start-up error with the reason (daemon._open)."""
    before = set(threading.enumerate())
    uri = str(tmp_path / uri) if uri.endswith(".db") else uri
    with pytest.raises(IndexBackendUnavailable, match=f"cannot open Milvus at {uri}"):
        MilvusIndexes(uri, "vfpd_test")
    no_new_threads(before)


def test_daemon_with_the_milvus_backend_reports_a_reencode() -> None:
    """The real daemon with [index] backend = "milvus" (Milvus Lite in its state directory):
    a re-encoded copy found through the collection, and a clean stop."""
    home = Path(tempfile.mkdtemp(prefix="vfpd-m-", dir="/tmp"))  # socket paths < 108 bytes
    root = home / "videos"
    root.mkdir()
    # The library the daemon starts with; the unrelated videos give the matcher its background.
    orig = root / "orig.mp4"
    shutil.copyfile(sample_clip("carphone_pristine"), orig)
    for clip in ("bikes", "bigbuckbunny"):
        shutil.copyfile(sample_clip(clip), root / f"{clip}.mp4")
    make_video(root / "p0.mp4", seconds=4, width=160, height=120, seed=30)
    reencoded = encode(home / "re.mp4", [f for _, f in read_frames(orig)], fps=25,
                       options={"crf": "30"})
    d = Daemon(home, [root], WebhookServer(), NotifyListener(str(home / "notify.sock")),
               extra='[index]\nbackend = "milvus"\n')
    try:
        d.start()
        d.wait_log("fingerprinted", count=4)
        shutil.copyfile(reencoded, root / "re.mp4")
        (event,) = wait_until(lambda: d.hook.for_path(root / "re.mp4"),
                              what="the webhook event of the re-encode")
        assert event["kind"] in ("near", "partial")
        assert [e["path"] for e in event["existing"]] == [str(orig)]
        assert d.stop() == 0
        assert d.lines("in collection vfpd_videos_"), d.text()[-3000:]
        assert (d.state / "milvus.db").is_dir() and not (d.state / "index.faiss").exists()
    finally:
        d.close()
