"""Atomic file writes: a reader sees the old file or the new one, never a torn mix.

Write to a temporary name in the same directory, fsync it, rename over the target, fsync the
directory so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path | str, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file; on clean exit it replaces `path` atomically, on error it vanishes.

    The file may be written, seeked and rewritten freely (e.g. a header patched at the end).
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)


def remove_stale_temps(path: Path | str) -> int:
    """Delete temporary files that an interrupted atomic_writer(path) left behind (the process
    was killed between creating and renaming them). Call before the first write of `path`, from
    its only writer. Returns how many were removed."""
    path = Path(path)
    removed = 0
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
        removed += 1
    return removed


def write_bytes(path: Path | str, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically and durably."""
    with atomic_writer(path, mode) as f:
        f.write(data)


def write_text(path: Path | str, text: str, mode: int = 0o644) -> None:
    """Replace `path` with UTF-8 `text` atomically and durably."""
    write_bytes(path, text.encode("utf-8"), mode)
