"""The FAISS index: agreement with brute force, persistence, catch-up and rebuilds."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfpd.catalog import Catalog
from vfpd.fingerprint import FRAME_DIM, VECTOR_DIM, Fingerprint
from vfpd.hashing import FileStat, hash_bytes
from vfpd.index import (
    FLAT,
    MAGIC,
    PQ_RERANK,
    IndexSettings,
    VectorIndex,
    open_index,
)
from vfpd.index_file import HEADER_SIZE, IndexLoadError

MODEL = "base-1"
DIM = 16  # small vectors keep the property tests fast; the code path is the same as 256-d


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_topk(ids: list[int], vecs: np.ndarray, q: np.ndarray, k: int) -> tuple[list, np.ndarray]:
    scores = vecs @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [ids[i] for i in order], scores[order]


# Operations: ("add", count) or ("remove", fraction of the live ids), replayed on both sides.
ops = st.lists(st.one_of(st.tuples(st.just("add"), st.integers(1, 60)),
                         st.tuples(st.just("remove"), st.floats(0.0, 0.6))),
               min_size=1, max_size=8)


@pytest.mark.parametrize("exact_max", [10_000, 40], ids=[FLAT, PQ_RERANK])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, seed=st.integers(0, 2**32 - 1), k=st.integers(1, 12))
def test_topk_agrees_with_numpy_brute_force(exact_max: int, ops, seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    # rerank_factor * k above the index size makes the PQ candidates exhaustive on these small
    # indexes (the PQ and re-rank code still runs), so any disagreement is a bookkeeping bug
    # (ids, positions, tombstones, rebuilds), not approximation.
    index = VectorIndex(MODEL, DIM, IndexSettings(exact_max=exact_max, rerank_factor=500))
    live: dict[int, np.ndarray] = {}
    next_id = 0
    for op, arg in ops:
        if op == "add":
            vecs = unit(rng, arg)
            ids = list(range(next_id, next_id + arg))
            next_id += arg
            assert index.add(ids, vecs) == arg
            live.update(zip(ids, vecs))
        else:
            gone = [i for i in live if rng.random() < arg]
            assert index.remove(gone) == len(gone)
            for i in gone:
                del live[i]
    assert len(index) == len(live)
    assert index.ids().tolist() == sorted(live)
    if exact_max < len(live):
        assert index.kind == PQ_RERANK
    assert index.verify() == []
    queries = unit(rng, 3)
    scores, got = index.search(queries, k)
    ids = list(live)
    vecs = np.stack([live[i] for i in ids]) if ids else np.zeros((0, DIM), np.float32)
    for q, row_ids, row_scores in zip(queries, got, scores):
        want_ids, want_scores = brute_topk(ids, vecs, q, k)
        n = len(want_ids)
        assert (row_ids[n:] == -1).all()
        np.testing.assert_allclose(row_scores[:n], want_scores, atol=1e-5)
        assert set(row_ids[:n].tolist()) == set(want_ids) or np.allclose(
            np.sort(row_scores[:n]), np.sort(want_scores), atol=1e-5)  # ties may swap ids


@pytest.mark.parametrize("exact_max", [10_000, 50], ids=[FLAT, PQ_RERANK])
def test_range_search_returns_everything_above_the_threshold(exact_max: int) -> None:
    rng = np.random.default_rng(3)
    vecs = unit(rng, 300)
    index = VectorIndex(MODEL, DIM, IndexSettings(exact_max=exact_max))
    index.add(np.arange(300) + 1000, vecs)
    index.remove([1000 + 7])
    q = vecs[7] * 0.9 + vecs[8] * 0.1
    scores, ids = index.range_search(q, 0.3)
    qn = q / np.linalg.norm(q)
    expected = {1000 + i for i in np.flatnonzero(vecs @ qn >= 0.3) if i != 7}
    assert set(ids.tolist()) == expected
    assert (np.diff(scores) <= 0).all() and (scores >= 0.3 - 1e-6).all()
    assert 1007 not in ids


def test_adding_an_id_twice_keeps_one_copy() -> None:
    rng = np.random.default_rng(0)
    index = VectorIndex(MODEL, DIM)
    v = unit(rng, 3)
    assert index.add([1, 2, 2], v) == 2
    assert index.add([1], v[:1]) == 0
    assert len(index) == 2
    with pytest.raises(ValueError, match="ids for"):
        index.add([5, 6], v)
    with pytest.raises(ValueError, match=">= 0"):
        index.add([-3], v[:1])


def test_switches_to_pq_past_exact_max_and_back_after_removals() -> None:
    rng = np.random.default_rng(1)
    index = VectorIndex(MODEL, DIM, IndexSettings(exact_max=100, tombstone_ratio=0.1))
    index.add(range(100), unit(rng, 100))
    assert index.info().kind == FLAT
    index.add([100], unit(rng, 1))
    assert index.info().kind == PQ_RERANK
    index.remove(range(0, 80))
    info = index.info()
    assert info.kind == FLAT and info.size == 21 and info.tombstones == 0
    assert index.verify() == []


def test_search_on_empty_index() -> None:
    scores, ids = VectorIndex(MODEL, DIM).search(np.ones(DIM), 3)
    assert (ids == -1).all() and np.isneginf(scores).all()


# ---------------------------------------------------------------------------------------------
# Persistence, catch-up and rebuild from the catalog.

def fp(rng: np.random.Generator, model: str = MODEL) -> Fingerprint:
    return Fingerprint(unit(rng, 1, VECTOR_DIM)[0], np.zeros((1, FRAME_DIM), np.float32),
                       np.zeros(1), np.ones(1, bool), 1.0, model)


def fill(cat: Catalog, start: int, n: int, model: str = MODEL) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(start)
    out = {}
    for i in range(start, start + n):
        f = fp(rng, model)
        fid = cat.store_result(f"/v/{i}.mp4", FileStat(1, i, i, 1), hash_bytes(str(i).encode()),
                               fingerprint=f)
        out[fid] = f.vector
    return out


def assert_matches_catalog(index: VectorIndex, cat: Catalog, model: str = MODEL) -> None:
    stored = {int(i): v for ids, vs in cat.snapshot_vectors(model)[1] for i, v in zip(ids, vs)}
    assert index.ids().tolist() == sorted(stored)
    for fid, vec in list(stored.items())[:5]:
        _, ids = index.search(vec, 1)
        assert ids[0, 0] == fid


@pytest.fixture
def cat(tmp_path: Path):
    with Catalog(tmp_path / "catalog.db") as c:
        yield c


def test_save_load_round_trip_and_catch_up_exactly_once(cat: Catalog, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "index.faiss"
    fill(cat, 0, 30)
    index = open_index(cat, MODEL, path)
    assert index.covered_seq == cat.sequence()
    index.save(path)
    fill(cat, 30, 10)
    fill(cat, 100, 5, model="other-model")
    cat.remove_file("/v/3.mp4")
    cat.purge_orphans()  # removes a fingerprint: the change log says so
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vfpd.index"):
        again = open_index(cat, MODEL, path)
    assert "rebuilding" not in caplog.text
    assert again.covered_seq == cat.sequence()
    assert len(again) == 39
    assert_matches_catalog(again, cat)
    assert again.catch_up(cat) == 0, "nothing newer: catching up twice changes nothing"
    assert len(again) == 39


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "flipped_byte",
                                    "other_model", "other_dim", "ahead_of_catalog"])
def test_unusable_index_file_is_rebuilt_from_catalog(cat: Catalog, tmp_path: Path, damage: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "index.faiss"
    fill(cat, 0, 40)
    open_index(cat, MODEL, path).save(path)
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: HEADER_SIZE + (len(data) - HEADER_SIZE) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(50_000))
    elif damage == "flipped_byte":
        data = bytearray(path.read_bytes())
        data[HEADER_SIZE + 5000] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "other_model":
        VectorIndex("older-model").save(path)
    elif damage == "other_dim":
        VectorIndex(MODEL, dim=128).save(path)
    elif damage == "ahead_of_catalog":
        ahead = VectorIndex(MODEL)
        ahead.covered_seq = cat.sequence() + 100
        ahead.save(path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vfpd.index"):
        index = open_index(cat, MODEL, path)
    assert "rebuilding index from catalog" in caplog.text
    assert_matches_catalog(index, cat)
    assert index.covered_seq == cat.sequence()
    # The rebuilt index was saved and is accepted next time without another rebuild.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vfpd.index"):
        assert len(open_index(cat, MODEL, path)) == 40
    assert "rebuilding" not in caplog.text


def test_load_reports_why(tmp_path: Path) -> None:
    path = tmp_path / "i.faiss"
    with pytest.raises(IndexLoadError, match="missing"):
        VectorIndex.load(path, MODEL)
    VectorIndex("m2").save(path)
    with pytest.raises(IndexLoadError, match="made for model 'm2'"):
        VectorIndex.load(path, MODEL)
    path.write_bytes(b"short")
    with pytest.raises(IndexLoadError, match="not a vfpd index"):
        VectorIndex.load(path, MODEL)


def test_pq_index_with_tombstones_survives_save_and_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    s = IndexSettings(exact_max=50, tombstone_ratio=0.5)
    index = VectorIndex(MODEL, DIM, s)
    vecs = unit(rng, 200)
    index.add(range(200), vecs)
    index.remove(range(0, 200, 10))
    assert index.info().tombstones == 20
    index.save(tmp_path / "h.faiss")
    loaded = VectorIndex.load(tmp_path / "h.faiss", MODEL, DIM, s)
    assert loaded.info() == index.info()
    _, ids = loaded.search(vecs[:30], 1)
    assert all(i % 10 != 0 for i in ids[:, 0]), "removed ids stay removed after a reload"
    assert ids[1, 0] == 1


def test_interrupted_save_leaves_old_file_and_temp_is_cleaned(cat: Catalog, tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    fill(cat, 0, 5)
    open_index(cat, MODEL, path).save(path)
    stale = tmp_path / ".index.faiss.abc123.tmp"
    stale.write_bytes(b"half written")
    assert len(open_index(cat, MODEL, path)) == 5
    assert not stale.exists()


def test_searches_and_changes_go_on_during_a_rebuild() -> None:
    # 256-d and 100k vectors make the compaction (copy, train, encode) last about a second, long
    # enough to act while it runs.
    rng = np.random.default_rng(11)
    n = 100_000
    vecs = unit(rng, n + 1000, VECTOR_DIM)
    index = VectorIndex(MODEL, VECTOR_DIM, IndexSettings(exact_max=5000, tombstone_ratio=0.1))
    index.add(range(n), vecs[:n])
    assert index.kind == PQ_RERANK
    index.remove(range(0, 10_000))  # exactly 10%: not yet compacted
    assert index.info().tombstones == 10_000
    compacting = threading.Thread(target=index.remove, args=([10_000],))
    compacting.start()
    deadline = time.monotonic() + 30
    while index._journal is None and compacting.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert index._journal is not None, "the compaction ran"
    index.add(range(n, n + 1000), vecs[n:])  # during the build: journaled, then replayed
    index.remove(range(10_001, 10_100))
    _, ids = index.search(vecs[20_000], 1)
    assert ids[0, 0] == 20_000, "searches are answered while the new index is built"
    compacting.join()
    info = index.info()
    assert info.kind == PQ_RERANK and info.tombstones == 99 and index.verify() == []
    assert index.ids().tolist() == list(range(10_100, n + 1000))
    _, ids = index.search(vecs[[n + 500, 15_000, 10_050, 5]], 1)
    assert ids[:2, 0].tolist() == [n + 500, 15_000]
    assert ids[2, 0] != 10_050 and ids[3, 0] != 5


def test_pq_candidates_find_most_true_neighbours_without_scanning_everything() -> None:
    # 200 candidates out of 20,000 unstructured vectors: picked at random they would hold ~1% of
    # the true top 10; the PQ scan must rank well enough to hold most of them.
    rng = np.random.default_rng(4)
    n, dim = 20_000, 32
    vecs, queries = unit(rng, n, dim), unit(rng, 100, dim)
    index = VectorIndex(MODEL, dim, IndexSettings(exact_max=1000, rerank_factor=20))
    index.add(range(n), vecs)
    truth = np.argsort(-(queries @ vecs.T), axis=1)[:, :10]

    def recall(got: np.ndarray, want: np.ndarray) -> float:
        return float(np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)]))

    scores, got = index.search(queries, 10)
    assert recall(got, truth) >= 0.6
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vecs.T, got, 1), atol=1e-5)
    # With tombstones the candidates are filtered, the rest still re-ranked exactly.
    index.remove(range(0, n, 20))
    sims = queries @ vecs.T
    sims[:, ::20] = -np.inf
    truth = np.argsort(-sims, axis=1)[:, :10]
    scores, got = index.search(queries, 10)
    assert (got % 20 != 0).all() and (got >= 0).all()
    assert recall(got, truth) >= 0.6
    assert (np.diff(scores, axis=1) <= 0).all()


def write_format_1_index(path: Path, model: str, ids: np.ndarray, vecs: np.ndarray,
                         covered_seq: int) -> None:
    """An index file as vfpd wrote it before November 2026: JSON header format 1 + an HNSW
    (inner product) graph in an IndexIDMap2 + tombstones."""
    import json
    import struct

    import blake3
    import faiss
    graph = faiss.IndexIDMap2(faiss.IndexHNSWFlat(VECTOR_DIM, 32, faiss.METRIC_INNER_PRODUCT))
    graph.add_with_ids(vecs, ids)
    payload = faiss.serialize_index(graph).tobytes()
    header = {"format": 1, "model_version": model, "dim": VECTOR_DIM, "kind": "hnsw",
              "covered_seq": covered_seq, "count": len(ids), "faiss_len": len(payload),
              "payload_len": len(payload), "payload_blake3": blake3.blake3(payload).hexdigest()}
    blob = json.dumps(header).encode()
    head = MAGIC + struct.pack("<I", len(blob)) + blob
    path.write_bytes(head + b"\0" * (HEADER_SIZE - len(head)) + payload)


def test_index_file_of_the_old_hnsw_layout_is_rebuilt(cat: Catalog, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "index.faiss"
    stored = fill(cat, 0, 60)
    ids = np.fromiter(stored, np.int64)
    write_format_1_index(path, MODEL, ids, np.stack(list(stored.values())), cat.sequence())
    with caplog.at_level(logging.WARNING, logger="vfpd.index"):
        index = open_index(cat, MODEL, path)
    assert "rebuilding index from catalog" in caplog.text
    assert "old index layout (format 1, hnsw graph)" in caplog.text
    assert_matches_catalog(index, cat)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vfpd.index"):
        assert len(open_index(cat, MODEL, path)) == 60
    assert "rebuilding" not in caplog.text, "the rebuilt file was saved in the new layout"


def test_approximate_index_rebuilt_from_catalog_round_trips(cat: Catalog, tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    fill(cat, 0, 80)
    s = IndexSettings(exact_max=50)
    index = open_index(cat, MODEL, path, settings=s)
    assert index.kind == PQ_RERANK and index.verify() == []
    fill(cat, 80, 20)
    cat.remove_file("/v/3.mp4")
    cat.purge_orphans()
    again = open_index(cat, MODEL, path, settings=s)
    assert again.kind == PQ_RERANK and again.verify() == [] and len(again) == 99
    assert_matches_catalog(again, cat)


def test_loaded_index_catches_up_without_moving_its_vectors(cat: Catalog, tmp_path: Path) -> None:
    # A loaded index keeps room for new vectors: the catch-up after a restart appends in place
    # instead of copying everything (1 GB at a million vectors).
    path = tmp_path / "index.faiss"
    fill(cat, 0, 30)
    open_index(cat, MODEL, path).save(path)
    fill(cat, 30, 20)
    index = VectorIndex.load(path, MODEL)
    storage = index._store._vectors
    assert index.catch_up(cat) == 20
    assert index._store._vectors is storage
    assert_matches_catalog(index, cat)
