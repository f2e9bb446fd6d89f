"""Content identity: BLAKE3 of a whole file, read once through one safely opened descriptor, with
the limits that keep a hostile file (a FIFO, a 15 TB sparse file, one deleted mid-read) from
blocking whoever hashes it; and the stat that lets unchanged files skip hashing."""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import blake3

HASH_BLOCK_SIZE = 1 << 20
"""Read size while hashing. Measured on a cached 500 MB file: 64 KiB..16 MiB blocks all ran at
~5 GB/s (0.09-0.12 s); 1 MiB is at the flat optimum while keeping the buffer small. update_mmap
and multi-threading gained ~20% on cached data only, and would take cores from the decoders."""

HASH_HEX_LENGTH = 64
"""A BLAKE3 digest is 32 bytes, stored and compared as 64 lowercase hex characters."""

MAX_FILE_BYTES = 1 << 40
"""1 TiB: two hours of 4K ProRes 422 HQ, a camera master, is about 0.9 TB and nothing a person
calls a video is larger; hashing 1 TiB from a disk already takes over an hour."""

SPARSE_MIN_BYTES = 64 << 20
"""Files smaller than this are hashed whatever their allocation: reading 64 MiB of holes takes
well under a second, and small files on filesystems that under-report blocks are not refused."""

SPARSE_MIN_ALLOCATED = 0.5
"""A video's bytes are already compressed, so every one of them is stored on disk (filesystem
compression gains almost nothing on them); a file with less than half of its size allocated is a
hole-punched fake or a preallocated download still in progress, not a video to hash."""

HASH_BASE_SECONDS = 60.0
"""Time every hash gets whatever the size: opening, a cold disk spinning up, a busy machine."""

HASH_MIN_BYTES_PER_SECOND = 10 << 20
"""The slowest read rate a real source sustains (USB 2 disk, busy NAS: 20-40 MB/s) with margin;
a file read slower than this (a FUSE file that stalls, a dying disk) gives up its time budget."""

HASH_STUCK_GRACE_S = 5.0
"""Past its deadline a reader notices at its next block; the caller waits this much longer, then
stops waiting: a read() that has not returned by then is stuck in the kernel (a dead NFS server,
a hung FUSE file) and may never return."""

HASH_POLL_S = 0.1
"""How often a caller waiting for a hash asks should_stop(): a client that left is let go within
a tenth of a second, even while a read hangs."""

OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""O_NONBLOCK: opening a FIFO (or a device) never waits for a writer; O_NOFOLLOW: a symbolic link
swapped in for the file is refused, not followed."""

RefusalKind = Literal["not-a-file", "too-large", "sparse", "timeout", "vanished", "changed",
                      "cancelled"]


class HashRefused(OSError):
    """The file was not hashed, for a reason about the file (or the caller's limits), not an I/O
    error; `kind` names the reason for reports, `reason` says it to a person."""

    kind: ClassVar[RefusalKind]

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.reason))


class NotRegularFile(HashRefused):
    """A FIFO, socket, device or directory where a file was expected."""

    kind = "not-a-file"


class TooLarge(HashRefused):
    kind = "too-large"


class SparseFile(HashRefused):
    kind = "sparse"


class HashTimeout(HashRefused):
    kind = "timeout"


class FileDeleted(HashRefused):
    """The file's last name was removed while it was being read."""

    kind = "vanished"


class FileChanged(HashRefused):
    """The file was modified while it was being hashed; it is still being written."""

    kind = "changed"


class HashCancelled(HashRefused):
    """The caller's should_stop said to stop (its client left, the daemon is stopping)."""

    kind = "cancelled"


@dataclass(frozen=True)
class HashLimits:
    """What one hash may cost; the defaults suit every caller, tests and settings override them."""

    max_bytes: int = MAX_FILE_BYTES
    sparse_min_bytes: int = SPARSE_MIN_BYTES
    min_allocated_share: float = SPARSE_MIN_ALLOCATED  # 0 turns the sparse check off
    base_seconds: float = HASH_BASE_SECONDS
    min_bytes_per_second: int = HASH_MIN_BYTES_PER_SECOND
    stuck_grace_s: float = HASH_STUCK_GRACE_S

    def budget(self, size: int) -> float:
        """Seconds a file of `size` bytes may take to hash."""
        return self.base_seconds + size / self.min_bytes_per_second


@dataclass(frozen=True)
class FileStat:
    """What identifies one version of a file on disk without reading it."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: Path | str) -> FileStat:
        """Stat `path` (following symlinks)."""
        st = os.stat(path)
        return cls.from_stat_result(st)

    @classmethod
    def from_stat_result(cls, st: os.stat_result) -> FileStat:
        return cls(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, device=st.st_dev)


def changed(current: FileStat, stored: FileStat | None) -> bool:
    """True when the file must be hashed again: no stored stat, or size/mtime/inode/device differ.

    Any difference counts, even an older mtime (a restored backup is new content to us).
    """
    return stored is None or current != stored


class OpenFile:
    """A regular file opened once, by open_regular(); all reading goes through `fd`. `stat` is
    the descriptor's fstat at opening. Closes the descriptor on exit."""

    def __init__(self, fd: int, st: os.stat_result, path: str) -> None:
        self.fd = fd
        self.stat = st
        self.path = path

    @property
    def file_stat(self) -> FileStat:
        return FileStat.from_stat_result(self.stat)

    @property
    def proc_path(self) -> str:
        """A name for this open file that another process (a decode worker) can open: the magic
        link /proc/<our pid>/fd/N leads to this very inode, whatever its name holds by then. It
        opens with the opener's rights: hand it on only for a file this process may read."""
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OpenFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_regular(path: Path | str, *, follow_symlinks: bool = False) -> OpenFile:
    """Open `path` once for reading without ever blocking, and only if it is a regular file.

    The name is looked up once: a FIFO or device swapped in for the file after the caller's
    stat() is seen by fstat() on this descriptor (NotRegularFile) instead of blocking open().
    O_NONBLOCK is cleared again, so reads of the regular file behave normally. A symbolic link
    as the last component is refused (OSError ELOOP) unless `follow_symlinks`. Raises OSError.
    """
    flags = OPEN_FLAGS & ~os.O_NOFOLLOW if follow_symlinks else OPEN_FLAGS
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(str(path), f"not a regular file ({file_type_name(st.st_mode)})")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return OpenFile(fd, st, str(path))


def file_type_name(mode: int) -> str:
    """What a stat's mode says the file is, for messages: "a FIFO", "a folder", ..."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a file"


def check_hashable(path: str, st: os.stat_result, limits: HashLimits = HashLimits()) -> None:
    """Refuse, before reading a byte, a file too large to be a video or mostly holes."""
    if st.st_size > limits.max_bytes:
        raise TooLarge(path, f"the file is {_size(st.st_size)}, larger than the limit of "
                             f"{_size(limits.max_bytes)}; not read")
    allocated = st.st_blocks * 512
    if (st.st_size >= limits.sparse_min_bytes
            and allocated < st.st_size * limits.min_allocated_share):
        raise SparseFile(path, f"sparse file: {_size(st.st_size)} long but only "
                               f"{_size(allocated)} stored on disk (a hole-punched or unfinished "
                               f"file, not a video); not read")


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def hash_fd(fd: int, path: str = "", *, size: int | None = None, deadline: float | None = None,
            should_stop: Callable[[], bool] | None = None,
            block_size: int = HASH_BLOCK_SIZE) -> str:
    """BLAKE3 of the content behind `fd`, read from offset 0 up to end of file or `size` bytes
    (the descriptor's own offset is neither used nor moved, so a client's descriptor can be
    hashed as it is).

    Between blocks: past `deadline` (time.monotonic()) raises HashTimeout, `should_stop()` true
    raises HashCancelled, and a file whose last link is gone (st_nlink 0) raises FileDeleted:
    nobody can see its content any more, so reading on is wasted work. `path` names the file in
    those errors.
    """
    hasher = blake3.blake3()
    buffer = bytearray(block_size)
    view = memoryview(buffer)
    offset = 0
    while size is None or offset < size:
        if size is not None and size - offset < block_size:
            view = memoryview(buffer)[: size - offset]
        n = os.preadv(fd, [view], offset)
        if not n:
            break
        hasher.update(view[:n])
        offset += n
        if deadline is not None and time.monotonic() > deadline:
            raise HashTimeout(path, f"hashing did not finish in time ({offset} bytes read); "
                                    "the file reads too slowly")
        if should_stop is not None and should_stop():
            raise HashCancelled(path, "hashing was cancelled")
        if os.fstat(fd).st_nlink == 0:
            raise FileDeleted(path, "the file was deleted while reading it")
    return hasher.hexdigest()


def hash_open(opened: OpenFile, limits: HashLimits = HashLimits(), *,
              deadline: float | None = None, should_stop: Callable[[], bool] | None = None,
              block_size: int = HASH_BLOCK_SIZE) -> tuple[str, FileStat]:
    """Hash an open file within `limits` and return (hash, stat of what was hashed).

    The deadline defaults to now + limits.budget(size). If the file changed while it was being
    read (fstat before != fstat after), raises FileChanged so the caller retries later instead of
    recording a hash for content that no longer exists.

    The reading runs on a helper thread with a descriptor of its own, so that the caller is free
    again at the deadline (plus limits.stuck_grace_s) or as soon as should_stop() says so, even
    when one read() never returns; such a thread is left to finish or hang by itself.
    """
    check_hashable(opened.path, opened.stat, limits)
    if deadline is None:
        deadline = time.monotonic() + limits.budget(opened.stat.st_size)
    own = OpenFile(os.dup(opened.fd), opened.stat, opened.path)
    outcome: list[tuple[str, FileStat] | BaseException] = []
    done = threading.Event()
    given_up = threading.Event()

    def stop() -> bool:
        return given_up.is_set() or (should_stop is not None and should_stop())

    def read() -> None:
        try:
            with own:
                outcome.append(_hash_here(own, deadline, stop, block_size))
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            outcome.append(e)
        finally:
            done.set()

    threading.Thread(target=read, name="vfpd-hash", daemon=True).start()
    give_up_at = deadline + limits.stuck_grace_s
    try:
        while not done.wait(HASH_POLL_S):
            if should_stop is not None and should_stop():
                raise HashCancelled(opened.path, "hashing was cancelled")
            if time.monotonic() > give_up_at:
                raise HashTimeout(opened.path, "a read of the file did not return in time (the "
                                               "file system is not answering)")
    finally:
        given_up.set()  # the reader stops at its next block if the caller left (Ctrl-C too)
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _hash_here(opened: OpenFile, deadline: float, should_stop: Callable[[], bool],
               block_size: int) -> tuple[str, FileStat]:
    """hash_open's reading, on the calling thread."""
    # Never past the size seen at opening: a file that grows while it is read (still being
    # written) cannot keep the reader busy, and the fstat below reports it as changed.
    digest = hash_fd(opened.fd, opened.path, size=opened.stat.st_size, deadline=deadline,
                     should_stop=should_stop, block_size=block_size)
    after = os.fstat(opened.fd)
    if after.st_nlink == 0:
        raise FileDeleted(opened.path, "the file was deleted while reading it")
    if FileStat.from_stat_result(after) != opened.file_stat:
        raise FileChanged(opened.path, "the file changed while it was being read")
    return digest, opened.file_stat


def hash_and_stat(path: Path | str, limits: HashLimits = HashLimits(), *,
                  follow_symlinks: bool = False, deadline: float | None = None,
                  should_stop: Callable[[], bool] | None = None,
                  block_size: int = HASH_BLOCK_SIZE) -> tuple[str, FileStat]:
    """Open `path` once (open_regular) and hash it (hash_open): the (hash, stat) of one version
    of one regular file. Raises OSError: HashRefused subclasses say why a file was not hashed."""
    with open_regular(path, follow_symlinks=follow_symlinks) as opened:
        return hash_open(opened, limits, deadline=deadline, should_stop=should_stop,
                         block_size=block_size)


def hash_file(path: Path | str, block_size: int = HASH_BLOCK_SIZE) -> str:
    """BLAKE3 of the file's whole content, as 64 lowercase hex characters. Raises OSError."""
    return hash_and_stat(path, follow_symlinks=True, block_size=block_size)[0]


def hash_bytes(data: bytes) -> str:
    """BLAKE3 of `data` as hex; the same value hash_file gives for a file with this content."""
    return blake3.blake3(data).hexdigest()
