"""Where a scan's time goes: the accurate (default) scan's stages timed one after the other on
the accuracy set (walk, hash, decode, convert, embed, verify, group), beside PyAV's decode
ceilings, vpdq and the real scan (decode workers and embedding overlapped) in the same run.

    ./dev bench stages [--repeats 1] [--preset accurate] [--no-vpdq] [--data DIR]

`./dev bench speed` prints the same table (its --no-stages leaves it out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av

from bench import dataset

EMBED_BATCH = 8
"""Videos per embed_many call: the chain's EMBED_BATCH_FILES, so the model sees the batches a
scan gives it."""


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float


def timed(fn: Callable[[], object], repeats: int) -> tuple[Timing, object]:
    """Median wall and CPU seconds of `fn` (this process and the children it waited for: decode
    workers count) over `repeats` runs, and the last run's result."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        c0, t0 = _cpu(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return Timing(statistics.median(walls), statistics.median(cpus)), out


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def decode_only(path: Path, sampling: object) -> int:
    """Decode the file as media.sample does (same policy: vfpd.media.prepare_decoder, the same
    keyframes skipped), converting nothing; frames decoded."""
    from vfpd import media  # noqa: PLC0415 - heavy import only when run

    duration = media.probe(path, sampling).duration  # type: ignore[arg-type]
    n = 0
    with av.open(str(path), metadata_errors="ignore") as c:
        s = c.streams.video[0]
        media.prepare_decoder(path, s, duration, sampling)  # type: ignore[arg-type]
        for packet in c.demux(s):
            try:
                n += len(packet.decode())
            except av.error.InvalidDataError:
                continue
    return n


def ceiling(path: Path, keyframes: bool) -> int:
    """PyAV as fast as it goes (FFmpeg's threads, no conversion): every frame or keyframes only."""
    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_type = "AUTO"
        if keyframes:
            s.codec_context.skip_frame = "NONKEY"
        for _ in c.decode(s):
            n += 1
    return n


def stage_rows(paths: Sequence[Path], video_seconds: float, preset_name: str, repeats: int,
               with_vpdq: bool, workers: int, log: Callable[[str], None]) -> list[str]:
    """The markdown table: each stage's wall and CPU seconds, its share of the stages' sum, x
    realtime; then the ceilings, vpdq and the real scan."""
    from vfpd import media, scan  # noqa: PLC0415
    from vfpd.chain import pool_decoder  # noqa: PLC0415
    from vfpd.model.embed import Embedder  # noqa: PLC0415
    from vfpd.presets import PRESETS  # noqa: PLC0415

    preset = PRESETS[preset_name]
    folders = tuple(sorted({str(p.parent) for p in paths}))
    settings = scan.ScanSettings(roots=folders, workers=workers, match=preset.match,
                                 sampling=preset.sampling, threshold=preset.threshold,
                                 preset=preset.name)
    embedder = Embedder(device="cpu", version_suffix=preset.version_suffix)
    embedder.embed(media.sample(paths[0], preset.sampling))  # load the model outside the timings

    stages: list[tuple[str, Timing]] = []
    t, (found, _) = timed(lambda: scan.walk(folders, settings.rules), repeats)  # type: ignore[misc]
    stages.append(("walk", t))
    t, (entries, _) = timed(lambda: scan.identify(found, None), repeats)  # type: ignore[misc]
    stages.append(("hash (BLAKE3)", t))
    files = [Path(e.path) for e in entries]
    log(f"stages: {len(files)} files walked and hashed")
    t_dec, frames = timed(lambda: sum(decode_only(p, preset.sampling) for p in files), repeats)
    t_sample, sampled = timed(lambda: [media.sample(p, preset.sampling) for p in files], repeats)
    stages.append((f"decode ({frames} frames)", t_dec))
    stages.append(("convert + crop (sample - decode)",
                   Timing(t_sample.wall - t_dec.wall, t_sample.cpu - t_dec.cpu)))
    log(f"stages: decoded and sampled in {t_sample.wall:.0f} s")
    videos: list[media.SampledVideo] = sampled  # type: ignore[assignment]

    def embed_all() -> list[object]:
        return [fp for i in range(0, len(videos), EMBED_BATCH)
                for fp in embedder.embed_many(videos[i:i + EMBED_BATCH])]

    t, fps_list = timed(embed_all, repeats)
    stages.append(("embed (CPU)", t))
    fps = {e.hash: fp for e, fp in zip(entries, fps_list)}  # type: ignore[call-overload]
    t, pairs = timed(lambda: scan.find_pairs(entries, fps, settings, embedder.frame_center),
                     repeats)
    stages.append(("candidates + verify", t))
    t, groups = timed(lambda: scan.group(pairs, settings), repeats)  # type: ignore[arg-type]
    stages.append(("group", t))
    log(f"stages: {len(pairs)} pairs, {len(groups)} groups")  # type: ignore[arg-type]

    total = Timing(sum(s.wall for _, s in stages), sum(s.cpu for _, s in stages))
    rows = [f"| stage ({preset.name}, one after the other) | wall | share | CPU | x realtime (wall) |",
            "|---|---|---|---|---|"]
    for name, s in stages:
        rows.append(f"| {name} | {s.wall:.2f} s | {100 * s.wall / total.wall:.0f} % | "
                    f"{s.cpu:.2f} s | {_x(video_seconds, s.wall)} |")
    rows.append(f"| **sum of stages** | {total.wall:.1f} s | 100 % | {total.cpu:.1f} s | "
                f"{_x(video_seconds, total.wall)} |")

    t_scan, result = timed(lambda: scan.scan(settings, embedder, pool_decoder(workers, settings.sampling)),
                           repeats)
    rows.append(f"| **`vfpctl scan --no-cache` ({workers} decode workers, overlapped)** | "
                f"{t_scan.wall:.1f} s | | {t_scan.cpu:.1f} s | {_x(video_seconds, t_scan.wall)} |")
    log(f"stages: whole scan {t_scan.wall:.0f} s ({len(result.pairs)} pairs)")  # type: ignore[attr-defined]
    t_cached = cached_rescan(settings, embedder, workers)
    rows.append(f"| `vfpctl scan` again, every fingerprint cached (walk, stat, match) | "
                f"{t_cached.wall:.1f} s | | {t_cached.cpu:.1f} s | {_x(video_seconds, t_cached.wall)} |")
    t_all, _ = timed(lambda: sum(ceiling(p, False) for p in files), repeats)
    t_key, _ = timed(lambda: sum(ceiling(p, True) for p in files), repeats)
    rows.append(f"| PyAV every frame (1 process) | {t_all.wall:.1f} s | | {t_all.cpu:.1f} s | "
                f"{_x(video_seconds, t_all.wall)} |")
    rows.append(f"| PyAV keyframes only (1 process) | {t_key.wall:.1f} s | | {t_key.cpu:.1f} s | "
                f"{_x(video_seconds, t_key.wall)} |")
    vpdq_hash = _vpdq() if with_vpdq else None
    if vpdq_hash is not None:
        t_v, _ = timed(lambda: [vpdq_hash(p) for p in files], repeats)
        rows.append(f"| vpdq, 1 hash/s (1 process, its own threads) | {t_v.wall:.1f} s | | "
                    f"{t_v.cpu:.1f} s | {_x(video_seconds, t_v.wall)} |")
        rows.append(f"| **scan vs vpdq** | {t_v.wall / t_scan.wall:.2f}x faster | | | |")
    embedder.unload()
    return rows


