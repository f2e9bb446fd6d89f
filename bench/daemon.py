"""Daemon benchmark, the real `vfpd` as a subprocess on CPU: seconds from settle to notification
for a 30 s 720p clip, and a 1,000-file back-log (files/s, x realtime, time to drain, peak memory,
duplicates reported against the ones planted), with vpdq hashing the same files side by side.

    ./dev bench daemon [--backlog 1000] [--workers 2] [--no-vpdq] [--no-latency] [--scan]

The back-log is made once with the ffmpeg CLI and kept in bench/data/daemon-backlog-N/ (a
manifest written last says it is complete). Distinct contents: the real clips and photographs
that pip installs (clips looped and cropped to size, photos panned), and procedural ones — a
coarse random mosaic per seed, scrolling, under a moving second mosaic, with temporal grain so
that bit rates (and so decoding costs) are those of camera footage or above, not of flat colour.
A share of the contents gets copies: byte-identical, re-encoded, resized, cropped, trimmed, or
at another frame rate in another container. Lengths, resolutions, frame rates, codecs and GOPs
vary as in a personal library.
"""

from __future__ import annotations

import argparse
import http.server
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from vfpd.samples import sample_clip, sample_photo

DATA = Path(__file__).parent / "data"

SETTLE = 1.0
CLIP_SECONDS = 30
START_TIMEOUT = 300.0
IDLE_UNLOAD = 5.0
"""The bench daemon lets its model and decoders go after 5 s, so the first copy measures the cold
path (load on demand) and the next ones, sent at once, the warm path."""

GENERATOR_VERSION = 1
"""Bumped when the recipe below changes, so a cached back-log of an older recipe is remade."""

IDLE_WAIT = 3 * IDLE_UNLOAD
"""Seconds after the back-log drains before idle is measured: the model and decoders have been let
go by then (issue 15: a daemon with nothing to do should cost little)."""

IDLE_WINDOW = 10.0
"""Seconds over which the idle daemon's CPU time is counted."""

FRESH_WAIT = 5.0
"""Seconds after READY=1 before a freshly started daemon's memory is read: what it holds before
any file, once start-up's threads and processes have settled."""

SEED = 20261122

DURATIONS = (((3.0, 6.0), 0.45), ((6.0, 10.0), 0.35), ((10.0, 20.0), 0.15), ((20.0, 30.0), 0.05))
"""Seconds per original: mostly phone-length clips, a few longer ones (mean about 8 s). 30 s
for all 1,000 would take over an hour to decode on this shared 2-core machine."""

RESOLUTIONS = (((320, 240), 0.20), ((640, 360), 0.30), ((854, 480), 0.20), ((1280, 720), 0.25),
               ((1920, 1080), 0.05))
FRAME_RATES = ((25, 0.5), (30, 0.35), (24, 0.1), (50, 0.05))
ENCODINGS = ((("libx264", "superfast", ".mp4"), 0.55), (("libx264", "ultrafast", ".mp4"), 0.2),
             (("libx264", "superfast", ".mkv"), 0.1), (("libx265", "ultrafast", ".mkv"), 0.05),
             (("mpeg4", "", ".avi"), 0.05), (("libx264", "superfast", ".mov"), 0.05))
"""x264 'superfast' for edited/web files, 'ultrafast' (no B-frames, CAVLC) for phone-like ones;
some HEVC, MPEG-4 part 2 and other containers."""
GOP_ONE_SECOND = 0.4
"""Share of files with a keyframe every second (phones, streaming); the rest use x264's
default (a keyframe every 250 frames: usually one per file here)."""

DUPLICATE_SHARE = 0.10
"""Share of the distinct contents that get copies; 1 in 5 of those gets two."""
COPY_KINDS = (("exact", 0.2), ("reencode", 0.2), ("resize", 0.2), ("crop", 0.15),
              ("trim", 0.15), ("fps", 0.1))
TRIM_MIN_SECONDS = 12.0
"""Only contents at least this long are trimmed (to 60 % of their length): a shorter trim would
keep fewer seconds than the matcher's evidence floor (matching.py)."""

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "coins",
          "camera", "motorcycle_left", "brick", "horse", "ihc")
