"""Matched segments name the same footage on both sides: the issue's "5 s trim starting at 2 s of
a 10 s clip", reported as `1.96-8.0 <-> 0.145-5.0` before, and a clip inside a longer video."""

from __future__ import annotations

import pytest
from test_matching import Footage, fingerprint

from vfpd.matching import PARTIAL, verify

TOLERANCE = 0.6
"""Seconds: about half a sampling step plus the offset estimate's error; the old bug put the end
a whole step (1 s) past the clip."""


@pytest.mark.parametrize("grid_shift", [0.0, 0.5])
def test_a_five_second_cut_at_two_seconds_maps_both_ways(grid_shift: float) -> None:
    scene = Footage(seed=4, length=12.0)
    original = fingerprint([(scene, 0, 10)])
    cut = fingerprint([(scene, 2, 7)], noise=0.2, seed=6, grid_shift=grid_shift)
    for a, b, expect in ((original, cut, (2.0, 7.0, 0.0, 5.0)),
                         (cut, original, (0.0, 5.0, 2.0, 7.0))):
        m = verify(a, b)
        assert m.kind == PARTIAL
        [seg] = m.segments
        got = (seg.a_start, seg.a_end, seg.b_start, seg.b_end)
        assert got == pytest.approx(expect, abs=TOLERANCE), got
        # Both sides are the same stretch of footage.
        assert seg.b_end - seg.b_start == pytest.approx(
            m.slope * (seg.a_end - seg.a_start), abs=1e-6)


def test_a_clip_inside_a_long_video_ends_where_the_clip_ends() -> None:
    scene = Footage(seed=9, length=70.0)
    long = fingerprint([(scene, 0, 60)])
    clip = fingerprint([(scene, 31, 43)], noise=0.2, seed=2, grid_shift=0.3)
    [seg] = verify(long, clip).segments
    assert (seg.a_start, seg.a_end) == pytest.approx((31.0, 43.0), abs=TOLERANCE)
    assert (seg.b_start, seg.b_end) == pytest.approx((0.0, 12.0), abs=TOLERANCE)
