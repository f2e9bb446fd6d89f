"""Grouping with cannot-links (`vfpctl ignore A B`): a person's "not duplicates" is never
overruled by scores that link the two files through others."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfpd.grouping import Pair, group_components, group_dbscan
from vfpd.matching import NEAR

NAMES = [f"f{i}" for i in range(8)]

pair_lists = st.lists(
    st.builds(lambda a, b, s: Pair(a, b, s, NEAR), st.sampled_from(NAMES), st.sampled_from(NAMES),
              st.floats(0.75, 1.0)).filter(lambda p: p.a != p.b),
    max_size=24)
cannot_links = st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(NAMES)), max_size=6)


def _violations(groups: list[list[str]], cannot: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(a, b) for a, b in cannot if a != b and any(a in g and b in g for g in groups)]


def _star_shaped(groups: list[list[str]], pairs: list[Pair]) -> bool:
    linked = {frozenset((p.a, p.b)) for p in pairs}
    return all(any(all(frozenset((c, m)) in linked for m in g if m != c) for c in g)
               for g in groups)


def test_an_ignored_pair_linked_through_a_third_file_is_split() -> None:
    # b is a copy of both a and c (say a trimmed version); a and c were marked "not duplicates".
    pairs = [Pair("a", "b", 0.95, NEAR), Pair("b", "c", 0.9, NEAR), Pair("a", "c", 0.8, NEAR)]
    assert group_components(pairs) == [["a", "b", "c"]]
    # The centre b keeps its stronger link (a); c has nothing left to join.
    assert group_components(pairs, [("c", "a")]) == [["a", "b"]]


def test_an_ignored_pair_that_matches_directly_is_not_grouped() -> None:
    assert group_components([Pair("a", "b", 1.0, NEAR)], [("a", "b")]) == []


@settings(max_examples=300, deadline=None)
@given(pair_lists, cannot_links)
def test_no_group_ever_holds_a_cannot_linked_pair(pairs: list[Pair],
                                                  cannot: list[tuple[str, str]]) -> None:
    groups = group_components(pairs, cannot)
    assert _violations(groups, cannot) == []
    assert _star_shaped(groups, pairs)
    assert all(len(g) >= 2 for g in groups)
    members = [m for g in groups for m in g]
    assert len(members) == len(set(members))  # one group per file at most


@settings(max_examples=300, deadline=None)
@given(pair_lists, cannot_links)
def test_cannot_links_the_grouping_already_honours_change_nothing(
        pairs: list[Pair], cannot: list[tuple[str, str]]) -> None:
    plain = group_components(pairs)
    assert group_components(pairs, []) == plain
    # Cannot-links between files that are in no group together, and that have no pair of their
    # own, leave every group as it was.
    linked = {frozenset((p.a, p.b)) for p in pairs}
    harmless = [(a, b) for a, b in cannot
                if frozenset((a, b)) not in linked and not _violations(plain, [(a, b)])]
    assert group_components(pairs, harmless) == plain


@settings(max_examples=60, deadline=None)
@given(pair_lists, cannot_links)
def test_dbscan_honours_cannot_links_too(pairs: list[Pair],
                                         cannot: list[tuple[str, str]]) -> None:
    pytest.importorskip("sklearn")
    groups = group_dbscan(pairs, 0.75, cannot)
    assert _violations(groups, cannot) == []
    assert group_dbscan(pairs, 0.75, []) == group_dbscan(pairs, 0.75)
