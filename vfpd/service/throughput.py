"""How fast the pipeline has been taking files lately: the back-log's time to drain
(`vfpctl status`)."""

from __future__ import annotations

import threading

SMOOTHING = 0.3
"""Weight of the newest round in the running estimate: a few rounds follow a change of file sizes
(long films after short clips) without one odd round (a cache hit batch) swinging it."""


class Throughput:
    """A running estimate of seconds per file, fed with each round's files and seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per_file: float | None = None

    def record(self, files: int, seconds: float) -> None:
        if files <= 0 or seconds < 0:
            return
        sample = seconds / files
        with self._lock:
            self._per_file = sample if self._per_file is None else (
                SMOOTHING * sample + (1 - SMOOTHING) * self._per_file)

    @property
    def per_file(self) -> float | None:
        """Seconds per file, or None before the first round."""
        with self._lock:
            return self._per_file

    def eta(self, queued: int) -> float | None:
        """Seconds until `queued` files are done at the recent pace (0 for none; None unknown)."""
        if queued <= 0:
            return 0.0
        per_file = self.per_file
        return None if per_file is None else queued * per_file
