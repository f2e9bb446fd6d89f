"""Acting on duplicate groups (trash, delete, link, move) safely, with a journal that undo reverses.

plan() is pure: which file of each group is kept (the --keep policy) and which others are acted on
(only those verified directly against the kept file). act() carries out one change, proving at that
moment, through the descriptors it acts through, that the file is the one matched with its
content and that the kept copy is still there with its own; apply() runs a plan through act().
undo() reverses a sealed journal (vfpd/journal.py) where it can, within its scanned folders.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from vfpd import hashing, trash
from vfpd.journal import Journal, ReadJournal, read_journal

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


NOT_DIRECT = "kept: not directly matched to the kept copy"
"""Why a member joined to the group only through others (A~B, B~C: C, keeping A) is left."""

IN_REFERENCE = "in a reference folder; never touched"


def plan(groups: Sequence[Sequence[FileFacts]], action: ActionSpec, policy: str,
         direct: Collection[frozenset[str]], reference: Sequence[str] = ()) -> list[Step]:
    """For each group, keep one file by `policy` and apply `action` to the others that were
    themselves verified as duplicates of it: `direct` holds the pairs {a, b} scoring at least the
    threshold in use. Other members are left (NOT_DIRECT), as are members without a content hash
    to prove at act time and, for links, members that are not byte-identical. Files inside a
    `reference` folder are never acted on, and the keeper is one of them when the group has any
    (by `policy` among them)."""
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
                skip = IN_REFERENCE
            elif frozenset((f.path, keeper.path)) not in direct:
                skip = NOT_DIRECT
            elif f.content_hash is None or keeper.content_hash is None:
                skip = "no content hash to prove the match with; scan again"
            elif action.op in LINK_OPS and f.content_hash != keeper.content_hash:
                skip = f"not byte-identical to the kept file; {action.op} only replaces exact copies"
            steps.append(Step(action.op, f.path, keep=keeper.path, skip=skip))
    return steps


# --- carrying out a plan -------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    step: Step
    done: bool
    detail: str  # where the file went, or why nothing happened


class Refused(Exception):
    """A file is not what was matched (or not where it was); the step is left undone, with this
    reason."""


class _Place:
    """A file opened for acting on: its folder walked from / without following any symbolic link,
    and the file itself opened inside that folder without following one either. Everything done to
    it afterwards goes through these descriptors, so no renamed or swapped path component can
    redirect it."""

    def __init__(self, path: str) -> None:
        # Symbolic links in the path as the scan saw it are resolved once, here; the identity and
        # content checks that follow prove the result is the file that was matched.
        absolute = os.path.abspath(path)
        self.folder = os.path.realpath(os.path.dirname(absolute))
        self.name = os.path.basename(absolute)
        self.path = os.path.join(self.folder, self.name)
        self.dir_fd = _open_folder(self.folder)
        try:
            self.fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                              dir_fd=self.dir_fd)
        except FileNotFoundError:
            os.close(self.dir_fd)
            raise Refused("no longer exists") from None
        except OSError as e:
            os.close(self.dir_fd)
            if e.errno == errno.ELOOP:
                raise Refused("is a symbolic link now") from None
            raise
        self.stat = os.fstat(self.fd)
        if not stat.S_ISREG(self.stat.st_mode):
            self.close()
            raise Refused("is not a regular file")

    @property
    def identity(self) -> tuple[int, int]:
        return self.stat.st_dev, self.stat.st_ino

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.dir_fd)


def _open_folder(folder: str) -> int:
    """A descriptor of `folder` (absolute, without symbolic links), reached one component at a time
    from / with O_NOFOLLOW, so that a folder swapped for a link mid-way is refused."""
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in folder.strip("/").split("/"):
            if not part:
                continue
            try:
                nfd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Refused(f"a folder on its path ({part}) was replaced by a symbolic link "
                                  "or a file") from None
                if e.errno == errno.ENOENT:
                    raise Refused("its folder no longer exists") from None
                raise
            os.close(fd)
            fd = nfd
        # O_PATH descriptors serve the *at() calls; fsync needs one opened for reading.
        real = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
    return real


def _inside(path: str, roots: Sequence[str]) -> bool:
    """`path` (absolute, normalized) is one of `roots` or below one."""
    return os.path.isabs(path) and os.path.normpath(path) == path and any(
        path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _identity_at(dir_fd: int, name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _temp_name(name: str) -> str:
    # Unpredictable, so nobody can prepare a file under it before we rename onto it.
    return f"{TEMP_PREFIX}{secrets.token_hex(8)}-{name}"


def _put_back(place: _Place, temp: str) -> str:
    """Return a taken file to its name, never over a file that took the name meanwhile."""
    try:
        os.link(temp, place.name, src_dir_fd=place.dir_fd, dst_dir_fd=place.dir_fd,
                follow_symlinks=False)
    except FileExistsError:
        return f"; it is kept as {os.path.join(place.folder, temp)} (a new file took its name)"
    os.unlink(temp, dir_fd=place.dir_fd)
    os.fsync(place.dir_fd)
    return ""


def _prove(remove: _Place, keep: _Place, remove_hash: str, keep_hash: str,
           remove_identity: tuple[int, int] | None, keep_identity: tuple[int, int] | None) -> None:
    if remove_identity is not None and remove.identity != remove_identity:
        raise Refused("is another file than the one scanned (replaced, or a folder on its path "
                      "was)")
    if keep_identity is not None and keep.identity != keep_identity:
        raise Refused(f"the kept file {keep.path} is another file than the one scanned; not "
                      "touching its copies")
    if remove.identity == keep.identity:
        raise Refused("is the kept file itself (same device and inode); not touching it")
    if hashing.hash_fd(remove.fd) != remove_hash:
        raise Refused("changed since the scan: it no longer has the content that was matched "
                      "(a cached hash may be stale: scan again)")
    if hashing.hash_fd(keep.fd) != keep_hash:
        raise Refused(f"the kept file {keep.path} changed since the scan; not touching its copies")


def act(journal: Journal, seq: int, action: ActionSpec, remove: str, keep: str, remove_hash: str,
        keep_hash: str, remove_identity: tuple[int, int] | None = None,
        keep_identity: tuple[int, int] | None = None) -> str:
    """Do `action` to the file `remove`, a verified duplicate of `keep`, proving first, through the
    descriptors it then acts through, that `remove` has the content `remove_hash` that was
    matched, that `keep` still exists with `keep_hash`, and that they are two files (and, when
    given, the very files (device, inode) the scan read). Journals the change before making it.
    Returns what was done; raises Refused (nothing changed) or OSError."""
    if action.op in LINK_OPS and remove_hash != keep_hash:
        raise Refused(f"not byte-identical to the kept file; {action.op} only replaces exact copies")
    target = _Place(remove)
    try:
        if not _inside(target.path, journal.roots):
            raise Refused("is outside the scanned folders once symbolic links are resolved")
        try:
            keeper = _Place(keep)
        except Refused as e:
            raise Refused(f"the kept file {keep} {e}; not touching its copies") from None
        try:
            if not _inside(keeper.path, journal.roots):
                raise Refused(f"the kept file {keep} is outside the scanned folders once symbolic "
                              "links are resolved")
            _prove(target, keeper, remove_hash, keep_hash, remove_identity, keep_identity)
            return _carry_out(journal, seq, action, target, keeper)
        finally:
            keeper.close()
    finally:
        target.close()


def _carry_out(journal: Journal, seq: int, action: ActionSpec, target: _Place,
               keeper: _Place) -> str:
    st = target.stat
    temp = _temp_name(target.name)
    record: dict[str, object] = {"seq": seq, "op": action.op, "path": target.path,
                                 "keep": keeper.path, "temp": os.path.join(target.folder, temp),
                                 "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                 "mode": st.st_mode & 0o7777}
    slot = None
    if action.op == TRASH:
        slot = trash.reserve(target.path)
        record.update(trash_file=slot.file_path, trash_info=slot.info_path)
    elif action.op == MOVE:
        assert action.target_dir is not None
        os.makedirs(action.target_dir, exist_ok=True)
        record["dest"] = _free_name(action.target_dir, target.name)
    elif action.op not in (DELETE, HARDLINK, SYMLINK):
        raise ValueError(f"unknown operation {action.op!r}")
    journal.write(record)
    try:
        detail = _take_and_finish(action, target, keeper, temp, record, slot)
    except (Refused, OSError) as e:
        # Undo then knows the file stayed (or was put back) where it was.
        journal.write({"seq": seq, "failed": str(e)})
        raise
    journal.write({"seq": seq, "done": True})
    return detail


def _take_and_finish(action: ActionSpec, target: _Place, keeper: _Place, temp: str,
                     record: dict[str, object], slot: trash.TrashSlot | None) -> str:
    try:
        taken = _take_as(target, temp)
    except BaseException:
        if slot is not None:
            trash.release(slot)
        raise
    try:
        return _finish(action, target, keeper, taken, record, slot)
    except BaseException as e:
        back = _put_back(target, taken)
        if slot is not None:
            trash.release(slot)
        if isinstance(e, Refused):
            raise Refused(f"{e}{back}") from None
        raise


def _take_as(place: _Place, temp: str) -> str:
    os.rename(place.name, temp, src_dir_fd=place.dir_fd, dst_dir_fd=place.dir_fd)
    if _identity_at(place.dir_fd, temp) != place.identity:
        raise Refused("was replaced by another file while being acted on; left in place"
                      + _put_back(place, temp))
    return temp


def _finish(action: ActionSpec, target: _Place, keeper: _Place, taken: str,
            record: dict[str, object], slot: trash.TrashSlot | None) -> str:
    """The change itself, from the taken (private) name; on an exception the caller puts the file
    back under its name."""
    dfd = target.dir_fd
    if action.op == DELETE:
        os.unlink(taken, dir_fd=dfd)
        os.fsync(dfd)
        return "deleted"
    if action.op == TRASH:
        assert slot is not None
        os.rename(taken, slot.file_path, src_dir_fd=dfd)
        os.fsync(dfd)
        _fsync_dir(slot.file_path)
        return f"trashed to {slot.file_path}"
    if action.op == MOVE:
        dest = str(record["dest"])
        _move_fd(target, taken, dest)
        return f"moved to {dest}"
    if action.op == HARDLINK:
        os.link(keeper.name, target.name, src_dir_fd=keeper.dir_fd, dst_dir_fd=dfd,
                follow_symlinks=False)
        if _identity_at(dfd, target.name) != keeper.identity:
            os.unlink(target.name, dir_fd=dfd)
            raise Refused("the kept file was replaced while being linked to")
        os.unlink(taken, dir_fd=dfd)
        os.fsync(dfd)
        return f"now a hard link to {keeper.path}"
    os.symlink(keeper.path, target.name, dir_fd=dfd)
    os.unlink(taken, dir_fd=dfd)
    os.fsync(dfd)
    return f"now a symbolic link to {keeper.path}"


def _move_fd(target: _Place, taken: str, dest: str) -> None:
    """Move the taken file to `dest`, never overwriting it; across filesystems the copy is read
    from the descriptor that was proven, not from a name."""
    dest_dir_fd = _open_folder(os.path.realpath(os.path.dirname(dest)))
    name = os.path.basename(dest)
    try:
        try:
            os.link(taken, name, src_dir_fd=target.dir_fd, dst_dir_fd=dest_dir_fd,
                    follow_symlinks=False)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            _copy_fd_to(target.fd, target.stat, dest_dir_fd, name)
        os.fsync(dest_dir_fd)
    finally:
        os.close(dest_dir_fd)
    os.unlink(taken, dir_fd=target.dir_fd)
    os.fsync(target.dir_fd)


def _copy_fd_to(src_fd: int, st: os.stat_result, dir_fd: int, name: str) -> None:
    tmp = _temp_name(name)
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        offset = 0
        while offset < st.st_size:
            sent = os.copy_file_range(src_fd, out, st.st_size - offset, offset)
            if not sent:
                break
            offset += sent
        os.fchmod(out, stat.S_IMODE(st.st_mode) & 0o777)
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.fsync(out)
    except BaseException:
        os.unlink(tmp, dir_fd=dir_fd)
        raise
    finally:
        os.close(out)
    try:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.unlink(tmp, dir_fd=dir_fd)


def _free_name(directory: str, name: str) -> str:
    stem, ext = os.path.splitext(name)
    n = 0
    while True:
        candidate = os.path.join(directory, name if n == 0 else f"{stem} ({n}){ext}")
        if not os.path.lexists(candidate):
            return candidate
        n += 1


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_beside(path: str) -> str:
    d, name = os.path.split(path)
    return os.path.join(d, _temp_name(name))


def _move_no_replace(src: str, dst: str) -> None:
    """Move a file without ever overwriting dst; copies across filesystems (used by undo)."""
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


def apply(steps: Sequence[Step], facts: Sequence[FileFacts], action: ActionSpec,
          journal: Journal) -> list[Outcome]:
    """Carry out the steps through act(), journalling each change in `journal` (open_journal())
    first. One failing file never stops the rest."""
    by_path = {f.path: f for f in facts}
    out = []
    for seq, step in enumerate(steps, 1):
        if step.skip:
            out.append(Outcome(step, False, step.skip))
            continue
        target, keeper = by_path[step.path], by_path[step.keep]
        assert target.content_hash is not None and keeper.content_hash is not None
        try:
            # Each step's own operation: a plan of decisions (vfpctl apply) mixes them.
            detail = act(journal, seq, ActionSpec(step.op, action.target_dir), step.path,
                         step.keep, target.content_hash, keeper.content_hash, target.identity,
                         keeper.identity)
            out.append(Outcome(step, True, detail))
        except Refused as e:
            out.append(Outcome(step, False, f"skipped: {e}"))
        except OSError as e:
            out.append(Outcome(step, False, f"failed: {e.strerror or e}"))
    return out


def open_journal(path: str | Path, key: bytes, action: ActionSpec, roots: Sequence[str]
                 ) -> Journal:
    """A new journal for `action` on files under `roots`."""
    return Journal(path, key, asdict(action), list(roots))


# --- undo ----------------------------------------------------------------------------------------

RESTORED_MODE_BITS = 0o777
"""Undo restores permission bits only: never setuid, setgid or sticky, whatever a journal says."""


@dataclass(frozen=True)
class UndoOutcome:
    seq: int
    op: str
    path: str
    undone: bool
    detail: str


def _unsafe(r: dict[str, object], journal: ReadJournal) -> str | None:
    """Why a (sealed) journal line must still not be followed, or None. The seal proves this tool
    wrote it; these checks hold it to the folders it was allowed to touch, as they are now."""
    op, path = r.get("op"), r.get("path")
    if op not in (TRASH, DELETE, MOVE, HARDLINK, SYMLINK) or not isinstance(path, str):
        return "not an action this tool records"
    if not _inside(path, journal.roots):
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
                               and _inside(str(r["keep"]), journal.roots)):
        return "the kept file is outside the journal's scanned folders"
    if op == MOVE:
        action = journal.header.get("action")
        target = action.get("target_dir") if isinstance(action, dict) else None
        dest = r.get("dest")
        if not (isinstance(dest, str) and isinstance(target, str)
                and os.path.dirname(dest) == os.path.normpath(target)):
            return "its destination is not in the journal's move folder"
    if op == TRASH:
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
            _fsync_dir(path)
            return "was interrupted; the original is back"
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
                raise Refused("has been replaced since")
            return "was never linked"
        if op == SYMLINK:
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
