"""Content hashing (BLAKE3, streamed) and the stat that lets unchanged files skip it."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import pytest

from vfpd.hashing import HASH_BLOCK_SIZE, FileStat, changed, hash_and_stat, hash_bytes, hash_file

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
