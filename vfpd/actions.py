"""Acting on duplicate groups (trash, delete, link, move) safely, with a journal that undo reverses.

plan() is pure: which file of each group is kept (the --keep policy) and what happens to the
others. apply() carries a plan out, writing each change to the journal (fsynced) before making it,
and re-checking every file right before touching it. undo() reverses a journal where it can.
The kept file of a group is never touched, so no group ever loses its last copy.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from vfpd import trash

REPORT, TRASH, DELETE, HARDLINK, SYMLINK, MOVE = (
    "report", "trash", "delete", "hardlink", "symlink", "move")
ACTION_NAMES = (REPORT, TRASH, DELETE, HARDLINK, SYMLINK, f"{MOVE}:DIR")
KEEP_POLICIES = ("oldest", "newest", "largest", "highest-res", "shortest-path", "best")
QUALITY_ORDER = ("resolution", "bit rate", "frame rate", "duration", "size")
"""--keep best: the copy people would keep, compared field by field in this order. Resolution
first (detail lost to downscaling never comes back), then bit rate (fewer compression artefacts at
the same size of picture), frame rate (motion), duration (a trim lost footage), size last."""
LINK_OPS = (HARDLINK, SYMLINK)
REVERSIBLE = (TRASH, MOVE, HARDLINK, SYMLINK)
JOURNAL_FORMAT = "vfpd-actions"
JOURNAL_VERSION = 1
TEMP_PREFIX = ".vfpd-tmp-"


@dataclass(frozen=True)
class ActionSpec:
    op: str
    target_dir: str | None = None


def parse_action(text: str) -> ActionSpec:
    """'trash' -> ActionSpec('trash'); 'move:/some/dir' -> ActionSpec('move', '/some/dir')."""
    if text.startswith(f"{MOVE}:"):
        target = text[len(MOVE) + 1:]
        if not target:
            raise ValueError("--action move:DIR needs a directory after the colon")
        return ActionSpec(MOVE, os.path.abspath(os.path.expanduser(target)))
    if text in (REPORT, TRASH, DELETE, HARDLINK, SYMLINK):
        return ActionSpec(text)
    raise ValueError(f"unknown action {text!r}; choose one of {', '.join(ACTION_NAMES)}")


@dataclass(frozen=True)
class FileFacts:
    """What the scan knew about a file; re-checked before the file is touched."""

    path: str
    size: int
    mtime_ns: int
    width: int | None = None
    height: int | None = None
    content_hash: str | None = None
    duration: float | None = None
    bit_rate: int | None = None  # bits per second, the file's average
    fps: float | None = None


def _quality(f: FileFacts) -> tuple[float, ...]:
    """QUALITY_ORDER as a key, larger is better; unknown values count as the lowest."""
    return ((f.width or 0) * (f.height or 0), f.bit_rate or 0, round(f.fps or 0.0, 2),
            round(f.duration or 0.0, 1), f.size)


def keep_reason(members: Sequence[FileFacts], keeper: FileFacts, policy: str) -> str:
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


def choose_keeper(members: Sequence[FileFacts], policy: str) -> FileFacts:
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


def plan(groups: Sequence[Sequence[FileFacts]], action: ActionSpec, policy: str,
         reference: Sequence[str] = ()) -> list[Step]:
    """For each group, keep one file by `policy` and apply `action` to the others. Links are only
    planned between byte-identical files (same content hash); other members are skipped. Files
    inside a `reference` folder are never acted on, and the keeper is one of them when the group
    has any (by `policy` among them)."""
    steps: list[Step] = []
    if action.op == REPORT:
        return steps
    for group in groups:
        refs = [f for f in group if in_reference(f.path, reference)]
        keeper = choose_keeper(refs or group, policy)
        for f in sorted(group, key=lambda f: f.path):
            if f.path == keeper.path:
                continue
            skip = None
            if f in refs:
                skip = "in a reference folder; never touched"
            elif action.op in LINK_OPS and (
                    f.content_hash is None or f.content_hash != keeper.content_hash):
                skip = f"not byte-identical to the kept file; {action.op} only replaces exact copies"
            steps.append(Step(action.op, f.path, keeper.path, skip))
    return steps


# --- the journal ---------------------------------------------------------------------------------

class Journal:
    """Append-only JSON lines; every line is fsynced before the change it announces is made."""

    def __init__(self, path: str | Path, action: ActionSpec) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "w", encoding="utf-8")
        self.write({"journal": JOURNAL_FORMAT, "version": JOURNAL_VERSION,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": asdict(action)})
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def write(self, record: dict[str, object]) -> None:
        # ensure_ascii keeps non-UTF-8 names (surrogate escapes) exact through a round trip.
        self._file.write(json.dumps(record, ensure_ascii=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _append(path: Path, record: dict[str, object]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --- carrying out a plan -------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    step: Step
    done: bool
    detail: str  # where the file went, or why nothing happened


class _Changed(Exception):
    """A file is not what the scan saw; the step is skipped with this reason."""


def _check_unchanged(f: FileFacts) -> os.stat_result:
    try:
        st = os.lstat(f.path)
    except FileNotFoundError:
        raise _Changed("no longer exists") from None
    if not os.path.isfile(f.path) or os.path.islink(f.path):
        raise _Changed("is not a regular file")
    if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
        raise _Changed("changed since the scan")
    return st


def _temp_beside(path: str) -> str:
    d, name = os.path.split(path)
    return os.path.join(d, f"{TEMP_PREFIX}{os.getpid()}-{time.monotonic_ns()}-{name}")


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _free_name(directory: str, name: str) -> str:
    stem, ext = os.path.splitext(name)
    n = 0
    while True:
        candidate = os.path.join(directory, name if n == 0 else f"{stem} ({n}){ext}")
        if not os.path.lexists(candidate):
            return candidate
        n += 1


def _move_no_replace(src: str, dst: str) -> None:
    """Move a file without ever overwriting dst; copies across filesystems."""
    if os.path.lexists(dst):
        raise FileExistsError(f"{dst} exists")
    try:
        os.link(src, dst)
        os.unlink(src)
    except OSError as e:
        if os.path.lexists(dst) and os.path.samefile(src, dst):
            os.unlink(src)
        elif isinstance(e, FileExistsError):
            raise
        else:
            tmp = _temp_beside(dst)
            shutil.copy2(src, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.rename(tmp, dst)
            os.unlink(src)
    _fsync_dir(dst)
    _fsync_dir(src)


def _replace_with_copy_of(path: str, source: str, mode: int, mtime_ns: int) -> None:
    """Atomically replace `path` (a link) with an independent copy of `source`."""
    tmp = _temp_beside(path)
    shutil.copyfile(source, tmp)
    os.chmod(tmp, mode)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.utime(tmp, ns=(mtime_ns, mtime_ns))
    os.rename(tmp, path)
    _fsync_dir(path)


def _do(step: Step, facts: dict[str, FileFacts], action: ActionSpec, journal: Journal,
        seq: int) -> str:
    """Carry out one step; returns a description, raises _Changed/OSError when it cannot."""
    target, keeper = facts[step.path], facts[step.keep]
    st = _check_unchanged(target)
    try:
        _check_unchanged(keeper)
    except _Changed as e:
        raise _Changed(f"the kept file {keeper.path} {e}; not touching its copies") from None
    record: dict[str, object] = {"seq": seq, "op": step.op, "path": step.path, "keep": step.keep,
                                 "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                 "mode": st.st_mode & 0o7777}
    if step.op in LINK_OPS:
        if os.path.samefile(step.path, step.keep):
            raise _Changed("is already the same file as the kept one")
        if not filecmp.cmp(step.path, step.keep, shallow=False):
            raise _Changed("content differs from the kept file")
    if step.op == TRASH:
        slot = trash.reserve(step.path)
        record.update(trash_file=slot.file_path, trash_info=slot.info_path)
        journal.write(record)
        trash.move_in(step.path, slot)
        detail = f"trashed to {slot.file_path}"
    elif step.op == DELETE:
        journal.write(record)
        os.unlink(step.path)
        _fsync_dir(step.path)
        detail = "deleted"
    elif step.op == MOVE:
        assert action.target_dir is not None
        os.makedirs(action.target_dir, exist_ok=True)
        dest = _free_name(action.target_dir, os.path.basename(step.path))
        record["dest"] = dest
        journal.write(record)
        _move_no_replace(step.path, dest)
        detail = f"moved to {dest}"
    elif step.op == HARDLINK:
        journal.write(record)
        tmp = _temp_beside(step.path)
        os.link(step.keep, tmp)
        os.rename(tmp, step.path)
        _fsync_dir(step.path)
        detail = f"now a hard link to {step.keep}"
    elif step.op == SYMLINK:
        journal.write(record)
        tmp = _temp_beside(step.path)
        os.symlink(os.path.abspath(step.keep), tmp)
        os.rename(tmp, step.path)
        _fsync_dir(step.path)
        detail = f"now a symbolic link to {step.keep}"
    else:
        raise ValueError(f"unknown operation {step.op!r}")
    journal.write({"seq": seq, "done": True})
    return detail


def apply(steps: Sequence[Step], facts: Sequence[FileFacts], action: ActionSpec,
          journal_path: str | Path) -> list[Outcome]:
    """Carry out the steps, journalling each change first. One failing file never stops the rest."""
    by_path = {f.path: f for f in facts}
    journal = Journal(journal_path, action)
    out = []
    try:
        for seq, step in enumerate(steps, 1):
            if step.skip:
                out.append(Outcome(step, False, step.skip))
                continue
            try:
                out.append(Outcome(step, True, _do(step, by_path, action, journal, seq)))
            except _Changed as e:
                out.append(Outcome(step, False, f"skipped: {e}"))
            except OSError as e:
                journal.write({"seq": seq, "failed": str(e)})
                out.append(Outcome(step, False, f"failed: {e.strerror or e}"))
    finally:
        journal.close()
    return out


# --- undo ----------------------------------------------------------------------------------------

class JournalError(ValueError):
    """The journal file is missing, not a vfpd journal, or damaged."""


@dataclass(frozen=True)
class UndoOutcome:
    seq: int
    op: str
    path: str
    undone: bool
    detail: str


def read_journal(path: str | Path) -> tuple[dict[str, object], list[dict[str, object]], set[int]]:
    """(header, change records in order, seqs already undone)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise JournalError(f"{path}: no such journal") from None
    except (OSError, UnicodeDecodeError) as e:
        raise JournalError(f"{path}: cannot read: {e}") from None
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            # Only the last line can be torn by a crash mid-write; anything else is damage.
            if n == len(lines):
                break
            raise JournalError(f"{path}:{n}: not a JSON line") from None
    if not records or records[0].get("journal") != JOURNAL_FORMAT:
        raise JournalError(f"{path}: not a vfpd action journal")
    changes = [r for r in records[1:] if "op" in r]
    undone = {int(r["seq"]) for r in records[1:] if r.get("undone")}
    return records[0], changes, undone


