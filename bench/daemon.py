"""Daemon benchmark: seconds from settle to notification for a 30 s 720p clip, and back-log
throughput, with the real `vfpd` as a subprocess on CPU; the same back-log through a one-shot
`vfpctl scan` and through vpdq hashing side by side.

    ./dev bench daemon [--backlog 60] [--repeats 3] [--workers 2] [--no-vpdq]
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from media_factory import make_video, sample_clip  # noqa: E402

SETTLE = 1.0
CLIP_SECONDS = 30
BACKLOG_SECONDS = 10.0
"""Length of each back-log file: a short phone clip, the common case in a personal library."""
START_TIMEOUT = 300.0
IDLE_UNLOAD = 5.0
"""The bench daemon lets its model and decoders go after 5 s, so the first copy measures the cold
path (load on demand) and the next ones, sent at once, the warm path."""


class _Hook(http.server.BaseHTTPRequestHandler):
    events: list[tuple[float, dict]]

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.events.append((time.time(), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)
    return value


class Vfpd:
    """One daemon subprocess on a temporary config."""

    def __init__(self, home: Path, roots: list[Path], workers: int, url: str) -> None:
        self.home = home
        self.log = home / "vfpd.log"
        self.config = home / "vfpd.toml"
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
url = "{url}"
[model]
device = "cpu"
idle_unload_seconds = {IDLE_UNLOAD}
[decode]
workers = {workers}
""")
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        notify = self.home / "notify.sock"
        import socket

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
        try:
            while b"READY=1" not in sock.recv(4096):
                pass
        finally:
            sock.close()
        return time.monotonic() - t0

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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def _prepare(work: Path, backlog: int) -> tuple[Path, list[Path], list[Path]]:
    bunny = sample_clip("bigbuckbunny")
    clip = work / "clip720.mp4"
    loops = int(CLIP_SECONDS // 5) + 1
    _ffmpeg("-stream_loop", str(loops), "-i", str(bunny), "-t", str(CLIP_SECONDS), "-an",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", str(clip))
    copies = []
    for i, crf in enumerate((30, 34, 38)):
        out = work / f"near{i}.mp4"
        _ffmpeg("-i", str(clip), "-vf", f"crop=iw-{16 * (i + 1)}:ih-{8 * (i + 1)}", "-c:v",
                "libx264", "-preset", "veryfast", "-crf", str(crf), str(out))
        copies.append(out)
    (work / "backlog").mkdir()
    files = [make_video(work / "backlog" / f"b{i:04d}.mp4", seconds=BACKLOG_SECONDS, width=320,
                        height=240, seed=1000 + i)
             for i in range(backlog)] if backlog else []
    return clip, copies, files


def _latency(work: Path, clip: Path, copies: list[Path], workers: int) -> dict[str, object]:
    home = Path(tempfile.mkdtemp(prefix="vfpd-bd-", dir="/tmp"))
    root = home / "videos"
    root.mkdir()
    events: list[tuple[float, dict]] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             type("H", (_Hook,), {"events": events}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    d = Vfpd(home, [root], workers, f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        startup = d.start()
        shutil.copyfile(clip, root / clip.name)
        _wait(lambda: d.count(f"fingerprinted {root / clip.name}"), 600, "original")
        _wait(lambda: d.count("model released"), 120, "model released")
        cold = None
        latencies = []
        for i, src in enumerate(copies):
            dest = root / src.name
            shutil.copyfile(src, dest)
            ev = _wait(lambda: [t for t, e in events if e["new"]["path"] == str(dest)], 600,
                       f"event for {dest}")
            settled = d.logged_at(f"queued {dest}")
            latencies.append(ev[0] - settled)
            if i == 0:
                cold = ev[0] - settled
        scores = [e["score"] for _, e in events
                  if str(root / clip.name) in [x["path"] for x in e["existing"]]]
        return {"startup": startup, "latencies": latencies, "scores": scores, "cold": cold}
    finally:
        d.stop()
        server.shutdown()
        server.server_close()
        shutil.rmtree(home, ignore_errors=True)


def _backlog(files: list[Path], workers: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="vfpd-bb-", dir="/tmp"))
    root = home / "videos"
    root.mkdir()
    for f in files:
        shutil.copyfile(f, root / f.name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             type("H", (_Hook,), {"events": []}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    d = Vfpd(home, [root], workers, f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        t0 = time.monotonic()
        d.start()
        _wait(lambda: d.count("fingerprinted ") >= len(files), 24 * 3600, "back-log")
        total = time.monotonic() - t0
        first = d.logged_at("fingerprinted ")
        last_line = [ln for ln in d.lines() if "fingerprinted " in ln][-1]
        last = d.logged_at(last_line)
        return {"total": total, "steady": (last - first) / max(1, len(files) - 1)}
    finally:
        d.stop()
        server.shutdown()
        server.server_close()
        shutil.rmtree(home, ignore_errors=True)


def _scan(files: list[Path], workers: int) -> float:
    folder = files[0].parent
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "vfpd.cli.ctl", "scan", str(folder), "--json",
                    "--device", "cpu", "--workers", str(workers), "--no-cache"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def _vpdq(files: list[Path]) -> float | None:
    try:
        import vpdq  # noqa: PLC0415 - optional benchmark dependency
    except ImportError:
        return None
    t0 = time.monotonic()
    for f in files:
        vpdq.computeHash(str(f), seconds_per_hash=1.0)
    return time.monotonic() - t0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench daemon")
    ap.add_argument("--backlog", type=int, default=60, help="back-log files (default 60)")
    ap.add_argument("--workers", type=int, default=2, help="decode workers (daemon and scan)")
    ap.add_argument("--no-vpdq", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="vfpd-bench-daemon-"))
    try:
        clip, copies, files = _prepare(work, args.backlog)
        lat = _latency(work, clip, copies, args.workers)
        bl = _backlog(files, args.workers) if files else None
        scan = _scan(files, args.workers) if files else None
        vp = None if args.no_vpdq or not files else _vpdq(files)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = len(files)
    warm = lat["latencies"][1:] or lat["latencies"]
    print(f"\nvfpd on CPU ({os.cpu_count()} cores), {args.workers} decode workers, "
          f"settle_seconds={SETTLE}\n")
    print("| measure | result |")
    print("|---|---|")
    print(f"| daemon start-up to READY=1 | {lat['startup']:.1f} s |")
    print(f"| settle -> webhook, {CLIP_SECONDS} s 720p near copy, model loaded on demand | "
          f"{lat['cold']:.2f} s |")
    print(f"| settle -> webhook, {CLIP_SECONDS} s 720p near copy, model warm (median of "
          f"{len(warm)}) | {statistics.median(warm):.2f} s |")
    print(f"| scores of the near copies against the original (crop + CRF 30/34/38) | "
          f"{', '.join(f'{s:.2f}' for s in lat['scores'])} |")
    if bl is not None and scan is not None:
        secs = n * BACKLOG_SECONDS
        print(f"| back-log of {n} x {BACKLOG_SECONDS:.0f} s 320x240 files: start to last "
              f"fingerprint | {bl['total']:.1f} s ({n / bl['total']:.2f} files/s, "
              f"{secs / bl['total']:.0f}x realtime) |")
        print(f"| back-log, steady state per file | {bl['steady']:.2f} s |")
        print(f"| 1,000-file back-log, extrapolated from the steady state | "
              f"{(1000 * bl['steady'] + bl['total'] - n * bl['steady']) / 60:.1f} min |")
        print(f"| same {n} files, one-shot `vfpctl scan --no-cache` | {scan:.1f} s "
              f"({n / scan:.2f} files/s) |")
        if vp is not None:
            print(f"| same {n} files, vpdq hashing only (1 process) | {vp:.1f} s "
                  f"({n / vp:.2f} files/s) |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
