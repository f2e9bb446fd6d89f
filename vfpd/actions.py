"""Carrying out a plan of changes to duplicate files (trash, delete, link, move) safely, each
journalled first in a sealed journal (vfpd/journal.py) that vfpd/undo.py reverses.

act() carries out one change, proving at that moment, through the descriptors it acts through,
that the file is the one matched with its content and that the kept copy is still there with its
own; apply() runs a plan (vfpd/planning.py) through act().
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from vfpd import hashing, trash
from vfpd.journal import Journal
from vfpd.planning import LINK_OPS, ActionSpec, FileFacts, Op, Step

TEMP_PREFIX = ".vfpd-tmp-"
"""Begins the private name a file is taken to while it is acted on; undo knows such names by it."""


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


def inside(path: str, roots: Sequence[str]) -> bool:
    """`path` (absolute, normalized) is one of `roots` or below one."""
    return os.path.isabs(path) and os.path.normpath(path) == path and any(
        path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _identity_at(dir_fd: int, name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def temp_name(name: str) -> str:
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
        if not inside(target.path, journal.roots):
            raise Refused("is outside the scanned folders once symbolic links are resolved")
        try:
            keeper = _Place(keep)
        except Refused as e:
            raise Refused(f"the kept file {keep} {e}; not touching its copies") from None
        try:
            if not inside(keeper.path, journal.roots):
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
    temp = temp_name(target.name)
    record: dict[str, object] = {"seq": seq, "op": action.op, "path": target.path,
                                 "keep": keeper.path, "temp": os.path.join(target.folder, temp),
                                 "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                 "mode": st.st_mode & 0o7777}
    slot = None
    if action.op == Op.TRASH:
        slot = trash.reserve(target.path)
        record.update(trash_file=slot.file_path, trash_info=slot.info_path)
    elif action.op == Op.MOVE:
        assert action.target_dir is not None
        os.makedirs(action.target_dir, exist_ok=True)
        record["dest"] = _free_name(action.target_dir, target.name)
    elif action.op not in (Op.DELETE, Op.HARDLINK, Op.SYMLINK):
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
    if action.op == Op.DELETE:
        os.unlink(taken, dir_fd=dfd)
        os.fsync(dfd)
        return "deleted"
    if action.op == Op.TRASH:
        assert slot is not None
        os.rename(taken, slot.file_path, src_dir_fd=dfd)
        os.fsync(dfd)
        fsync_parent(slot.file_path)
        return f"trashed to {slot.file_path}"
    if action.op == Op.MOVE:
        dest = str(record["dest"])
        _move_fd(target, taken, dest)
        return f"moved to {dest}"
    if action.op == Op.HARDLINK:
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
    tmp = temp_name(name)
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


def fsync_parent(path: str) -> None:
    """Make a change to `path`'s name (created, renamed, removed) durable: fsync its folder."""
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
