"""Content hashing (BLAKE3, streamed) and the stat that lets unchanged files skip it."""

from __future__ import annotations

import errno
import os
import pickle
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from vfpd.hashing import (
    HASH_BLOCK_SIZE,
    SPARSE_MIN_BYTES,
    FileChanged,
    FileDeleted,
    FileStat,
    HashCancelled,
    HashLimits,
    HashTimeout,
    NotRegularFile,
    SparseFile,
    TooLarge,
    changed,
    hash_and_stat,
    hash_bytes,
    hash_fd,
    hash_file,
    open_regular,
)

EMPTY_BLAKE3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
"""BLAKE3 of the empty input, from the BLAKE3 specification's test vectors."""


def test_empty_file_has_the_reference_hash(tmp_path: Path) -> None:
    p = tmp_path / "empty"
    p.write_bytes(b"")
    assert hash_file(p) == EMPTY_BLAKE3 == hash_bytes(b"")


@pytest.mark.parametrize("block", [HASH_BLOCK_SIZE, 4096, 1000])
def test_streamed_hash_equals_whole_content_hash(tmp_path: Path, block: int) -> None:
    data = os.urandom(2 * HASH_BLOCK_SIZE + 12345)  # several blocks and a partial last one
    p = tmp_path / "video.bin"
    p.write_bytes(data)
    assert hash_file(p, block_size=block) == blake3.blake3(data).hexdigest()


def test_one_byte_difference_changes_the_hash(tmp_path: Path, small_video: Path) -> None:
    data = bytearray(small_video.read_bytes())
    data[len(data) // 2] ^= 1
    other = tmp_path / "flipped.mp4"
    other.write_bytes(bytes(data))
    assert hash_file(small_video) != hash_file(other)
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(small_video.read_bytes())
    assert hash_file(small_video) == hash_file(copy), "same bytes at two paths = exact duplicate"


def test_stat_decides_whether_to_hash_again(tmp_path: Path) -> None:
    p = tmp_path / "a.mp4"
    p.write_bytes(b"x" * 100)
    stored = FileStat.of(p)
    assert stored.size == 100 and stored.inode == p.stat().st_ino
    assert not changed(FileStat.of(p), stored)
    assert changed(FileStat.of(p), None)
    os.utime(p, ns=(stored.mtime_ns, stored.mtime_ns - 10**9))
    assert changed(FileStat.of(p), stored), "an older mtime is a change too (restored backup)"
    p.write_bytes(b"y" * 100)
    assert changed(FileStat.of(p), stored)
    moved = tmp_path / "b.mp4"
    before = FileStat.of(p)
    p.rename(moved)
    assert not changed(FileStat.of(moved), before), "a rename keeps the stat"


def test_hash_and_stat_returns_consistent_pair(tmp_path: Path) -> None:
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc")
    digest, st = hash_and_stat(p)
    assert digest == hash_bytes(b"abc") and st == FileStat.of(p)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "gone.mp4")


# --- opening safely and bounded hashing (issue 16, items 5 and 6) ---------------------------------

FIFO_SECONDS = 5.0
"""A FIFO without a writer is refused in microseconds; this only bounds a regression that blocks."""

FIFTEEN_TB = 15 * 10**12


def _in_thread(fn: Callable[[], object]) -> object:
    """Run `fn` on a daemon thread and return its result or exception; fail if it blocks (an
    open() waiting for a FIFO's writer cannot be interrupted, so the thread is left behind)."""
    box: list[object] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the test to check
            box.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(FIFO_SECONDS)
    assert not t.is_alive(), "blocked (a FIFO opened without O_NONBLOCK waits for a writer)"
    return box[0]


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)
    for fn in (lambda: open_regular(fifo), lambda: hash_and_stat(fifo),
               lambda: hash_file(fifo)):
        err = _in_thread(fn)
        assert isinstance(err, NotRegularFile) and err.kind == "not-a-file", err
        assert "FIFO" in err.reason


