"""What a still picture shows in detail: the pictures of a video's still stretches, kept with its
fingerprint, and the comparison that tells two still pictures of one layout apart (two title cards
of one template with other words), which the model's 64x64 features do not see.

Moving footage is judged by what moves (matching._motion_evidence); a still overlap has no motion,
so it is judged by its detail: the two pictures are registered (mirror, scale per axis, shift) and
compared block by block. Copies of a still picture agree in every block; other words on one
template disagree where the words are.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from vfpd.picture import FRAME_SIZE

BLOCK = 8
"""Pictures are compared in blocks of BLOCK x BLOCK pixels (of FRAME_SIZE): a word of a title is a
few blocks wide, so a changed word changes whole blocks while the rest of the card agrees."""

STILL_BLOCK_DIFF = 4.0
"""A frame continues a still stretch when no block of its luma differs from the previous frame's by
more than this mean absolute level (of 255): compression noise on a still picture stays below 2, a
subject moving through a block changes it by tens."""

FINE_SIGMA = 0.7
COARSE_SIGMA = 2.5
"""Detail is the luma band-passed between these Gaussian widths (pixels of FRAME_SIZE): strokes of
text and edges, without pixel noise below nor the layout's broad shading above."""

SCALES = tuple(float(s) for s in np.geomspace(0.68, 1 / 0.68, 21))
"""Scales tried when registering one picture onto the other: a copy cropped to 68 % of a side (or
the original, when the copy is the wider one), in steps of 4 %."""

REFINE = (0.98, 1.0, 1.02)
"""Around the best uniform scale each axis is refined by these factors (crops need not keep the
aspect ratio)."""

ALREADY_REGISTERED = 0.9
"""A picture whose detail correlates this well with the other's at its own scale (shifted, perhaps
mirrored) is only refined, not searched at every scale: most pairs compared are copies at one
scale, or pictures of one template, and the search is 90 placements of a few hundred microseconds
each."""

MAX_SHIFT = 24
"""Largest shift (pixels of FRAME_SIZE) registration accepts: an off-centre crop moves the picture's
middle by up to about a third of a side."""

MIN_OVERLAP = 0.4
"""A registration must keep at least this share of the picture in view on both sides."""

REGISTERED_CORR = 0.5
"""The two pictures' detail must correlate at least this much once registered for the comparison
to say anything: below it the copy is transformed beyond what is searched (a rotation, a heavy
overlay), and the block comparison would only measure that."""

DETAILED_SHARE = 0.5
"""A block counts when both pictures have at least this share of their mean block detail in it:
flat blocks (a plain background) carry nothing to compare."""

MIN_BLOCKS = 4
"""Fewer detailed blocks than this is too little to judge (a nearly flat picture)."""


@dataclass(frozen=True, eq=False)
class Stills:
    """The still stretches of a video: pictures (M, FRAME_SIZE, FRAME_SIZE) uint8 luma, one per
    stretch; of (N,) int16, for each sampled frame the picture of its stretch, -1 where the frame
    moves."""

    pictures: np.ndarray
    of: np.ndarray

    def __post_init__(self) -> None:
        if self.pictures.ndim != 3 or self.pictures.shape[1:] != (FRAME_SIZE, FRAME_SIZE):
            raise ValueError(f"still pictures have shape {self.pictures.shape}")
        if self.of.ndim != 1 or (len(self.of) and int(self.of.max(initial=-1)) >= len(self.pictures)):
            raise ValueError("a frame points at a still picture that is not there")

    @classmethod
    def none(cls, frames: int) -> Stills:
        """No still stretch among `frames` frames (what is known when none can be found)."""
        return cls(np.zeros((0, FRAME_SIZE, FRAME_SIZE), np.uint8), np.full(frames, -1, np.int16))

    def encode(self) -> bytes:
        """Stored form: the frame map (int16) then the pictures (the frame count is the
        fingerprint's)."""
        return (np.ascontiguousarray(self.of, dtype="<i2").tobytes()
                + np.ascontiguousarray(self.pictures, dtype=np.uint8).tobytes())

    @classmethod
    def decode(cls, data: bytes, frames: int) -> Stills:
        of = np.frombuffer(data, dtype="<i2", count=frames).astype(np.int16)
        pictures = np.frombuffer(data, dtype=np.uint8, offset=2 * frames)
        return cls(pictures.reshape(-1, FRAME_SIZE, FRAME_SIZE), of)