def _undo_one(r: dict[str, object]) -> str:
    op, path = str(r["op"]), str(r["path"])
    if op == TRASH:
        slot = trash.TrashSlot(os.path.dirname(os.path.dirname(str(r["trash_file"]))),
                               str(r["trash_file"]), str(r["trash_info"]))
        if not os.path.lexists(slot.file_path):
            if os.path.lexists(path):
                trash.release(slot)  # the change never happened (crash before the move)
                return "was never trashed"
            raise FileNotFoundError(f"{slot.file_path} is no longer in the trash")
        trash.restore(slot, path)
        return f"restored from {slot.file_path}"
    if op == MOVE:
        dest = str(r["dest"])
        if not os.path.lexists(dest) and os.path.lexists(path):
            return "was never moved"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        _move_no_replace(dest, path)
        return f"moved back from {dest}"
    if op in LINK_OPS:
        keep = str(r["keep"])
        if op == HARDLINK and not os.path.samefile(path, keep):
            if os.path.islink(path):
                raise _Changed("has been replaced since")
            return "was never linked"
        if op == SYMLINK:
            if not os.path.islink(path):
                return "was never linked"
            if os.path.realpath(path) != os.path.realpath(keep):
                raise _Changed("points elsewhere now")
        if os.path.getsize(keep) != r["size"]:
            raise _Changed(f"the kept file {keep} changed size; cannot rebuild the copy")
        _replace_with_copy_of(path, keep, int(r["mode"]), int(r["mtime_ns"]))
        return f"an independent copy of {keep} again"
    raise _Changed(f"{op} cannot be undone")


def undo(journal_path: str | Path) -> list[UndoOutcome]:
    """Reverse the journal's changes, newest first, where reversible. Each reversal is recorded in
    the journal, so running undo twice does nothing the second time."""
    _, changes, undone = read_journal(journal_path)
    out = []
    for r in reversed(changes):
        seq, op, path = int(r["seq"]), str(r["op"]), str(r["path"])
        if seq in undone:
            continue
        try:
            detail = _undo_one(r)
        except (_Changed, OSError) as e:
            out.append(UndoOutcome(seq, op, path, False, str(e)))
            continue
        _append(Path(journal_path), {"seq": seq, "undone": True})
        out.append(UndoOutcome(seq, op, path, True, detail))
    return out
