"""The decisions a person made on the review page: read and checked once (schema in
docs/report.md), then planned as vfpd.planning steps and not-a-duplicate verdicts.

plan() is pure: it gets each file's state as it is now (content hash re-read by the caller) and
never plans a change to a file whose content differs from what the page showed, to a file in a
reference folder, or to any copy of a group without an unchanged kept copy.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from vfpd import planning

DECISIONS_FORMAT = "vfpd-decisions"
DECISIONS_VERSION = 1

MAX_DECISIONS_BYTES = 64 << 20
"""A decisions file larger than this is refused unread: 5,000 groups of a dozen files each come
to a few MB."""

Choice = Literal["keep", "trash", "hardlink", "undecided"]
ACTING: dict[str, planning.Op] = {"trash": planning.Op.TRASH, "hardlink": planning.Op.HARDLINK}
"""Page choice -> vfpd.planning operation."""


class DecisionsError(ValueError):
    """The file is not a decisions file this version understands, or is damaged."""


@dataclass(frozen=True)
class MemberDecision:
    path: str
    hash: str
    size: int
    decision: Choice


@dataclass(frozen=True)
class NotDuplicate:
    a: str
    hash_a: str
    b: str
    hash_b: str
    score: float
    kind: str


@dataclass(frozen=True)
class GroupDecision:
    id: str
    tier: str
    members: tuple[MemberDecision, ...]
    not_duplicate: tuple[NotDuplicate, ...]


@dataclass(frozen=True)
class Decisions:
    roots: tuple[str, ...]  # the report's folders: nothing outside them is acted on
    groups: tuple[GroupDecision, ...]

    def named(self) -> set[str]:
        """Paths of files that are acted on or kept for a copy that is acted on."""
        out: set[str] = set()
        for g in self.groups:
            if any(m.decision in ACTING for m in g.members):
                out.update(m.path for m in g.members if m.decision != "undecided")
        return out


def _field(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in obj:
        raise DecisionsError(f"{where}: missing {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise DecisionsError(f"{where}: {name!r} has the wrong type")
    return value


def parse(doc: Any) -> Decisions:
    """Check a decoded decisions document; raises DecisionsError saying what is wrong."""
    if not isinstance(doc, dict) or doc.get("format") != DECISIONS_FORMAT:
        raise DecisionsError(f"not a vfpd decisions file (no \"format\": \"{DECISIONS_FORMAT}\")")
    if doc.get("version") != DECISIONS_VERSION:
        raise DecisionsError(f"decisions version {doc.get('version')!r} is not supported "
                             f"(this vfpctl reads version {DECISIONS_VERSION})")
    roots = _field(doc, "roots", list, "decisions")
    if not roots or not all(isinstance(r, str) and r.startswith("/") for r in roots):
        raise DecisionsError("decisions: 'roots' must list the report's folders (absolute paths)")
    groups = []
    for n, g in enumerate(_field(doc, "groups", list, "decisions")):
        where = f"groups[{n}]"
        if not isinstance(g, dict):
            raise DecisionsError(f"{where}: not an object")
        members = []
        for k, m in enumerate(_field(g, "members", list, where)):
            mw = f"{where}.members[{k}]"
            if not isinstance(m, dict):
                raise DecisionsError(f"{mw}: not an object")
            choice = _field(m, "decision", str, mw)
            if choice not in get_args(Choice):
                raise DecisionsError(f"{mw}: decision {choice!r} is not one of "
                                     f"{', '.join(get_args(Choice))}")
            members.append(MemberDecision(_field(m, "path", str, mw), _field(m, "hash", str, mw),
                                          _field(m, "size", int, mw), choice))
        verdicts = []
        for k, v in enumerate(g.get("not_duplicate", [])):
            vw = f"{where}.not_duplicate[{k}]"
            if not isinstance(v, dict):
                raise DecisionsError(f"{vw}: not an object")
            verdicts.append(NotDuplicate(
                _field(v, "a", str, vw), _field(v, "hash_a", str, vw), _field(v, "b", str, vw),
                _field(v, "hash_b", str, vw), float(_field(v, "score", (int, float), vw)),
                _field(v, "kind", str, vw)))
        groups.append(GroupDecision(str(g.get("id", n)), str(g.get("tier", "duplicate")),
                                    tuple(members), tuple(verdicts)))
    return Decisions(tuple(roots), tuple(groups))


def load(path: str | Path) -> Decisions:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DECISIONS_BYTES + 1)
    except OSError as e:
        raise DecisionsError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_DECISIONS_BYTES:
        raise DecisionsError(f"{path}: larger than {MAX_DECISIONS_BYTES >> 20} MiB; "
                             "not a decisions file")
    try:
        return parse(json.loads(data))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DecisionsError(f"{path}: not JSON: {e}") from None


@dataclass(frozen=True)
class Now:
    """A named file as it is now: its facts (with the content hash just read), or why not."""

    facts: planning.FileFacts | None
    problem: str | None = None


def plan(decisions: Decisions, now: Mapping[str, Now], reference: Sequence[str] = ()
         ) -> list[planning.Step]:
    """The steps that carry out the decisions, each with the kept copy it relies on; a step
    that must not happen carries its reason in `skip`."""
    choices: dict[str, set[str]] = defaultdict(set)
    for g in decisions.groups:
        for m in g.members:
            if m.decision != "undecided":
                choices[m.path].add(m.decision)
    # A file kept in one card and trashed in another (a maybe card shares files with groups)
    # is a contradiction: nothing that involves it happens.
    torn = {p for p, c in choices.items() if len(c) > 1}

    def unchanged(m: MemberDecision) -> str | None:
        state = now.get(m.path)
        if state is None or state.facts is None:
            return state.problem if state is not None else "not checked"
        if state.facts.content_hash != m.hash:
            return "its content changed since the report (content hash differs)"
        return None

    steps = []
    for g in decisions.groups:
        keepers = [m for m in g.members if m.decision == "keep" and m.path not in torn
                   and unchanged(m) is None]
        for m in sorted(g.members, key=lambda m: m.path):
            if m.decision not in ACTING:
                continue
            op = ACTING[m.decision]
            same = [k for k in keepers if k.hash == m.hash]
            keeper = (same or keepers or [None])[0]
            skip = None
            if m.path in torn:
                skip = f"decided differently in another card ({', '.join(sorted(choices[m.path]))})"
            elif planning.in_reference(m.path, reference):
                skip = planning.IN_REFERENCE
            elif (problem := unchanged(m)) is not None:
                skip = problem
            elif keeper is None:
                skip = "no unchanged copy of this group is marked keep; never the last copy"
            elif op == planning.Op.HARDLINK and keeper.hash != m.hash:
                skip = "not byte-identical to a kept copy; a hard link only replaces exact copies"
            steps.append(planning.Step(op, m.path, keeper.path if keeper else "", skip))
    return steps


def verdicts(decisions: Decisions) -> list[NotDuplicate]:
    """Every not-a-duplicate verdict, once per pair of contents."""
    seen: set[frozenset[str]] = set()
    out = []
    for g in decisions.groups:
        for v in g.not_duplicate:
            key = frozenset((v.hash_a, v.hash_b))
            if key not in seen:
                seen.add(key)
                out.append(v)
    return out
