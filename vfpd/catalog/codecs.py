"""How values are stored: paths as their bytes on disk, fingerprints and sampled frames as BLOBs."""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
from typing import Any

import numpy as np

from vfpd.detail import Stills
from vfpd.fingerprint import FRAME_DIM, Fingerprint
from vfpd.media import SampledVideo, SamplingSettings, VideoInfo
from vfpd.picture import RULES_VERSION

log = logging.getLogger(__name__)


def path_key(path: str | os.PathLike[str]) -> bytes:
    """How a path is stored: its exact bytes on disk (os.fsencode). A name need not be UTF-8 —
    Python hands such a name over as a str with surrogate escapes (PEP 383), which sqlite3
    refuses to store as TEXT. Bytes are lossless for every name the kernel accepts, sort like
    the kernel's names, and need no escaping convention of our own (a text escape would have to
    escape itself, changing names that are valid UTF-8)."""
    return os.fsencode(path)


def path_text(key: bytes) -> str:
    """A stored path as the str every other part uses (undecodable bytes as surrogates)."""
    return os.fsdecode(key)


def prefix_bounds(prefix: str | os.PathLike[str]) -> tuple[bytes, bytes, bytes]:
    """(the folder, its start, its end) as stored keys: a stored path is the folder itself or
    inside it when it equals the first or lies in [start, end). A range on the path uses the
    UNIQUE index, unlike LIKE, whose wildcards a path may contain."""
    base = path_key(prefix).rstrip(b"/") or b"/"
    inside = base if base.endswith(b"/") else base + b"/"
    # Every path inside `inside` sorts in [inside, inside[:-1] + "0") since "0" follows "/"
    # (BLOBs compare bytewise, like the kernel's names).
    return base, inside, inside[:-1] + bytes([ord("/") + 1])


def prefix_clause(column: str, prefix: str | None) -> tuple[str, list]:
    """WHERE clause for "`column` is directory `prefix` or inside it"."""
    if prefix is None:
        return "", []
    return f"WHERE ({column} = ? OR ({column} >= ? AND {column} < ?))", list(prefix_bounds(prefix))


# -- fingerprints ---------------------------------------------------------------------------------

def f32(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def frames_blob(features: np.ndarray) -> bytes:
    # float16 keeps ~3 significant digits, far below the matcher's score resolution, at half size.
    return np.ascontiguousarray(features, dtype="<f2").tobytes()


def fingerprint_from_row(row: sqlite3.Row | tuple) -> Fingerprint:
    vector, features, timestamps, informative, duration, model_version, stills = row
    ts = np.frombuffer(timestamps, dtype="<f8") if timestamps is not None else np.zeros(0)
    n = len(ts)
    feats = (
        np.frombuffer(features, dtype="<f2").astype(np.float32).reshape(n, FRAME_DIM)
        if features is not None
        else np.zeros((0, FRAME_DIM), np.float32)
    )
    info = (
        np.frombuffer(informative, dtype=np.uint8).astype(bool)
        if informative is not None
        else np.zeros(0, bool)
    )
    return Fingerprint(
        vector=np.frombuffer(vector, dtype="<f4").copy(),
        frame_features=feats,
        timestamps=ts.astype(np.float64),
        informative=info,
        duration=float(duration or 0.0),
        model_version=model_version,
        stills=_stills(stills, n),
    )


def _stills(data: bytes | None, frames: int) -> Stills | None:
    """A fingerprint's stored still pictures. A damaged blob reads as none: the fingerprint is then
    compared by its features alone, and the chain makes them again from the stored frames
    (chain.with_stills), as for one stored before they were kept."""
    if data is None:
        return None
    try:
        return Stills.decode(data, frames)
    except ValueError as e:
        log.warning("stored still pictures unusable (%s); comparing by features alone", e)
        return None


# -- sampled frames -------------------------------------------------------------------------------

UNTAGGED_SAMPLING: dict[str, Any] = {"interval": 1.0, "max_frames": 512, "keyframes": "auto",
                                     "remove_bars": True, "min_frames": 1, "picture": 1}
"""How frames stored without a sampling tag were sampled: SamplingSettings' defaults (the
"accurate" preset), the only sampling the daemon used before the tag was written. Spelt out, not
read from SamplingSettings(), so a later change of the defaults cannot relabel old frames."""


TAG_FIELDS_ADDED: dict[str, Any] = {"min_frames": 1, "picture": 1}
"""Fields added to the sampling tag after frames were first stored, with the value that gives the
frames sampled before the field existed: a stored tag without one reads back as that value, so
frames stored earlier still stand in for the same sampling."""


def sampling_tag(settings: SamplingSettings) -> dict[str, Any]:
    """The fields of `settings` that decide which frames a file gives (the others only limit the
    decoder), and the picture rules they were made under: frames sampled with equal tags can
    stand in for a new decode."""
    return {"interval": float(settings.interval), "max_frames": int(settings.max_frames),
            "keyframes": settings.keyframes, "remove_bars": bool(settings.remove_bars),
            "min_frames": int(settings.min_frames), "picture": RULES_VERSION}


def _json_bytes(value: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(value, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def encode_frames(sampled: SampledVideo, sampling: SamplingSettings | None = None) -> bytes:
    """Compressed, self-describing bytes for a SampledVideo (npz + its probe info as JSON), with
    the sampling that made it (`sampling`; None: untagged, read back as UNTAGGED_SAMPLING)."""
    buf = io.BytesIO()
    extra = {} if sampling is None else {"sampling": _json_bytes(sampling_tag(sampling))}
    np.savez_compressed(
        buf,
        frames=np.ascontiguousarray(sampled.frames, dtype=np.uint8),
        timestamps=np.asarray(sampled.timestamps, dtype=np.float64),
        informative=np.asarray(sampled.informative, dtype=bool),
        duration=np.float64(sampled.duration),
        info=_json_bytes(sampled.info.__dict__),
        **extra,
    )
    return buf.getvalue()


def frames_sampling(data: bytes) -> dict[str, Any]:
    """The sampling tag of encoded frames (UNTAGGED_SAMPLING for frames stored without one),
    read without decompressing the frames."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        if "sampling" not in z.files:
            return dict(UNTAGGED_SAMPLING)
        return {**TAG_FIELDS_ADDED, **json.loads(z["sampling"].tobytes().decode("utf-8"))}


def decode_frames(data: bytes) -> SampledVideo:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        info = VideoInfo(**json.loads(z["info"].tobytes().decode("utf-8")))
        return SampledVideo(
            frames=z["frames"],
            timestamps=z["timestamps"],
            informative=z["informative"],
            duration=float(z["duration"]),
            info=info,
        )