def test_path_swapped_to_a_fifo_between_stat_and_open(tmp_path: Path) -> None:
    p = tmp_path / "x.mp4"
    p.write_bytes(b"video" * 1000)
    seen = os.lstat(p)  # what a caller checks first...
    assert stat.S_ISREG(seen.st_mode)
    p.unlink()
    os.mkfifo(p)  # ...and then, before it opens, the name becomes a FIFO
    err = _in_thread(lambda: hash_and_stat(p))
    assert isinstance(err, NotRegularFile), err


def test_open_regular_reads_through_one_descriptor(tmp_path: Path) -> None:
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc")
    with open_regular(p) as f:
        assert os.get_blocking(f.fd), "O_NONBLOCK is cleared once the file is known regular"
        assert f.file_stat == FileStat.of(p)
        p.rename(tmp_path / "moved.bin")
        p.write_bytes(b"other")  # the name now holds other bytes: the descriptor, its own file
        assert hash_fd(f.fd) == hash_bytes(b"abc")
        with open(f.proc_path, "rb") as again:  # what a decode worker opens: the same file
            assert again.read() == b"abc"
        fd = f.fd
    with pytest.raises(OSError):
        os.fstat(fd)  # closed on exit


def test_symlink_refused_unless_followed(tmp_path: Path) -> None:
    target = tmp_path / "real.mp4"
    target.write_bytes(b"abc")
    link = tmp_path / "link.mp4"
    link.symlink_to(target)
    with pytest.raises(OSError) as e:
        open_regular(link)
    assert e.value.errno == errno.ELOOP
    assert hash_and_stat(link, follow_symlinks=True)[0] == hash_bytes(b"abc")


def test_hash_fd_reads_from_the_start_and_keeps_the_offset(tmp_path: Path) -> None:
    p = tmp_path / "a.bin"
    p.write_bytes(b"0123456789")
    fd = os.open(p, os.O_RDONLY)
    try:
        os.lseek(fd, 4, os.SEEK_SET)  # a client's descriptor may have been read from already
        assert hash_fd(fd, block_size=3) == hash_bytes(b"0123456789")
        assert os.lseek(fd, 0, os.SEEK_CUR) == 4
    finally:
        os.close(fd)


def test_fifteen_terabyte_sparse_file_is_refused_at_once(tmp_path: Path) -> None:
    p = tmp_path / "x.mp4"
    with open(p, "wb"):
        pass
    os.truncate(p, FIFTEEN_TB)
    started = time.monotonic()
    with pytest.raises(TooLarge) as e:
        hash_and_stat(p)
    assert "larger than the limit" in e.value.reason and e.value.kind == "too-large"
    # With the size limit lifted by settings, it is still refused: it is all holes.
    with pytest.raises(SparseFile) as s:
        hash_and_stat(p, HashLimits(max_bytes=FIFTEEN_TB))
    assert "sparse file" in s.value.reason and s.value.kind == "sparse"
    assert time.monotonic() - started < FIFO_SECONDS  # nothing was read


def test_sparse_check_spares_small_and_dense_files(tmp_path: Path) -> None:
    small = tmp_path / "small.mp4"
    with open(small, "wb"):
        pass
    os.truncate(small, SPARSE_MIN_BYTES - 1)  # all holes but small: hashed (fast anyway)
    assert hash_and_stat(small)[1].size == SPARSE_MIN_BYTES - 1
    dense = tmp_path / "dense.mp4"
    dense.write_bytes(os.urandom(1 << 20))
    limits = HashLimits(sparse_min_bytes=1 << 20)
    assert hash_and_stat(dense, limits)[0] == hash_file(dense)
    half = tmp_path / "half.mp4"
    half.write_bytes(os.urandom(1 << 20))
    os.truncate(half, 3 << 20)  # a third of it stored: a download still in progress
    with pytest.raises(SparseFile):
        hash_and_stat(half, limits)
    assert hash_and_stat(half, HashLimits(sparse_min_bytes=1 << 20, min_allocated_share=0))


def between_blocks(fn: Callable[[], object]) -> Callable[[], bool]:
    """A should_stop that runs `fn` where the reader checks it between blocks (on its own
    thread), not where the waiting caller polls it: a hook into the middle of a read."""

    def hook() -> bool:
        if threading.current_thread().name == "vfpd-hash":
            fn()
        return False

    return hook


