"""A cached rescan of a library of 100 / 1,000 / 10,000 files on disk: `vfpctl scan --cache` run
again over an unchanged folder, so walking, the cache and verification alone are timed.

    ./dev bench rescan [--sizes 100,1000,10000] [--repeats 3] [--data DIR]

The library (built once with the ffmpeg CLI, cached under bench/data/rescan-v1): forty long
sources (procedural footage and a camera wandering over photographs, see _sources) cut into short
clips at keyframes, so most files are unique footage and clips of one source look alike, as in a
real folder; one clip in COPY_EVERY gets a re-encoded, rescaled copy and one in TRIM_EVERY a
trimmed one. Each size scans the first N files of one fixed order. The gradients, and the
Mandelbrot zooms after a few minutes (they run into flat colour at 128 iterations), are flat
pictures: files with no informative frame, which match nothing, as in a folder of dark clips.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import dataset
from bench.stages import linked

DEFAULT_ROOT = Path(__file__).parent / "data" / "rescan-v1"

SOURCE_SECONDS = 1200
"""Length of each procedural source: 40 of them cut at CLIP_SECONDS give about 12,000 clips."""

CLIP_SECONDS = 4
"""Clips are cut at every keyframe this far apart: short, like phone clips, and cheap to build."""

SIZE = (160, 90)
"""Frame size of the sources: the model sees 64x64 pictures, so a larger frame only costs time."""

FPS = 8
"""Frames a second of the sources (keyframes every second: the clips can be cut without decoding)."""

COPY_EVERY = 10
"""One clip in this many gets a re-encoded and rescaled copy (its duplicate)."""

TRIM_EVERY = 25
"""One clip in this many gets a copy without its first second (a trim)."""


MANDELBROT_POINTS = ((-0.743643887, 0.131825904), (-0.7453, 0.1127), (-1.25066, 0.02012),
                     (-0.16, 1.0405), (0.285, 0.01), (-0.8, 0.156), (-1.768778833, -0.001738996),
                     (-0.748, 0.1), (0.001643721, 0.822467633), (-0.235125, 0.827215))
"""Ten places of the Mandelbrot set worth zooming into for twenty minutes."""

PHOTOS = ("astronaut", "coffee", "chelsea", "motorcycle_left", "rocket", "hubble", "retina",
          "grace", "camera", "coins")
"""Photographs (bench/dataset.py) a camera wanders over, one source each."""


def _sources(cache: Path) -> list[list[str]]:
    """40 sources as ffmpeg input arguments, each footage of its own: colour gradients,
    Sierpinski figures, Mandelbrot zooms, and a camera wandering over a photograph along a
    Lissajous path (it passes near earlier views again, as a camera filming one place does)."""
    w, h = SIZE
    out = []
    for seed in range(10):
        x, y = MANDELBROT_POINTS[seed]
        out.append(["-f", "lavfi", "-i", f"gradients=s={w}x{h}:seed={seed}:speed=0.02:"
                    f"nb_colors=4:rate={FPS}"])
        out.append(["-f", "lavfi", "-i", f"sierpinski=s={w}x{h}:seed={seed}:jump={5 + seed}:"
                    f"type={'carpet' if seed % 2 else 'triangle'}:rate={FPS}"])
        out.append(["-f", "lavfi", "-i", f"mandelbrot=s={w}x{h}:maxiter=128:start_x={x}:"
                    f"start_y={y}:start_scale=3:end_scale=0.0005:end_pts={SOURCE_SECONDS}:"
                    f"rate={FPS}"])
        out.append(["-loop", "1", "-framerate", str(FPS), "-i",
                    str(dataset.photo_path(PHOTOS[seed], cache)), "-vf",
                    f"scale={4 * w}:{4 * h}:force_original_aspect_ratio=increase,"
                    f"crop={4 * w}:{4 * h},crop={w}:{h}:x='(iw-ow)/2*(1+sin(t/{23 + seed}))':"
                    f"y='(ih-oh)/2*(1+sin(t/{31 + seed}))',setsar=1"])
    return out


def _ffmpeg(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def _x264(crf: int) -> list[str]:
    return ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-g", str(FPS),
            "-keyint_min", str(FPS), "-sc_threshold", "0", "-pix_fmt", "yuv420p"]


def _source(i: int, inputs: list[str], clips: Path) -> None:
    """One source, encoded and cut into clips in one ffmpeg run (stream copy at keyframes)."""
    _ffmpeg([*inputs, "-t", str(SOURCE_SECONDS), *_x264(20),
             "-f", "segment", "-segment_time", str(CLIP_SECONDS), "-reset_timestamps", "1",
             str(clips / f"s{i:02d}-%04d.mp4")])


def _copy(src: Path, out: Path, trim: bool) -> None:
    w, h = SIZE
    if trim:
        _ffmpeg(["-ss", "1", "-i", str(src), *_x264(23), str(out)])
    else:
        _ffmpeg(["-i", str(src), "-vf", f"scale={w * 2}:{h * 2}", *_x264(28), str(out)])


def build(root: Path, log: Callable[[str], None]) -> list[Path]:
    """The library's files in their fixed order (built when missing)."""
    manifest = root / "manifest.json"
    if manifest.exists():
        return [root / name for name in json.loads(manifest.read_text())]
    if shutil.which("ffmpeg") is None:
        raise SystemExit("the ffmpeg CLI builds this benchmark's library: apt install ffmpeg")
    clips = root / "files"
    if clips.exists():
        shutil.rmtree(clips)
    clips.mkdir(parents=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(lambda a: _source(*a, clips), enumerate(_sources(root))))
        originals = sorted(clips.iterdir())
        log(f"{len(originals)} clips cut in {time.perf_counter() - started:.0f} s")
        jobs = []
        for k, src in enumerate(originals):
            if k % COPY_EVERY == 0:
                jobs.append((src, src.with_name(src.stem + "-copy.mp4"), False))
            if k % TRIM_EVERY == 1:
                jobs.append((src, src.with_name(src.stem + "-trim.mp4"), True))
        list(pool.map(lambda j: _copy(*j), jobs))
    files = sorted(clips.iterdir())
    random.Random(0).shuffle(files)
    log(f"{len(files)} files ({len(jobs)} copies) built in {time.perf_counter() - started:.0f} s")
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps([str(p.relative_to(root)) for p in files]))
    os.replace(tmp, manifest)
    return files


