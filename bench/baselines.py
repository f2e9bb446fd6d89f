"""Established near-duplicate video tools run on the benchmark files, each reduced to a score per
pair: vpdq (Meta's video PDQ), FFmpeg's MPEG-7 `signature` filter, and a per-frame pHash."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class MethodResult:
    """One method's view of the set: a symmetric (n, n) score matrix (diagonal unused), the
    threshold at which the method itself calls a pair a duplicate, and the wall time it took."""

    name: str
    scores: np.ndarray
    default_threshold: float
    seconds: float
    note: str = ""


# --- shared: sets of 64/256-bit hashes compared by Hamming distance ------------------------------

def _popcount_rows(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x).sum(axis=-1, dtype=np.int32)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between rows of two (n, words) uint64 hash arrays."""
    return _popcount_rows(a[:, None, :] ^ b[None, :, :])


def match_fractions(hashes: Sequence[np.ndarray], max_distance: int) -> np.ndarray:
    """M[i, j] = share of video i's hashes that have a hash of video j within `max_distance`.
    Videos without hashes match nothing."""
    n = len(hashes)
    owner = np.concatenate([np.full(len(h), i) for i, h in enumerate(hashes)]).astype(np.int64)
    words = hashes[0].shape[1] if n else 1
    allh = (np.concatenate([h.reshape(-1, words) for h in hashes]) if len(owner)
            else np.zeros((0, words), np.uint64))
    out = np.zeros((n, n))
    counts = np.bincount(owner, minlength=n)
    chunk = max(1, 4_000_000 // max(1, len(allh) * words))
    for start in range(0, len(allh), chunk):
        d = hamming_matrix(allh[start:start + chunk], allh) <= max_distance  # (c, total)
        # near[k, j]: hash k has a near hash in video j
        near = np.zeros((len(d), n), bool)
        for j in range(n):
            sel = owner == j
            if sel.any():
                near[:, j] = d[:, sel].any(axis=1)
        np.add.at(out, owner[start:start + chunk], near)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(counts[:, None] > 0, out / np.maximum(counts[:, None], 1), 0.0)
    return frac


def symmetric_best(frac: np.ndarray) -> np.ndarray:
    """Pair score = the better direction: a short clip fully inside a long video scores 1."""
    s = np.maximum(frac, frac.T)
    np.fill_diagonal(s, 0.0)
    return s


# --- vpdq -------------------------------------------------------------------------------------

VPDQ_DISTANCE = 31
"""Hamming distance (of 256 bits) under which two PDQ frame hashes match: ThreatExchange's default."""

VPDQ_QUALITY = 50
"""Frames below this PDQ quality (flat, dark) are skipped, as ThreatExchange's matcher does."""

VPDQ_MATCH_SHARE = 0.8
"""ThreatExchange reports a vpdq match when at least 80% of the query's unique frame hashes match."""


def vpdq_hashes(path: Path) -> np.ndarray:
    """Unique good-quality PDQ hashes of a video, one a second, as (n, 4) uint64."""
    import vpdq  # noqa: PLC0415 - optional benchmark dependency

    feats = vpdq.computeHash(str(path), seconds_per_hash=1.0)
    rows = {f.hex for f in feats if f.quality >= VPDQ_QUALITY}
    if not rows:
        return np.zeros((0, 4), np.uint64)
    raw = np.frombuffer(b"".join(bytes.fromhex(h) for h in sorted(rows)), dtype=">u8")
    return raw.astype(np.uint64).reshape(-1, 4)


def run_vpdq(paths: Sequence[Path]) -> MethodResult:
    t0 = time.perf_counter()
    hashes = [vpdq_hashes(p) for p in paths]
    scores = symmetric_best(match_fractions(hashes, VPDQ_DISTANCE))
    return MethodResult("vpdq", scores, VPDQ_MATCH_SHARE, time.perf_counter() - t0,
                        "share of unique PDQ frame hashes (1/s, quality>=50) within 31 bits")


# --- per-frame pHash --------------------------------------------------------------------------

PHASH_DISTANCE = 10
"""Bits (of 64) under which two frame pHashes are the same picture: the usual pHash cut-off."""

PHASH_MATCH_SHARE = 0.5
"""A pair is a duplicate when half the frames of one video have a near match in the other."""


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n))
    m[0] /= np.sqrt(2)
    return m * np.sqrt(2 / n)


_DCT32 = _dct_matrix(32)


def phash_frames(gray32: np.ndarray) -> np.ndarray:
    """pHash of (n, 32, 32) gray frames: signs of the 8x8 lowest DCT coefficients against their
    median, packed into (n, 1) uint64."""
    d = _DCT32 @ gray32.astype(np.float64) @ _DCT32.T
    low = d[:, :8, :8].reshape(len(gray32), 64)
    bits = low > np.median(low, axis=1, keepdims=True)
    packed = np.packbits(bits, axis=1)  # (n, 8) bytes
    return packed.view(">u8").astype(np.uint64).reshape(-1, 1)


