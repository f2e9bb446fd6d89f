"""The catalog's vocabulary: the states and labels it stores, as the exact strings in its rows.

Each is a StrEnum, so a member equals its string ("failed" == JobState.FAILED), prints and
serialises to JSON as that string: stored rows and the control protocol are unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job stands; a job leaves the table when its result is stored."""

    QUEUED = "queued"
    """Waiting for its turn, or for its next try after a failure, or in progress (leased)."""
    FAILED = "failed"
    """Out of tries (or failed for a reason that will not change): kept with its reason."""


class FileState(StrEnum):
    """Whether a path's content could be processed."""

    OK = "ok"
    FAILED = "failed"
    """Its job failed for good: it takes part in no match until it changes or is retried."""


class DeliveryState(StrEnum):
    """Where an event's announcement to one sink stands."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    """Given up after the delivery policy's tries."""


class Kind(StrEnum):
    """How two contents are duplicates."""

    EXACT = "exact"
    """Byte-identical: the same content hash."""
    NEAR = "near"
    """The same footage, transformed (re-encoded, resized, cropped, ...)."""
    PARTIAL = "partial"
    """One holds part of the other (a clip, a trimmed copy), or they share a segment."""


class Verdict(StrEnum):
    """The user's judgement on a pair."""

    CONFIRMED = "confirmed"
    NOT_DUPLICATE = "not_duplicate"
    """Hidden from duplicate lists and never announced again."""
