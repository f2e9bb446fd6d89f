"""`vfpctl train`: contrastive training of the fingerprint network on a folder of videos."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train the fingerprint network on a folder of videos",
        description="Decode every video in DATA_DIR once (frames cached beside the checkpoint), then "
                    "train contrastively. Re-running with the same --checkpoint resumes. The best "
                    "weights by validation score are written to CHECKPOINT's stem + '.best.pt'.")
    p.add_argument("--data_dir", type=Path, required=True, help="folder of training videos (searched recursively)")
    p.add_argument("--batch_size", type=int, default=8, help="videos per step (default 8)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (AdamW, cosine decay)")
    p.add_argument("--num_workers", type=int, default=4, help="decoding and batch-building processes")
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file; resumed when it exists")
    p.add_argument("--no_amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--val_fraction", type=float, default=0.1, help="share of videos held out for validation")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_minutes", type=float, default=0.0,
                   help="stop after the epoch during which this much training time has passed")
    p.add_argument("--max_steps", type=int, default=0, help="stop after this many steps in total")
    p.add_argument("--cache_dir", type=Path, default=None, help="frame cache (default: CHECKPOINT.cache/)")
    p.add_argument("--init", type=Path, default=None,
                   help="start from these weights (e.g. the shipped base weights) instead of random")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vfpd.model.frame_cache import TrainingError
    from vfpd.model.train import TrainSettings, train

    for name in ("batch_size", "epochs", "num_workers"):
        if getattr(args, name) < (2 if name == "batch_size" else 0 if name == "num_workers" else 1):
            print(f"vfpctl train: --{name} is too small ({getattr(args, name)})", file=sys.stderr)
            return EXIT_USAGE
    if not args.lr > 0 or not 0 <= args.val_fraction < 1:
        print("vfpctl train: --lr must be > 0 and --val_fraction in [0, 1)", file=sys.stderr)
        return EXIT_USAGE
    settings = TrainSettings(
        data_dir=args.data_dir, checkpoint=args.checkpoint, batch_size=args.batch_size,
        epochs=args.epochs, lr=args.lr, num_workers=args.num_workers, device=args.device,
        amp=not args.no_amp, val_fraction=args.val_fraction, threads=args.threads, seed=args.seed,
        cache_dir=args.cache_dir, max_steps=args.max_steps, max_minutes=args.max_minutes,
        init=args.init)
    try:
        summary = train(settings, log=lambda m: print(m, file=sys.stderr, flush=True))
    except (TrainingError, ValueError) as e:
        print(f"vfpctl train: {e}", file=sys.stderr)
        return EXIT_FAILED
    last = summary["history"][-1] if summary["history"] else {}
    print(json.dumps({"epochs": summary["epochs"], "steps": summary["steps"],
                      "best_score": summary["best_score"], "last": last,
                      "best_weights": summary["best_weights"]}, indent=2))
    return EXIT_OK
