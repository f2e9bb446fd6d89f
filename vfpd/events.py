"""The duplicate event: what the log line, the webhook body and the exec hook's environment carry
(a public schema: docs/webhook.md). Made once by the pipeline, stored in the catalog's outbox."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vfpd.matching import Segment

EVENT_DUPLICATE = "duplicate"


@dataclass(frozen=True)
class FileRef:
    """A file named in an event: its path and content hash (and, for the new file, its size and
    duration in seconds)."""

    path: str
    hash: str
    size: int | None = None
    duration: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "hash": self.hash}
        if self.size is not None:
            out["size"] = self.size
            out["duration"] = self.duration
        return out


@dataclass(frozen=True)
class DuplicateEvent:
    """A new file duplicates known content. `id` is random (128 bits): unique per state directory
    even when the catalog loses a committed tail (a damaged WAL) and outbox rows are numbered
    again."""

    id: str
    kind: str
    score: float
    detected_at: float
    new: FileRef
    existing: tuple[FileRef, ...]
    segments: tuple[Segment, ...]

    @classmethod
    def make(cls, kind: str, score: float, new: FileRef, existing: Sequence[FileRef],
            segments: Sequence[Segment]) -> DuplicateEvent:
        return cls(uuid.uuid4().hex, kind, round(float(score), 4), time.time(), new,
                   tuple(existing), tuple(segments))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "event": EVENT_DUPLICATE, "kind": self.kind, "score": self.score,
                "detected_at": self.detected_at, "new": self.new.to_json(),
                "existing": [e.to_json() for e in self.existing],
                "segments": [s.to_json() for s in self.segments]}
