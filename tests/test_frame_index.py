"""The frame-level candidate index: clips found inside long videos, exact and IVF-PQ; add, remove,
save, load, catch-up and rebuilds from a real catalog."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from vfpd.catalog import Catalog
from vfpd.fingerprint import FRAME_DIM, VECTOR_DIM, Fingerprint
from vfpd.frame_index import (
    FLAT,
    BuildCancelled,
    IVFPQ,
    SLOT_BITS,
    FrameIndex,
    FrameIndexSettings,
    frame_budget,
    open_frame_index,
    select_frames,
    tally,
)
from vfpd.hashing import FileStat, hash_bytes
from vfpd.index import VectorIndex
from vfpd.index_file import IndexLoadError

MODEL = "base-1"
# Small IVF settings so the IVF-PQ path runs on a few thousand frames in a test.
SMALL_IVF = FrameIndexSettings(flat_max_frames=2000, nlist=16, nprobe=8, train_sample=4000)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


BACKGROUND = unit(np.random.default_rng(99).standard_normal(FRAME_DIM))


def footage(rng: np.random.Generator, n: int) -> np.ndarray:
    """n frame features of edited footage: shots of 3-8 frames (alike within a shot, unrelated
    across a cut), on top of a large component every video shares (as the real model's features
    have, see matching.frame_center)."""
    out = []
    while len(out) < n:
        shot = rng.standard_normal(FRAME_DIM)
        for _ in range(int(rng.integers(3, 9))):
            out.append(shot + 0.3 * rng.standard_normal(FRAME_DIM))
    return unit(3.0 * BACKGROUND + unit(np.array(out[:n])))


def fingerprint(feats: np.ndarray, rng: np.random.Generator, model: str = MODEL,
                informative: np.ndarray | None = None) -> Fingerprint:
    n = len(feats)
    return Fingerprint(
        vector=unit(rng.standard_normal(VECTOR_DIM)), frame_features=feats.astype(np.float32),
        timestamps=np.arange(n, dtype=np.float64),
        informative=np.ones(n, bool) if informative is None else informative,
        duration=float(n), model_version=model)


def clip_of(long: np.ndarray, start: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """A re-encoded clip: the long video's frames start..start+n with a little noise."""
    return unit(long[start:start + n] + 0.04 * rng.standard_normal((n, FRAME_DIM)))


def library(n: int, frames: int, seed: int = 0) -> list[Fingerprint]:
    rng = np.random.default_rng(seed)
    return [fingerprint(footage(rng, frames), rng) for _ in range(n)]


def stored_frames(fps: list[Fingerprint]) -> int:
    return sum(len(select_frames(fp, BACKGROUND)) for fp in fps)


# -- pure parts ------------------------------------------------------------------------------------

def test_select_frames_caps_skips_static_and_uninformative() -> None:
    rng = np.random.default_rng(1)
    feats = footage(rng, 300)
    informative = np.ones(300, bool)
    informative[:20] = False  # a black leader
    fp = fingerprint(feats, rng, informative=informative)
    s = FrameIndexSettings()
    kept = select_frames(fp, BACKGROUND, s)
    assert kept.shape == (64, FRAME_DIM)
    np.testing.assert_allclose(np.linalg.norm(kept, axis=1), 1.0, atol=1e-5)
    # A static shot (the same picture 40 times) is stored once.
    static = np.repeat(feats[20:21], 40, axis=0)
    fp2 = fingerprint(np.concatenate([static, feats[21:31]]), rng)
    assert len(select_frames(fp2, BACKGROUND, s)) == 11
    nothing = fingerprint(feats[:5], rng, informative=np.zeros(5, bool))
    assert len(select_frames(nothing, BACKGROUND, s)) == 0


def test_long_videos_keep_one_frame_per_15_seconds_up_to_256() -> None:
    assert frame_budget(60) == 64 and frame_budget(16 * 60) == 64
    assert frame_budget(40 * 60) == 160 and frame_budget(3 * 3600) == 256


def test_tally_counts_each_query_frame_once_per_video() -> None:
    a, b = 7 << SLOT_BITS, 9 << SLOT_BITS
    ids = np.array([[a, a + 1, b], [b + 2, a, -1]])
    sims = np.array([[0.9, 0.8, 0.55], [0.7, 0.4, 0.0]], np.float32)
    votes = tally(sims, ids, 0.5)
    assert votes == pytest.approx({7: 0.9, 9: 0.55 + 0.7})


# -- finding a clip inside a long video ---------------------------------------------------------

