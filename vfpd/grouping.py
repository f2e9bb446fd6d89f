"""Grouping confirmed pairs of duplicates into groups: connected components guarded against
chaining, or DBSCAN; a person's cannot-links win over any score."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vfpd.matching import Segment


@dataclass(frozen=True)
class Pair:
    """A confirmed pair of duplicate files, as reported."""

    a: str
    b: str
    score: float
    kind: str
    segments: tuple[Segment, ...] = ()


def _components(nodes: set[str], adj: dict[str, dict[str, float]]) -> list[set[str]]:
    seen: set[str] = set()
    out = []
    for start in sorted(nodes):
        if start in seen:
            continue
        comp, stack = {start}, [start]
        while stack:
            for nb in adj[stack.pop()]:
                if nb in nodes and nb not in comp:
                    comp.add(nb)
                    stack.append(nb)
        seen |= comp
        out.append(comp)
    return out


CannotLink = Iterable[tuple[str, str]]
"""Pairs of files a person marked as not duplicates (`vfpctl ignore A B`)."""


def _cannot_link_map(cannot_link: CannotLink) -> dict[str, set[str]]:
    apart: dict[str, set[str]] = defaultdict(set)
    for a, b in cannot_link:
        if a != b:
            apart[a].add(b)
            apart[b].add(a)
    return apart


def group_components(pairs: Sequence[Pair], cannot_link: CannotLink = ()) -> list[list[str]]:
    """Connected components of the pairs, guarded against chaining: every member of a group has a
    confirmed pair with the group's centre (its best-connected member). Members of a component
    that do not are grouped again among themselves, the same way.

    Cannot-links (a person's "not duplicates") win over any score, whatever else links the two
    files: their own pair is dropped, and the centre takes its neighbours strongest link first,
    passing over one that is cannot-linked to a member already taken; it is grouped again with
    the rest. Without cannot-links the result is the same as before they existed."""
    apart = _cannot_link_map(cannot_link)
    adj: dict[str, dict[str, float]] = defaultdict(dict)
    for p in pairs:
        if p.b in apart.get(p.a, ()):
            continue
        adj[p.a][p.b] = max(p.score, adj[p.a].get(p.b, 0.0))
        adj[p.b][p.a] = max(p.score, adj[p.b].get(p.a, 0.0))
    groups: list[list[str]] = []
    pending = _components(set(adj), adj)
    while pending:
        comp = pending.pop()
        if len(comp) < 2:
            continue

        def centrality(x: str, comp: set[str] = comp) -> tuple[int, float, str]:
            links = [s for y, s in adj[x].items() if y in comp]
            return (len(links), sum(links), x)

        centre = max(comp, key=centrality)
        members = {centre}
        for y in sorted((y for y in adj[centre] if y in comp), key=lambda y: (-adj[centre][y], y)):
            if not apart.get(y, set()) & members:
                members.add(y)
        if len(members) > 1:
            groups.append(sorted(members))
        rest = comp - members
        if rest:
            pending.extend(_components(rest, adj))
    return sorted(groups)


def reclaimable(sizes: Sequence[int]) -> int:
    """Bytes freed by keeping only the largest file of a group: one size per file (hard links of
    one file are one file, symbolic links are none). The scan and the daemon rank groups by it."""
    return sum(sizes) - max(sizes, default=0)


class ClusterUnavailable(RuntimeError):
    """--cluster dbscan without scikit-learn installed."""


def group_dbscan(pairs: Sequence[Pair], threshold: float, cannot_link: CannotLink = ()
                 ) -> list[list[str]]:
    """DBSCAN (scikit-learn) on the distance 1 - score of the confirmed pairs, eps = 1 - threshold,
    two files make a cluster. Files without a pair are at distance "infinity" and never clustered.
    Cannot-links: their pairs are left out, and a cluster that still holds a cannot-linked pair
    (joined through others) is split by group_components' rule on the pairs inside it."""
    try:
        from scipy.sparse import csr_matrix
        from sklearn.cluster import DBSCAN
    except ImportError as e:
        raise ClusterUnavailable(
            "--cluster dbscan needs scikit-learn: pip install 'vfpd[cluster]'") from e
    apart = _cannot_link_map(cannot_link)
    pairs = [p for p in pairs if p.b not in apart.get(p.a, ())]
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    if not names:
        return []
    pos = {n: i for i, n in enumerate(names)}
    best: dict[tuple[int, int], float] = {}
    for p in pairs:
        i, j = sorted((pos[p.a], pos[p.b]))
        best[(i, j)] = max(best.get((i, j), 0.0), p.score)
    rows, cols, dist = [], [], []
    for (i, j), score in best.items():
        rows += [i, j]
        cols += [j, i]
        dist += [max(0.0, 1.0 - score)] * 2
    graph = csr_matrix((dist, (rows, cols)), shape=(len(names), len(names)))
    labels = DBSCAN(eps=max(1e-9, 1.0 - threshold), min_samples=2,
                    metric="precomputed").fit(graph).labels_
    clusters: dict[int, list[str]] = defaultdict(list)
    for name, label in zip(names, labels):
        if label >= 0:
            clusters[int(label)].append(name)
    groups: list[list[str]] = []
    for c in clusters.values():
        members = set(c)
        if any(apart.get(x, set()) & members for x in c):
            inside = [p for p in pairs if p.a in members and p.b in members]
            groups.extend(group_components(inside, cannot_link=[
                (x, y) for x in c for y in apart.get(x, ())]))
        elif len(c) > 1:
            groups.append(sorted(c))
    return sorted(groups)