def _scan(folder: Path, cache: Path) -> tuple[float, float, dict]:
    """One `vfpctl scan --cache` of folder in its own process: (wall, CPU seconds, JSON)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vfpd.cli.ctl", "scan", str(folder), "--json",
                           "--cache", str(cache)], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(done.stdout)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench rescan", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--repeats", type=int, default=3, help="cached rescans per size (median)")
    ap.add_argument("--data", type=Path, default=DEFAULT_ROOT, help="where the library is kept")
    ap.add_argument("--keep", type=Path, help="keep the scanned folders and their caches here "
                    "(to look into a rescan afterwards) instead of a temporary folder")
    args = ap.parse_args(argv)
    files = build(args.data, lambda m: print(f"# {m}", flush=True))
    print(f"# {len(files)} files; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    print("| files | first scan (fills the cache), wall | cached rescan, wall (CPU) | per file "
          "| pairs | groups |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="vfpd-bench-rescan-") as scratch:
        tmp = args.keep or scratch
        for n in (int(x) for x in args.sizes.split(",")):
            if n > len(files):
                raise SystemExit(f"the library has {len(files)} files, fewer than {n}")
            folder = Path(tmp) / f"library-{n}"
            linked(files[:n], folder)
            cache = Path(tmp) / f"cache-{n}"
            first, _, _ = _scan(folder, cache)
            runs = [_scan(folder, cache) for _ in range(args.repeats)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            result = runs[-1][2]
            if result["summary"]["fingerprinted"]:
                raise SystemExit(f"a rescan of {n} files fingerprinted some again")
            print(f"| {n:,} | {first:.0f} s | {wall:.1f} s ({cpu:.1f} s) | "
                  f"{1000 * wall / n:.1f} ms | {len(result['pairs'])} | "
                  f"{len(result['groups'])} |", flush=True)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")
    return 0