def test_deleted_while_reading_stops(tmp_path: Path) -> None:
    p = tmp_path / "a.mp4"
    p.write_bytes(os.urandom(64 * 4096))
    blocks = []

    def delete_after_first_block() -> None:
        blocks.append(1)
        p.unlink(missing_ok=True)

    with pytest.raises(FileDeleted) as e:
        hash_and_stat(p, should_stop=between_blocks(delete_after_first_block), block_size=4096)
    assert "deleted while reading" in e.value.reason and e.value.kind == "vanished"
    assert len(blocks) == 1, "reading stopped at the next block"


def test_changed_while_reading_is_noticed_through_the_descriptor(tmp_path: Path) -> None:
    p = tmp_path / "a.mp4"
    p.write_bytes(os.urandom(8 * 4096))

    blocks = []

    def append() -> None:
        blocks.append(1)
        with open(p, "ab") as f:  # the writer is still at work, through another descriptor
            f.write(b"more" * 4096)

    with pytest.raises(FileChanged):
        hash_and_stat(p, should_stop=between_blocks(append), block_size=4096)
    assert len(blocks) == 8, "read up to the size seen at opening, not after the writer"
    st = FileStat.of(p)

    def touch() -> None:  # same size, new mtime: rewritten in place
        os.utime(p, ns=(st.mtime_ns, st.mtime_ns + 10**9))

    with pytest.raises(FileChanged):
        hash_and_stat(p, should_stop=between_blocks(touch), block_size=4096)


def test_deadline_exceeded_raises(tmp_path: Path) -> None:
    p = tmp_path / "slow.mp4"
    p.write_bytes(os.urandom(64 * 4096))
    blocks = []

    def slow_source() -> None:  # a disk reading at 4 KiB per 50 ms
        blocks.append(1)
        time.sleep(0.05)

    with pytest.raises(HashTimeout) as e:
        hash_and_stat(p, deadline=time.monotonic() + 0.2, should_stop=between_blocks(slow_source),
                      block_size=4096)
    assert e.value.kind == "timeout" and len(blocks) < 64
    # The default deadline comes from the limits: a budget of nothing is already spent.
    with pytest.raises(HashTimeout):
        hash_and_stat(p, HashLimits(base_seconds=-1.0), block_size=4096)


def test_cancel_stops_hashing(tmp_path: Path) -> None:
    p = tmp_path / "a.mp4"
    p.write_bytes(os.urandom(64 * 4096))
    with pytest.raises(HashCancelled):
        hash_and_stat(p, should_stop=lambda: True, block_size=4096)


def test_refusals_survive_pickling() -> None:
    err = SparseFile("/v/x.mp4", "sparse file: ...")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is SparseFile and (back.path, back.reason) == (err.path, err.reason)


def test_a_read_that_never_returns_lets_the_caller_go(tmp_path: Path) -> None:
    """A read() stuck in the kernel (a dead NFS server) cannot be interrupted; the caller stops
    waiting for it at the deadline, or at once when it is told to stop. The stuck read is played
    by the reader's own check between blocks, which blocks until the test ends."""
    p = tmp_path / "on-a-dead-server.mp4"
    p.write_bytes(os.urandom(64 * 4096))
    release = threading.Event()
    stuck = between_blocks(release.wait)
    try:
        limits = HashLimits(stuck_grace_s=0.2)
        with pytest.raises(HashTimeout) as e:
            hash_and_stat(p, limits, deadline=time.monotonic() + 0.1, should_stop=stuck,
                          block_size=4096)
        assert "did not return in time" in e.value.reason
        asked = threading.Event()

        def client_leaves() -> bool:
            stuck()
            return asked.is_set()

        timer = threading.Timer(0.2, asked.set)
        timer.start()
        with pytest.raises(HashCancelled):
            hash_and_stat(p, should_stop=client_leaves, block_size=4096)  # default: an hour
    finally:
        release.set()
