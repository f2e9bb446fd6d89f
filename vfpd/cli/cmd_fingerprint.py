"""`vfpctl fingerprint FILE...`: each file's fingerprint summary (and, with --json, its vector)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_FILE_ERRORS = 1
EXIT_FAILED = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("fingerprint", help="fingerprint video files and print a summary",
                              description="Decode and fingerprint each FILE with the shipped model "
                                          "(or --weights). Exit 1 when a file cannot be read.")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file, with the 256-d vector")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped base weights)")
    p.add_argument("--fast", action="store_true",
                   help="decode keyframes only, as `vfpctl scan --fast`: faster, fewer hard "
                        "copies found; another model version")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vfpd import media
    from vfpd.model.embed import Embedder
    from vfpd.model.version import WeightsError
    from vfpd.presets import ACCURATE, FAST

    preset = FAST if args.fast else ACCURATE
    try:
        embedder = Embedder(args.weights, device=args.device, version_suffix=preset.version_suffix)
    except (WeightsError, ValueError) as e:
        print(f"vfpctl fingerprint: {e}", file=sys.stderr)
        return EXIT_FAILED
    status = EXIT_OK
    for path in args.files:
        try:
            video = media.sample(path, preset.sampling)
        except media.MediaError as e:
            status = EXIT_FILE_ERRORS
            if args.json:
                print(json.dumps({"path": str(path), "error": e.kind, "reason": e.reason}))
            else:
                print(f"{path}: error ({e.kind}): {e.reason}")
            continue
        try:
            fp = embedder.embed(video)
        except WeightsError as e:
            print(f"vfpctl fingerprint: {e}", file=sys.stderr)
            return EXIT_FAILED
        used, total = int(fp.informative.sum()), len(fp.timestamps)
        if args.json:
            print(json.dumps({"path": str(path), "duration": round(fp.duration, 3),
                              "frames_informative": used, "frames_total": total,
                              "model_version": fp.model_version,
                              "vector": [round(float(x), 6) for x in fp.vector]}))
        else:
            print(f"{path}: {fp.duration:.2f} s, frames used {used}/{total}, model {fp.model_version}")
    return status
