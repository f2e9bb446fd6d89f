"""Real test media: videos encoded with PyAV from procedural or real footage, and pip-installed clips."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vfpd.samples import sample_clip, sample_photo  # noqa: F401 - re-exported for tests

FrameFn = Callable[[int, float], np.ndarray]
"""(frame index, time in seconds) -> HxWx3 uint8 RGB frame."""


def read_frames(path: Path, limit: int | None = None) -> Iterable[tuple[float, np.ndarray]]:
    """Every decoded frame of a file as (seconds, RGB array); used to build transformed copies."""
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if limit is not None and i >= limit:
                break
            yield float(frame.time or 0.0), frame.to_ndarray(format="rgb24")


def encode(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    gop: int | None = None,
    keyframes_at: frozenset[int] = frozenset(),
) -> Path:
    """Encode RGB frames into `path` (container from the suffix); sizes are rounded to even.
    `keyframes_at`: frame indices forced to be keyframes (with a long `gop`, irregular GOPs)."""
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as c:
        stream = None
        for index, img in enumerate(frames):
            h, w = img.shape[:2]
            if codec in ("libx264", "libx265", "mpeg4", "mpeg2video", "libvpx", "libvpx-vp9"):
                h, w = h - h % 2, w - w % 2
                img = img[:h, :w]
            if stream is None:
                stream = c.add_stream(codec, rate=rate)
                stream.width, stream.height = w, h
                stream.pix_fmt = pix_fmt
                if gop is not None:
                    stream.codec_context.gop_size = gop
                if options:
                    stream.options = dict(options)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if index in keyframes_at:
                frame.pict_type = av.video.frame.PictureType.I
            for packet in stream.encode(frame):
                c.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                c.mux(packet)
    return path


def moving_scene(width: int, height: int, seed: int) -> FrameFn:
    """A procedural scene with texture and motion that is distinct per seed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    big = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8)).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    f1, f2 = rng.uniform(0.01, 0.05, size=2)

    def fn(i: int, t: float) -> np.ndarray:
        dx = int(t * 13) % 8
        tile = np.roll(big, dx, axis=1)[:height, :width]
        wave = 60 * np.sin(xx * f1 + t * 2.0) * np.cos(yy * f2 - t)
        img = np.clip(tile * 0.7 + wave[..., None] + 30 * np.sin(t + i * 0.01), 0, 255)
        return img.astype(np.uint8)

    return fn


def make_video(path: Path, seconds: float = 6.0, fps: float = 25.0, width: int = 320,
               height: int = 240, seed: int = 0, **encode_kw: object) -> Path:
    """Encode `seconds` of a procedural scene; the cheapest real video a test can have."""
    fn = moving_scene(width, height, seed)
    n = int(round(seconds * fps))
    return encode(path, (fn(i, i / fps) for i in range(n)), fps=fps, **encode_kw)  # type: ignore[arg-type]