@pytest.mark.parametrize("settings", [FrameIndexSettings(), SMALL_IVF], ids=[FLAT, IVFPQ])
def test_clip_of_a_long_video_finds_it(settings: FrameIndexSettings) -> None:
    rng = np.random.default_rng(2)
    others = library(50, 50, seed=3)
    long = footage(rng, 400)  # longer than the per-video cap: only every ~6th frame is stored
    index = FrameIndex(MODEL, settings, center=BACKGROUND)
    index.add((i, fp) for i, fp in enumerate(others))
    index.add([(500, fingerprint(long, rng))])
    assert index.kind == (FLAT if settings.flat_max_frames > 10_000 else IVFPQ)
    assert len(index) == 51 and index.frames == stored_frames(others) + 64
    clip = fingerprint(clip_of(long, 170, 12, rng), rng)
    (best, votes), *_ = index.candidates(clip, k=5)
    assert best == 500 and votes > 1.0
    # A video that is not in the library finds nothing that strong.
    stranger = fingerprint(footage(rng, 12), rng)
    assert all(v < votes / 2 for _, v in index.candidates(stranger, k=5))
    assert 500 not in dict(index.candidates(clip, k=5, exclude=[500]))


def test_thirty_seconds_cut_from_a_forty_minute_video_finds_it() -> None:
    rng = np.random.default_rng(14)
    # The footage second by second; the sampler keeps one frame every 8 s of a 40-minute video.
    seconds = footage(rng, 2400)
    long = Fingerprint(vector=unit(rng.standard_normal(VECTOR_DIM)),
                       frame_features=seconds[::8], timestamps=np.arange(0, 2400, 8.0),
                       informative=np.ones(300, bool), duration=2400.0, model_version=MODEL)
    index = FrameIndex(MODEL, center=BACKGROUND)
    index.add((i, fp) for i, fp in enumerate(library(40, 60, seed=15)))
    index.add([(500, long)])
    assert 150 <= index.frames - stored_frames(library(40, 60, seed=15)) <= 160
    found = 0
    for start in rng.integers(0, 2400 - 30, 10):
        clip = fingerprint(clip_of(seconds, int(start), 30, rng), rng)
        found += index.candidates(clip, k=16)[0][0] == 500
    assert found == 10


def test_add_is_idempotent_and_remove_drops_every_frame() -> None:
    fps = library(5, 10, seed=4)
    index = FrameIndex(MODEL, center=BACKGROUND)
    assert index.add(enumerate(fps)) == 5
    assert index.add(enumerate(fps)) == 0
    assert index.frames == 50
    assert index.add([(9, fingerprint(fps[0].frame_features, np.random.default_rng(0),
                                      model="other"))]) == 0
    assert index.remove([2, 2, 77]) == 1
    assert index.owners().tolist() == [0, 1, 3, 4]
    assert sorted(set((index.stored_ids() >> SLOT_BITS).tolist())) == [0, 1, 3, 4]
    assert all(fid != 2 for fid, _ in index.candidates(fps[2]))
    assert index.candidates(fps[3])[0][0] == 3


def test_growing_past_the_flat_limit_switches_to_ivfpq_and_keeps_everything(caplog) -> None:
    fps = library(40, 60, seed=5)
    index = FrameIndex(MODEL, SMALL_IVF, center=BACKGROUND)
    with caplog.at_level(logging.INFO, logger="vfpd.frame_index"):
        for i, fp in enumerate(fps):
            index.add([(i, fp)])
    assert index.kind == IVFPQ and "switched to IVF16,PQ16x8" in caplog.text
    assert index.frames == stored_frames(fps)
    assert sorted(set((index.stored_ids() >> SLOT_BITS).tolist())) == list(range(40))
    assert index.remove([0, 39]) == 2 and index.frames == stored_frames(fps[1:39])
    hits = sum(index.candidates(fp, k=1)[0][0] == i for i, fp in enumerate(fps) if 0 < i < 39)
    assert hits == 38


# -- persistence and the catalog ------------------------------------------------------------------

def fill(cat: Catalog, fps: list[Fingerprint], start: int = 0) -> list[int]:
    return [cat.store_result(f"/v/{start + i}.mp4", FileStat(1, start + i, start + i, 1),
                             hash_bytes(f"{start + i}".encode()), fingerprint=fp)
            for i, fp in enumerate(fps)]


@pytest.mark.parametrize("settings", [FrameIndexSettings(), SMALL_IVF], ids=[FLAT, IVFPQ])
def test_save_load_round_trip(tmp_path: Path, settings: FrameIndexSettings) -> None:
    fps = library(40, 60, seed=6)
    index = FrameIndex(MODEL, settings, center=BACKGROUND)
    index.add(enumerate(fps))
    index.covered_seq = 123
    index.save(tmp_path / "frames.faiss")
    back = FrameIndex.load(tmp_path / "frames.faiss", MODEL, BACKGROUND, settings)
    assert back.kind == index.kind and back.covered_seq == 123
    assert back.owners().tolist() == index.owners().tolist()
    assert back.stored_ids().tolist() == index.stored_ids().tolist()
    np.testing.assert_array_equal(back.center, index.center)
    for fp in fps[:5]:
        assert back.candidates(fp) == index.candidates(fp)
    with pytest.raises(IndexLoadError, match="made for model"):
        FrameIndex.load(tmp_path / "frames.faiss", "base-2", BACKGROUND, settings)


