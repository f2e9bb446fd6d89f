"""Log set-up for the daemon: one line per event on stderr, journald-friendly under systemd."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

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
