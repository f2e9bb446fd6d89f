"""verify's early exit (a pair whose chosen alignment's pictures score below `at_least`) and the
library's screening (matching._score_bounds, one product over all candidates): a pair that
reaches `at_least` is never cut short, whatever the footage, weights, background and settings;
pairs of different footage are."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_matching import FixedCamera, Footage, fingerprint
from vfpd.library import Library, LibrarySettings
from vfpd.matching import (
    BOUND_SLACK,
    DEFAULT_THRESHOLD,
    NO_MATCH,
    MatchSettings,
    frame_center,
    prepare,
    stack,
    verify,
)

SOURCES = [Footage(seed=11, length=60), Footage(seed=12, length=60),
           FixedCamera(seed=13, length=60), FixedCamera(seed=14, length=60, motion=0.0)]


@st.composite
def pairs(draw: st.DrawFn):
    """Two videos cut from the sources above: copies, trims, clips, speed changes, other moments
    of one camera, other footage; with noise, shifted grids, dropped frames and recurring-content
    weights."""
    def video(seed: int):
        src = draw(st.sampled_from(SOURCES))
        start = draw(st.floats(0, 40))
        length = draw(st.floats(1.5, 18))
        fp = fingerprint([(src, start, start + length)],
                         noise=draw(st.floats(0, 0.4)), seed=seed,
                         grid_shift=draw(st.floats(0, 0.9)),
                         speed=draw(st.sampled_from([1.0, 1.0, 0.8, 1.25])),
                         step=draw(st.sampled_from([1.0, 1.0, 0.5, 2.0])))
        n = len(fp.timestamps)
        dropped = draw(st.lists(st.integers(0, n - 1), max_size=n // 2))
        n_info = np.ones(n, bool)
        n_info[dropped] = False
        return replace(fp, informative=n_info)

    a, b = video(1), video(2)
    wa = draw(st.one_of(st.none(), st.just(np.linspace(0.2, 1.0, len(a.timestamps)))))
    # b's weights are a's carried over (Library._transferred): each one of a's, or 1.
    wb = None if wa is None else draw(st.sampled_from([
        np.linspace(1.0, 0.2, len(b.timestamps)),
        np.where(np.arange(len(b.timestamps)) % 3 == 0, 1.0, 0.2)]))
    match = replace(MatchSettings(), residual_similarity=draw(st.booleans()),
                    motion_confirms=draw(st.booleans()),
                    min_evidence_frames=draw(st.sampled_from([3, 6, 10])))
    own_center = draw(st.booleans())
    return a, b, wa, wb, match, own_center


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs())
def test_a_pair_reaching_at_least_is_verified_in_full(pair) -> None:
    a, b, wa, wb, match, own_center = pair
    center = None if own_center else frame_center([a, b, fingerprint([(SOURCES[0], 0, 20)])])
    full = verify(a, b, match, wa, wb, center)
    assert verify(a, b, match, wa, wb, center, at_least=full.score) == full
    screened = stack([b], center).bounds(prepare(a, wa, center), 1, match, wa)[0]
    assert screened >= full.score - BOUND_SLACK
    cut = verify(a, b, match, wa, wb, center, at_least=min(1.0, full.score + 0.05))
    assert cut in (full, NO_MATCH)


def test_different_footage_is_cut_short_and_copies_are_not() -> None:
    scene, other = SOURCES[0], SOURCES[1]
    a = fingerprint([(scene, 0, 15)], noise=0.1, seed=1)
    copy = fingerprint([(scene, 2, 15)], noise=0.2, seed=2, grid_shift=0.5)
    # Other footage with two seconds of the scene spliced in: too little evidence to be a copy.
    splice = fingerprint([(other, 0, 6), (scene, 3, 5), (other, 8, 15)], noise=0.1, seed=3)
    others = [fingerprint([(other, s, s + 15)], noise=0.1, seed=4) for s in (20, 40)]
    center = frame_center([a, copy, splice, *others])
    assert verify(a, copy, center=center, at_least=DEFAULT_THRESHOLD).score >= DEFAULT_THRESHOLD
    assert 0 < verify(a, splice, center=center).score < DEFAULT_THRESHOLD
    for b in (splice, *others):
        assert verify(a, b, center=center, at_least=DEFAULT_THRESHOLD) is NO_MATCH


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.sampled_from([0.3, 0.5, DEFAULT_THRESHOLD, 0.9]),
       st.booleans())
def test_a_library_screens_its_candidates_without_losing_one(seed: int, at_least: float,
                                                              intro_only: bool) -> None:
    """Library.verified(at_least) bounds all candidates with one product (matching.Stacked):
    every candidate that reaches at_least gets the very match it gets verified in full. The
    library holds copies, clips, other moments of one camera, other footage, and videos that
    share an intro (recurring content, weighed down); the video asked about is sometimes that
    intro alone."""
    rng = np.random.default_rng(seed)
    lib = Library.in_memory("test", LibrarySettings(at_least), None)
    intro = Footage(seed=21, length=10)
    for k in range(24):
        src = SOURCES[int(rng.integers(len(SOURCES)))]
        start = float(rng.uniform(0, 30))
        length = float(rng.uniform(2, 20))
        parts = [(src, start, start + length)]
        if k % 2:
            parts.insert(0, (intro, 0, 6))
        fp = fingerprint(parts, noise=float(rng.uniform(0, 0.3)), seed=k,
                         grid_shift=float(rng.uniform(0, 0.9)))
        lib.add(k, f"{k:064x}", fp)
    new = (fingerprint([(intro, 0, 6)], noise=0.1, seed=99) if intro_only else
           fingerprint([(SOURCES[int(rng.integers(len(SOURCES)))], 5, 20)], noise=0.1, seed=99))
    full = {v.hash: v for v in lib.verified(new)}
    screened = {v.hash: v for v in lib.verified(new, at_least=at_least)}
    assert full.keys() == screened.keys()
    for h, v in full.items():
        if v.match.score >= at_least:
            assert screened[h] == v
        else:
            assert screened[h].match in (v.match, NO_MATCH)
