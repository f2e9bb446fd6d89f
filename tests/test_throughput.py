"""The back-log's time to drain: a running estimate of seconds per file."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfpd.service.throughput import SMOOTHING, Throughput


def test_unknown_until_a_round_then_follows_the_pace() -> None:
    t = Throughput()
    assert t.eta(5) is None and t.eta(0) == 0.0
    t.record(4, 8.0)
    assert t.eta(10) == pytest.approx(20.0)
    t.record(2, 10.0)  # slower files now: the estimate moves toward them, not all the way
    assert t.per_file == pytest.approx(SMOOTHING * 5.0 + (1 - SMOOTHING) * 2.0)
    t.record(0, 3.0)  # a round that took nothing says nothing
    assert t.per_file == pytest.approx(SMOOTHING * 5.0 + (1 - SMOOTHING) * 2.0)


@given(st.lists(st.tuples(st.integers(1, 50), st.floats(0, 1e4)), min_size=1))
def test_estimate_stays_within_the_rounds_seen(rounds: list[tuple[int, float]]) -> None:
    t = Throughput()
    for files, seconds in rounds:
        t.record(files, seconds)
    paces = [s / f for f, s in rounds]
    assert min(paces) - 1e-9 <= (t.per_file or 0.0) <= max(paces) + 1e-9
