"""What the control commands may see and do in a running daemon: the daemon implements this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from vfpd.catalog import Catalog
    from vfpd.config import Config
    from vfpd.hashing import OpenFile
    from vfpd.service.retrainer import Retrainer


WatchMode = Literal["inotify", "polling", "missing"]
"""How a root is watched: kernel events, a periodic walk (network filesystems, or inotify's
watch limit reached), or not at all (the folder is gone; looked for again)."""


@dataclass(frozen=True)
class RootState:
    """One watched root and how it is watched right now."""

    path: str
    mode: WatchMode
    reason: str  # why this mode (e.g. "configured poll", "inotify watch limit reached")


class ServiceContext(Protocol):
    """The daemon as the control socket's commands see it.

    Reads go to the catalog through read connections; writes that change what the pipeline does
    go through these methods so the daemon stays the one writer.
    """

    config: Config
    catalog: Catalog
    started_at: float  # time.time() at start

    def roots(self) -> list[RootState]: ...

    def queue_length(self) -> int: ...

    def drain_eta(self, queued: int) -> float | None:
        """Seconds until `queued` files are done at the recent pace (None before any)."""
        ...

    def paused(self) -> bool: ...

    def health(self) -> dict[str, object]:
        """{"state": "ok" | "degraded", "reason": why it cannot make progress, or None}"""
        ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def rescan(self, path: Path | None) -> int:
        """Queue a reconcile of one path (or every root); returns how many jobs were queued."""
        ...

    def retry(self, path: Path) -> bool:
        """Queue a failed file again; False when the path is not a known failure."""
        ...

    def index_info(self) -> dict[str, object]:
        """{"type": ..., "size": ..., "model_version": ...}"""
        ...

    def query(self, file: OpenFile, k: int, should_stop: Callable[[], bool]
              ) -> list[dict[str, object]]:
        """Nearest videos to an open file (fingerprinted on the fly when unknown), with scores.
        Everything is read through `file.fd`; `should_stop()` true (the client left) abandons the
        work between stages with hashing.HashCancelled."""
        ...

    def set_verdict(self, a: Path, b: Path, verdict: str) -> dict[str, object]:
        """Store the user's verdict ("confirmed" | "not-a-duplicate") on a pair, by content hash."""
        ...

    def last_retrain(self) -> dict[str, object] | None: ...

    retrainer: Retrainer | None
    """Retraining and model versions (None in a context without them)."""
