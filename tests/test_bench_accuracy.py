"""The accuracy benchmark's metric functions, baselines' score reductions, and one tiny set build."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench import accuracy, baselines, dataset
from bench.accuracy import (average_precision, best_f1, calibrate, count_at_or_above, label_pairs,
                            pr_curve, recall_at_precision)


def test_perfect_ranking_has_ap_one_and_full_recall() -> None:
    s = np.array([0.9, 0.8, 0.3, 0.1])
    y = np.array([True, True, False, False])
    assert average_precision(s, y) == 1.0
    assert recall_at_precision(s, y, 0.99) == (1.0, 0.8)
    f1, t = best_f1(s, y)
    assert (f1, t) == (1.0, 0.8)


def test_ap_by_hand_with_a_negative_in_between() -> None:
    # ranks: P N P N -> precision 1 at recall .5, 2/3 at recall 1
    s = np.array([0.9, 0.7, 0.5, 0.2])
    y = np.array([True, False, True, False])
    assert average_precision(s, y) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert recall_at_precision(s, y, 0.99) == (0.5, 0.9)
    assert count_at_or_above(s, ~y, 0.5) == 1


def test_ties_count_as_one_threshold() -> None:
    # a positive and a negative tied at the top: precision .5 there, never 1
    s = np.array([0.8, 0.8, 0.1])
    y = np.array([True, False, True])
    c = pr_curve(s, y)
    assert list(c.thresholds) == [0.8, 0.1]
    assert average_precision(s, y) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert recall_at_precision(s, y, 0.99)[0] == 0.0


def test_unscored_pairs_are_missed_not_retrieved() -> None:
    s = np.array([0.9, 0.0, 0.0])
    y = np.array([True, True, False])
    assert average_precision(s, y) == 0.5
    assert math.isnan(average_precision(np.zeros(2), np.zeros(2, bool)))


def test_calibration_finds_the_gap_above_the_highest_negative() -> None:
    s = np.array([0.95, 0.9, 0.6, 0.55, 0.4, 0.2])
    y = np.array([True, True, True, False, True, False])
    cal = calibrate(s, y)
    assert cal.max_negative == 0.55
    assert cal.precision1_threshold == 0.6
    assert cal.precision1_recall == 0.75
    assert cal.suggested == pytest.approx(0.575)
    assert cal.suggested_recall == 0.75


def _item(name: str, group: str, transform: str, footage: str = "", seen: bool = True,
          intro: str = "", leader: bool = False, scene: str = "",
          scene_kind: str = "") -> dataset.Item:
    return dataset.Item(name, name, group, footage or group, transform, seen, intro, leader,
                        0.0, scene, scene_kind)


def test_pair_labels_positive_kinds_and_hard_negatives() -> None:
    items = [_item("a", "a", "original"), _item("a.crop", "a", "crop"),
             _item("a.flip", "a", "flip"), _item("a-other", "a-other", "sibling", footage="a"),
             _item("h", "h", "original", seen=False),
             _item("i1", "i1", "original", intro="logo"), _item("i2", "i2", "original", intro="logo"),
             _item("l1", "l1", "original", leader=True), _item("l2", "l2", "original", leader=True)]
    p = label_pairs(items)
    kinds = {(items[i].name, items[j].name): (bool(pos), k, bool(h))
             for i, j, pos, k, h in zip(p.i, p.j, p.positive, p.kind, p.heldout)}
    assert kinds["a", "a.crop"] == (True, "crop", False)
    assert kinds["a.crop", "a.flip"] == (True, accuracy.POS_COPY_COPY, False)
    assert kinds["a", "a-other"] == (False, accuracy.NEG_SAME_FOOTAGE, False)
    assert kinds["a", "h"] == (False, accuracy.NEG_DIFFERENT, True)
    assert kinds["i1", "i2"] == (False, accuracy.NEG_SHARED_INTRO, False)
    assert kinds["l1", "l2"] == (False, accuracy.NEG_BLACK_LEADER, False)
    assert int(p.positive.sum()) == 3


def test_clips_of_one_scene_are_hard_negatives_and_pip_is_measured_apart() -> None:
    cam, title = dataset.SCENE_KINDS["scene"], dataset.SCENE_KINDS["title"]
    items = [_item("c1", "c1", "original", scene="cam", scene_kind=cam),
             _item("c1.rot90", "c1", "rot90", scene="cam", scene_kind=cam),
             _item("c1.pip", "c1", "pip", scene="cam", scene_kind=cam),
             _item("c2", "c2", "original", scene="cam", scene_kind=cam),
             _item("t1", "t1", "original", scene="tpl", scene_kind=title),
             _item("t2", "t2", "original", scene="tpl", scene_kind=title),
             _item("a", "a", "original"), _item("a.crop", "a", "crop")]
    p = label_pairs(items)
    got = {(items[i].name, items[j].name): (bool(pos), k, sk, bool(m)) for i, j, pos, k, sk, m
           in zip(p.i, p.j, p.positive, p.kind, p.scene_kind, p.measured)}
    assert got["c1", "c1.rot90"] == (True, "rot90", cam, True)
    assert got["c1", "c1.pip"] == (True, "pip", cam, False)
    assert got["c1.rot90", "c1.pip"][:2] == (True, accuracy.POS_COPY_COPY_HARDER)
    assert got["c1", "c2"] == (False, accuracy.neg_same_scene(cam), "", True)
    assert got["c1.rot90", "c2"][:2] == (False, accuracy.neg_same_scene(cam))
    assert got["t1", "t2"][:2] == (False, accuracy.NEG_TITLE_TEMPLATE)
    assert got["c1", "a"][:2] == (False, accuracy.NEG_DIFFERENT)
    assert got["a", "a.crop"] == (True, "crop", "", True)


def test_signature_log_becomes_scores() -> None:
    log = "\n".join([
        "[Parsed_signature_0 @ 0x1] matching of video 0 at 3.48 and 1 at 3.48, 50 frames matching",
        "[Parsed_signature_0 @ 0x1] no matching of video 0 and 2",
        "[Parsed_signature_0 @ 0x1] matching of video 1 at 3.1 and 2 at 1.6, 76 frames matching",
        "[Parsed_signature_0 @ 0x1] whole video matching",
    ])
    s = baselines.signature_scores(log, [100, 200, 80])
    assert s[0, 1] == s[1, 0] == pytest.approx(0.75)
    assert s[0, 2] == 0.0
    assert s[1, 2] == 1.0


def test_phash_matches_a_frame_to_its_noisy_self_not_to_another() -> None:
    rng = np.random.default_rng(0)

    def natural() -> np.ndarray:  # a 1/f random field, like a photograph's spectrum
        spec = rng.normal(size=(32, 32)) + 1j * rng.normal(size=(32, 32))
        f = np.hypot(*np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32)))
        img = np.real(np.fft.ifft2(spec / np.maximum(f, 1 / 32)))
        return np.clip(128 + 60 * img / img.std(), 0, 255).astype(np.uint8)

    a, b = natural(), natural()
    noisy = np.clip(a + rng.normal(0, 4, a.shape), 0, 255).astype(np.uint8)
    h = baselines.phash_frames(np.stack([a, noisy, b]))
    d = baselines.hamming_matrix(h, h)
    assert d[0, 1] <= baselines.PHASH_DISTANCE < d[0, 2]
    frac = baselines.match_fractions([h[:1], h[1:2], h[2:]], baselines.PHASH_DISTANCE)
    scores = baselines.symmetric_best(frac)
    assert scores[0, 1] == 1.0 and scores[0, 2] == 0.0 and scores[0, 0] == 0.0


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the benchmark builds with ffmpeg")
def test_tiny_set_builds_real_files_and_is_cached(tmp_path: Path) -> None:
    life = "life=s=64x36:seed=3:ratio=0.2:mold=5"
    spec = dataset.Spec(96, 54, (
        dataset.Original("o", (dataset.Shot("lavfi", life, 2.0),), 25, True, ("trim", "flip")),
        dataset.Original("o-other", (dataset.Shot("lavfi", life, 1.0, start=5),), 25, True,
                         sibling_of="o"),
    ), copy_threads=1)
    ds = dataset.build(spec, tmp_path / "set", workers=1, log=lambda _: None)
    names = {it.name: it for it in ds.items}
    assert set(names) == {"o", "o.trim", "o.flip", "o-other"}
    for it in ds.items:
        assert ds.path(it).stat().st_size > 0
    assert names["o"].duration == pytest.approx(2.0, abs=0.1)
    assert names["o.trim"].duration < names["o"].duration - 0.5
    assert names["o-other"].group != names["o"].group == names["o.flip"].group
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["spec"] == dataset.spec_hash(spec)
    mtime = ds.path(names["o.flip"]).stat().st_mtime_ns
    again = dataset.build(spec, tmp_path / "set", workers=1, log=lambda _: None)
    assert again.items == ds.items
    assert ds.path(names["o.flip"]).stat().st_mtime_ns == mtime
    assert not list((tmp_path / "set").rglob(".tmp-*"))


@pytest.mark.skipif(shutil.which("ffmpeg") is None or not dataset.FONT.exists(),
                    reason="the benchmark builds with ffmpeg and draws text with DejaVu Sans")
def test_scene_series_and_title_cards_render(tmp_path: Path) -> None:
    """A fixed camera's consecutive clips share their background but not their moving subjects;
    title cards of one template differ only in their text."""
    shots = [dataset.Shot("scene", "rocket", 1.0, start=k * 10.0, subjects=("astronaut",))
             for k in range(2)]
    cards = [dataset.Shot("title", "title1", 1.0, text=t) for t in ("One|first", "Two|second")]
    originals = [dataset.Original(f"c{k}", (s,), 10, True, ("rot90",) if k == 0 else (),
                                  scene="cam") for k, s in enumerate(shots)]
    originals += [dataset.Original(f"t{k}", (s,), 10, True, (), scene="tpl")
                  for k, s in enumerate(cards)]
    ds = dataset.build(dataset.Spec(96, 54, tuple(originals), copy_threads=1), tmp_path / "set",
                       workers=1, log=lambda _: None)
    names = {it.name: it for it in ds.items}
    assert set(names) == {"c0", "c0.rot90", "c1", "t0", "t1"}
    assert names["c1"].scene_kind == dataset.SCENE_KINDS["scene"] == names["c0.rot90"].scene_kind
    assert names["t0"].scene_kind == dataset.SCENE_KINDS["title"]
    from vfpd import media  # noqa: PLC0415

    frames = {n: media.sample(ds.path(it)).frames.astype(np.float32) for n, it in names.items()}
    same_bg = np.abs(frames["c0"][0] - frames["c1"][0]).mean()
    assert 0.5 < same_bg < 40  # the subject sits elsewhere, the rest is the same photograph
    assert frames["c0.rot90"].shape == frames["c0"].shape  # square 64x64 either way
    assert 0 < np.abs(frames["t0"][0] - frames["t1"][0]).mean() < 20



def _photos(shot: dataset.Shot) -> set[str]:
    """The photographs a shot shows: its background (camera moves, scenes, talking heads) and
    its subjects or thumbnail."""
    background = {shot.source} if shot.kind in ("photo", "scene", "talking") else set()
    return background | set(shot.subjects)


def test_held_out_photographs_are_shown_by_held_out_footage_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    shown = {o.seen: set() for o in dataset.full_spec().originals}
    for o in dataset.full_spec().originals:
        for shot in o.shots:
            shown[o.seen] |= _photos(shot)
    assert shown[True] and not shown[True] & dataset.HELD_OUT_PHOTOS
    assert shown[False] and shown[False] <= dataset.HELD_OUT_PHOTOS
    # ...and no training video shows one (scripts/make_training_set.py's scene videos).
    spec = importlib.util.spec_from_file_location(
        "make_training_set", Path(__file__).resolve().parent.parent / "scripts" / "make_training_set.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_training_set", script)  # its dataclasses look it up
    spec.loader.exec_module(script)
    trained = {p for _, background, subjects in script.SCENES for p in (background, *subjects) if p}
    assert trained and not trained & dataset.HELD_OUT_PHOTOS
    assert trained <= set(dataset.PHOTOS)
