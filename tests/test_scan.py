"""The scan on a small library of real clips and transformed copies made by the test with PyAV."""

from __future__ import annotations

import dataclasses

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from media_factory import sample_clip
from media_factory import encode
from scan_media import (
    TRANSFORMS,
    load,
    make_copy,
    pan_frames,
    photo_pan,
    procedural,
    resize,
    segment,
)
from vfpd import hashing
from vfpd.catalog import Catalog
from vfpd.cli import ctl
from vfpd.matching import DEFAULT_THRESHOLD
from vfpd.chain import pool_decoder
from vfpd.scan import ScanResult, ScanSettings, scan

BIKES_COPIES = tuple(TRANSFORMS)
MODEL_LIMITED = ("crop", "trim")
"""Copies the shipped model does not yet recognise on this fast-moving footage: a 25% crop, and a
trim that puts the copy's 1-per-second samples half-way between the original's (their frame
features differ as much as those of different moments). They score below the default threshold
with the shipped weights, so their tests check that they still rank above every unrelated video;
the matcher itself handles both on features that carry them (test_matching)."""


def _limited(name: str) -> bool:
    return any(name.endswith(f"-{t}.mp4") for t in MODEL_LIMITED) or name == "scene-second-half.mp4"
BUNNY_COPIES = ("scale", "crop", "trim", "colour")
CARPHONE_COPIES = ("reencode", "pad")