def frames_1fps(path: Path) -> np.ndarray:
    """Gray 32x32 frames, one a second, decoded by the ffmpeg CLI."""
    r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(path),
                        "-vf", "fps=1,scale=32:32:flags=area,format=gray", "-f", "rawvideo", "-"],
                       capture_output=True, check=True)
    return np.frombuffer(r.stdout, np.uint8).reshape(-1, 32, 32)


def run_phash(paths: Sequence[Path], workers: int = 2) -> MethodResult:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashes = [phash_frames(f) for f in pool.map(frames_1fps, paths)]
    scores = symmetric_best(match_fractions(hashes, PHASH_DISTANCE))
    return MethodResult("pHash (1 fps)", scores, PHASH_MATCH_SHARE, time.perf_counter() - t0,
                        "share of 1 fps frame pHashes within 10 bits")


# --- FFmpeg MPEG-7 video signature ------------------------------------------------------------

_MATCH = re.compile(r"matching of video (\d+) at [\d.]+ and (\d+) at [\d.]+, (\d+) frames matching")
_WHOLE = "whole video matching"

SIGNATURE_MATCH = 0.5
"""The filter's own verdict maps to scores >= 0.5 (see signature_scores); any reported match is
the tool saying "duplicate"."""


def signature_scores(log: str, frames: Sequence[int]) -> np.ndarray:
    """Scores from the filter's log. The filter only says match / no match (plus the matched
    length and whether the whole video matched); to rank pairs for AP a reported match scores
    0.5 + 0.5 * matched frames / frames of the shorter video, a whole-video match 1.0, no match 0."""
    n = len(frames)
    s = np.zeros((n, n))
    lines = log.splitlines()
    for k, line in enumerate(lines):
        m = _MATCH.search(line)
        if not m:
            continue
        i, j, count = int(m.group(1)), int(m.group(2)), int(m.group(3))
        whole = k + 1 < len(lines) and _WHOLE in lines[k + 1]
        shorter = max(1, min(frames[i], frames[j]))
        score = 1.0 if whole else 0.5 + 0.5 * min(1.0, count / shorter)
        s[i, j] = s[j, i] = score
    return s


def frame_count(path: Path) -> int:
    r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
                        "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
                       capture_output=True, text=True, check=True)
    return int(r.stdout.strip().split(",")[0])


SIGNATURE_FRAME = "128:72"
"""Inputs are scaled (area average) to this size before the filter. The filter reduces each frame
to the luma means of a 32x32 grid, which an area downscale keeps; full-size frames of hundreds of
inputs waiting in the filter graph's queues would need tens of GB."""

SIGNATURE_FPS = 5
"""Frames per second given to the filter. Its pairwise lookup costs frames x frames: at the
native 25-30 fps it took 0.18 CPU-s a pair here (3 hours for 24k pairs); at 5 fps 25x less."""

SIGNATURE_MAX_RSS = 6 << 30
"""Resident-memory cap for the one ffmpeg process, checked while it runs: it is stopped with a
clear error instead of pushing a shared machine into swap if frames pile up anyway."""


def _run_watched(cmd: Sequence[str], max_rss: int) -> tuple[int, str]:
    """Run `cmd`, stopping it when its resident memory passes `max_rss`; (exit code, stderr)."""
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}  # hundreds of decoder threads, few arenas
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)
        page = os.sysconf("SC_PAGE_SIZE")
        while proc.poll() is None:
            try:
                rss = int(Path(f"/proc/{proc.pid}/statm").read_text().split()[1]) * page
            except (OSError, IndexError, ValueError):
                rss = 0
            if rss > max_rss:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"ffmpeg passed {max_rss >> 30} GiB of memory; stopped")
            time.sleep(0.5)
        err.seek(0)
        return proc.returncode, err.read()


def run_signature(paths: Sequence[Path]) -> MethodResult:
    """One ffmpeg run with every file as an input of one `signature` filter in detectmode=full:
    the filter compares every pair of its inputs itself, so each file is decoded once."""
    t0 = time.perf_counter()
    args: list[str] = []
    for p in paths:
        args += ["-threads", "1", "-i", str(p)]
    graph = "".join(f"[{i}:v]fps={SIGNATURE_FPS},scale={SIGNATURE_FRAME}:flags=area,format=gray[v{i}];"
                    for i in range(len(paths)))
    graph += "".join(f"[v{i}]" for i in range(len(paths)))
    graph += f"signature=nb_inputs={len(paths)}:detectmode=full"
    code, log = _run_watched(["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-loglevel",
                              "info", *args, "-filter_complex", graph, "-an", "-f", "null", "-"],
                             SIGNATURE_MAX_RSS)
    if code != 0:
        errors = [ln for ln in log.splitlines() if "rror" in ln or "failed" in ln.lower()]
        raise RuntimeError(f"ffmpeg signature failed ({code}): "
                           f"{' | '.join(errors[-5:]) or log.strip()[-300:]}")
    frames = [frame_count(p) for p in paths]
    scores = signature_scores(log, frames)
    return MethodResult("MPEG-7 signature (FFmpeg)", scores, SIGNATURE_MATCH,
                        time.perf_counter() - t0,
                        f"detectmode=full over all inputs ({SIGNATURE_FPS} fps, {SIGNATURE_FRAME} gray); "
                        "0.5 + 0.5 * matched share if matched")
