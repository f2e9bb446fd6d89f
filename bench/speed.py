"""Speed benchmark: fingerprinting throughput (x realtime, files/s) per resolution and preset
(accurate, fast), beside PyAV's decode ceilings and vpdq, on H.264 files made from real clips with
default x264 settings.

    ./dev bench speed [--repeats 3] [--only 720p,long] [--no-vpdq] [--no-embed] [--policies]
                      [--no-stages]

Then, unless --no-stages, where the default scan's time goes on the accuracy set, stage by stage,
beside the ceilings, vpdq and the real scan (bench/stages.py; `./dev bench stages` alone).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from vfpd import media
from vfpd.presets import ACCURATE, FAST
from vfpd.workers import DecodePool, PoolSettings

DATA = Path(__file__).parent / "data"
BASE_SECONDS = 60
"""Length of the per-resolution inputs: long enough that start-up costs are a small share."""
LONG_LOOPS = 5
"""The long input is the 720p one played this many times (stream copy: same GOPs), 5 minutes."""
POOL_FILES = 4
"""Files per pool run: two per worker, so both workers stay busy."""


def _clip(name: str) -> Path:
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from media_factory import sample_clip  # noqa: PLC0415 - test helper that locates pip-installed clips

    return sample_clip(name)


@dataclass(frozen=True)
class Input:
    name: str
    path: Path
    note: str


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def make_inputs(only: set[str] | None) -> list[Input]:
    """Real footage (bigbuckbunny looped, then bikes looped; scene cuts included) scaled to each
    size and encoded with x264's defaults (preset medium, keyint 250, scenecut 40)."""
    if shutil.which("ffmpeg") is None:
        raise SystemExit("the speed benchmark needs the ffmpeg CLI to make its inputs")
    DATA.mkdir(parents=True, exist_ok=True)
    bunny, bikes = _clip("bigbuckbunny"), _clip("bikes")
    sizes = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
    inputs = []
    for name, (w, h) in sizes.items():
        out = DATA / f"speed_{name}.mp4"
        if not out.exists():
            print(f"# making {out.name} (x264 defaults, {BASE_SECONDS} s)", flush=True)
            tmp = out.with_suffix(".tmp.mp4")
            _ffmpeg("-stream_loop", "5", "-i", str(bunny), "-stream_loop", "3", "-i", str(bikes),
                    "-filter_complex",
                    f"[0:v]scale={w}:{h},setsar=1,fps=25[a];[1:v]scale={w}:{h},setsar=1,fps=25[b];"
                    f"[a][b]concat=n=2:v=1[v]", "-map", "[v]", "-t", str(BASE_SECONDS),
                    "-c:v", "libx264", "-an", str(tmp))
            tmp.rename(out)
        inputs.append(Input(name, out, "x264 defaults"))
    gop = DATA / "speed_720p_gop1s.mp4"
    if not gop.exists():
        print(f"# making {gop.name} (1 s GOP, as phones record)", flush=True)
        _ffmpeg("-i", str(DATA / "speed_720p.mp4"), "-c:v", "libx264", "-g", "25", "-an",
                str(gop.with_suffix(".tmp.mp4")))
        gop.with_suffix(".tmp.mp4").rename(gop)
    inputs.append(Input("720p-gop1s", gop, "x264, keyint 25"))
    long = DATA / "speed_long_720p.mp4"
    if not long.exists():
        _ffmpeg("-stream_loop", str(LONG_LOOPS - 1), "-i", str(DATA / "speed_720p.mp4"), "-c", "copy",
                str(long.with_suffix(".tmp.mp4")))
        long.with_suffix(".tmp.mp4").rename(long)
    inputs.append(Input("long", long, f"720p x{LONG_LOOPS}"))
    return [i for i in inputs if only is None or i.name in only]


def duration_of(path: Path) -> float:
    with av.open(str(path)) as c:
        return float(c.duration) / av.time_base


def decode_ceiling(path: Path, keyframes: bool) -> int:
    """Decode with PyAV as fast as it goes (FFmpeg's threads, no conversion); frames decoded."""
    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_type = "AUTO"
        if keyframes:
            s.codec_context.skip_frame = "NONKEY"
        for _ in c.decode(s):
            n += 1
    return n


def timed(fn: Callable[[], object], repeats: int) -> float:
    return timed_cpu(fn, repeats)[0]


