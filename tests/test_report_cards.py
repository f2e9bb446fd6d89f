"""The review page's cards as data: grouping into tiers, moments mapped through segments, the
fields compared, the suggested keeper (pure functions; the page itself is in test_report)."""

from __future__ import annotations

import pytest

from vfpd.grouping import Pair
from vfpd.matching import EXACT, NEAR, PARTIAL, Segment
from vfpd.scan import split_maybe
from vfpd.report import (
    MAYBE_BAND,
    MemberFacts,
    ReviewGroup,
    card,
    comparison,
    review_groups,
    segment_label,
    strips,
)

LONG = MemberFacts("/v/long.mp4", "h1", 9_000_000, 100.0, 60.0, 1920, 1080, "h264", 25.0)
COPY = MemberFacts("/v/copy.mp4", "h1", 9_000_000, 200.0, 60.0, 1920, 1080, "h264", 25.0)
SMALL = MemberFacts("/v/small.mp4", "h2", 2_000_000, 300.0, 60.0, 640, 360, "h264", 25.0)
CLIP = MemberFacts("/v/clip.mp4", "h3", 1_000_000, 50.0, 29.0, 1280, 720, "vp9", 30.0)


def test_maybe_pairs_are_the_band_below_the_threshold_one_card_per_file_and_group() -> None:
    sure = Pair(LONG.path, COPY.path, 1.0, EXACT)
    near_miss = [Pair(LONG.path, CLIP.path, 0.7, PARTIAL), Pair(COPY.path, CLIP.path, 0.72,
                                                                   PARTIAL)]
    too_low = Pair(SMALL.path, CLIP.path, 0.75 - MAYBE_BAND - 0.01, NEAR)
    kept, maybe = split_maybe([sure, *near_miss], 0.75)  # (the scan keeps the band only)
    assert kept == [sure] and maybe == near_miss
    assert too_low.score < 0.75 - MAYBE_BAND
    facts = {m.path: m for m in (LONG, COPY, SMALL, CLIP)}
    cards = review_groups([[COPY.path, LONG.path]], kept, maybe, facts)
    assert [c.tier for c in cards] == ["duplicate", "maybe"]
    assert cards[0].pairs == (sure,) and cards[1].pairs == (near_miss[1],)


def test_a_clips_filmstrip_shows_the_same_moments_as_its_source() -> None:
    to_clip = Pair(LONG.path, CLIP.path, 0.95, PARTIAL, (Segment(12.0, 41.0, 0.0, 29.0),))
    g = ReviewGroup("duplicate", (CLIP, LONG), (to_clip,))
    moments = strips(g, count=4)
    # The long video is the anchor; its strip covers what the clip shares with it.
    assert moments[LONG.path] == pytest.approx([15.625, 22.875, 30.125, 37.375])
    assert moments[CLIP.path] == pytest.approx([t - 12.0 for t in moments[LONG.path]])
    names = {LONG.path: "A", CLIP.path: "B"}
    assert segment_label(to_clip, LONG.path, names) == "A 00:12-00:41 = B 00:00-00:29"
    assert segment_label(to_clip, CLIP.path, names) == "B 00:00-00:29 = A 00:12-00:41"
    # A near copy with the clip in one group: the clip has no frame for moments outside it.
    near = Pair(LONG.path, SMALL.path, 0.9, NEAR, (Segment(0.0, 60.0, 0.0, 60.0),))
    g = ReviewGroup("duplicate", (CLIP, LONG, SMALL), (to_clip, near))
    moments = strips(g, count=4)
    assert moments[SMALL.path] == pytest.approx(moments[LONG.path])
    assert moments[CLIP.path][0] is None and moments[CLIP.path][-1] is None


def test_card_marks_differences_best_values_and_the_suggested_copy() -> None:
    differ, best = comparison([LONG, SMALL, CLIP])
    assert {"resolution", "bit_rate", "fps", "duration", "size", "codec", "date"} == set(differ)
    assert best["resolution"] == [0] and best["fps"] == [2] and best["date"] == [2]
    assert "codec" not in best
    _, best = comparison([LONG, COPY])
    assert "resolution" not in best and best["date"] == [0]
    pairs = (Pair(LONG.path, COPY.path, 1.0, EXACT),
             Pair(LONG.path, SMALL.path, 0.9, NEAR, (Segment(0.0, 60.0, 0.0, 60.0),)))
    c = card(3, ReviewGroup("duplicate", (SMALL, COPY, LONG), pairs))
    assert c["id"] == "g3" and c["kind"] == NEAR and c["score"] == 0.9
    members = c["members"]
    assert [m["path"] for m in members][0] == LONG.path  # the anchor is named A
    assert members[c["keep"]["index"]]["path"] == COPY.path  # same quality: the first path
    assert c["keep"]["reason"] == "best quality, tied with 1 other copy; the first path"
    notes = {m["path"]: m["note"] for m in members}
    assert notes[COPY.path] == "byte-identical to A"
    assert notes[SMALL.path].startswith("A 00:00-01:00 = ")
