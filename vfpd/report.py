"""The review page: duplicate groups as cards (pure data), their filmstrips taken at the matched
moments, written as DIR/index.html (page, styles, script and data in one file) plus DIR/thumbs/.

Thumbnails are files beside the page, loaded by relative URL as cards scroll into view: 5,000
groups hold ~50,000 of them, far too many bytes for data: URIs inside one HTML file, and a folder
works from file:// as well as the one file does. See docs/report.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Literal

from vfpd import planning
from vfpd.grouping import Pair
from vfpd.matching import EXACT
from vfpd.thumbs import ThumbJob, extract_all, filmstrip_times

REPORT_FORMAT = "vfpd-report"
REPORT_VERSION = 1

MAYBE_BAND = 0.15
"""Pairs scoring up to this much below the threshold are shown apart as "maybe". With the default
0.75 the band is 0.60-0.75: it holds the hard copies the default misses (off-centre crops of
10-20 %, grayscale, speed changes: 0.6-0.75 on the accuracy benchmark) and the look-alikes that
the threshold keeps out (the highest pair of different videos scores 0.72), which is why a
person, never a rule, decides about them."""

THUMBS_PER_MEMBER = 4
"""Filmstrip length: enough to see a trim's or a clip's place, few enough for a phone's width."""

Tier = Literal["duplicate", "maybe"]


@dataclass(frozen=True)
class MemberFacts:
    """What a card shows about one file. `bit_rate` is the file's average (size / duration)."""

    path: str
    hash: str | None
    size: int
    mtime: float
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    fps: float | None = None

    @property
    def bit_rate(self) -> int | None:
        if not self.duration or self.duration <= 0:
            return None
        return int(self.size * 8 / self.duration)

    def facts(self) -> planning.FileFacts:
        return planning.FileFacts(self.path, self.size, int(self.mtime * 1e9), self.width,
                                 self.height, self.hash, duration=self.duration,
                                 bit_rate=self.bit_rate, fps=self.fps)


@dataclass(frozen=True)
class ReviewGroup:
    tier: Tier
    members: tuple[MemberFacts, ...]
    pairs: tuple[Pair, ...] = field(default=())


def review_groups(groups: Sequence[Sequence[str]], pairs: Sequence[Pair],
                  maybe_pairs: Sequence[Pair], facts: dict[str, MemberFacts]
                  ) -> list[ReviewGroup]:
    """One card per duplicate group (with its pairs), then one per maybe pair whose files are
    not already in one group together: the best such pair between a file and a group (or a
    lone file) stands for all of them, so a near miss of a five-copy group is one card."""
    grouped = {path: n for n, g in enumerate(groups) for path in g}
    inside: list[list[Pair]] = [[] for _ in groups]
    for p in pairs:
        n = grouped.get(p.a)
        if n is not None and grouped.get(p.b) == n:
            inside[n].append(p)
    out = [ReviewGroup("duplicate", tuple(facts[path] for path in g), tuple(inside[n]))
           for n, g in enumerate(groups)]
    best: dict[frozenset[int | str], Pair] = {}
    for p in maybe_pairs:
        ga: int | str = grouped.get(p.a, p.a)
        gb: int | str = grouped.get(p.b, p.b)
        if ga == gb:
            continue
        key = frozenset((ga, gb))
        if key not in best or p.score > best[key].score:
            best[key] = p
    for p in sorted(best.values(), key=lambda p: (-p.score, p.a, p.b)):
        out.append(ReviewGroup("maybe", (facts[p.a], facts[p.b]), (p,)))
    return out


# --- time mapping --------------------------------------------------------------------------------

def _oriented(p: Pair, a: str) -> tuple[tuple[float, float, float, float], ...]:
    """The pair's segments as (start, end) in `a` then (start, end) in the other file."""
    segs = p.segments
    if p.a == a:
        return tuple((s.a_start, s.a_end, s.b_start, s.b_end) for s in segs)
    return tuple((s.b_start, s.b_end, s.a_start, s.a_end) for s in segs)


def map_time(p: Pair, src: str, t: float) -> float | None:
    """Where moment `t` of file `src` is in the pair's other file: through the segment that holds
    it (linear inside it), unchanged for an exact pair, None when the other file lacks it."""
    if p.kind == EXACT and not p.segments:
        return t
    for s0, s1, d0, d1 in _oriented(p, src):
        if s0 - 1e-6 <= t <= s1 + 1e-6:
            rate = (d1 - d0) / (s1 - s0) if s1 > s0 else 1.0
            return d0 + (t - s0) * rate
    return None


def anchor(g: ReviewGroup) -> MemberFacts:
    """The member others are shown against: the longest (a clip's source, a trim's original),
    then the one with most pairs."""
    def links(m: MemberFacts) -> int:
        return sum(m.path in (p.a, p.b) for p in g.pairs)
    return max(g.members, key=lambda m: (m.duration or 0.0, links(m), m.path))