def cached_rescan(settings: object, embedder: object, workers: int) -> Timing:
    """A scan of the set with a cache holding every fingerprint (a first scan fills it, not
    timed): what a rescan of an unchanged library costs, matching included."""
    import tempfile  # noqa: PLC0415

    from vfpd import scan  # noqa: PLC0415
    from vfpd.catalog import Catalog  # noqa: PLC0415
    from vfpd.chain import pool_decoder  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="vfpd-bench-cache-") as d:
        with Catalog(Path(d) / "catalog.sqlite") as catalog:
            def run() -> object:
                return scan.scan(settings, embedder, pool_decoder(workers, settings.sampling),  # type: ignore[arg-type, attr-defined]
                                 catalog)
            run()
            t, result = timed(run, 1)
    assert result.cached == len(result.files) or result.fingerprinted == 0  # type: ignore[attr-defined]
    return t


def _vpdq() -> Callable[[Path], object] | None:
    try:
        import vpdq  # noqa: PLC0415 - bench extra
    except ImportError:
        print("# vpdq is not installed (pip install -e '.[bench]'): no vpdq row", flush=True)
        return None
    return lambda p: vpdq.computeHash(str(p), seconds_per_hash=1, downsample_width=0,
                                      downsample_height=0, thread_count=0)


def _x(duration: float, seconds: float) -> str:
    return f"{duration / seconds:.0f}x" if seconds > 0 else "-"


def accuracy_set(root: Path | None, log: Callable[[str], None]) -> tuple[list[Path], float]:
    """The accuracy benchmark's files (built when missing) and their total seconds of video."""
    ds = dataset.build(dataset.full_spec(), root or dataset.DEFAULT_ROOT, log=log)
    return [ds.path(it) for it in ds.items], sum(it.duration for it in ds.items)


def linked(paths: Sequence[Path], folder: Path) -> list[Path]:
    """Hard links to `paths` alone in `folder`, so a scan of it walks exactly the set (the set's
    own folder may hold files of an earlier spec)."""
    folder.mkdir(parents=True, exist_ok=True)
    want = {p.name for p in paths}
    for old in folder.iterdir():
        if old.name not in want:
            old.unlink()
    out = []
    for p in paths:
        q = folder / p.name
        if not q.exists():
            os.link(p, q)
        out.append(q)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench stages", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="medians over this many runs")
    ap.add_argument("--preset", choices=("accurate", "fast"), default="accurate")
    ap.add_argument("--no-vpdq", action="store_true")
    ap.add_argument("--workers", type=int, default=2, help="decode workers of the real scan")
    ap.add_argument("--data", type=Path, help="the accuracy set's folder (default bench/data/accuracy)")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(f"# {msg}", flush=True)

    paths, seconds = accuracy_set(args.data, log)
    paths = linked(paths, dataset.DEFAULT_ROOT.parent / "stages-set")
    log(f"{len(paths)} files, {seconds:.0f} s of video; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at start; medians of {args.repeats}")
    rows = stage_rows(paths, seconds, args.preset, args.repeats, not args.no_vpdq, args.workers, log)
    print("\n".join(rows))
    log(f"load average {os.getloadavg()[0]:.1f} at the end (other processes share these cores)")
    return 0