def timed_cpu(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and median CPU seconds of this process (FFmpeg's and torch's threads count).
    CPU time is what stays comparable when other work shares the cores."""
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def _embedder() -> object | None:
    try:
        from vfpd.model.embed import Embedder  # noqa: PLC0415 - optional: the model may be absent
    except ImportError:
        return None
    try:
        e = Embedder(device="cpu")
        e.embed(media.sample(_clip("carphone_pristine")))  # load once, outside the timings
        return e
    except Exception as exc:  # noqa: BLE001 - a benchmark reports what it could not measure
        print(f"# no embedding: {exc}", flush=True)
        return None


def _vpdq() -> Callable[[Path], object] | None:
    try:
        import vpdq  # noqa: PLC0415 - bench extra
    except ImportError:
        print("# vpdq is not installed (pip install -e '.[bench]'): its column stays empty", flush=True)
        return None
    # One hash a second, as vfpd samples; vpdq decodes every frame and hashes the sampled ones.
    return lambda p: vpdq.computeHash(str(p), seconds_per_hash=1, downsample_width=0,
                                      downsample_height=0, thread_count=0)


def _x(duration: float, seconds: float | None) -> str:
    return f"{duration / seconds:.0f}x" if seconds else "-"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="./dev bench speed")
    parser.add_argument("--repeats", type=int, default=3, help="medians over this many runs")
    parser.add_argument("--only", default="", help="comma-separated inputs: 480p,720p,1080p,720p-gop1s,long")
    parser.add_argument("--no-vpdq", action="store_true")
    parser.add_argument("--no-embed", action="store_true")
    parser.add_argument("--policies", action="store_true",
                        help="also time every decoding policy on each input (the measured decision)")
    parser.add_argument("--no-stages", action="store_true",
                        help="leave out the per-stage table on the accuracy set")
    args = parser.parse_args(argv)
    inputs = make_inputs(set(args.only.split(",")) if args.only else None)
    embedder = None if args.no_embed else _embedder()
    vpdq_hash = None if args.no_vpdq else _vpdq()
    load = os.getloadavg()[0]
    print(f"# {os.cpu_count()} cores, load average {load:.1f} at start; medians of {args.repeats}", flush=True)

    rows = []
    policy_rows = []
    for inp in inputs:
        d = duration_of(inp.path)
        reps = 1 if d > 2 * BASE_SECONDS else args.repeats
        all_s = timed(lambda: decode_ceiling(inp.path, False), reps)
        key_s, key_cpu = timed_cpu(lambda: decode_ceiling(inp.path, True), reps)
        vpdq_s = timed(lambda: vpdq_hash(inp.path), reps) if vpdq_hash else None
        for preset in (ACCURATE, FAST):
            st = preset.sampling
            sampled = media.sample(inp.path, st)
            sample_s, sample_cpu = timed_cpu(lambda: media.sample(inp.path, st), reps)
            fp_s = None
            if embedder is not None:
                fp_s = timed(lambda: embedder.embed(media.sample(inp.path, st)), reps)  # type: ignore[attr-defined]
            with DecodePool(PoolSettings(workers=2, sampling=st)) as pool:
                list(pool.map([inp.path]))  # start the workers outside the timing
                pool_s = timed(lambda: list(pool.map([inp.path] * POOL_FILES)), 1)
            policy = "keyframes only" if sampled.keyframes_only else "reference frames"
            rows.append((inp, preset.name, d, sample_s, sample_cpu, fp_s, POOL_FILES / pool_s,
                         POOL_FILES * d / pool_s, all_s, key_s, key_cpu, vpdq_s, policy,
                         len(sampled.timestamps)))
        print(f"# {inp.name} done", flush=True)
        if args.policies:
            for mode in ("keyframes", "all"):
                st = media.SamplingSettings(keyframes=mode)
                n = len(media.sample(inp.path, st).timestamps)
                policy_rows.append((inp.name, mode, timed(lambda: media.sample(inp.path, st), reps), d, n))

    print()
    print("| input | length | preset: decoded (frames kept) | vfpd sample, wall (CPU) | "
          "vfpd fingerprint | pool, 2 workers | PyAV all frames | PyAV keyframes, wall (CPU) | "
          "sample CPU / keyframe ceiling CPU | vpdq (1 hash/s) | vfpd vs vpdq |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (inp, name, d, sample_s, sample_cpu, fp_s, fps_pool, rt_pool, all_s, key_s, key_cpu, vpdq_s,
         policy, n) in rows:
        best = fp_s or sample_s
        print(f"| {inp.name} ({inp.note}) | {d:.0f} s | {name}: {policy} ({n}) | "
              f"{_x(d, sample_s)} ({_x(d, sample_cpu)}) | {_x(d, fp_s)} | "
              f"{fps_pool:.2f} files/s, {rt_pool:.0f}x | {_x(d, all_s)} | "
              f"{_x(d, key_s)} ({_x(d, key_cpu)}) | {sample_cpu / key_cpu:.2f} | {_x(d, vpdq_s)} | "
              f"{(vpdq_s / best if vpdq_s else float('nan')):.1f}x faster |")
    if policy_rows:
        print()
        print("| input | forced policy | sample time | x realtime | frames |")
        print("|---|---|---|---|---|")
        for name, mode, s, d, n in policy_rows:
            print(f"| {name} | {mode} | {s:.2f} s | {d / s:.0f}x | {n} |")
    if not args.no_stages:
        from bench import stages  # noqa: PLC0415 - builds the accuracy set when missing

        print()
        stages.main([] if vpdq_hash else ["--no-vpdq"])
    print(f"\n# load average {os.getloadavg()[0]:.1f} at the end (other processes share these cores)")
    return 0
