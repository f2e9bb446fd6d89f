"""Move files to the trash the freedesktop.org way, and back: we need to know where each file went.

send2trash implements the same specification but does not say where it put a file (and reads
XDG_DATA_HOME once, at import), so an undo could not find it; hence this small implementation of
the spec's placement rules: the home trash for files on its device, otherwise the volume's
$topdir/.Trash/$uid (when it is a proper sticky directory) or $topdir/.Trash-$uid.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

INFO_SUFFIX = ".trashinfo"
MAX_NAME_TRIES = 10_000
"""Names tried in files/ before giving up: the spec resolves clashes by picking another name; a
trash with this many files of one name is broken, not busy."""


class TrashError(OSError):
    """The file could not be trashed (no usable trash directory on its volume, permissions, ...)."""


@dataclass(frozen=True)
class TrashSlot:
    """Where a file goes in the trash: reserved (the .trashinfo exists) but not moved yet."""

    trash_dir: str
    file_path: str  # files/NAME
    info_path: str  # info/NAME.trashinfo


def home_trash() -> Path:
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                          "share")
    return Path(data) / "Trash"


def _device(path: Path) -> int:
    """Device of `path`, or of its nearest existing parent (the trash may not exist yet)."""
    p = path
    while True:
        try:
            return os.stat(p).st_dev
        except FileNotFoundError:
            if p.parent == p:
                raise
            p = p.parent


def _mount_point(path: Path) -> Path:
    p = Path(os.path.realpath(path))
    while not os.path.ismount(p):
        p = p.parent
    return p


def _volume_trash(topdir: Path) -> Path:
    uid = str(os.getuid())
    shared = topdir / ".Trash"
    try:
        st = os.lstat(shared)
        if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
            own = shared / uid
            own.mkdir(mode=0o700, exist_ok=True)
            return own
    except OSError:
        pass
    own = topdir / f".Trash-{uid}"
    try:
        own.mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        raise TrashError(e.errno, f"no usable trash on the volume of {topdir}: {e.strerror}") from e
    return own


def _trash_for(path: Path) -> tuple[Path, str]:
    """(trash directory, the Path= value for the .trashinfo) for a file."""
    absolute = Path(os.path.abspath(path))
    home = home_trash()
    if os.lstat(absolute).st_dev == _device(home):
        return home, os.fsencode(absolute).decode("latin-1")
    topdir = _mount_point(absolute.parent)
    rel = os.path.relpath(absolute, topdir)
    return _volume_trash(topdir), os.fsencode(rel).decode("latin-1")


def reserve(path: str | Path) -> TrashSlot:
    """Pick the trash location of `path` and create its .trashinfo atomically (O_EXCL), as the spec
    asks, so that no other program takes the name. The file itself is not moved yet."""
    path = Path(path)
    trash, recorded = _trash_for(path)
    files, info = trash / "files", trash / "info"
    for d in (trash, files, info):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = os.fsencode(path.name)
    stem, dot, ext = name.rpartition(b".")
    if not stem:
        stem, dot, ext = name, b"", b""
    body = (
        "[Trash Info]\n"
        f"Path={quote(recorded.encode('latin-1'), safe='/')}\n"
        f"DeletionDate={time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
    ).encode()
    for n in range(MAX_NAME_TRIES):
        candidate = name if n == 0 else stem + b" " + str(n).encode() + dot + ext
        info_path = os.path.join(os.fsencode(info), candidate + INFO_SUFFIX.encode())
        file_path = os.path.join(os.fsencode(files), candidate)
        if os.path.lexists(file_path):
            continue
        try:
            fd = os.open(info_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        return TrashSlot(str(trash), os.fsdecode(file_path), os.fsdecode(info_path))
    raise TrashError(errno.EEXIST, f"no free name in {files} for {path.name}")


def is_slot(file_path: str, info_path: str) -> bool:
    """Whether (files/NAME, info/NAME.trashinfo) is a slot of a trash directory this module uses:
    the home trash or a volume's, and the two halves belong together."""
    trash_dir = os.path.dirname(os.path.dirname(file_path))
    uid = str(os.getuid())
    return (os.path.normpath(file_path) == file_path
            and os.path.dirname(file_path) == os.path.join(trash_dir, "files")
            and info_path == os.path.join(trash_dir, "info",
                                          os.path.basename(file_path) + INFO_SUFFIX)
            and (trash_dir == str(home_trash())
                 or os.path.basename(trash_dir) == f".Trash-{uid}"
                 or (os.path.basename(trash_dir) == uid
                     and os.path.basename(os.path.dirname(trash_dir)) == ".Trash")))


def release(slot: TrashSlot) -> None:
    try:
        os.unlink(slot.info_path)
    except FileNotFoundError:
        pass


def restore(slot: TrashSlot, original: str | Path) -> None:
    """Put a trashed file back where it was; refuses to overwrite a file that took its place."""
    if os.path.lexists(original):
        raise FileExistsError(errno.EEXIST, "a file exists at the original path", str(original))
    try:
        os.link(slot.file_path, original)  # fails instead of overwriting, unlike rename
        os.unlink(slot.file_path)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # Filesystems without hard links (FAT, some FUSE): checked free just above.
        os.rename(slot.file_path, original)
    release(slot)
    _fsync_dir(os.path.dirname(os.path.abspath(original)))


def _fsync_dir(d: str) -> None:
    fd = os.open(d or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