CLIPS = ("bikes", "bigbuckbunny", "carphone_pristine")
FOLDERS = 24
"""Sub-folders the back-log is spread over (events, years)."""
GRAIN = 6
"""ffmpeg `noise` strength on the procedural contents, so that they cost bits like camera footage.
Measured on the generated set (median bit rates): x264 'superfast' CRF 23 spends 20 Mbit/s at
720p and 57 Mbit/s at 1080p on it, 'ultrafast' 7 and 13, HEVC under 1: on average heavier to
decode than phone footage (about 10-17 Mbit/s at 1080p), so throughput errs on the slow side."""

RSS_POLL = 0.5
"""Seconds between samples of the daemon's (and its decode workers') resident memory."""


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def _pick(rng: random.Random, table: Iterable[tuple[object, float]]) -> object:
    items, weights = zip(*table)
    return rng.choices(items, weights=weights)[0]


# -- the back-log ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One file of the back-log and how it is made."""

    name: str  # relative to the back-log folder
    origin: int  # distinct content it shows; copies share their original's
    recipe: str  # "mosaic", "clip:NAME", "photo:NAME", or the copy kind
    seconds: float
    width: int
    height: int
    fps: int
    codec: str
    preset: str
    gop_1s: bool
    source: str = ""  # for a copy: the original's name


