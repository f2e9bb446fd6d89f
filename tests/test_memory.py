"""Freed heap memory goes back to the system when the daemon lets its model go
(vfpd.memory.release_free_memory after the idle unload in vfpd/service/pipeline.py)."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

PROBE = """
import sys
from vfpd.memory import release_free_memory

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

blocks = [bytearray(4096) for _ in range(60_000)]  # 240 MiB through malloc, not mmap
pinned = blocks[::500]  # a few live blocks spread over the heap: it cannot simply shrink
del blocks
freed = rss_mib()
released = release_free_memory()
print(freed, rss_mib(), released)
"""


def _glibc() -> bool:
    try:
        ctypes.CDLL(None).malloc_trim  # noqa: B018 - the lookup is the test
    except (OSError, AttributeError):
        return False
    return True


@pytest.mark.skipif(not _glibc(), reason="only glibc keeps freed heap pages")
def test_freed_heap_pages_are_given_back() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    freed, after, released = done.stdout.split()
    assert int(freed) > 200, "the probe did not hold the memory it meant to free"
    assert released == "True" and int(after) < int(freed) / 2, done.stdout
