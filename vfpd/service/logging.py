"""Log set-up for the daemon: one line per event on stderr, journald-friendly under systemd, and
the rate limit that keeps one client's trouble to a line a minute."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Hashable, Mapping

# syslog priorities that journald reads from a "<N>" line prefix (sd-daemon(3)).
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def under_journald(env: Mapping[str, str], stream: object = sys.stderr) -> bool:
    """True when stderr is connected to journald ($JOURNAL_STREAM names its device:inode)."""
    value = env.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    try:
        st = os.fstat(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return value == f"{st.st_dev}:{st.st_ino}"


class JournalFormatter(logging.Formatter):
    """"<6>vfpd.pipeline: message": journald adds the time and maps the prefix to a priority."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"


class LineFormatter(logging.Formatter):
    """Tracebacks folded into the line, so one event stays one line for grep and log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def setup(level: str, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    handler = logging.StreamHandler(sys.stderr)
    if under_journald(env):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(LineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(LEVELS.get(level, logging.INFO))
    # Third-party chatter (watchdog's per-event debug lines) stays out unless it is a problem.
    logging.getLogger("watchdog").setLevel(max(logging.WARNING, LEVELS.get(level, logging.INFO)))


MAX_LOG_KEYS = 4096
"""Rate-limit entries kept; beyond this the oldest are forgotten (a few hundred KiB at most)."""


class RateLimit:
    """Says yes at most once per key every `every_s` seconds (thread-safe); used to keep what one
    client causes in the log to a line a minute."""

    def __init__(self, every_s: float, max_keys: int = MAX_LOG_KEYS) -> None:
        self.every_s = every_s
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._last: dict[Hashable, tuple[float, int]] = {}  # key -> (when allowed, said no since)

    def allow(self, key: Hashable) -> int | None:
        """None to stay quiet; otherwise how many times it said no for this key since the last
        yes (to report as "N similar messages suppressed")."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.every_s:
                self._last[key] = (last[0], last[1] + 1)
                return None
            self._last.pop(key, None)
            if len(self._last) >= self.max_keys:
                # dicts keep insertion order: the first entries are the least recently allowed
                for old in list(self._last)[: self.max_keys // 4]:
                    del self._last[old]
            self._last[key] = (now, 0)
            return last[1] if last is not None else 0


def suppressed(n: int) -> str:
    """The note a line that was let through carries about the `n` left out before it."""
    return f" ({n} similar ones left out since the last such line)" if n else ""
