"""Store the background frame feature (vfpd/model/center.py) in a weights file's meta, estimated
from a folder of varied videos (e.g. one made by scripts/make_training_set.py):

    python scripts/compute_center.py vfpd/model/weights/base.pt DIR [DIR ...]

Every video is sampled as fingerprints sample (media.sample, 1 s grid), embedded with the weights,
and counted once (the mean of its informative frame features); the mean of those is stored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from vfpd import files, media
from vfpd.model import center
from vfpd.model.embed import Embedder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument("folders", nargs="+", type=Path)
    args = ap.parse_args(argv)
    embedder = Embedder(weights=args.weights, device="cpu")
    fps = []
    for folder in args.folders:
        for path, _ in files.walk(folder, files.FileRules()):
            try:
                fps.append(embedder.embed(media.sample(path)))
            except media.MediaError as e:
                print(f"skipped {path}: {e.reason}", file=sys.stderr)
    c = center.estimate(fps)
    center.store(args.weights, c)
    print(f"{args.weights}: background from {len(fps)} videos, norm {float(np.linalg.norm(c)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