def _luma(frames: np.ndarray) -> np.ndarray:
    f = frames.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _blocks(x: np.ndarray) -> np.ndarray:
    """(..., S, S) -> (..., S/BLOCK, S/BLOCK, BLOCK * BLOCK)."""
    n = x.shape[-1] // BLOCK
    y = x.reshape(*x.shape[:-2], n, BLOCK, n, BLOCK)
    return np.moveaxis(y, -3, -2).reshape(*x.shape[:-2], n, n, BLOCK * BLOCK)


def still_pictures(frames: np.ndarray, informative: np.ndarray) -> Stills:
    """The still stretches of sampled frames (N, S, S, 3) uint8: runs of at least two consecutive
    informative frames that no block changes in, or the one informative frame of a video that has
    only one. Each stretch keeps its middle frame's luma."""
    n = len(frames)
    if n == 0:
        return Stills.none(0)
    of = np.full(n, -1, np.int16)
    luma = _luma(frames)
    info = np.asarray(informative, bool)
    steady = np.zeros(n, bool)  # frame i is like frame i - 1
    if n > 1:
        change = np.abs(_blocks(luma[1:] - luma[:-1])).mean(axis=-1).max(axis=(-2, -1))
        steady[1:] = (change <= STILL_BLOCK_DIFF) & info[1:] & info[:-1]
    runs: list[tuple[int, int]] = []
    i = 0
    while i < n:
        j = i + 1
        while j < n and steady[j]:
            j += 1
        if j - i >= 2 or (info[i] and int(info.sum()) == 1):
            runs.append((i, j))
        i = j
    pictures = np.zeros((len(runs), FRAME_SIZE, FRAME_SIZE), np.uint8)
    for k, (i, j) in enumerate(runs):
        pictures[k] = np.clip(np.rint(luma[(i + j - 1) // 2]), 0, 255).astype(np.uint8)
        of[i:j] = k
    return Stills(pictures, of)


@cache
def _gaussian(sigma: float) -> np.ndarray:
    x = np.arange(FRAME_SIZE, dtype=np.float64)
    k = np.exp(-0.5 * ((x[:, None] - x[None, :]) / sigma) ** 2)
    return (k / k.sum(axis=1, keepdims=True)).astype(np.float32)


def _detail(picture: np.ndarray, fine: float = FINE_SIGMA) -> np.ndarray:
    f, c = _gaussian(round(fine, 2)), _gaussian(COARSE_SIGMA)
    return f @ picture @ f.T - c @ picture @ c.T


@cache
def _resampler(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, valid): row i of matrix @ x samples x (one axis) at centre + (i - centre) / scale,
    linearly; valid[i] is False where that falls outside the picture."""
    centre = (FRAME_SIZE - 1) / 2
    pos = centre + (np.arange(FRAME_SIZE) - centre) / scale
    valid = (pos >= 0) & (pos <= FRAME_SIZE - 1)
    m = np.zeros((FRAME_SIZE, FRAME_SIZE), np.float32)
    lo = np.clip(np.floor(pos).astype(int), 0, FRAME_SIZE - 2)
    w = np.clip(pos - lo, 0.0, 1.0)
    rows = np.flatnonzero(valid)
    m[rows, lo[rows]] = 1 - w[rows]
    m[rows, lo[rows] + 1] += w[rows]
    return m, valid


@dataclass(frozen=True)
class _Placed:
    """b moved onto a's grid under one geometry: the two pictures' detail there, where b is
    defined, and how well they correlate over it."""

    corr: float
    a: np.ndarray
    b: np.ndarray
    valid: np.ndarray


def _shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(x)
    h, w = x.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


class _Reference:
    """The picture others are registered onto: its detail and spectrum in each band asked for."""

    def __init__(self, picture: np.ndarray) -> None:
        self.picture = picture
        self._bands: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def band(self, fine: float) -> tuple[np.ndarray, np.ndarray]:
        fine = round(fine, 2)
        if fine not in self._bands:
            d = _detail(self.picture, fine)
            self._bands[fine] = d, np.fft.rfft2(d, (_PADDED, _PADDED))
        return self._bands[fine]


_PADDED = 96
"""FFT size of the phase correlation: FRAME_SIZE zero-padded by more than MAX_SHIFT, so that no
shift it accepts wraps around, and a size with small factors (2^5 x 3)."""


def _place(ref: _Reference, b: np.ndarray, sy: float, sx: float) -> _Placed | None:
    """b (luma) scaled by (sy, sx) about the centre and shifted to where its detail best fits the
    reference's (phase correlation). An enlarged picture has lost its finest detail, so both are
    compared in the band the enlarged one still holds."""
    my, vy = _resampler(sy)
    mx, vx = _resampler(sx)
    valid = (vy[:, None] & vx[None, :])
    scaled = my @ b @ mx.T
    scaled[~valid] = float(scaled[valid].mean()) if valid.any() else 0.0
    fine = FINE_SIGMA * max(1.0, sy, sx)
    da, spectrum = ref.band(fine)
    db = _detail(scaled, fine) * valid
    cross = spectrum * np.conj(np.fft.rfft2(db, (_PADDED, _PADDED)))
    surface = np.fft.irfft2(cross / np.maximum(np.abs(cross), 1e-6), (_PADDED, _PADDED))
    surface = np.roll(surface, (MAX_SHIFT, MAX_SHIFT), (0, 1))[:2 * MAX_SHIFT + 1,
                                                               :2 * MAX_SHIFT + 1]
    dy, dx = np.unravel_index(int(np.argmax(surface)), surface.shape)
    dy, dx = int(dy) - MAX_SHIFT, int(dx) - MAX_SHIFT
    moved, inside = _shifted(db, dy, dx), _shifted(valid, dy, dx)
    if inside.mean() < MIN_OVERLAP:
        return None
    x = da * inside
    denom = float(np.sqrt(np.sum(x * x) * np.sum(moved * moved)))
    if denom <= 0:
        return None
    return _Placed(float(np.sum(x * moved)) / denom, x, moved, inside)


def _register(a: np.ndarray, b: np.ndarray) -> _Placed | None:
    """b registered onto a: as it is or mirrored, shifted; unless that already fits, the best
    mirror and uniform scale, then each axis's scale searched alone (a crop need not keep the
    aspect ratio, and the border rule may have cut one axis); then both refined."""
    best: tuple[_Placed, np.ndarray, float, float] | None = None
    ref = _Reference(a)

    def consider(pic: np.ndarray, sy: float, sx: float) -> None:
        nonlocal best
        r = _place(ref, pic, sy, sx)
        if r is not None and (best is None or r.corr > best[0].corr):
            best = (r, pic, sy, sx)

    pictures = (b, np.ascontiguousarray(b[:, ::-1]))
    for mirrored in pictures:
        consider(mirrored, 1.0, 1.0)
    if best is None or best[0].corr < ALREADY_REGISTERED:
        for mirrored in pictures:
            for s in SCALES:
                consider(mirrored, s, s)
        if best is None:
            return None
        _, pic, s, _ = best
        for sy in SCALES:
            consider(pic, sy, s)
        _, _, sy, _ = best
        for sx in SCALES:
            consider(pic, sy, sx)
    _, pic, sy, sx = best
    for fy in REFINE:
        for fx in REFINE:
            consider(pic, sy * fy, sx * fx)
    return best[0]


def agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """How well two still pictures (FRAME_SIZE x FRAME_SIZE uint8 luma) agree in detail once
    registered: the lowest correlation of any block both show detail in (1.0: every such block
    the same; low: some part shows something else). None when they cannot be compared: no
    registration fits, or too little detail."""
    reg = _register(a.astype(np.float32), b.astype(np.float32))
    if reg is None or reg.corr < REGISTERED_CORR:
        return None
    inside = _blocks(reg.valid).all(axis=-1)
    xa, xb = _blocks(reg.a), _blocks(reg.b)
    ea, eb = np.sum(xa * xa, axis=-1), np.sum(xb * xb, axis=-1)
    if not inside.any():
        return None
    detailed = (inside & (ea >= DETAILED_SHARE * ea[inside].mean())
                & (eb >= DETAILED_SHARE * eb[inside].mean()))
    if int(detailed.sum()) < MIN_BLOCKS:
        return None
    corr = np.sum(xa * xb, axis=-1)[detailed] / np.sqrt(ea[detailed] * eb[detailed])
    return float(corr.min())
