"""matching.verify_many scores a video's candidates in batches: each candidate gets the very match
it gets verified alone, whatever else is in its batch and however the batches are cut."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_match_bound import SOURCES
from test_matching import Footage, fingerprint

from vfpd import matching
from vfpd.fingerprint import Fingerprint
from vfpd.matching import (
    DEFAULT_THRESHOLD,
    NO_MATCH,
    MatchSettings,
    frame_center,
    prepare,
    stack,
    verify,
    verify_many,
)


@st.composite
def videos(draw: st.DrawFn, seed: int) -> Fingerprint:
    """A cut of one of the sources, or two back to back: from one frame to a few minutes, on
    several sampling grids, some frames not informative (none, at times)."""
    def piece() -> tuple[Footage, float, float]:
        start = draw(st.floats(0, 50))
        return draw(st.sampled_from(SOURCES)), start, start + draw(st.floats(1.5, 9))

    parts = [piece() for _ in range(draw(st.integers(1, 2)))]
    if draw(st.integers(0, 9)) == 0:  # a longer one: 75 s of footage
        parts = [(Footage(seed=31, length=80), 0.0, 75.0)]
    fp = fingerprint(parts, noise=draw(st.floats(0, 0.3)), seed=seed,
                     grid_shift=draw(st.floats(0, 0.9)),
                     speed=draw(st.sampled_from([1.0, 1.0, 0.8, 1.25])),
                     step=draw(st.sampled_from([1.0, 1.0, 0.5])))
    n = len(fp.timestamps)
    informative = np.ones(n, bool)
    informative[draw(st.lists(st.integers(0, n - 1), max_size=n))] = False
    return replace(fp, informative=informative)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_each_candidate_gets_the_match_it_gets_alone(data: st.DataObject) -> None:
    a = data.draw(videos(0))
    bs = [data.draw(videos(k)) for k in range(1, data.draw(st.integers(1, 14)))]
    match = replace(MatchSettings(), residual_similarity=data.draw(st.booleans()),
                    motion_confirms=data.draw(st.booleans()))
    at_least = data.draw(st.sampled_from([0.0, 0.5, DEFAULT_THRESHOLD]))
    center = frame_center([a, *bs])
    weights = data.draw(st.one_of(st.none(), st.just(np.linspace(0.2, 1.0,
                                                                 len(a.timestamps)))))
    pa = prepare(a, weights, center)
    pbs = [prepare(b, None, center) for b in bs]
    alone = [verify(a, b, match, weights, None, center, at_least) for b in bs]
    assert verify_many(pa, pbs, match, at_least) == alone
    with pytest.MonkeyPatch.context() as mp:  # every candidate in a batch of its own
        mp.setattr(matching, "BATCH_CELLS", 1)
        assert verify_many(pa, pbs, match, at_least) == alone
    assert verify_many(pa, pbs[::-1], match, at_least) == alone[::-1]


def test_a_batch_finds_the_copies_among_other_footage() -> None:
    """A clip's copies, a trim and a speed change among other footage and other moments of a
    fixed camera, all in one call: the copies reach the threshold, the others do not."""
    scene = SOURCES[0]
    a = fingerprint([(scene, 10, 25)], noise=0.05, seed=1)
    copies = [fingerprint([(scene, 10, 25)], noise=0.15, seed=2, grid_shift=0.5),
              fingerprint([(scene, 12, 25)], noise=0.1, seed=3),
              fingerprint([(scene, 10, 25)], noise=0.1, seed=4, speed=1.25)]
    others = [fingerprint([(SOURCES[1], 0, 15)], noise=0.1, seed=5),
              fingerprint([(SOURCES[2], 0, 15)], noise=0.1, seed=6),
              fingerprint([(SOURCES[2], 30, 45)], noise=0.1, seed=7),
              fingerprint([(scene, 40, 41)], seed=8)]
    center = frame_center([a, *copies, *others])
    found = verify_many(prepare(a, None, center),
                        [prepare(b, None, center) for b in [*copies, *others]],
                        MatchSettings(), DEFAULT_THRESHOLD)
    assert [m.score >= DEFAULT_THRESHOLD for m in found] == [True] * 3 + [False] * 4
    assert found[2].slope == pytest.approx(0.8)  # played 1.25x as fast: b = 0.8 a + offset
    assert found[-1] is NO_MATCH


def test_fingerprints_of_another_model_are_refused_in_a_batch() -> None:
    a = fingerprint([(SOURCES[0], 0, 10)])
    b = replace(fingerprint([(SOURCES[0], 0, 10)]), model_version="other")
    with pytest.raises(ValueError, match="different model versions"):
        verify_many(prepare(a, None, None), [prepare(a, None, None), prepare(b, None, None)])


def test_a_stacked_part_is_what_prepare_computes() -> None:
    """The library prepares its candidates from the screening's stack (Stacked.part): the very
    arrays prepare() computes on its own, for videos with several, one and no informative
    frames."""
    fps = [fingerprint([(SOURCES[0], 0, 12)], noise=0.1, seed=1),
           fingerprint([(SOURCES[1], 0, 1.5)], seed=2),
           replace(fingerprint([(SOURCES[2], 0, 5)], seed=3), informative=np.zeros(5, bool)),
           fingerprint([(SOURCES[3], 3, 9)], noise=0.2, seed=4)]
    center = frame_center(fps)
    stacked = stack(fps, center)
    for i, fp in enumerate(fps):
        own, given = prepare(fp, None, center), prepare(fp, None, center, stacked.part(i))
        assert np.array_equal(own.features, given.features)
        assert np.array_equal(own.adjacent, given.adjacent)
        assert own.features.shape[0] == int(fp.informative.sum())