def _best_pair(g: ReviewGroup, a: str, b: str) -> Pair | None:
    found = [p for p in g.pairs if {p.a, p.b} == {a, b}]
    return max(found, key=lambda p: p.score) if found else None


def clock(t: float) -> str:
    """00:12 for 12.3 s; 1:02:03 past an hour."""
    s = int(round(t))
    h, m, sec = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def segment_label(p: Pair, a: str, names: dict[str, str]) -> str:
    """`A 00:12-00:41 = B 01:05-01:34` for the pair's longest segment, `a` on the left."""
    segs = _oriented(p, a)
    b = p.b if p.a == a else p.a
    if not segs:
        return f"{names[a]} = {names[b]}"
    s0, s1, d0, d1 = max(segs, key=lambda s: s[1] - s[0])
    return f"{names[a]} {clock(s0)}-{clock(s1)} = {names[b]} {clock(d0)}-{clock(d1)}"


def strips(g: ReviewGroup, count: int = THUMBS_PER_MEMBER
           ) -> dict[str, list[float | None]]:
    """Per member, the moments of its filmstrip: the anchor's strip spreads over the footage its
    copies share with it; every other member shows the same moments mapped into its own time
    (None: not in that copy), so one column is one moment of the footage."""
    a = anchor(g)
    spans = [(s[0], s[1]) for p in g.pairs if a.path in (p.a, p.b) for s in _oriented(p, a.path)]
    exact_only = all(p.kind == EXACT and not p.segments for p in g.pairs)
    if spans and not exact_only:
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
    else:
        start, end = 0.0, a.duration or 0.0
    times = filmstrip_times(start, end, count)
    out: dict[str, list[float | None]] = {a.path: list(times)}
    for m in g.members:
        if m.path == a.path:
            continue
        p = _best_pair(g, a.path, m.path)
        if p is None or p.kind != EXACT and not p.segments:
            # No time mapping known (the daemon's groups carry none): its own footage, spread.
            out[m.path] = list(filmstrip_times(0.0, m.duration or 0.0, count))
        else:
            out[m.path] = [map_time(p, a.path, t) for t in times]
    return out


# --- cards ---------------------------------------------------------------------------------------

FIELDS = ("resolution", "bit_rate", "fps", "duration", "size", "codec", "date")
"""The columns a card compares; the first five are the --keep best quality order."""


def _field_value(m: MemberFacts, name: str) -> object:
    return {
        "resolution": (m.width or 0) * (m.height or 0) or None,
        "bit_rate": m.bit_rate, "fps": m.fps, "duration": m.duration, "size": m.size,
        "codec": m.codec, "date": m.mtime,
    }[name]


def comparison(members: Sequence[MemberFacts]) -> tuple[list[str], dict[str, list[int]]]:
    """(fields whose values differ between members, the best members' indices per field): more is
    better for the quality fields, the oldest date is best (the likely original); codecs are
    only compared for differences."""
    differ, best = [], {}
    for name in FIELDS:
        values = [_field_value(m, name) for m in members]
        if name in ("duration", "fps"):
            # Containers round these differently; a hundredth is no difference.
            values = [None if v is None else round(float(v), 2) for v in values]  # type: ignore[arg-type]
        if len(set(values)) > 1:
            differ.append(name)
        known = [v for v in values if v is not None]
        if name == "codec" or not known or len(set(known)) < 2:
            continue
        top = min(known) if name == "date" else max(known)  # type: ignore[type-var]
        best[name] = [i for i, v in enumerate(values) if v == top]
    return differ, best


def _thumb_name(path: str, t: float) -> str:
    digest = hashlib.blake2b(os.fsencode(path) + f"@{t:.3f}".encode(), digest_size=10).hexdigest()
    return f"thumbs/{digest}.webp"


def card(n: int, g: ReviewGroup, keep_policy: str = "best") -> dict[str, object]:
    """The JSON one card is drawn from (the page's schema: docs/report.md)."""
    a = anchor(g)
    ordered = [a] + sorted((m for m in g.members if m is not a), key=lambda m: m.path)
    names = {m.path: chr(ord("A") + i) if i < 26 else f"#{i + 1}" for i, m in enumerate(ordered)}
    moments = strips(g)
    facts = [m.facts() for m in ordered]
    keeper = planning.choose_keeper(facts, keep_policy)
    differ, best = comparison(ordered)
    members = []
    for m in ordered:
        note = None
        if m is not a:
            p = _best_pair(g, a.path, m.path)
            if p is not None:
                note = ("byte-identical to " + names[a.path] if p.kind == EXACT
                        else segment_label(p, a.path, names))
        members.append({
            "name": names[m.path], "path": m.path, "hash": m.hash, "size": m.size,
            "mtime": m.mtime, "duration": m.duration, "width": m.width, "height": m.height,
            "codec": m.codec, "fps": m.fps, "bit_rate": m.bit_rate, "note": note,
            "thumbs": [None if t is None else {"t": round(t, 2),
                                               "src": _thumb_name(m.path, round(t, 2))}
                       for t in moments[m.path]],
        })
    index = {m.path: i for i, m in enumerate(ordered)}
    return {
        "id": f"{'g' if g.tier == 'duplicate' else 'm'}{n}",
        "tier": g.tier,
        "kind": min((p.kind for p in g.pairs), key=("partial", "near", "exact").index,
                    default=EXACT),
        "score": min((p.score for p in g.pairs), default=1.0),
        "members": members,
        "pairs": [{"a": index[p.a], "b": index[p.b], "score": p.score, "kind": p.kind,
                   "label": segment_label(p, p.a, names),
                   "segments": [s.to_json() for s in p.segments]}
                  for p in sorted(g.pairs, key=lambda p: (index[p.a], index[p.b]))],
        "differ": differ,
        "best": best,
        "keep": {"index": index[keeper.path],
                 "reason": planning.keep_reason(facts, keeper, keep_policy)},
    }


