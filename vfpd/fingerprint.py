"""The Fingerprint record: what the model makes of one video, and what the catalog stores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfpd.detail import Stills

VECTOR_DIM = 256
"""Size of the whole-video embedding that goes into FAISS (DESIGN.md: 256-d)."""

FRAME_DIM = 128
"""Size of each per-frame feature kept for verification (DESIGN.md: 128-d per frame)."""


@dataclass(frozen=True, eq=False)
class Fingerprint:
    """One video's fingerprint.

    vector          (VECTOR_DIM,) float32, L2-normalised: candidate retrieval.
    frame_features  (N, FRAME_DIM) float32, each row L2-normalised: temporal verification.
    timestamps      (N,) float64 seconds from the start of the video, ascending.
    informative     (N,) bool: False for black, flat and fading frames, which never carry a match.
    duration        seconds of video, as measured while sampling.
    model_version   the weights that made it; fingerprints of different versions never mix.
    stills          the pictures of its still stretches (vfpd.detail), which verification compares
                    where nothing moves; None for a fingerprint stored before they were kept.
    """

    vector: np.ndarray
    frame_features: np.ndarray
    timestamps: np.ndarray
    informative: np.ndarray
    duration: float
    model_version: str
    stills: Stills | None = None

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        if self.vector.shape != (VECTOR_DIM,):
            raise ValueError(f"vector has shape {self.vector.shape}, expected ({VECTOR_DIM},)")
        if self.frame_features.shape != (n, FRAME_DIM):
            raise ValueError(
                f"frame_features has shape {self.frame_features.shape}, expected ({n}, {FRAME_DIM})"
            )
        if self.informative.shape != (n,):
            raise ValueError(f"informative has shape {self.informative.shape}, expected ({n},)")
        if self.stills is not None and self.stills.of.shape != (n,):
            raise ValueError(f"stills map {self.stills.of.shape} frames, expected ({n},)")
