"""Duplicate pairs of contents, with their score, kind, matched segments and the user's verdict."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from vfpd.catalog.codecs import prefix_clause
from vfpd.catalog.core import CatalogCore, stream
from vfpd.catalog.vocabulary import Kind, Verdict


@dataclass(frozen=True)
class Duplicate:
    hash_a: str
    """The smaller of the two hashes (pairs are stored ordered)."""
    hash_b: str
    score: float
    kind: Kind
    segments: Any
    """JSON value from the matcher (e.g. [[a_start, a_end, b_start, b_end], ...] seconds) or None."""
    first_seen: float
    last_seen: float
    verdict: Verdict | None
    verdict_at: float | None


def ordered(hash_a: str, hash_b: str) -> tuple[str, str]:
    """The stored order of a pair of hashes."""
    if hash_a == hash_b:
        raise ValueError("a duplicate pair needs two different hashes")
    return (hash_a, hash_b) if hash_a < hash_b else (hash_b, hash_a)


_DUP_COLS = ("d.hash_a, d.hash_b, d.score, d.kind, d.segments, d.first_seen, d.last_seen, "
             "d.verdict, d.verdict_at")


E = TypeVar("E", Kind, Verdict)


def _member(enum: type[E], value: str, what: str) -> E:
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"{what} must be one of {', '.join(enum)}, not {value!r}") from None


def _dup(row: tuple) -> Duplicate:
    a, b, score, kind, seg, first, last, verdict, verdict_at = row
    return Duplicate(a, b, score, Kind(kind), None if seg is None else json.loads(seg), first,
                     last if last is not None else first,
                     None if verdict is None else Verdict(verdict), verdict_at)


class DuplicateStore(CatalogCore):
    """Duplicate pairs and verdicts."""

    def add_duplicate(self, hash_a: str, hash_b: str, score: float, kind: Kind | str,
                      segments: Any = None, now: float | None = None) -> bool:
        """Record (or refresh) a duplicate pair. Returns True when the pair is new, i.e. worth
        an event. A user verdict on the pair is kept."""
        kind = _member(Kind, kind, "kind")
        a, b = ordered(hash_a, hash_b)
        now = time.time() if now is None else now
        seg = None if segments is None else json.dumps(segments)
        with self.transaction() as w:
            new = w.execute(
                "INSERT INTO duplicates(hash_a, hash_b, score, kind, segments, first_seen, "
                "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (a, b, float(score), kind, seg, now, now)).rowcount > 0
            if not new:
                w.execute("UPDATE duplicates SET score = ?, kind = ?, "
                          "segments = COALESCE(?, segments), last_seen = ? "
                          "WHERE hash_a = ? AND hash_b = ?", (float(score), kind, seg, now, a, b))
        return new

    def duplicate(self, hash_a: str, hash_b: str) -> Duplicate | None:
        a, b = ordered(hash_a, hash_b)
        row = self._reader().execute(f"SELECT {_DUP_COLS} FROM duplicates d "
                                     "WHERE hash_a = ? AND hash_b = ?", (a, b)).fetchone()
        return _dup(row) if row else None

    def rejected_pairs(self) -> list[tuple[str, str]]:
        """Content pairs a person marked "not a duplicate": cannot-links for grouping
        (grouping.group_components), whatever else links the two."""
        return [(a, b) for a, b in self._reader().execute(
            "SELECT hash_a, hash_b FROM duplicates WHERE verdict = ?", (Verdict.NOT_DUPLICATE,))]

    def verdict_pairs(self) -> list[tuple[str, str, Verdict]]:
        """Every pair a person judged, with the verdict (retraining's extra signal)."""
        return [(a, b, Verdict(v)) for a, b, v in self._reader().execute(
            "SELECT hash_a, hash_b, verdict FROM duplicates WHERE verdict IS NOT NULL "
            "ORDER BY hash_a, hash_b")]

    def duplicates(self, *, since: float | None = None, kind: Kind | None = None,
                   min_score: float | None = None, path_prefix: str | None = None,
                   content_hash: str | None = None, include_rejected: bool = False
                   ) -> Iterator[Duplicate]:
        """Duplicate pairs, newest first, streamed. Filters: first seen at or after `since`,
        `kind`, score >= `min_score`, either side has a path inside directory `path_prefix`,
        either side is `content_hash`. Pairs the user marked not-a-duplicate are left out unless
        `include_rejected`."""
        where, args = [], []
        if since is not None:
            where.append("d.first_seen >= ?")
            args.append(since)
        if kind is not None:
            where.append("d.kind = ?")
            args.append(kind)
        if min_score is not None:
            where.append("d.score >= ?")
            args.append(min_score)
        if content_hash is not None:
            where.append("(d.hash_a = ? OR d.hash_b = ?)")
            args += [content_hash, content_hash]
        if not include_rejected:
            where.append(f"(d.verdict IS NULL OR d.verdict != '{Verdict.NOT_DUPLICATE}')")
        if path_prefix is not None:
            clause, pargs = prefix_clause("f.path", path_prefix)
            where.append("EXISTS (SELECT 1 FROM files f WHERE f.hash IN (d.hash_a, d.hash_b) "
                         f"AND {clause.removeprefix('WHERE ')})")
            args += pargs
        sql = f"SELECT {_DUP_COLS} FROM duplicates d"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY d.first_seen DESC, d.hash_a, d.hash_b"
        yield from (_dup(r) for r in stream(self._reader(), sql, tuple(args)))

    def set_verdict(self, hash_a: str, hash_b: str, verdict: Verdict | str | None,
                    now: float | None = None) -> bool:
        """The user says the pair is a duplicate ('confirmed'), is not ('not_duplicate'), or
        takes it back (None). Stored by content hash, so it survives renames. False if the pair
        was never recorded."""
        if verdict is not None:
            verdict = _member(Verdict, verdict, "verdict")
        a, b = ordered(hash_a, hash_b)
        now = time.time() if now is None else now
        with self.transaction() as w:
            return w.execute("UPDATE duplicates SET verdict = ?, verdict_at = ? "
                             "WHERE hash_a = ? AND hash_b = ?",
                             (verdict, None if verdict is None else now, a, b)).rowcount > 0