@pytest.fixture(scope="module")
def embedder():
    from vfpd.model.embed import Embedder

    return Embedder(device="cpu")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Originals as shipped, copies under each transformation, unrelated videos and two
    different segments of one scene."""
    d = tmp_path_factory.mktemp("library")
    for name, clip, copies in (("bikes", "bikes", BIKES_COPIES),
                               ("bunny", "bigbuckbunny", BUNNY_COPIES),
                               ("carphone", "carphone_pristine", CARPHONE_COPIES)):
        shutil.copyfile(sample_clip(clip), d / f"{name}.mp4")
        frames = load(clip)
        (d / name).mkdir()
        for t in copies:
            make_copy(frames, t, d / name / f"{name}-{t}.mp4")
        if name == "bikes":
            segment(frames, 0.0, 4.5, d / "scene-first-half.mp4")
            segment(frames, 5.5, 10.0, d / "scene-second-half.mp4")
    procedural(d / "procedural-1.mp4", seed=11)
    photo_pan(d / "pan-astronaut.mp4", "astronaut")
    return d


def _scan(root: Path, embedder, catalog: Catalog | None = None, **kw) -> ScanResult:
    settings = ScanSettings(roots=(str(root),), workers=2, **kw)
    return scan(settings, embedder, pool_decoder(2, settings.sampling), catalog)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def result(library: Path, embedder, cache_dir: Path) -> ScanResult:
    with Catalog(cache_dir / "catalog.sqlite") as catalog:
        return _scan(library, embedder, catalog)


def _names(paths) -> set[str]:
    return {os.path.basename(p) for p in paths}


def _pairs(result: ScanResult) -> dict[frozenset[str], object]:
    return {frozenset((os.path.basename(p.a), os.path.basename(p.b))): p for p in result.pairs}


def test_every_copy_is_grouped_with_its_original(result: ScanResult) -> None:
    assert result.errors == []
    groups = [_names(g) for g in result.groups]
    expected = [
        {"bikes.mp4", "scene-first-half.mp4", "scene-second-half.mp4",
         *(f"bikes-{t}.mp4" for t in BIKES_COPIES)},
        {"bunny.mp4", *(f"bunny-{t}.mp4" for t in BUNNY_COPIES)},
        {"carphone.mp4", *(f"carphone-{t}.mp4" for t in CARPHONE_COPIES)},
    ]
    for g in groups:
        assert any(g <= family for family in expected), g  # never two videos in one group
    for family in expected:
        # A copy the shipped model matches only to a sibling clip may form a group of its own
        # with it (the chaining guard), but every other copy joins the original's group.
        group = max((g for g in groups if g & family), key=len)
        assert {n for n in family if not _limited(n)} <= group, (family - group)


@pytest.fixture(scope="module")
def loose(library: Path, embedder, cache_dir: Path, result: ScanResult) -> ScanResult:
    """The same library at a low threshold (fingerprints from the cache): every verified pair
    with its score, for ranking checks below the default threshold."""
    with Catalog(cache_dir / "catalog.sqlite") as catalog:
        return _scan(library, embedder, catalog, threshold=0.2)


def _family(name: str) -> str:
    return name.split("-")[0].split(".")[0].replace("scene", "bikes")


def _best_unrelated(loose: ScanResult, name: str) -> float:
    """The highest score `name` reaches with any video of another family."""
    scores = [p.score for p in loose.pairs
              if name in _names((p.a, p.b)) and len({_family(n) for n in _names((p.a, p.b))}) == 2]
    return max(scores, default=0.0)


@pytest.mark.parametrize("transform", BIKES_COPIES)
def test_each_transformation_matches_the_original_directly(result: ScanResult, loose: ScanResult,
                                                           transform: str) -> None:
    copy = f"bikes-{transform}.mp4"
    if transform in MODEL_LIMITED:
        # Below the default threshold with the shipped weights, but still ranked above every
        # unrelated video: a lower --threshold finds it without false pairs.
        p = _pairs(loose).get(frozenset(("bikes.mp4", copy)))
        assert p is not None, f"{copy} not even a candidate of bikes"
        assert p.score > _best_unrelated(loose, "bikes.mp4"), p.score
        return
    p = _pairs(result).get(frozenset(("bikes.mp4", copy)))
    assert p is not None, f"{copy} not matched to bikes"
    assert p.score >= DEFAULT_THRESHOLD
    assert p.kind == ("partial" if transform == "trim" else "near")


def _in_bikes(p, s) -> tuple[float, float]:
    return (s.a_start, s.a_end) if os.path.basename(p.a) == "bikes.mp4" else (s.b_start, s.b_end)


def test_different_segments_of_one_scene_are_not_a_pair(result: ScanResult) -> None:
    pairs = _pairs(result)
    assert frozenset(("scene-first-half.mp4", "scene-second-half.mp4")) not in pairs
    # The first half is a clip of the whole, found at the right place.
    first = pairs[frozenset(("bikes.mp4", "scene-first-half.mp4"))]
    assert first.kind == "partial"
    start, end = _in_bikes(first, first.segments[0])
    assert start == pytest.approx(0.0, abs=1.1) and end == pytest.approx(4.5, abs=1.1)


def test_a_clip_from_the_middle_is_found_at_its_place(loose: ScanResult) -> None:
    # Its samples fall half a step out of phase with the original's, which keeps it below the
    # default threshold with the shipped weights; where it matches is still right.
    second = _pairs(loose)[frozenset(("bikes.mp4", "scene-second-half.mp4"))]
    assert second.score > _best_unrelated(loose, "bikes.mp4")
    assert second.kind == "partial"
    start, end = _in_bikes(second, second.segments[0])
    assert start == pytest.approx(5.5, abs=1.1) and end == pytest.approx(10.0, abs=1.1)


def test_different_videos_are_never_paired(result: ScanResult) -> None:
    family = {os.path.basename(f.path): _family(os.path.basename(f.path)) for f in result.files}
    for p in result.pairs:
        a, b = os.path.basename(p.a), os.path.basename(p.b)
        assert family[a] == family[b] not in ("procedural", "pan"), (a, b, p.score)


def test_groups_come_largest_waste_first_with_file_facts(result: ScanResult) -> None:
    sizes = {f.path: f.stat.size for f in result.files}
    wastes = [sum(sizes[p] for p in g) - max(sizes[p] for p in g) for g in result.groups]
    assert wastes == sorted(wastes, reverse=True)
    bunny = next(f for f in result.files if f.path.endswith("/bunny.mp4"))
    assert (bunny.width, bunny.height) == (1280, 720)
    assert bunny.duration == pytest.approx(5.3, abs=0.2)


def test_second_scan_reuses_the_cache(result: ScanResult, library: Path, embedder,
                                      cache_dir: Path) -> None:
    with Catalog(cache_dir / "catalog.sqlite") as catalog:
        again = _scan(library, embedder, catalog)
    assert again.fingerprinted == 0 and again.cached == result.fingerprinted
    assert sorted(map(sorted, again.groups)) == sorted(map(sorted, result.groups))


def test_unchanged_stat_skips_rehashing(tmp_path: Path, embedder) -> None:
    d = tmp_path / "lib"
    d.mkdir()
    procedural(d / "a.mp4", seed=21, seconds=3.0)
    procedural(d / "b.mp4", seed=22, seconds=3.0)
    with Catalog(tmp_path / "cache.sqlite") as catalog:
        first = _scan(d, embedder, catalog)
        # New bytes, same size and mtime: the stat says unchanged, so the stored hash is trusted
        # (and the stored fingerprint used) without reading the file.
        st = os.stat(d / "b.mp4")
        with open(d / "b.mp4", "r+b") as f:
            f.seek(st.st_size // 2)
            f.write(b"\0" * 8)
        os.utime(d / "b.mp4", ns=(st.st_atime_ns, st.st_mtime_ns))
        again = _scan(d, embedder, catalog)
    before = {os.path.basename(f.path): f.hash for f in first.files}
    after = {os.path.basename(f.path): f.hash for f in again.files}
    assert after == before
    assert hashing.hash_file(d / "b.mp4") != before["b.mp4"]
    assert again.fingerprinted == 0


def test_a_rescan_records_what_changed_and_marks_the_rest_seen(tmp_path: Path, embedder) -> None:
    d = tmp_path / "lib"
    d.mkdir()
    for name, seed in (("same.mp4", 31), ("touched.mp4", 32), ("moved.mp4", 33)):
        procedural(d / name, seed=seed, seconds=3.0)
    with Catalog(tmp_path / "cache.sqlite") as catalog:
        _scan(d, embedder, catalog)
        before = {n: catalog.file_by_path(str(d / n)) for n in ("same.mp4", "touched.mp4", "moved.mp4")}
        st = os.stat(d / "touched.mp4")
        os.utime(d / "touched.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        os.rename(d / "moved.mp4", d / "renamed.mp4")
        shutil.copyfile(d / "same.mp4", d / "copy.mp4")
        again = _scan(d, embedder, catalog)
        after = {n: catalog.file_by_path(str(d / n))
                 for n in ("same.mp4", "touched.mp4", "renamed.mp4", "copy.mp4")}
    assert again.fingerprinted == 0 and again.cached == 3
    same, touched = after["same.mp4"], after["touched.mp4"]
    assert same is not None and touched is not None
    # Unchanged: the row is the same but for being seen again.
    assert dataclasses.replace(same, last_seen=0.0) == dataclasses.replace(before["same.mp4"],
                                                                           last_seen=0.0)
    assert same.last_seen > before["same.mp4"].last_seen
    # Changed stat, same content; a new path of a known content; a second copy: each recorded.
    assert touched.stat.mtime_ns == st.st_mtime_ns + 10**9 and touched.hash == before["touched.mp4"].hash
    assert after["renamed.mp4"] is not None and after["renamed.mp4"].hash == before["moved.mp4"].hash
    assert after["copy.mp4"] is not None and after["copy.mp4"].hash == same.hash


def test_higher_threshold_gives_a_subset(result: ScanResult, library: Path, embedder,
                                         cache_dir: Path) -> None:
    with Catalog(cache_dir / "catalog.sqlite") as catalog:
        strict = _scan(library, embedder, catalog, threshold=0.95)
    assert set(_pairs(strict)) <= set(_pairs(result))
    assert all(p.score >= 0.95 for p in strict.pairs)


def test_dbscan_grouping_or_its_clear_error(result: ScanResult, library: Path, embedder,
                                            cache_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        assert ctl.main(["scan", str(library), "--cluster", "dbscan"]) == 2
        assert "needs scikit-learn" in capsys.readouterr().err
        return
    with Catalog(cache_dir / "catalog.sqlite") as catalog:
        clustered = _scan(library, embedder, catalog, cluster="dbscan")
    # With two files to a cluster and eps = 1 - threshold, DBSCAN's clusters are exactly the
    # plain connected components of the pairs (no chaining guard).
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for p in result.pairs:
        parent[root(p.a)] = root(p.b)
    components: dict[str, set[str]] = {}
    for x in list(parent):
        components.setdefault(root(x), set()).add(x)
    assert sorted(map(sorted, clustered.groups)) == sorted(map(sorted, components.values()))


def test_cli_json_dry_run_then_trash_and_undo(tmp_path: Path, library: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the journal key
    d = tmp_path / "videos"
    d.mkdir()
    shutil.copyfile(library / "carphone.mp4", d / "carphone.mp4")
    shutil.copyfile(library / "carphone" / "carphone-pad.mp4", d / "carphone-pad.mp4")
    shutil.copyfile(library / "carphone.mp4", d / "carphone-exact.mp4")
    before = sorted(p.name for p in d.iterdir())
    out = tmp_path / "result.json"
    argv = ["scan", str(d), "--cache", str(tmp_path / "cache"), "--output", str(out),
            "--action", "trash", "--keep", "highest-res"]
    assert ctl.main(argv) == 0
    text = capsys.readouterr().out
    assert "would trash" in text and "Group 1: 3 files" in text
    assert sorted(p.name for p in d.iterdir()) == before
    doc = json.loads(out.read_text())
    assert doc["actions"]["applied"] is False and len(doc["actions"]["steps"]) == 2
    journal = tmp_path / "journal.jsonl"
    assert ctl.main([*argv, "--apply", "--journal", str(journal), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    kept = {s["keep"] for s in doc["actions"]["steps"]}
    assert len(kept) == 1 and all(s["done"] for s in doc["actions"]["steps"])
    assert [p.name for p in d.iterdir()] == [os.path.basename(kept.pop())]
    assert len(list((tmp_path / "data" / "Trash" / "files").iterdir())) == 2
    assert ctl.main(["undo", str(journal)]) == 0
    assert sorted(p.name for p in d.iterdir()) == before
    assert "undone" in capsys.readouterr().out


INTRO_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field",
                "retina", "horse")


def test_an_intro_shared_by_many_videos_does_not_make_them_duplicates(tmp_path: Path,
                                                                        embedder) -> None:
    """Eight different videos that all open with the same 8 s (real footage) and end with 1.5 s of
    their own: without down-weighting the intro, four fifths of their common footage matches.
    (The shipped model still finds some of the short pans over different photographs alike, so
    single pairs can stay high: the test looks at the typical pair.)"""
    from vfpd import candidates, matching, media

    intro = [resize(img, 192, 144) for t, img in load("bikes") if t < 8.0]
    paths = []
    for photo in INTRO_PHOTOS:
        p = tmp_path / f"{photo}.mp4"
        paths.append(encode(p, intro + pan_frames(photo, seconds=1.5), fps=25.0))
    fps = [embedder.embed(media.sample(p)) for p in paths]
    center = matching.frame_center(fps)
    # Frame by frame: the motion rule (what changes must agree too) already lowers these pairs on
    # its own; this test is about the recurring-content weights.
    frames_only = dataclasses.replace(matching.MatchSettings(), motion_penalty=0.0)
    plain = [matching.verify(fps[0], fps[k], frames_only, center=center).score
             for k in range(1, len(fps))]
    cands = candidates.find_candidates(fps, center=center)
    intro_frames = [f.timestamps < 7.5 for f in fps]
    assert all(w[i].max() < 0.5 for w, i in zip(cands.weights, intro_frames))
    weighted = [m.score for i, j, m in candidates.match_all(fps) if i == 0]
    assert np.median(plain) >= DEFAULT_THRESHOLD > np.median(weighted), (plain, weighted)
    assert sum(w < p for w, p in zip(weighted, plain)) >= len(plain) - 1
