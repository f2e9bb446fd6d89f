"""Giving freed memory back to the system: glibc keeps the heap pages a process freed unless it is
asked (malloc_trim), so a daemon that has let its model go would otherwise stay at its peak size."""

from __future__ import annotations

import ctypes


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; True when some were. Without glibc (musl and
    others return freed memory themselves) it does nothing."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))
