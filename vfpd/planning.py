"""Choosing, for each group of duplicates, the copy kept and what is done to the others.

Pure: which file the --keep policy keeps and why, and which others are acted on (only those
verified directly against the kept file); vfpd/actions.py carries the plan out.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, get_args


class Op(StrEnum):
    """What is done to a duplicate; also the word a journal line records."""

    REPORT = "report"
    TRASH = "trash"
    DELETE = "delete"
    HARDLINK = "hardlink"
    SYMLINK = "symlink"
    MOVE = "move"


ACTION_NAMES = (*(op.value for op in Op if op is not Op.MOVE), f"{Op.MOVE}:DIR")
KeepPolicy = Literal["oldest", "newest", "largest", "highest-res", "shortest-path", "best"]
KEEP_POLICIES: tuple[KeepPolicy, ...] = get_args(KeepPolicy)
QUALITY_ORDER = ("resolution", "bit rate", "frame rate", "duration", "size")
"""--keep best: the copy people would keep, compared field by field in this order. Resolution
first (detail lost to downscaling never comes back), then bit rate (fewer compression artefacts at
the same size of picture), frame rate (motion), duration (a trim lost footage), size last."""
LINK_OPS = (Op.HARDLINK, Op.SYMLINK)


MIXED: Literal["decisions"] = "decisions"
"""The action of a plan whose steps each carry their own operation (vfpctl apply's decisions)."""


@dataclass(frozen=True)
class ActionSpec:
    op: Op | Literal["decisions"]
    target_dir: str | None = None


def parse_action(text: str) -> ActionSpec:
    """'trash' -> ActionSpec('trash'); 'move:/some/dir' -> ActionSpec('move', '/some/dir')."""
    if text.startswith(f"{Op.MOVE}:"):
        target = text[len(Op.MOVE) + 1:]
        if not target:
            raise ValueError("--action move:DIR needs a directory after the colon")
        return ActionSpec(Op.MOVE, os.path.abspath(os.path.expanduser(target)))
    if text in ACTION_NAMES:
        return ActionSpec(Op(text))
    raise ValueError(f"unknown action {text!r}; choose one of {', '.join(ACTION_NAMES)}")


@dataclass(frozen=True)
class FileFacts:
    """What the scan knew about a file; proven again, through the file itself, before it is
    touched. `device`/`inode` are the file the scan read (None when not known)."""

    path: str
    size: int
    mtime_ns: int
    width: int | None = None
    height: int | None = None
    content_hash: str | None = None
    device: int | None = None
    inode: int | None = None
    duration: float | None = None
    bit_rate: int | None = None  # bits per second, the file's average
    fps: float | None = None

    @property
    def identity(self) -> tuple[int, int] | None:
        return None if self.device is None or self.inode is None else (self.device, self.inode)


def _quality(f: FileFacts) -> tuple[float, ...]:
    """QUALITY_ORDER as a key, larger is better; unknown values count as the lowest."""
    return ((f.width or 0) * (f.height or 0), f.bit_rate or 0, round(f.fps or 0.0, 2),
            round(f.duration or 0.0, 1), f.size)


def keep_reason(members: Sequence[FileFacts], keeper: FileFacts, policy: KeepPolicy) -> str:
    """Why `keeper` is the copy kept, in words: for `best`, the first quality field in which it
    beats the runner-up (and the fields in which all copies tie before it)."""
    if policy != "best":
        return {"oldest": "the oldest", "newest": "the newest", "largest": "the largest",
                "highest-res": "the highest resolution", "shortest-path": "the shortest path"
                }.get(policy, policy)
    others = [f for f in members if f.path != keeper.path]
    if not others:
        return "the only copy"
    mine = _quality(keeper)
    runner = max(others, key=_quality)
    theirs = _quality(runner)
    for i, name in enumerate(QUALITY_ORDER):
        if mine[i] != theirs[i]:
            tied = QUALITY_ORDER[:i]
            lead = f"same {', '.join(tied)}; " if tied else ""
            return f"{lead}highest {name}"
    tied = sum(_quality(f) == mine for f in others)
    return f"best quality, tied with {tied} other cop{'y' if tied == 1 else 'ies'}; the first path"


def choose_keeper(members: Sequence[FileFacts], policy: KeepPolicy) -> FileFacts:
    """The file a group keeps. Ties are broken by path so the choice is reproducible."""
    keys = {
        "oldest": lambda f: (f.mtime_ns, f.path),
        "newest": lambda f: (-f.mtime_ns, f.path),
        "largest": lambda f: (-f.size, f.path),
        "highest-res": lambda f: (-(f.width or 0) * (f.height or 0), -f.size, f.path),
        "shortest-path": lambda f: (len(f.path), f.path),
        "best": lambda f: (tuple(-v for v in _quality(f)), f.path),
    }
    if policy not in keys:
        raise ValueError(f"unknown keep policy {policy!r}; choose one of {', '.join(KEEP_POLICIES)}")
    return min(members, key=keys[policy])


@dataclass(frozen=True)
class Step:
    """One planned change: do `op` to `path`, keeping `keep`. `skip` says why it will not happen."""

    op: str
    path: str
    keep: str
    skip: str | None = None


def in_reference(path: str, reference: Sequence[str]) -> bool:
    """Whether `path` is inside one of the reference folders (absolute, normalised paths)."""
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in reference)


NOT_DIRECT = "kept: not directly matched to the kept copy"
"""Why a member joined to the group only through others (A~B, B~C: C, keeping A) is left."""

IN_REFERENCE = "in a reference folder; never touched"


def plan(groups: Sequence[Sequence[FileFacts]], action: ActionSpec, policy: KeepPolicy,
         direct: Collection[frozenset[str]], reference: Sequence[str] = ()) -> list[Step]:
    """For each group, keep one file by `policy` and apply `action` to the others that were
    themselves verified as duplicates of it: `direct` holds the pairs {a, b} scoring at least the
    threshold in use. Other members are left (NOT_DIRECT), as are members without a content hash
    to prove at act time and, for links, members that are not byte-identical. Files inside a
    `reference` folder are never acted on, and the keeper is one of them when the group has any
    (by `policy` among them)."""
    steps: list[Step] = []
    if action.op == Op.REPORT:
        return steps
    for group in groups:
        refs = [f for f in group if in_reference(f.path, reference)]
        keeper = choose_keeper(refs or group, policy)
        for f in sorted(group, key=lambda f: f.path):
            if f.path == keeper.path:
                continue
            skip = None
            if f in refs:
                skip = IN_REFERENCE
            elif frozenset((f.path, keeper.path)) not in direct:
                skip = NOT_DIRECT
            elif f.content_hash is None or keeper.content_hash is None:
                skip = "no content hash to prove the match with; scan again"
            elif action.op in LINK_OPS and f.content_hash != keeper.content_hash:
                skip = f"not byte-identical to the kept file; {action.op} only replaces exact copies"
            steps.append(Step(action.op, f.path, keep=keeper.path, skip=skip))
    return steps
