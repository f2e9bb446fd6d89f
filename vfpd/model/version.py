"""What names a model, and where the shipped one lies: the short content hash of its weights file,
read without loading torch (the daemon asks it at start-up and for every retrain; torch is loaded
only by the process that runs the model, vfpd/service/embed_process.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

DEFAULT_WEIGHTS = Path(__file__).with_name("weights") / "base.pt"
"""The base weights shipped in the package (see weights/CARD.md)."""

VERSION_CHARS = 12
"""Hex digits of the weights' SHA-256 kept as the model version: collisions are out of reach."""


class WeightsError(Exception):
    """A weights file that is missing, unreadable or not ours; the message says which and why."""


def weights_version(path: Path) -> str:
    """Short content hash of a weights file: fingerprints made by other weights never mix."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no weights file there (train one with `vfpctl train`)") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read the weights file: {e.strerror or e}") from None
    return h.hexdigest()[:VERSION_CHARS]