def plan(n: int, seed: int = SEED) -> list[Item]:
    """The back-log's files: n in all, about DUPLICATE_SHARE of the contents with copies."""
    rng = random.Random(seed)
    groups = round(n * DUPLICATE_SHARE / (1 + DUPLICATE_SHARE * 1.2))
    doubles = groups // 5
    originals = n - groups - doubles
    real = [f"clip:{c}" for c in CLIPS] + [f"photo:{p}" for p in PHOTOS]
    items: list[Item] = []

    def encoding(r: random.Random) -> tuple[str, str, str, bool]:
        codec, preset, ext = _pick(r, ENCODINGS)  # type: ignore[misc]
        return codec, preset, ext, r.random() < GOP_ONE_SECOND

    for i in range(originals):
        lo, hi = _pick(rng, DURATIONS)  # type: ignore[misc]
        w, h = _pick(rng, RESOLUTIONS)  # type: ignore[misc]
        codec, preset, ext, gop = encoding(rng)
        recipe = real[i] if i < len(real) else "mosaic"
        name = f"f{rng.randrange(FOLDERS):02d}/v{i:04d}{ext}"
        items.append(Item(name, i, recipe, round(rng.uniform(lo, hi), 2), w, h,
                          int(_pick(rng, FRAME_RATES)), codec, preset, gop))  # type: ignore[arg-type]
    # Trims come from the long contents, the other kinds from any.
    long = [o for o in range(originals) if items[o].seconds >= TRIM_MIN_SECONDS]
    trimmed = rng.sample(long, min(len(long), round(groups * dict(COPY_KINDS)["trim"])))
    rest = rng.sample(sorted(set(range(originals)) - set(trimmed)), groups - len(trimmed))
    others = [kv for kv in COPY_KINDS if kv[0] != "trim"]
    copy_no = 0
    for k, o in enumerate(rng.sample(trimmed + rest, groups)):
        orig = items[o]
        for c in range(2 if k < doubles else 1):
            kind = "trim" if o in trimmed and c == 0 else str(_pick(rng, others))
            w, h, fps, seconds = orig.width, orig.height, orig.fps, orig.seconds
            codec, preset, ext, gop = encoding(rng)
            if kind == "resize":  # half or double size
                f = 0.5 if orig.width >= 640 else 2.0
                w, h = int(orig.width * f) // 2 * 2, int(orig.height * f) // 2 * 2
            elif kind == "crop":
                w, h = (orig.width * 4 // 5) // 2 * 2, (orig.height * 4 // 5) // 2 * 2
            elif kind == "trim":
                seconds = round(orig.seconds * 0.6, 2)
            elif kind == "fps":
                fps, ext = 15, ".mkv"
            elif kind == "exact":
                codec, preset, ext, gop = orig.codec, orig.preset, Path(orig.name).suffix, orig.gop_1s
            name = f"f{rng.randrange(FOLDERS):02d}/c{copy_no:04d}{ext}"
            copy_no += 1
            items.append(Item(name, orig.origin, kind, seconds, w, h, fps, codec, preset, gop,
                              orig.name))
    rng.shuffle(items)  # copies and originals mixed, as on a disk
    return items


def _codec_args(item: Item, crf: int = 23) -> list[str]:
    args = ["-an", "-c:v", item.codec, "-threads", "1", "-pix_fmt", "yuv420p"]
    if item.codec == "mpeg4":
        args += ["-q:v", "4"]
    else:
        args += ["-preset", item.preset, "-crf", str(crf)]
    if item.codec == "libx265":
        args += ["-x265-params", "log-level=none:pools=1:frame-threads=1"]
    if item.gop_1s:
        args += ["-g", str(item.fps)]
    return args + ["-r", str(item.fps)]


def _mosaic(path: Path, seed: int, cols: int, rows: int) -> None:
    """A tiny random image (PPM) that ffmpeg scales up into a coarse mosaic."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    path.write_bytes(f"P6 {cols} {rows} 255\n".encode() + data.tobytes())


def _make_original(item: Item, out: Path, tmp: Path) -> None:
    w, h, t, fps = item.width, item.height, item.seconds, item.fps
    fill = f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h}"
    if item.recipe.startswith("clip:"):
        src = sample_clip(item.recipe.split(":", 1)[1])
        _ffmpeg("-stream_loop", "-1", "-i", str(src), "-t", str(t), "-vf", fill,
                *_codec_args(item), str(out))
    elif item.recipe.startswith("photo:"):
        src = sample_photo(item.recipe.split(":", 1)[1])
        # A slow pan across the photo scaled 1.4x: a camera sweeping over a still scene.
        pan = (f"scale={int(w * 1.4) // 2 * 2}:{int(h * 1.4) // 2 * 2}:"
               f"force_original_aspect_ratio=increase,"
               f"crop={w}:{h}:x='(iw-ow)*t/{t}':y='(ih-oh)*(1-t/{t})',format=yuv420p")
        _ffmpeg("-loop", "1", "-framerate", str(fps), "-i", str(src), "-t", str(t), "-vf", pan,
                *_codec_args(item), str(out))
    else:
        rng = random.Random(item.origin)
        back, front = tmp / f"{item.origin}-b.ppm", tmp / f"{item.origin}-f.ppm"
        cols = rng.randint(8, 16)
        _mosaic(back, item.origin * 2, cols + 4, max(3, cols * h // w) + 3)
        _mosaic(front, item.origin * 2 + 1, rng.randint(2, 5), rng.randint(2, 5))
        bw, bh = int(w * (cols + 4) / cols) // 2 * 2, int(h * (cols + 4) / cols) // 2 * 2
        fw, fh = w * rng.randint(20, 40) // 100 // 2 * 2, h * rng.randint(20, 40) // 100 // 2 * 2
        sx, sy = rng.uniform(0.2, 1.0), rng.uniform(0.1, 0.6)
        vx, vy = rng.uniform(0.05, 0.25), rng.uniform(0.05, 0.25)
        graph = (f"[0]scale={bw}:{bh}:flags=neighbor,"
                 f"crop={w}:{h}:x='(iw-ow)*(0.5+0.5*sin(t*{sx:.3f}))':"
                 f"y='(ih-oh)*(0.5+0.5*cos(t*{sy:.3f}))'[bg];"
                 f"[1]scale={fw}:{fh}:flags=neighbor[fg];"
                 f"[bg][fg]overlay=x='(W-w)*(0.5+0.5*sin(t*{vx:.3f}*6.28))':"
                 f"y='(H-h)*(0.5+0.5*sin(t*{vy:.3f}*6.28+1))',"
                 f"noise=alls={GRAIN}:allf=t,format=yuv420p")
        _ffmpeg("-loop", "1", "-framerate", str(fps), "-i", str(back), "-loop", "1",
                "-framerate", str(fps), "-i", str(front), "-t", str(t), "-filter_complex",
                graph, *_codec_args(item), str(out))


def _make_copy(item: Item, src: Path, out: Path) -> None:
    w, h = item.width, item.height
    if item.recipe == "exact":
        shutil.copyfile(src, out)
        return
    if item.recipe == "reencode":
        _ffmpeg("-i", str(src), *_codec_args(item, crf=30), str(out))
    elif item.recipe == "resize":
        _ffmpeg("-i", str(src), "-vf", f"scale={w}:{h}", *_codec_args(item, crf=26), str(out))
    elif item.recipe == "crop":  # 80 % of the picture, off-centre
        _ffmpeg("-i", str(src), "-vf", f"crop={w}:{h}:iw/10:ih/20", *_codec_args(item, crf=26),
                str(out))
    elif item.recipe == "trim":  # the middle 60 %
        start = (item.seconds / 0.6) * 0.2
        _ffmpeg("-ss", f"{start:.2f}", "-i", str(src), "-t", str(item.seconds),
                *_codec_args(item, crf=26), str(out))
    elif item.recipe == "fps":
        _ffmpeg("-i", str(src), "-vf", f"fps={item.fps}", *_codec_args(item, crf=28), str(out))
    else:
        raise ValueError(item.recipe)


def _atomic(out: Path, make: Callable[[Path], None]) -> None:
    """Make `out` under a temporary name, then rename it: a file under its final name is
    complete, so an interrupted generation resumes where it stopped."""
    part = out.with_name(f"{out.stem}.part{out.suffix}")
    make(part)
    os.replace(part, out)


def backlog(n: int, log: Callable[[str], None] = print) -> tuple[Path, list[Item]]:
    """The back-log folder of n files, made now (2 ffmpeg processes at a time) unless a complete
    one of this recipe is cached; an interrupted one is completed."""
    folder = DATA.resolve() / f"daemon-backlog-{n}"  # resolved: the daemon reports real paths
    manifest = folder / "manifest.json"
    items = plan(n)
    if manifest.exists():
        doc = json.loads(manifest.read_text())
        if doc.get("version") == GENERATOR_VERSION and [Item(**d) for d in doc["files"]] == items \
                and all((folder / "videos" / it.name).exists() for it in items):
            return folder / "videos", items
    videos = folder / "videos"
    spec = {"version": GENERATOR_VERSION, "files": [asdict(it) for it in items]}
    started = folder / "plan.json"
    if not started.exists() or json.loads(started.read_text()) != spec:
        shutil.rmtree(folder, ignore_errors=True)
        for i in range(FOLDERS):
            (videos / f"f{i:02d}").mkdir(parents=True, exist_ok=True)
        started.write_text(json.dumps(spec))
    tmp = Path(tempfile.mkdtemp(prefix="vfpd-bench-gen-"))
    t0 = time.monotonic()
    done = 0
    lock = threading.Lock()

    def made(_: object) -> None:
        nonlocal done
        with lock:
            done += 1
            if done % 50 == 0:
                log(f"  made {done}/{n} files ({time.monotonic() - t0:.0f} s)")

    try:
        todo = [it for it in items if not (videos / it.name).exists()]
        done = n - len(todo)
        with ThreadPoolExecutor(max_workers=2) as pool:
            for f in [pool.submit(_atomic, videos / it.name,
                                  lambda part, it=it: _make_original(it, part, tmp))
                      for it in todo if not it.source]:
                made(f.result())
            for f in [pool.submit(_atomic, videos / it.name,
                                  lambda part, it=it: _make_copy(it, videos / it.source, part))
                      for it in todo if it.source]:
                made(f.result())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tmp_manifest = manifest.with_suffix(".tmp")
    with open(tmp_manifest, "w") as f:
        json.dump({"version": GENERATOR_VERSION, "seconds_to_make": time.monotonic() - t0,
                   "files": [asdict(it) for it in items]}, f, indent=0)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_manifest, manifest)
    log(f"  back-log of {n} files made in {time.monotonic() - t0:.0f} s")
    return videos, items


# -- the daemon as a subprocess -------------------------------------------------------------------

class _Hook(http.server.BaseHTTPRequestHandler):
    events: list[tuple[float, dict]]

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.events.append((time.time(), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)
    return value


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (decode workers, the model process); the daemon tests
    use it too."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (decode workers)."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class Vfpd:
    """One daemon subprocess on a temporary config, with a webhook receiver."""

    def __init__(self, home: Path, roots: list[Path], workers: int) -> None:
        self.home = home
        self.log = home / "vfpd.log"
        self.config = home / "vfpd.toml"
        self.events: list[tuple[float, dict]] = []
        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), type("H", (_Hook,), {"events": self.events}))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.config.write_text(f"""
[watch]
paths = {json.dumps([str(r) for r in roots])}
settle_seconds = {SETTLE}
[storage]
state_dir = "{home}/state"
[control]
socket = "{home}/ctl.sock"
[notify]
desktop = false
[notify.webhook]
url = "http://127.0.0.1:{self.server.server_address[1]}/"
[model]
device = "cpu"
idle_unload_seconds = {IDLE_UNLOAD}
[decode]
workers = {workers}
""")
        self.proc: subprocess.Popen | None = None
        self.peak_rss = 0
        self._watching = False

    def start(self) -> float:
        notify = self.home / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.unlink(missing_ok=True)
        sock.bind(str(notify))
        sock.settimeout(START_TIMEOUT)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify)}
        env.pop("JOURNAL_STREAM", None)
        t0 = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "vfpd.cli.daemon", "--config",
                                          str(self.config), "--log-level", "debug"],
                                         stdout=out, stderr=out, env=env)
        self._watching = True
        threading.Thread(target=self._watch_rss, daemon=True).start()
        try:
            while b"READY=1" not in sock.recv(4096):
                pass
        finally:
            sock.close()
        return time.monotonic() - t0

    def _watch_rss(self) -> None:
        while self._watching and self.proc is not None and self.proc.poll() is None:
            self.peak_rss = max(self.peak_rss, _tree_rss(self.proc.pid))
            time.sleep(RSS_POLL)

    def hwm(self) -> int:
        """The daemon process's own peak resident memory (VmHWM), without its workers."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def logged_at(self, needle: str) -> float | None:
        """Wall time of the first log line containing `needle`."""
        for line in self.lines():
            if needle in line:
                m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)
                if m:
                    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(
                        m.group(2)) / 1000
        return None

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines())

    def stop(self) -> None:
        self._watching = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.server.shutdown()
        self.server.server_close()


