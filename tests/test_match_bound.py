"""verify's early exit (matching.score_bound): a pair that reaches `at_least` is never cut short,
whatever the footage, weights, background and settings; pairs of different footage are."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_matching import FixedCamera, Footage, fingerprint
from vfpd.matching import DEFAULT_THRESHOLD, NO_MATCH, MatchSettings, frame_center, verify

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
    wb = draw(st.one_of(st.none(), st.just(np.linspace(1.0, 0.25, len(b.timestamps)))))
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
