"""Matching cost as the library grows, every fingerprint cached (no decoding): the walk-order
Library of a scan (candidates + verification) over N distinct contents made from the accuracy
set's real fingerprints, each copy trimmed at another offset (its first frames dropped).

    ./dev bench growth [--sizes 100,1000] [--data DIR]

A rough stand-in for a real library: trimmed copies keep their video vector, so they are each
other's nearest neighbours and every lookup verifies its full candidate list (the costly case).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from bench import stages

MAX_TRIM_FRAMES = 8
"""Copies of one real fingerprint drop 1..this many leading frames (seconds on the 1 s grid)."""


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench growth", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000", help="library sizes (10000 takes minutes)")
    ap.add_argument("--data", type=Path, help="the accuracy set's folder")
    args = ap.parse_args(argv)
    from vfpd import scan  # noqa: PLC0415 - heavy imports when run
    from vfpd.fingerprint import Fingerprint  # noqa: PLC0415
    from vfpd.hashing import FileStat  # noqa: PLC0415
    from vfpd.model.embed import Embedder  # noqa: PLC0415
    from vfpd.workers import DecodePool, PoolSettings  # noqa: PLC0415

    paths, _ = stages.accuracy_set(args.data, lambda m: print(f"# {m}", flush=True))
    embedder = Embedder(device="cpu")
    with DecodePool(PoolSettings(workers=2)) as pool:
        sampled = [r.sampled for r in pool.map(paths) if r.sampled is not None]
    real = embedder.embed_many(sampled)
    print(f"# {len(real)} real fingerprints; 2 cores, load average {os.getloadavg()[0]:.1f}",
          flush=True)
    print("| library size | candidates + verification, wall | CPU | per file |")
    print("|---|---|---|---|")
    for n in (int(x) for x in args.sizes.split(",")):
        fps: dict[str, Fingerprint] = {}
        entries = []
        for i in range(n):
            fp = real[i % len(real)]
            cut = min(1 + (i // len(real)) % MAX_TRIM_FRAMES, len(fp.timestamps) - 1)
            if i >= len(real):
                fp = replace(fp, frame_features=fp.frame_features[cut:],
                             timestamps=fp.timestamps[cut:] - fp.timestamps[cut],
                             informative=fp.informative[cut:],
                             duration=fp.duration - float(fp.timestamps[cut]))
            h = f"{i:064x}"
            fps[h] = fp
            entries.append(scan.FileEntry(f"/library/{i}.mp4", FileStat(1, 1, i, 1), hash=h))
        settings = scan.ScanSettings(roots=("/library",))
        c0, t0 = time.process_time(), time.perf_counter()
        scan.find_pairs(entries, fps, settings, embedder.frame_center)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"| {n} | {wall:.1f} s | {cpu:.1f} s | {1000 * wall / n:.0f} ms |", flush=True)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")
    return 0
