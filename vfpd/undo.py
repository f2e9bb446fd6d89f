"""Reversing a sealed action journal (vfpd/journal.py), newest change first, where reversible and
only within the journal's scanned folders.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from vfpd import trash
from vfpd.actions import TEMP_PREFIX, Refused, fsync_parent, inside, temp_name
from vfpd.journal import Journal, ReadJournal, read_journal
from vfpd.planning import LINK_OPS, Op

RESTORED_MODE_BITS = 0o777
"""Undo restores permission bits only: never setuid, setgid or sticky, whatever a journal says."""


@dataclass(frozen=True)
class UndoOutcome:
    seq: int
    op: str
    path: str
    undone: bool
    detail: str


def _temp_beside(path: str) -> str:
    d, name = os.path.split(path)
    return os.path.join(d, temp_name(name))


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
    fsync_parent(dst)
    fsync_parent(src)


def _replace_with_copy_of(path: str, source: str, mode: int, mtime_ns: int) -> None:
    """Atomically replace `path` (a link) with an independent copy of `source`."""
    tmp = _temp_beside(path)
    shutil.copyfile(source, tmp)
    os.chmod(tmp, mode)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.utime(tmp, ns=(mtime_ns, mtime_ns))
    os.rename(tmp, path)
    fsync_parent(path)


def _unsafe(r: dict[str, object], journal: ReadJournal) -> str | None:
    """Why a (sealed) journal line must still not be followed, or None. The seal proves this tool
    wrote it; these checks hold it to the folders it was allowed to touch, as they are now."""
    op, path = r.get("op"), r.get("path")
    if op not in (Op.TRASH, Op.DELETE, Op.MOVE, Op.HARDLINK, Op.SYMLINK) or not isinstance(path, str):
        return "not an action this tool records"
    if not inside(path, journal.roots):
        return "outside the journal's scanned folders"
    if os.path.realpath(os.path.dirname(path)) != os.path.dirname(path):
        return "a folder on its path is now a symbolic link"
    if not all(isinstance(r.get(k), int) for k in ("seq", "size", "mtime_ns", "mode")):
        return "a damaged line"
    temp = r.get("temp")
    if temp is not None and (not isinstance(temp, str) or os.path.dirname(temp) !=
                             os.path.dirname(path) or not os.path.basename(temp).startswith(
                                 TEMP_PREFIX)):
        return "its private name is not beside it"
    if op in LINK_OPS and not (isinstance(r.get("keep"), str)
                               and inside(str(r["keep"]), journal.roots)):
        return "the kept file is outside the journal's scanned folders"
    if op == Op.MOVE:
        action = journal.header.get("action")
        target = action.get("target_dir") if isinstance(action, dict) else None
        dest = r.get("dest")
        if not (isinstance(dest, str) and isinstance(target, str)
                and os.path.dirname(dest) == os.path.normpath(target)):
            return "its destination is not in the journal's move folder"
    if op == Op.TRASH:
        f, i = r.get("trash_file"), r.get("trash_info")
        if not (isinstance(f, str) and isinstance(i, str) and trash.is_slot(f, i)):
            return "its trash location is not a trash folder"
    return None


def _undo_one(r: dict[str, object]) -> str:
    op, path = str(r["op"]), str(r["path"])
    temp = r.get("temp")
    if isinstance(temp, str) and os.path.lexists(temp):
        # Interrupted between taking the file (renaming it to its private name) and the change.
        if not os.path.lexists(path):
            _move_no_replace(temp, path)
            return "was interrupted; put back under its name"
        if op in LINK_OPS:
            os.rename(temp, path)  # the link was made but the original not yet removed
            fsync_parent(path)
            return "was interrupted; the original is back"
    if op == Op.TRASH:
        slot = trash.TrashSlot(os.path.dirname(os.path.dirname(str(r["trash_file"]))),
                               str(r["trash_file"]), str(r["trash_info"]))
        if not os.path.lexists(slot.file_path):
            if os.path.lexists(path):
                trash.release(slot)  # the change never happened (crash before the move)
                return "was never trashed"
            raise FileNotFoundError(f"{slot.file_path} is no longer in the trash")
        trash.restore(slot, path)
        return f"restored from {slot.file_path}"
    if op == Op.MOVE:
        dest = str(r["dest"])
        if not os.path.lexists(dest) and os.path.lexists(path):
            return "was never moved"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        _move_no_replace(dest, path)
        return f"moved back from {dest}"
    if op in LINK_OPS:
        keep = str(r["keep"])
        if op == Op.HARDLINK and not os.path.samefile(path, keep):
            if os.path.islink(path):
                raise Refused("has been replaced since")
            return "was never linked"
        if op == Op.SYMLINK:
            if not os.path.islink(path):
                return "was never linked"
            if os.path.realpath(path) != os.path.realpath(keep):
                raise Refused("points elsewhere now")
        if os.path.getsize(keep) != r["size"]:
            raise Refused(f"the kept file {keep} changed size; cannot rebuild the copy")
        mode, mtime_ns = r["mode"], r["mtime_ns"]
        assert isinstance(mode, int) and isinstance(mtime_ns, int)  # checked by _unsafe
        _replace_with_copy_of(path, keep, mode & RESTORED_MODE_BITS, mtime_ns)
        return f"an independent copy of {keep} again"
    raise Refused(f"{op} cannot be undone")


def undo(journal_path: str | Path, key: bytes) -> list[UndoOutcome]:
    """Reverse the journal's changes, newest first, where reversible. The journal must carry this
    user's seal (JournalRefused otherwise, nothing done), and each line must stay inside its
    scanned folders. Each reversal is recorded in the journal, so a second run does nothing."""
    read = read_journal(journal_path, key)
    changes = [r for r in read.records if "op" in r]
    undone = {r.get("seq") for r in read.records if r.get("undone")}
    failed = {r.get("seq") for r in read.records if r.get("failed")}
    out = []
    journal: Journal | None = None
    try:
        for r in reversed(changes):
            seq, op, path = r.get("seq"), str(r.get("op")), str(r.get("path"))
            if seq in undone:
                continue
            problem = _unsafe(r, read)
            if problem is not None:
                out.append(UndoOutcome(int(seq) if isinstance(seq, int) else -1, op, path, False,
                                       f"refused: {problem}"))
                continue
            assert isinstance(seq, int)
            temp = r.get("temp")
            if seq in failed and not (isinstance(temp, str) and os.path.lexists(temp)):
                continue  # refused or failed with the file left where it was: nothing to reverse
            try:
                detail = _undo_one(r)
            except (Refused, OSError) as e:
                out.append(UndoOutcome(seq, op, path, False, str(e)))
                continue
            if journal is None:
                journal = Journal.reopen(read, key)
            journal.write({"seq": seq, "undone": True})
            out.append(UndoOutcome(seq, op, path, True, detail))
    finally:
        if journal is not None:
            journal.close()
    return out