def test_catalog_catch_up_follows_adds_and_removals(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.db") as cat:
        fids = fill(cat, library(6, 10, seed=7))
        index = open_frame_index(cat, MODEL, BACKGROUND, tmp_path / "frames.faiss")
        assert index.owners().tolist() == sorted(fids)
        assert index.covered_seq == cat.sequence()
        more = fill(cat, library(3, 10, seed=8), start=100)
        cat.remove_file("/v/0.mp4")
        cat.purge_orphans()  # the content disappears: its fingerprint leaves the catalog
        assert index.catch_up(cat) >= 4
        assert index.owners().tolist() == sorted(fids[1:] + more)
        assert fids[0] not in set((index.stored_ids() >> SLOT_BITS).tolist())
        index.save(tmp_path / "frames.faiss")
        # Loaded and caught up: changes made after the save are applied at the next start.
        later = fill(cat, library(2, 10, seed=9), start=200)
        again = open_frame_index(cat, MODEL, BACKGROUND, tmp_path / "frames.faiss")
        assert again.owners().tolist() == sorted(fids[1:] + more + later)


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated", "flipped", "other-model",
                                    "other-background", "video-index", "ahead"])
def test_unusable_file_is_rebuilt_from_the_catalog(tmp_path: Path, damage: str, caplog) -> None:
    path = tmp_path / "frames.faiss"
    with Catalog(tmp_path / "c.db") as cat:
        fids = fill(cat, library(8, 10, seed=11))
        good = open_frame_index(cat, MODEL, BACKGROUND, path)
        if damage == "missing":
            path.unlink()
        elif damage == "garbage":
            path.write_bytes(b"not an index" * 100)
        elif damage == "truncated":
            path.write_bytes(path.read_bytes()[:-100])
        elif damage == "flipped":
            data = bytearray(path.read_bytes())
            data[-50] ^= 0xFF
            path.write_bytes(bytes(data))
        elif damage == "other-model":
            FrameIndex("base-0", center=BACKGROUND).save(path)
        elif damage == "other-background":  # frames centred on another model background
            other = FrameIndex(MODEL, center=unit(BACKGROUND + 0.1))
            other.add((fid, cat.fingerprints_by_ids([fid])[fid].fingerprint) for fid in fids)
            other.covered_seq = cat.sequence()
            other.save(path)
        elif damage == "video-index":
            VectorIndex(MODEL).save(path)
        else:
            good.covered_seq = cat.sequence() + 10
            good.save(path)
        with caplog.at_level(logging.WARNING, logger="vfpd.frame_index"):
            index = open_frame_index(cat, MODEL, BACKGROUND, path)
        assert "rebuilding frame index from catalog" in caplog.text
        assert index.owners().tolist() == sorted(fids)
        assert index.covered_seq == cat.sequence()
        stored = cat.fingerprints_by_ids(fids[:3])
        for fid in fids[:3]:
            assert index.candidates(stored[fid].fingerprint)[0][0] == fid
        # The rebuilt file was saved and now loads as it is.
        assert FrameIndex.load(path, MODEL, BACKGROUND).owners().tolist() == sorted(fids)


def test_a_build_can_be_cancelled(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.db") as cat:
        fill(cat, library(300, 4, seed=12))
        asked = []

        def stop() -> bool:
            asked.append(1)
            return True

        with pytest.raises(BuildCancelled):
            FrameIndex.from_catalog(cat, MODEL, BACKGROUND, should_stop=stop)
        assert asked
        assert len(FrameIndex.from_catalog(cat, MODEL, BACKGROUND, should_stop=lambda: False)) == 300


def test_videos_without_informative_frames_store_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    black = [fingerprint(footage(rng, 5), rng, informative=np.zeros(5, bool)) for _ in range(9)]
    with Catalog(tmp_path / "c.db") as cat:
        index = open_frame_index(cat, MODEL, BACKGROUND, tmp_path / "frames.faiss")
        for i, fp in enumerate(black):
            fill(cat, [fp], start=i)
            index.catch_up(cat)
        assert len(index) == 9 and index.frames == 0
        assert index.candidates(black[0]) == []


def test_shared_counts_the_videos_holding_each_frame() -> None:
    """Recurring content (an intro in many videos) is what the library's weights lower: each
    frame of a new video counts the stored videos that hold the same picture."""
    rng = np.random.default_rng(16)
    intro = footage(rng, 4)
    index = FrameIndex(MODEL, center=BACKGROUND)
    for i in range(6):
        index.add([(i, fingerprint(np.concatenate([intro, footage(rng, 8)]), rng))])
    new = fingerprint(np.concatenate([intro, footage(rng, 8)]), rng)
    counts = index.lookup(new).shared(len(new.timestamps), 0.6)
    assert counts[:4].min() >= 5 and counts[4:].max() == 0
