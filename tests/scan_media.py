"""Transformed copies of real clips for the scan tests, made with PyAV: the library a user has."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import av
import numpy as np

from media_factory import encode, make_video, read_frames, sample_clip

Frames = list[tuple[float, np.ndarray]]

WORK_WIDTH = 320
"""Originals are scaled to this width before transforming: small files, fast tests."""


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def load(name: str, width: int = WORK_WIDTH) -> Frames:
    out = []
    for t, img in read_frames(sample_clip(name)):
        h = int(round(img.shape[0] * width / img.shape[1] / 2)) * 2
        out.append((t, resize(img, width, h)))
    return out


def _map(frames: Frames, fn: Callable[[np.ndarray], np.ndarray]) -> Frames:
    return [(t, fn(img)) for t, img in frames]


def crop(img: np.ndarray, keep: float = 0.75) -> np.ndarray:
    h, w = img.shape[:2]
    dh, dw = int(h * (1 - keep) / 2), int(w * (1 - keep) / 2)
    return img[dh:h - dh, dw:w - dw]


def pad(img: np.ndarray) -> np.ndarray:
    """Letterbox: black bars above and below, each a fifth of the picture's height."""
    h, w = img.shape[:2]
    out = np.zeros((h * 7 // 5 // 2 * 2, w, 3), np.uint8)
    top = (out.shape[0] - h) // 2
    out[top:top + h] = img
    return out


def colour(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float32)
    grey = x.mean(-1, keepdims=True)
    x = grey + 1.4 * (x - grey)  # more saturated
    x = x * np.array([1.1, 0.95, 0.85]) + 20  # warmer and brighter
    return np.clip(x, 0, 255).astype(np.uint8)


def watermark(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    h, w = img.shape[:2]
    y0, x0 = int(h * 0.78), int(w * 0.62)
    box = out[y0:h - 4, x0:w - 4]
    box[:] = (box.astype(np.uint16) // 3 + 170).astype(np.uint8)
    box[::4, :] = 30  # "text" stripes
    return out


TRANSFORMS: dict[str, Callable[[Frames], tuple[Iterable[np.ndarray], float]]] = {
    "reencode": lambda f: ((img for _, img in f), 1.0),
    "scale": lambda f: ((resize(img, 160, img.shape[0] // 4 * 2) for _, img in f), 1.0),
    "crop": lambda f: ((crop(img) for _, img in f), 1.0),
    "pad": lambda f: ((pad(img) for _, img in f), 1.0),
    "flip": lambda f: ((img[:, ::-1] for _, img in f), 1.0),
    "colour": lambda f: ((colour(img) for _, img in f), 1.0),
    "fps": lambda f: ((img for i, (_, img) in enumerate(f) if i % 5 in (0, 2, 4)), 0.6),
    "trim": lambda f: ((img for t, img in f if t >= 2.5), 1.0),
    "watermark": lambda f: ((watermark(img) for _, img in f), 1.0),
}
"""Each: frames of the original -> (frames of the copy, its frame rate / the original's)."""


def rate(frames: Frames) -> float:
    return (len(frames) - 1) / (frames[-1][0] - frames[0][0])


def make_copy(frames: Frames, transform: str, path: Path) -> Path:
    imgs, factor = TRANSFORMS[transform](frames)
    options = {"crf": "32", "preset": "veryfast"} if transform == "reencode" else {"crf": "23"}
    return encode(path, imgs, fps=rate(frames) * factor, options=options)


def segment(frames: Frames, start: float, end: float, path: Path) -> Path:
    return encode(path, (img for t, img in frames if start <= t < end), fps=rate(frames))


def procedural(path: Path, seed: int, seconds: float = 6.0) -> Path:
    return make_video(path, seconds=seconds, width=192, height=144, seed=seed)


def pan_frames(photo: str, seconds: float = 6.0, fps: float = 25.0) -> list[np.ndarray]:
    """A camera pan across a real photograph: real-looking footage unrelated to any clip."""
    from media_factory import sample_photo

    with av.open(str(sample_photo(photo))) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24")
    h, w = img.shape[:2]
    win_h, win_w = h // 2 // 2 * 2, w // 2 // 2 * 2
    n = int(seconds * fps)
    return [resize(img[int((h - win_h) * i / n):][:win_h, int((w - win_w) * i / n):][:, :win_w],
                   192, 144) for i in range(n)]


def photo_pan(path: Path, photo: str, seconds: float = 6.0, fps: float = 25.0) -> Path:
    return encode(path, pan_frames(photo, seconds, fps), fps=fps)
