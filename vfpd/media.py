"""Probe a video file and sample small frames from it by time, with PyAV: the only place that decodes.

CONTRACT (filled in by the media work; other parts code against these names):

    probe(path) -> VideoInfo
    sample(path, settings: SamplingSettings = SamplingSettings()) -> SampledVideo
    MediaError and its subclasses, each with a human `.reason` and the `.path`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAME_SIZE = 64
"""Side of the square frames handed to the model (DESIGN.md: 64x64)."""


class MediaError(Exception):
    """A file that cannot be fingerprinted; `reason` says why in words a user understands."""

    kind = "unreadable"

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class NotAVideo(MediaError):
    kind = "not-a-video"


class NoVideoStream(MediaError):
    kind = "no-video-stream"


class Truncated(MediaError):
    kind = "truncated"


class Unreadable(MediaError):
    kind = "unreadable"


class UnsupportedCodec(MediaError):
    kind = "unsupported-codec"


class TooLarge(MediaError):
    kind = "too-large"


@dataclass(frozen=True)
class VideoInfo:
    """What probing tells about a file, before sampling."""

    container: str
    codec: str
    width: int  # as displayed, after rotation
    height: int
    duration: float | None  # seconds; None when the container does not say
    fps: float | None
    rotation: int  # degrees clockwise applied for display: 0, 90, 180, 270


@dataclass(frozen=True, eq=False)
class SampledVideo:
    """Frames sampled from one video.

    frames       (N, FRAME_SIZE, FRAME_SIZE, 3) uint8 RGB, bars removed, rotation applied.
    timestamps   (N,) float64 seconds from the first frame, ascending.
    informative  (N,) bool: False for black, flat and fading frames.
    duration     seconds of video actually decoded/measured.
    info         the probe result.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    informative: np.ndarray
    duration: float
    info: VideoInfo