def _latency(workers: int) -> dict[str, object]:
    work = DATA / "daemon-latency"
    clip, copies = work / "clip720.mp4", [work / f"near{i}.mp4" for i in range(3)]
    if not all(p.exists() for p in (clip, *copies)):
        work.mkdir(parents=True, exist_ok=True)
        bunny = sample_clip("bigbuckbunny")
        loops = int(CLIP_SECONDS // 5) + 1
        _ffmpeg("-stream_loop", str(loops), "-i", str(bunny), "-t", str(CLIP_SECONDS), "-an",
                "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", str(clip) + ".tmp.mp4")
        for i, crf in enumerate((30, 34, 38)):
            _ffmpeg("-i", str(clip) + ".tmp.mp4", "-vf",
                    f"crop=iw-{16 * (i + 1)}:ih-{8 * (i + 1)}", "-c:v", "libx264", "-preset",
                    "veryfast", "-crf", str(crf), str(copies[i]))
        os.replace(str(clip) + ".tmp.mp4", clip)
    home = Path(tempfile.mkdtemp(prefix="vfpd-bd-", dir="/tmp"))
    root = home / "videos"
    root.mkdir()
    d = Vfpd(home, [root], workers)
    try:
        startup = d.start()
        assert d.proc is not None
        time.sleep(FRESH_WAIT)
        fresh_rss = _tree_rss(d.proc.pid)
        shutil.copyfile(clip, root / clip.name)
        _wait(lambda: d.count(f"fingerprinted {root / clip.name}"), 600, "original")
        _wait(lambda: d.count("model released"), 120, "model released")
        latencies = []
        for src in copies:
            dest = root / src.name
            shutil.copyfile(src, dest)
            ev = _wait(lambda: [t for t, e in d.events if e["new"]["path"] == str(dest)], 600,
                       f"event for {dest}")
            latencies.append(ev[0] - d.logged_at(f"queued {dest}"))
        scores = [e["score"] for _, e in d.events
                  if str(root / clip.name) in [x["path"] for x in e["existing"]]]
        return {"startup": startup, "fresh_rss": fresh_rss, "latencies": latencies,
                "scores": scores}
    finally:
        d.stop()
        shutil.rmtree(home, ignore_errors=True)


# -- duplicates against the plan ------------------------------------------------------------------

@dataclass(frozen=True)
class Found:
    groups_expected: int
    groups_exact: int  # reported groups equal to a planted group
    pairs_expected: int
    pairs_true: int  # same-content pairs inside reported groups
    pairs_false: int  # pairs of different contents inside reported groups
    files_expected: int  # copies: files a duplicate event is due for
    by_kind: dict[str, tuple[int, int]]  # copy kind -> (found with its original, planted)


def judge(groups: Iterable[Iterable[str]], items: list[Item]) -> Found:
    """Reported groups (relative names) against the planted copies."""
    origin = {it.name: it.origin for it in items}
    planted: dict[int, set[str]] = defaultdict(set)
    for it in items:
        planted[it.origin].add(it.name)
    expected = {o: names for o, names in planted.items() if len(names) > 1}
    exact = true = false = 0
    together: set[tuple[str, str]] = set()
    for g in groups:
        g = sorted(set(g))
        if any(set(g) == names for names in expected.values()):
            exact += 1
        for i, a in enumerate(g):
            for b in g[i + 1:]:
                if origin[a] == origin[b]:
                    true += 1
                    together.add((a, b))
                else:
                    false += 1
    orig_name = {it.origin: it.name for it in items if not it.source}
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for it in items:
        if it.source:
            pair = tuple(sorted((it.name, orig_name[it.origin])))
            by_kind[it.recipe][1] += 1
            by_kind[it.recipe][0] += pair in together
    return Found(len(expected), exact, sum(math.comb(len(v), 2) for v in expected.values()),
                 true, false, sum(len(v) - 1 for v in expected.values()),
                 {k: (v[0], v[1]) for k, v in sorted(by_kind.items())})


def _run_backlog(videos: Path, items: list[Item], workers: int) -> dict[str, object]:
    from vfpd.catalog import Catalog, CatalogError, JobState
    from vfpd.service.commands import duplicate_groups

    home = Path(tempfile.mkdtemp(prefix="vfpd-bb-", dir="/tmp"))
    d = Vfpd(home, [videos], workers)
    n = len(items)
    db = home / "state" / "catalog.db"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()

    def drained() -> bool:
        time.sleep(1.0)
        try:
            with Catalog(db, readonly=True) as cat:
                c = cat.counts()
        except CatalogError:
            return False
        return c.jobs_queued == 0 and c.files + c.jobs_failed >= n

    try:
        t0 = time.monotonic()
        ready = d.start()
        _wait(drained, 4 * 3600, "back-log drained")
        total = time.monotonic() - t0
        hwm = d.hwm()
        load = tuple((a + b) / 2 for a, b in zip(load, os.getloadavg()))
        assert d.proc is not None
        time.sleep(IDLE_WAIT)
        idle_rss, cpu0 = _tree_rss(d.proc.pid), _tree_cpu(d.proc.pid)
        time.sleep(IDLE_WINDOW)
        idle_cpu = _tree_cpu(d.proc.pid) - cpu0
    finally:
        d.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        with Catalog(db, readonly=True) as cat:
            c = cat.counts()
            groups = [[os.path.relpath(m["path"], videos) for m in g["members"]]
                      for g in duplicate_groups(cat)]
            failed = [(j.path, j.last_error) for j in cat.iter_jobs(JobState.FAILED)]
        announced = {e["new"]["path"] for _, e in d.events}
        return {"ready": ready, "total": total, "files": c.files, "contents": c.contents,
                "failed": failed, "groups": groups, "announced": len(announced),
                "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
                "peak_rss": d.peak_rss, "hwm": hwm, "load": load, "idle_rss": idle_rss,
                "idle_cpu": idle_cpu,
                "found": judge(groups, items)}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _vpdq_one(path: str) -> np.ndarray:
    from bench.baselines import vpdq_hashes

    return vpdq_hashes(Path(path))


def _vpdq(videos: Path, items: list[Item], workers: int) -> dict[str, object] | None:
    try:
        import vpdq  # noqa: F401, PLC0415 - optional benchmark dependency
    except ImportError:
        return None
    from bench.baselines import VPDQ_DISTANCE, VPDQ_MATCH_SHARE, match_fractions, symmetric_best
    from vfpd.grouping import Pair, group_components

    names = [it.name for it in items]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        hashes = list(pool.map(_vpdq_one, [str(videos / nm) for nm in names], chunksize=4))
    hashing = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    scores = symmetric_best(match_fractions(hashes, VPDQ_DISTANCE))
    total = time.monotonic() - t0
    i, j = np.nonzero(np.triu(scores >= VPDQ_MATCH_SHARE, 1))
    pairs = [Pair(names[a], names[b], float(scores[a, b]), "near") for a, b in zip(i, j)]
    groups = group_components(pairs)
    return {"hashing": hashing, "total": total, "groups": groups, "found": judge(groups, items),
            "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}


def _scan(videos: Path, workers: int) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "vfpd.cli.ctl", "scan", str(videos), "--json",
                    "--device", "cpu", "--workers", str(workers), "--no-cache"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


# -- report ---------------------------------------------------------------------------------------

def _found_cell(f: Found) -> str:
    return (f"{f.groups_exact}/{f.groups_expected} groups exact; {f.pairs_true}/"
            f"{f.pairs_expected} pairs; {f.pairs_false} false pairs")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench daemon")
    ap.add_argument("--backlog", type=int, default=1000, help="back-log files (default 1000)")
    ap.add_argument("--workers", type=int, default=2, help="decode workers (daemon, vpdq, scan)")
    ap.add_argument("--no-vpdq", action="store_true")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--scan", action="store_true", help="also time a one-shot `vfpctl scan`")
    args = ap.parse_args(argv)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t_all = time.monotonic()
    load0 = os.getloadavg()
    lat = None if args.no_latency else _latency(args.workers)
    say("latency done" if lat else "latency skipped")
    bl = vp = scan = None
    items: list[Item] = []
    if args.backlog:
        t0 = time.monotonic()
        videos, items = backlog(args.backlog, say)
        made = time.monotonic() - t0
        say(f"back-log ready ({made:.0f} s); running the daemon on it")
        bl = _run_backlog(videos, items, args.workers)
        say(f"daemon drained in {bl['total']:.0f} s")
        vp = None if args.no_vpdq else _vpdq(videos, items, args.workers)
        scan = _scan(videos, args.workers) if args.scan else None
    print(f"\nvfpd on CPU ({os.cpu_count()} cores, load average {load0[0]:.1f} at the start), "
          f"{args.workers} decode workers, settle_seconds={SETTLE}; whole run "
          f"{(time.monotonic() - t_all) / 60:.0f} min\n")
    print("| measure | result |")
    print("|---|---|")
    if lat is not None:
        warm = lat["latencies"][1:] or lat["latencies"]
        print(f"| daemon start-up to READY=1 | {lat['startup']:.1f} s |")
        print(f"| just started, empty folder ({FRESH_WAIT:.0f} s after READY=1) | RSS "
              f"{lat['fresh_rss'] / 2**20:.0f} MiB (daemon + children) |")
        print(f"| settle -> webhook, {CLIP_SECONDS} s 720p near copy, model loaded on demand | "
              f"{lat['latencies'][0]:.2f} s |")
        print(f"| settle -> webhook, {CLIP_SECONDS} s 720p near copy, model warm (median of "
              f"{len(warm)}) | {statistics.median(warm):.2f} s |")
        print(f"| scores of the near copies against the original (crop + CRF 30/34/38) | "
              f"{', '.join(f'{s:.2f}' for s in lat['scores'])} |")
    if bl is not None:
        n = len(items)
        secs = sum(it.seconds for it in items)
        size = sum((videos / it.name).stat().st_size for it in items)
        res = Counter(f"{it.height}p" for it in items)
        copies = Counter(it.recipe for it in items if it.source)
        f = bl["found"]
        print(f"| back-log | {n} files, {secs / 3600:.2f} h of video ({secs / n:.1f} s mean, "
              f"{min(it.seconds for it in items):.0f}-{max(it.seconds for it in items):.0f} s), "
              f"{size / 1e9:.2f} GB ({size * 8 / secs / 1e6:.1f} Mbit/s mean); "
              f"{', '.join(f'{k} {v}' for k, v in sorted(res.items(), key=lambda kv: int(kv[0][:-1])))}; "
              f"{f.files_expected} copies of {f.groups_expected} contents "
              f"({', '.join(f'{k} {v}' for k, v in sorted(copies.items()))}) |")
        print(f"| back-log: daemon start to queue drained | {bl['total']:.0f} s = "
              f"{bl['total'] / 60:.1f} min ({n / bl['total']:.2f} files/s, "
              f"{secs / bl['total']:.0f}x realtime; READY=1 after {bl['ready']:.1f} s) |")
        print(f"| back-log: CPU time of daemon + workers | {bl['cpu']:.0f} s "
              f"({secs / max(bl['cpu'], 1e-9):.0f}x realtime per core) |")
        print(f"| back-log: peak memory | daemon + decode workers {bl['peak_rss'] / 2**20:.0f} MiB"
              f" (sampled every {RSS_POLL} s); daemon alone {bl['hwm'] / 2**20:.0f} MiB (VmHWM) |")
        print(f"| idle after the back-log ({IDLE_WAIT:.0f} s on: model and decoders let go) | "
              f"RSS {bl['idle_rss'] / 2**20:.0f} MiB (daemon + workers); CPU "
              f"{bl['idle_cpu']:.2f} s in {IDLE_WINDOW:.0f} s |")
        print(f"| back-log: failed files | {len(bl['failed'])} |")
        print(f"| back-log: duplicates, vfpd | {_found_cell(f)}; webhook for "
              f"{bl['announced']} files (copies planted: {f.files_expected}) |")
        print(f"| back-log: copies found with their original, by kind (vfpd) | "
              f"{', '.join(f'{k} {a}/{b}' for k, (a, b) in f.by_kind.items())} |")
        if vp is not None:
            vf = vp["found"]
            print(f"| same files, vpdq ({args.workers} processes): hashing, 1 hash/s | "
                  f"{vp['hashing']:.0f} s ({n / vp['hashing']:.2f} files/s, "
                  f"{secs / vp['hashing']:.0f}x realtime; CPU {vp['cpu']:.0f} s) |")
            print(f"| same files, vpdq: duplicates (share >= 0.8) | {_found_cell(vf)} |")
            print(f"| copies found with their original, by kind (vpdq) | "
                  f"{', '.join(f'{k} {a}/{b}' for k, (a, b) in vf.by_kind.items())} |")
        if scan is not None:
            print(f"| same files, one-shot `vfpctl scan --no-cache` | {scan:.0f} s "
                  f"({n / scan:.2f} files/s) |")
        print(f"\nload average during the back-log run: {bl['load'][0]:.1f} (1 min), "
              f"{bl['load'][1]:.1f} (5 min)")
        if bl["failed"]:
            print("failed:", "; ".join(f"{p}: {e}" for p, e in bl["failed"][:5]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