# --- writing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportStats:
    path: str  # the index.html
    cards: int
    thumbs: int
    thumb_errors: tuple[str, ...]  # "path: why" per file that got no thumbnail
    bytes: int  # index.html plus thumbs


def page_html(data: dict[str, object]) -> str:
    """The template with the data inlined; every '<' is escaped, so no file name can end the
    script element or open an HTML comment inside it."""
    template = resources.files("vfpd").joinpath("report_assets/page.html").read_text("utf-8")
    blob = json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")
    return template.replace("/*VFPD_DATA*/null", blob, 1)


class ReportTargetError(OSError):
    """The report folder holds something else than a vfpd report: it is not written into."""


REPORT_MARKER = '<script id="vfpd-data"'
"""How an earlier report's index.html is recognised (the template's data element)."""


def check_target(out: Path) -> None:
    """A new or empty folder, or one holding an earlier report, may be written; anything else
    (`--report ~` by mistake) is refused rather than mixed with the user's files."""
    if not out.exists() or not any(out.iterdir()):
        return
    index = out / "index.html"
    try:
        earlier = index.is_file() and REPORT_MARKER in index.read_text("utf-8", errors="replace")
    except OSError:
        earlier = False
    if not earlier:
        raise ReportTargetError(f"{out} is not empty and holds no vfpd report; "
                                "choose a new or empty folder")


def write_report(out_dir: str | Path, groups: Sequence[ReviewGroup], *, source: str,
                 threshold: float | None, roots: Sequence[str] = (), keep_policy: str = "best",
                 workers: int = 2) -> ReportStats:
    """Write DIR/index.html and DIR/thumbs/ (an existing report's thumbs/ there is replaced).
    Thumbnails are decoded in isolated children (vfpd.thumbs), which also read each file's frame
    rate (and codec, where the caller had none) for the cards."""
    from vfpd.atomic import write_text

    out = Path(out_dir)
    thumbs_dir = out / "thumbs"
    check_target(out)
    thumbs_dir.mkdir(parents=True, exist_ok=True)
    for old in thumbs_dir.glob("*.webp"):  # only what an earlier report put there
        old.unlink()
    wanted: dict[str, dict[float, str]] = {}
    for g in groups:
        for path, moments in strips(g).items():
            for t in moments:
                if t is not None:
                    wanted.setdefault(path, {})[round(t, 2)] = _thumb_name(path, round(t, 2))
            wanted.setdefault(path, {})
    jobs = [ThumbJob(p, tuple(ts), tuple(str(out / s) for s in ts.values()))
            for p, ts in wanted.items()]
    errors, made, probed = [], 0, {}
    for r in extract_all(jobs, workers=workers):
        made += sum(r.written)
        probed[r.job.path] = r
        if not all(r.written) or r.error:
            errors.append(f"{r.job.path}: {r.error or 'no frame decoded at some moments'}")
    present = {f"thumbs/{p.name}" for p in thumbs_dir.iterdir()}
    cards = []
    for n, g in enumerate(groups, 1):
        probed_facts = tuple(
            replace(m, fps=m.fps or r.fps, codec=m.codec or r.codec)
            if (r := probed.get(m.path)) is not None else m for m in g.members)
        c = card(n, ReviewGroup(g.tier, probed_facts, g.pairs), keep_policy)
        for m in c["members"]:  # type: ignore[attr-defined]
            m["thumbs"] = [th if th is None or th["src"] in present else {**th, "src": None}
                           for th in m["thumbs"]]
        cards.append(c)
    data = {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "source": source,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "threshold": threshold,
        "maybe_from": None if threshold is None else round(max(0.0, threshold - MAYBE_BAND), 4),
        "roots": list(roots), "groups": cards,
    }
    index = out / "index.html"
    write_text(index, page_html(data))
    size = index.stat().st_size + sum(p.stat().st_size for p in thumbs_dir.iterdir())
    return ReportStats(str(index), len(cards), made, tuple(sorted(errors)), size)
