"""Temporal verification, candidates and grouping on hand-made fingerprints with known structure.

The synthetic "footage" is a smooth path through feature space: neighbouring moments are similar,
moments a few seconds apart are not, the way a shot's frames drift. A copy samples the same path on
a shifted time grid and adds noise, as a re-encode and a trim do to real frame features.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from vfpd.candidates import find_candidates, match_all
from vfpd.fingerprint import FRAME_DIM, VECTOR_DIM, Fingerprint
from vfpd.grouping import Pair, group_components
from vfpd.matching import (
    DEFAULT_THRESHOLD,
    NEAR,
    NONE,
    PARTIAL,
    MatchSettings,
    frame_center,
    recurring_weights,
    verify,
)


class Footage:
    """A continuous stream of frame features: feature(t) for any t in [0, length)."""

    def __init__(self, seed: int, length: float, drift_seconds: float = 2.0) -> None:
        rng = np.random.default_rng(seed)
        self.length = length
        # Anchors every `drift_seconds`; features interpolate between them, so similarity falls
        # off over a couple of seconds.
        self.step = drift_seconds
        self.anchors = rng.standard_normal((int(length / drift_seconds) + 3, FRAME_DIM))

    def feature(self, t: np.ndarray) -> np.ndarray:
        x = np.asarray(t) / self.step
        i = np.floor(x).astype(int)
        f = (x - i)[:, None]
        v = self.anchors[i] * (1 - f) + self.anchors[i + 1] * f
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def fingerprint(parts: list[tuple[Footage, float, float]], noise: float = 0.0, seed: int = 0,
                grid_shift: float = 0.0, speed: float = 1.0, step: float = 1.0,
                informative: np.ndarray | None = None) -> Fingerprint:
    """A video made of footage pieces (footage, start, end) played back-to-back, sampled every
    `step` seconds starting at `grid_shift`; speed > 1 plays the footage faster."""
    rng = np.random.default_rng(seed)
    feats, total = [], 0.0
    for src, a, b in parts:
        dur = (b - a) / speed
        local = np.arange(grid_shift, dur, step)
        feats.append(src.feature(a + local * speed))
        total += dur
    ff = np.concatenate(feats)
    ff = _unit(ff + noise * rng.standard_normal(ff.shape) / np.sqrt(FRAME_DIM))
    n = len(ff)
    vec = _unit(np.resize(ff.mean(0), VECTOR_DIM))
    return Fingerprint(
        vector=vec, frame_features=ff, timestamps=np.arange(n) * step + grid_shift,
        informative=np.ones(n, bool) if informative is None else informative,
        duration=total, model_version="test")


FRAMES_ONLY = replace(MatchSettings(), residual_similarity=False, motion_static=9.0,
                      motion_moving=10.0)
"""Verification as it was before the motion rule: frame by frame, on centred features alone."""


@pytest.fixture(scope="module")
def scene() -> Footage:
    return Footage(seed=1, length=40.0)


def test_identical_fingerprints_score_one(scene: Footage) -> None:
    a = fingerprint([(scene, 0, 20)])
    m = verify(a, a)
    assert m.score == pytest.approx(1.0)
    assert m.kind == NEAR
    assert m.offset == pytest.approx(0.0, abs=0.3)


def test_noisy_copy_on_shifted_grid_matches(scene: Footage) -> None:
    a = fingerprint([(scene, 0, 20)])
    b = fingerprint([(scene, 0, 20)], noise=0.3, seed=5, grid_shift=0.4)
    m = verify(a, b)
    assert m.score >= DEFAULT_THRESHOLD
    assert m.kind == NEAR


def test_trimmed_copy_matches_with_the_right_offset(scene: Footage) -> None:
    full = fingerprint([(scene, 0, 30)])
    trimmed = fingerprint([(scene, 7, 30)], noise=0.2, seed=2, grid_shift=0.5)
    m = verify(full, trimmed)
    assert m.score >= DEFAULT_THRESHOLD
    # trimmed time = full time - 7
    assert m.offset == pytest.approx(-7.0, abs=0.6)
    assert m.segments[0].a_start == pytest.approx(7.0, abs=1.1)


def test_clip_from_a_longer_video_is_partial_with_its_position(scene: Footage) -> None:
    long = fingerprint([(scene, 0, 40)])
    clip = fingerprint([(scene, 12, 20)], noise=0.2, seed=3)
    m = verify(long, clip)
    assert m.score >= DEFAULT_THRESHOLD
    assert m.kind == PARTIAL
    seg = m.segments[0]
    assert seg.a_start == pytest.approx(12.0, abs=1.1)
    assert seg.a_end == pytest.approx(20.0, abs=1.1)
    assert seg.b_start == pytest.approx(0.0, abs=1.1)
    # Symmetric: the clip first gives the same score.
    assert verify(clip, long).score == pytest.approx(m.score, abs=0.05)


def test_sped_up_copy_matches_through_another_slope(scene: Footage) -> None:
    a = fingerprint([(scene, 0, 30)])
    fast = fingerprint([(scene, 0, 30)], speed=1.25, noise=0.2, seed=4)
    m = verify(a, fast)
    assert m.score >= DEFAULT_THRESHOLD
    assert m.slope == pytest.approx(0.8)


def test_different_segments_of_one_footage_do_not_match(scene: Footage) -> None:
    first = fingerprint([(scene, 0, 15)])
    second = fingerprint([(scene, 18, 33)], noise=0.1, seed=6)
    assert verify(first, second).score < DEFAULT_THRESHOLD / 2


def test_different_videos_do_not_match() -> None:
    a = fingerprint([(Footage(10, 20), 0, 20)])
    b = fingerprint([(Footage(11, 20), 0, 20)])
    m = verify(a, b)
    assert m.score < 0.1
    assert m.kind in (NONE, PARTIAL)


def test_non_informative_frames_never_carry_a_match() -> None:
    black = Footage(20, 20)
    # Two different videos that both start with the same 10 "black" frames.
    mask = np.r_[np.zeros(10, bool), np.ones(10, bool)]
    a = fingerprint([(black, 0, 10), (Footage(21, 10), 0, 10)], informative=mask)
    b = fingerprint([(black, 0, 10), (Footage(22, 10), 0, 10)], informative=mask)
    assert verify(a, b).score < 0.1
    # With the leader counted as informative the same pair would look half-duplicate to the
    # frame-by-frame score alone; the motion rule (what changes must agree too) also rejects it.
    a2 = fingerprint([(black, 0, 10), (Footage(21, 10), 0, 10)])
    b2 = fingerprint([(black, 0, 10), (Footage(22, 10), 0, 10)])
    frames_only = verify(a2, b2, FRAMES_ONLY).score
    assert frames_only > 0.4
    assert verify(a2, b2).score <= 0.5 * frames_only + 1e-6  # MatchSettings.motion_penalty


def test_all_frames_uninformative_is_no_match(scene: Footage) -> None:
    a = fingerprint([(scene, 0, 10)], informative=np.zeros(10, bool))
    assert verify(a, a).kind == NONE
    assert verify(a, a).score == 0.0


def test_two_frames_are_too_little_evidence_for_a_full_score(scene: Footage) -> None:
    a = fingerprint([(scene, 0, 2)])
    assert verify(a, a).score == pytest.approx(2 / MatchSettings().min_evidence_floor)


def test_a_short_video_needs_all_its_frames_a_long_one_more(scene: Footage) -> None:
    """A 4 s clip matched whole is full evidence; 4 s in common between two long videos is not."""
    short = fingerprint([(scene, 0, 4)])
    assert verify(short, short).score == pytest.approx(1.0)
    long_a = fingerprint([(scene, 0, 4), (Footage(77, 30), 0, 30)], seed=1)
    long_b = fingerprint([(scene, 0, 4), (Footage(78, 30), 0, 30)], seed=2)
    assert verify(long_a, long_b).score < 4 / MatchSettings().min_evidence_frames + 1e-9


def test_a_short_overlap_of_two_videos_ends_is_not_enough(scene: Footage) -> None:
    """8 s shared between the end of one long video and the start of another (neither inside the
    other) needs partial_evidence_frames; the same 8 s as a clip inside a long video is a match."""
    s = MatchSettings()
    tail = fingerprint([(Footage(30, 20), 0, 20), (scene, 0, 8)], seed=1)
    head = fingerprint([(scene, 0, 8), (Footage(31, 20), 0, 20)], seed=2)
    m = verify(tail, head)
    assert m.offset == pytest.approx(-20.0, abs=0.6)
    assert m.score == pytest.approx(8 / s.partial_evidence_frames, abs=0.05)
    assert m.score < DEFAULT_THRESHOLD
    clip = fingerprint([(scene, 0, 8)], noise=0.2, seed=3)
    assert verify(tail, clip).score >= DEFAULT_THRESHOLD
    # A long enough overlap is believed even when neither video is inside the other.
    long_tail = fingerprint([(Footage(30, 20), 0, 20), (scene, 0, 14)], seed=1)
    long_head = fingerprint([(scene, 0, 14), (Footage(31, 20), 0, 20)], seed=2)
    assert verify(long_tail, long_head).score >= DEFAULT_THRESHOLD


def test_frames_landing_on_a_leader_count_neither_way(scene: Footage) -> None:
    """A copy with a 10 s black leader in front of the last 10 s: the original's first 10 s land
    on the leader, where there is no picture to compare with, so the rest decides."""
    original = fingerprint([(scene, 0, 20)])
    leader = np.r_[np.zeros(10, bool), np.ones(10, bool)]
    copy = fingerprint([(Footage(40, 10), 0, 10), (scene, 10, 20)], noise=0.2, seed=5,
                       informative=leader)
    m = verify(original, copy)
    assert m.offset == pytest.approx(0.0, abs=0.6)
    assert m.score > 0.9


def test_different_model_versions_refuse_to_compare(scene: Footage) -> None:
    a = fingerprint([(scene, 0, 10)])
    b = Fingerprint(a.vector, a.frame_features, a.timestamps, a.informative, a.duration, "other")
    with pytest.raises(ValueError, match="model versions"):
        verify(a, b)


def test_shared_intro_is_down_weighted_across_many_videos() -> None:
    intro = Footage(30, 8)
    videos = [fingerprint([(intro, 0, 8), (Footage(31 + i, 2), 0, 2)], noise=0.05, seed=i)
              for i in range(12)]
    # Frame by frame (the motion rule alone already rejects most of this pair, see below).
    plain = verify(videos[0], videos[1], FRAMES_ONLY).score
    cands = find_candidates(videos)
    w = cands.weights
    # The intro frames are shared with the 11 other videos; the rest with none.
    assert w[0][:8].max() < 0.5 and w[0][8:].min() == 1.0
    weighted = verify(videos[0], videos[1], FRAMES_ONLY, w[0], w[1]).score
    assert plain >= DEFAULT_THRESHOLD > weighted
    assert verify(videos[0], videos[1], a_weights=w[0], b_weights=w[1]).score < weighted
    assert all(m.score < DEFAULT_THRESHOLD for _, _, m in match_all(videos))


def test_recurring_weights_leave_small_groups_alone() -> None:
    w = recurring_weights(np.array([0, 1, 3, 6, 30]))
    assert list(w[:3]) == [1.0, 1.0, 1.0]
    assert w[3] == pytest.approx(0.5) and w[4] == pytest.approx(0.1)


def test_match_all_finds_copies_and_clips_but_not_other_segments(scene: Footage) -> None:
    other = Footage(40, 30)
    fps = [
        fingerprint([(scene, 0, 30)]),  # 0 original
        fingerprint([(scene, 3, 30)], noise=0.2, seed=1, grid_shift=0.3),  # 1 trimmed copy
        fingerprint([(scene, 10, 16)], noise=0.2, seed=2),  # 2 clip
        fingerprint([(other, 0, 30)]),  # 3 unrelated
        fingerprint([(other, 0, 30)], noise=0.25, seed=3),  # 4 copy of 3
        fingerprint([(scene, 32, 40)]),  # 5 other moment of the scene (outside 0..30)
    ]
    found = {(i, j) for i, j, m in match_all(fps) if m.score >= DEFAULT_THRESHOLD}
    assert found == {(0, 1), (0, 2), (1, 2), (3, 4)}


def test_grouping_is_connected_components() -> None:
    pairs = [Pair("a", "b", 0.9, NEAR), Pair("b", "c", 0.95, NEAR), Pair("a", "c", 0.8, NEAR),
             Pair("x", "y", 0.9, NEAR)]
    assert group_components(pairs) == [["a", "b", "c"], ["x", "y"]]


def test_grouping_does_not_chain_unrelated_videos_through_a_path() -> None:
    # a-b-c-d-e: a chain in which only neighbours match. A centre takes its direct matches; the
    # rest form their own groups, so the two ends never share one.
    pairs = [Pair("a", "b", 0.9, NEAR), Pair("b", "c", 0.9, NEAR), Pair("c", "d", 0.95, NEAR),
             Pair("d", "e", 0.9, NEAR)]
    groups = group_components(pairs)
    assert sorted(m for g in groups for m in g) == ["a", "b", "c", "d", "e"]
    assert all(len(g) <= 3 for g in groups)
    # Every group member matches that group's centre directly.
    linked = {frozenset((p.a, p.b)) for p in pairs}
    for g in groups:
        assert any(all(frozenset((c, m)) in linked for m in g if m != c) for c in g)


def test_long_video_groups_its_clips_even_if_they_do_not_match_each_other() -> None:
    pairs = [Pair("long", "clip1", 0.9, PARTIAL), Pair("long", "clip2", 0.9, PARTIAL)]
    assert group_components(pairs) == [["clip1", "clip2", "long"]]


def test_a_component_shared_by_all_frames_does_not_make_a_match(scene: Footage) -> None:
    """Real frame features share a large common direction (cosine ~0.98 between any two videos);
    verification measures similarity after removing the background."""
    common = _unit(np.random.default_rng(99).standard_normal(FRAME_DIM))

    def with_common(fp: Fingerprint) -> Fingerprint:
        ff = _unit(4.0 * common + fp.frame_features)
        return Fingerprint(fp.vector, ff, fp.timestamps, fp.informative, fp.duration, "test")

    a = with_common(fingerprint([(scene, 0, 15)]))
    copy = with_common(fingerprint([(scene, 0, 15)], noise=0.2, seed=3, grid_shift=0.3))
    other = with_common(fingerprint([(Footage(50, 15), 0, 15)]))
    assert float(np.mean(a.frame_features @ other.frame_features.T)) > 0.9
    assert verify(a, other).score < 0.1
    assert verify(a, copy).score >= DEFAULT_THRESHOLD
    center = frame_center([a, copy, other])
    assert verify(a, other, center=center).score < 0.1
    assert verify(a, copy, center=center).score >= DEFAULT_THRESHOLD


def test_large_collections_switch_to_an_approximate_frame_index(
        scene: Footage, monkeypatch: pytest.MonkeyPatch) -> None:
    import vfpd.candidates as c

    fps = [fingerprint([(scene, 0, 20)]), fingerprint([(scene, 2, 20)], noise=0.2, seed=1),
           fingerprint([(Footage(70, 20), 0, 20)])]
    exact = c.find_candidates(fps).pairs
    monkeypatch.setattr(c, "FRAME_EXACT_MAX", 10)
    assert isinstance(c._frame_index(FRAME_DIM, 11), c.faiss.IndexHNSWFlat)
    assert (0, 1) in c.find_candidates(fps).pairs and (0, 1) in exact


def test_segments_never_end_after_the_video(scene: Footage) -> None:
    a = fingerprint([(scene, 0, 20)])
    b = fingerprint([(scene, 0, 20)], noise=0.2, seed=8)
    for seg in verify(a, b).segments:
        assert 0.0 <= seg.a_start < seg.a_end <= a.duration
        assert 0.0 <= seg.b_start < seg.b_end <= b.duration


class FixedCamera(Footage):
    """A fixed camera: a still background that dominates every frame feature, plus what moves
    in front of it (a path through feature space, `motion` times smaller)."""

    def __init__(self, seed: int, length: float, motion: float = 0.4) -> None:
        super().__init__(seed, length)
        self.background = _unit(np.random.default_rng(seed + 1000).standard_normal(FRAME_DIM))
        self.motion = motion

    def feature(self, t: np.ndarray) -> np.ndarray:
        return _unit(self.background + self.motion * super().feature(t))


def _library(camera: FixedCamera) -> list[Fingerprint]:
    """Other clips of the camera and unrelated videos: the collection a centre comes from."""
    return ([fingerprint([(camera, s, s + 15)], noise=0.05, seed=s) for s in (45, 60)]
            + [fingerprint([(Footage(200 + k, 15), 0, 15)]) for k in range(4)])


def test_other_moments_of_a_fixed_camera_do_not_match() -> None:
    """Issue 12: the background makes aligned frames of any two clips of one camera alike; only
    what moves tells them apart."""
    cam = FixedCamera(seed=5, length=80)
    a = fingerprint([(cam, 0, 15)], noise=0.05, seed=1)
    b = fingerprint([(cam, 20, 35)], noise=0.05, seed=2)
    center = frame_center([a, b, *_library(cam)])
    assert np.mean(np.sum(a.frame_features * b.frame_features, axis=1)) > 0.85
    assert verify(a, b, center=center).score < 0.3
    assert verify(a, b).score < 0.3
    copy = fingerprint([(cam, 0, 15)], noise=0.08, seed=3, grid_shift=0.4)
    assert verify(a, copy, center=center).score >= DEFAULT_THRESHOLD
    assert verify(a, copy).score >= DEFAULT_THRESHOLD


def test_an_overlay_on_a_moving_copy_is_removed_with_the_static_component() -> None:
    """A box drawn over a copy moves every frame feature alike: the centred frames differ, what
    changes between them does not (the residual similarity, off by default: MatchSettings)."""
    cam = FixedCamera(seed=6, length=40, motion=0.6)
    a = fingerprint([(cam, 0, 15)], noise=0.03, seed=1)
    box = _unit(np.random.default_rng(99).standard_normal(FRAME_DIM))
    boxed = fingerprint([(cam, 0, 15)], noise=0.03, seed=2)
    boxed = Fingerprint(boxed.vector, _unit(boxed.frame_features + 0.8 * box), boxed.timestamps,
                        boxed.informative, boxed.duration, boxed.model_version)
    assert verify(a, boxed, FRAMES_ONLY).score < DEFAULT_THRESHOLD
    assert verify(a, boxed, replace(MatchSettings(), residual_similarity=True)).score >= \
        DEFAULT_THRESHOLD


def test_a_still_shot_matches_its_copy_and_other_clips_of_it() -> None:
    """Nothing moves: the picture is all there is, and no one can tell two clips of a still shot
    apart; the motion rule steps aside."""
    still = FixedCamera(seed=7, length=60, motion=0.0)
    a = fingerprint([(still, 0, 15)], noise=0.03, seed=1)
    copy = fingerprint([(still, 0, 15)], noise=0.03, seed=2)
    later = fingerprint([(still, 30, 45)], noise=0.03, seed=3)
    # The collection's background: a still shot's frames are its whole picture, not background.
    center = frame_center([a, *(fingerprint([(Footage(300 + k, 15), 0, 15)]) for k in range(6))])
    assert verify(a, copy, center=center).score >= DEFAULT_THRESHOLD
    assert verify(a, later, center=center).score >= DEFAULT_THRESHOLD
