"""Retraining benchmark: the shipped weights against a model retrained with `vfpctl retrain`'s
settings on a library of fixed-camera, talking-head, screen and title-card series (footage unlike
the base training set), scored on other series of the same kinds that were never trained on, and
on the regression suite the gate uses. Prints a markdown table for the README.

    ./dev bench retrain [--minutes 10] [--threads 2] [--workers 2] [--data DIR] [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from bench import dataset
from bench.accuracy import (
    _sample_one,
    average_precision,
    count_at_or_above,
    label_pairs,
    recall_at_precision,
)

TRAIN_SERIES = ("cam1", "cam3", "talk1", "screen1", "title1")
"""The library retrained on; the other series (cam2, cam4, talk2, screen2, title2) are the
evaluation: the same kinds of footage, other scenes, never trained on."""

SIZE = (320, 180)
"""Frame size of the originals: the model sees 64x64 frames, so a smaller set renders in a
fraction of the time of the accuracy set's 640x360 and measures the same thing."""


def _score_all(fps: list, match: object) -> np.ndarray:
    """Every pair verified the product's way (the set's background, recurring-content weights),
    as bench/accuracy.py's run_ours does."""
    from vfpd import candidates, matching

    center = matching.frame_center(fps)
    cands = candidates.find_candidates(fps, match, center=center)
    n = len(fps)
    s = np.zeros((n, n))
    for a in range(n):
        for b in range(a + 1, n):
            m = matching.verify(fps[a], fps[b], match, a_weights=cands.weights[a],
                                b_weights=cands.weights[b], center=center)
            s[a, b] = s[b, a] = m.score
    return s


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench retrain", description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training minutes (max_minutes)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for training")
    ap.add_argument("--workers", type=int, default=2, help="encoding/decoding processes")
    ap.add_argument("--data", type=Path, default=dataset.DEFAULT_ROOT.with_name("retrain"))
    ap.add_argument("--rebuild", action="store_true", help="delete and rebuild the cached set")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args(argv)

    import torch

    from vfpd.model.embed import DEFAULT_WEIGHTS, Embedder
    from vfpd.model.frame_cache import CachedVideo, thumbnails
    from vfpd.model.train import best_path, fit, store_background
    from vfpd.presets import PRESETS
    from vfpd.retrain import gate, suite
    from vfpd.retrain.worker import retrain_settings

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    spec = dataset.Spec(*SIZE, tuple(dataset.scene_originals()))
    if args.rebuild:
        dataset.clean(args.data)
    t0 = time.perf_counter()
    ds = dataset.build(spec, args.data, workers=args.workers, log=log)
    log(f"dataset: {len(ds.items)} files in {time.perf_counter() - t0:.0f} s ({args.data})")
    preset = PRESETS["accurate"]
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        sampled = list(pool.map(_sample_one, [str(ds.path(it)) for it in ds.items],
                                [preset.sampling] * len(ds.items)))
    items = [(it, sv) for it, (sv, err) in zip(ds.items, sampled) if sv is not None]
    train = [(it, sv) for it, sv in items if it.scene in TRAIN_SERIES]
    evals = [(it, sv) for it, sv in items if it.scene and it.scene not in TRAIN_SERIES]
    log(f"library (trained on): {len(train)} files; evaluation: {len(evals)} files")

    videos = [CachedVideo(it.name, sv.frames, np.asarray(sv.timestamps, np.float64),
                          thumbnails(sv.frames)) for it, sv in train]
    with tempfile.TemporaryDirectory(prefix="vfpd-bench-retrain-") as tmp:
        run_dir = Path(tmp)
        settings = retrain_settings(DEFAULT_WEIGHTS, run_dir, args.minutes, 0, "cpu",
                                    args.threads)
        c0, w0 = time.process_time(), time.perf_counter()
        summary = fit(videos, [], settings, log, progress_bars=False)
        train_min = (time.perf_counter() - w0) / 60
        cpu_min = (time.process_time() - c0) / 60
        candidate = run_dir / "candidate.pt"
        best_path(settings.checkpoint).replace(candidate)
        store_background(candidate, videos, "cpu", log)
        log(f"trained {summary['steps']} steps in {train_min:.1f} min ({cpu_min:.1f} CPU min)")

        torch.set_num_threads(args.threads)
        suite_set = gate.eval_set(suite.regression_videos())
        rows, results = [], {}
        for name, weights in (("base (shipped)", DEFAULT_WEIGHTS), ("retrained", candidate)):
            emb = Embedder(weights=weights, device="cpu", cpu_threads=args.threads)
            results[name] = {}
            cells = []
            for part, files in (("other series", evals), ("library", train)):
                pairs = label_pairs([it for it, _ in files])
                fps = emb.embed_many([sv for _, sv in files])
                s = _score_all(fps, preset.match)[pairs.i, pairs.j]
                ap_ = average_precision(s, pairs.positive)
                r99, _ = recall_at_precision(s, pairs.positive)
                fp = count_at_or_above(s, ~pairs.positive, preset.threshold)
                results[name][part] = {"ap": ap_, "recall_at_p99": r99, "false_positives": fp,
                                       "positives": int(pairs.positive.sum()),
                                       "pairs": len(pairs.positive)}
                cells.append(f"{ap_:.3f} | {r99:.3f} | {fp}")
            su = gate.score(emb.embed_many, suite_set, preset.match, preset.threshold)
            results[name]["suite"] = su.to_json()
            rows.append(f"| {name} | {' | '.join(cells)} | {su.ap:.3f} | "
                        f"{su.recall_at_p99:.3f} | {su.false_positives} |")
            log(f"{name}: {results[name]}")
        pairs = label_pairs([it for it, _ in evals])

    head = (f"Retrained {summary['steps']} steps from the shipped weights on {len(train)} files "
            f"of {', '.join(TRAIN_SERIES)} in {train_min:.1f} min ({cpu_min:.1f} CPU min, "
            f"{args.threads} threads); scored on {len(evals)} files of the other series "
            f"({int(pairs.positive.sum())} duplicate pairs, {int((~pairs.positive).sum())} "
            f"others, every negative a clip of the same camera or template or another series), "
            f"on the library itself, and on the regression suite, at threshold "
            f"{preset.threshold}. False positives: pairs at or above the threshold.")
    table = "\n".join([
        ("| model | other series: AP | recall at P>=0.99 | false positives | library (trained "
         "on): AP | recall at P>=0.99 | false positives | suite: AP | recall at P>=0.99 | "
         "false positives |"),
        "|---|---|---|---|---|---|---|---|---|---|", *rows])
    print(head + "\n\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrain.md").write_text(head + "\n\n" + table + "\n")
    (args.out / "retrain.json").write_text(json.dumps(
        {"steps": summary["steps"], "train_minutes": train_min, "cpu_minutes": cpu_min,
         "threads": args.threads, "train_files": len(train), "eval_files": len(evals),
         "results": results}, indent=1))
    return 0
