"""Accuracy benchmark: vfpd's own path vs vpdq, FFmpeg's MPEG-7 signature and a per-frame pHash on
one set of originals, transformed copies and hard negatives; prints markdown tables for the README.

    ./dev bench accuracy [--tiny] [--rebuild] [--methods ours,vpdq,signature,phash] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from bench import baselines, dataset
from bench.baselines import MethodResult

# --- pairs and their labels ---------------------------------------------------------------------

NEG_SAME_FOOTAGE = "same footage, other segment"
NEG_SHARED_INTRO = "shared 3 s intro"
NEG_BLACK_LEADER = "both with black leader"
NEG_DIFFERENT = "different videos"

NEG_TITLE_TEMPLATE = "title cards of one template"


def neg_same_scene(scene_kind: str) -> str:
    """Two clips of one fixed camera (talking head, screen) at other moments."""
    return f"{scene_kind}, other moment"


POS_COPY_COPY = "copy vs copy"
POS_COPY_COPY_HARDER = "copy vs copy (a harder kind)"

OURS = "vfpd (ours)"


@dataclass(frozen=True)
class Pairs:
    """Every unordered pair (i < j) of the set's files with its ground truth.

    positive   the two files are copies of one footage
    kind       positives: the copy's transformation for (original, copy), POS_COPY_COPY for two
               copies; negatives: one of the NEG_* kinds
    heldout    positives of a held-out original; negatives touching a held-out file
    measured   False for pairs with a copy of a MEASURED_ONLY kind (picture-in-picture): shown
               per kind, left out of the summary and the calibration
    scene_kind positives: the kind of scene their footage is ("" for the other originals)
    """

    i: np.ndarray
    j: np.ndarray
    positive: np.ndarray
    kind: np.ndarray
    heldout: np.ndarray
    measured: np.ndarray
    scene_kind: np.ndarray


def label_pairs(items: Sequence[dataset.Item]) -> Pairs:
    n = len(items)
    ii, jj = np.triu_indices(n, k=1)
    pos, kind, held, scene = [], [], [], []
    harder = set(dataset.HARDER_TRANSFORMS)
    measured = np.array([it.transform not in dataset.MEASURED_ONLY for it in items])
    for i, j in zip(ii, jj):
        a, b = items[i], items[j]
        if a.group == b.group:
            pos.append(True)
            scene.append(a.scene_kind)
            if a.transform == "original":
                kind.append(b.transform)
            elif b.transform == "original":
                kind.append(a.transform)
            elif {a.transform, b.transform} & harder:
                kind.append(POS_COPY_COPY_HARDER)
            else:
                kind.append(POS_COPY_COPY)
            held.append(not a.seen)
            continue
        pos.append(False)
        scene.append("")
        if a.scene and a.scene == b.scene:
            kind.append(NEG_TITLE_TEMPLATE if a.scene_kind == dataset.SCENE_KINDS["title"]
                        else neg_same_scene(a.scene_kind))
        elif a.footage == b.footage:
            kind.append(NEG_SAME_FOOTAGE)
        elif a.intro and a.intro == b.intro:
            kind.append(NEG_SHARED_INTRO)
        elif a.leader and b.leader:
            kind.append(NEG_BLACK_LEADER)
        else:
            kind.append(NEG_DIFFERENT)
        held.append(not a.seen or not b.seen)
    return Pairs(ii, jj, np.array(pos, bool), np.array(kind, object), np.array(held, bool),
                 measured[ii] & measured[jj], np.array(scene, object))


# --- metrics: pure functions of scores and labels ---------------------------------------------

@dataclass(frozen=True)
class Curve:
    """Precision/recall at every distinct positive score; a pair with score 0 is never retrieved."""

    thresholds: np.ndarray  # descending
    precision: np.ndarray
    recall: np.ndarray
    positives: int


def pr_curve(scores: np.ndarray, positive: np.ndarray) -> Curve:
    s = np.asarray(scores, np.float64)
    y = np.asarray(positive, bool)
    total = int(y.sum())
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    keep = s > 0
    s, y = s[keep], y[keep]
    if len(s) == 0:
        e = np.zeros(0)
        return Curve(e, e, e, total)
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp, fp = tp[last], fp[last]
    return Curve(s[last], tp / (tp + fp), tp / max(total, 1), total)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the step precision-recall curve (sum of precision at each recall gain); nan
    without positives."""
    c = pr_curve(scores, positive)
    if c.positives == 0:
        return float("nan")
    gains = np.diff(np.r_[0.0, c.recall])
    return float(np.sum(gains * c.precision))


def best_f1(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """(best F1, the threshold giving it)."""
    c = pr_curve(scores, positive)
    if len(c.thresholds) == 0:
        return 0.0, float("nan")
    f1 = 2 * c.precision * c.recall / np.maximum(c.precision + c.recall, 1e-12)
    k = int(np.argmax(f1))
    return float(f1[k]), float(c.thresholds[k])


def recall_at_precision(scores: np.ndarray, positive: np.ndarray, precision: float = 0.99
                        ) -> tuple[float, float]:
    """(highest recall with precision >= `precision`, the lowest threshold reaching it); recall 0
    and threshold nan when no threshold is that precise."""
    c = pr_curve(scores, positive)
    ok = np.flatnonzero(c.precision >= precision)
    if len(ok) == 0:
        return 0.0, float("nan")
    k = ok[np.argmax(c.recall[ok])]
    k = ok[c.recall[ok] == c.recall[k]].max()  # the lowest threshold with that recall
    return float(c.recall[k]), float(c.thresholds[k])


def count_at_or_above(scores: np.ndarray, mask: np.ndarray, threshold: float) -> int:
    return int(np.sum((np.asarray(scores) >= threshold) & np.asarray(mask, bool)))


@dataclass(frozen=True)
class Calibration:
    """Where to put a threshold, measured: the highest-scoring negative, the lowest threshold with
    precision 1.0 (and its recall), the best-F1 threshold, and a suggestion halfway between the
    highest negative and the next positive above it."""

    max_negative: float
    precision1_threshold: float
    precision1_recall: float
    best_f1: float
    best_f1_threshold: float
    suggested: float
    suggested_recall: float


def calibrate(scores: np.ndarray, positive: np.ndarray) -> Calibration:
    s = np.asarray(scores, np.float64)
    y = np.asarray(positive, bool)
    max_neg = float(s[~y].max()) if (~y).any() else 0.0
    r1, t1 = recall_at_precision(s, y, 1.0)
    f1, tf1 = best_f1(s, y)
    above = s[y & (s > max_neg)]
    suggested = (max_neg + float(above.min())) / 2 if len(above) else float("nan")
    rec = float(np.mean(s[y] >= suggested)) if len(above) else 0.0
    return Calibration(max_neg, t1, r1, f1, tf1, suggested, rec)


# --- running the methods --------------------------------------------------------------------

def _scores_of(matrix: np.ndarray, pairs: Pairs) -> np.ndarray:
    return matrix[pairs.i, pairs.j]


def _sample_one(path: str, sampling: object | None = None) -> tuple[object | None, str]:
    from vfpd import media  # noqa: PLC0415 - imported in the worker process

    try:
        return media.sample(Path(path), sampling or media.SamplingSettings()), ""
    except media.MediaError as e:
        return None, f"{e.kind}: {e.reason}"


@dataclass(frozen=True)
class OursExtra:
    """What only our path has: candidate retrieval, timings split by stage, errors."""

    candidate_pairs: set[tuple[int, int]]
    k: int
    video_knn_pairs: set[tuple[int, int]]
    sample_s: float
    embed_s: float
    match_s: float
    all_pairs_s: float
    errors: dict[str, str]
    model_version: str
    scan_s: float  # the real `vfpctl scan` pipeline over the set's folder, no cache: wall seconds
    scan_cpu: float  # ...and CPU seconds, its decode workers included


def run_ours(paths: Sequence[Path], workers: int, log: Callable[[str], None],
             weights: Path | None = None, preset_name: str = "accurate"
             ) -> tuple[MethodResult, OursExtra]:
    """The product's path: media.sample (decoding in worker processes) -> Embedder -> the
    Library's candidate search + verification, under one of vfpd/presets.py's presets. Every pair
    is verified as well, for the AP; only the candidate part is timed as the product's cost."""
    from vfpd.model.embed import Embedder  # noqa: PLC0415
    from vfpd.library import DEFAULT_CANDIDATES, Library, LibrarySettings  # noqa: PLC0415
    from vfpd.presets import PRESETS  # noqa: PLC0415

    preset = PRESETS[preset_name]
    ms = preset.match
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        sampled = list(pool.map(_sample_one, [str(p) for p in paths],
                                [preset.sampling] * len(paths)))
    t1 = time.perf_counter()
    errors = {str(p): err for p, (_, err) in zip(paths, sampled) if err}
    good = [k for k, (sv, _) in enumerate(sampled) if sv is not None]
    log(f"ours: sampled {len(paths)} files in {t1 - t0:.1f}s ({len(errors)} errors)")
    embedder = Embedder(weights=weights, version_suffix=preset.version_suffix)
    fps = embedder.embed_many([sampled[k][0] for k in good])  # type: ignore[misc]
    t2 = time.perf_counter()
    log(f"ours: embedded in {t2 - t1:.1f}s")
    # The product's library (vfpd/library.py, the scan's and the daemon's), filled in the order a
    # scan walks the folder: each video is matched against those before it, with the background
    # and recurring-content counts of that moment. Its candidates + verification are the timed
    # cost; every earlier video is also scored in the same context, for the AP.
    settings = LibrarySettings(preset.threshold, DEFAULT_CANDIDATES, ms)
    library = Library.in_memory(fps[0].model_version if fps else "?", settings,
                                embedder.frame_center)
    order = sorted(range(len(fps)), key=lambda a: str(paths[good[a]]))
    cand: set[tuple[int, int]] = set()
    n = len(paths)
    scores = np.zeros((n, n))
    match_s = 0.0
    for pos, a in enumerate(order):
        fp = fps[a]
        t = time.perf_counter()
        found = library.verified(fp)
        match_s += time.perf_counter() - t
        cand |= {(min(good[a], good[int(v.hash)]), max(good[a], good[int(v.hash)]))
                 for v in found}
        hits = library.frame_index.lookup(fp) if library.frame_index is not None else None
        center = library.center(fp)
        for b in order[:pos]:
            m = library.score(fp, fps[b], hits, center)
            scores[good[a], good[b]] = scores[good[b], good[a]] = m.score
        library.add(a, str(a), fp)
    t3 = t2 + match_s
    t4 = time.perf_counter()
    log(f"ours: {len(cand)} candidates verified in {match_s:.1f}s; all pairs in {t4 - t2:.1f}s")

    import faiss  # noqa: PLC0415

    vectors = np.ascontiguousarray(np.stack([f.vector for f in fps]), dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    _, ids = index.search(vectors, min(len(fps), DEFAULT_CANDIDATES + 1))
    knn = {(min(good[a], good[int(b)]), max(good[a], good[int(b)]))
           for a in range(len(fps)) for b in ids[a] if b >= 0 and b != a}
    version = fps[0].model_version if fps else "?"
    embedder.unload()
    scan_s, scan_cpu = _timed_scan(paths, workers, preset, log)
    result = MethodResult(OURS, scores, preset.threshold, scan_s,
                          f"model {version}, preset {preset.name}")
    return result, OursExtra(cand, DEFAULT_CANDIDATES, knn, t1 - t0, t2 - t1, t3 - t2,
                             t4 - t3, errors, version, scan_s, scan_cpu)


def _timed_scan(paths: Sequence[Path], workers: int, preset: object,
                log: Callable[[str], None]) -> tuple[float, float]:
    """The product's whole one-shot scan of the set's folder (walk, BLAKE3, decode in the worker
    pool, embed while decoding, candidates, verification, groups), no cache: the cost a user sees."""
    from vfpd.model.embed import Embedder  # noqa: PLC0415
    from vfpd.chain import pool_decoder  # noqa: PLC0415
    from vfpd.scan import ScanSettings, scan  # noqa: PLC0415

    folders = sorted({str(p.parent) for p in paths})
    settings = ScanSettings(roots=tuple(folders), workers=workers, match=preset.match,  # type: ignore[attr-defined]
                            sampling=preset.sampling, preset=preset.name)  # type: ignore[attr-defined]
    embedder = Embedder(version_suffix=preset.version_suffix)  # type: ignore[attr-defined]
    c0, t0 = cpu_seconds(), time.perf_counter()
    result = scan(settings, embedder, pool_decoder(workers, settings.sampling))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    embedder.unload()
    log(f"ours: whole scan of {len(result.files)} files in {wall:.1f} s wall, {cpu:.1f} s CPU "
        f"({len(result.errors)} errors, {len(result.groups)} groups)")
    return wall, cpu


# --- tables -----------------------------------------------------------------------------------

def _f(x: float, digits: int = 3) -> str:
    return "—" if x != x else f"{x:.{digits}f}"


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children: unlike wall time, it does not depend on
    what else the machine is doing."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def summary_rows(results: Sequence[MethodResult], pairs: Pairs, subset: np.ndarray,
                 video_seconds: float, cpu: dict[str, float]) -> list[str]:
    head = ("| method | AP | best F1 (threshold) | recall @ precision ≥ 0.99 (threshold) | "
            "negatives ≥ default threshold | default threshold | wall time | × realtime | "
            "CPU time | × realtime per core |")
    rows = [head, "|" + "---|" * 10]
    y = pairs.positive[subset]
    n_neg = int((~y).sum())
    for r in results:
        s = _scores_of(r.scores, pairs)[subset]
        f1, tf1 = best_f1(s, y)
        rp, tp = recall_at_precision(s, y, 0.99)
        fp = count_at_or_above(s, ~y, r.default_threshold)
        speed = video_seconds / r.seconds if r.seconds > 0 else float("nan")
        c = cpu.get(r.name, float("nan"))
        rows.append(f"| {r.name} | {_f(average_precision(s, y))} | {_f(f1)} ({_f(tf1, 2)}) | "
                    f"{_f(rp)} ({_f(tp, 2)}) | {fp} of {n_neg} | {r.default_threshold:g} | "
                    f"{r.seconds:.0f} s | {speed:.0f}× | {c:.0f} s | {video_seconds / c:.0f}× |")
    return rows


def per_kind_rows(results: Sequence[MethodResult], pairs: Pairs, subset: np.ndarray
                  ) -> list[str]:
    """AP of each kind of positive against all negatives, and recall at each method's own default
    threshold (in brackets)."""
    order = (dataset.ALL_TRANSFORMS + (POS_COPY_COPY,) + dataset.HARDER_TRANSFORMS
             + (POS_COPY_COPY_HARDER,))
    selections = [(k, pairs.positive & subset & (pairs.kind == k)) for k in order]
    # The same copies again, grouped by the footage they were made of (scene series).
    selections += [(f"any copy of {sk} footage", pairs.positive & subset & (pairs.scene_kind == sk)
                    & (pairs.kind != POS_COPY_COPY) & (pairs.kind != POS_COPY_COPY_HARDER))
                   for sk in dataset.SCENE_KINDS.values()]
    rows = ["| transformation | positives | " + " | ".join(r.name for r in results) + " |",
            "|" + "---|" * (2 + len(results))]
    neg = ~pairs.positive & subset & pairs.measured
    for k, pos in selections:
        if not pos.any():
            continue
        sel = pos | neg
        cells = []
        for r in results:
            s = _scores_of(r.scores, pairs)
            ap = average_precision(s[sel], pos[sel])
            rec = float(np.mean(s[pos] >= r.default_threshold))
            cells.append(f"{_f(ap)} ({_f(rec, 2)})")
        rows.append(f"| {k} | {int(pos.sum())} | " + " | ".join(cells) + " |")
    return rows


def negative_rows(results: Sequence[MethodResult], pairs: Pairs) -> list[str]:
    """Hard negatives: how many reach each method's default threshold, and the highest score."""
    rows = ["| negatives | pairs | " + " | ".join(r.name for r in results) + " |",
            "|" + "---|" * (2 + len(results))]
    scenes = tuple(neg_same_scene(k) for k in dataset.SCENE_KINDS.values())
    for k in (NEG_SAME_FOOTAGE, *scenes, NEG_TITLE_TEMPLATE, NEG_SHARED_INTRO, NEG_BLACK_LEADER,
              NEG_DIFFERENT):
        m = ~pairs.positive & (pairs.kind == k)
        if not m.any():
            continue
        cells = []
        for r in results:
            s = _scores_of(r.scores, pairs)[m]
            cells.append(f"{int(np.sum(s >= r.default_threshold))} (max {s.max():.2f})")
        rows.append(f"| {k} | {int(m.sum())} | " + " | ".join(cells) + " |")
    return rows


SWEEP = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99)
"""Thresholds shown in the calibration sweep: the range a DEFAULT_THRESHOLD is picked from."""


def sweep_rows(s: np.ndarray, pairs: Pairs) -> list[str]:
    """Precision, recall and false positives at a few thresholds, overall and held-out."""
    rows = ["| threshold | precision | recall | negatives ≥ | precision (held-out) | "
            "recall (held-out) | negatives ≥ (held-out) |", "|" + "---|" * 7]
    y, h = pairs.positive, pairs.heldout & pairs.measured
    for t in SWEEP:
        cells = []
        for m in (pairs.measured, h):
            hit = (s >= t) & m
            tp, fp = int(np.sum(hit & y)), int(np.sum(hit & ~y))
            cells += [_f(tp / max(tp + fp, 1)), _f(tp / max(int(np.sum(y & m)), 1)), str(fp)]
        rows.append(f"| {t:g} | " + " | ".join(cells) + " |")
    return rows


def hardest_rows(s: np.ndarray, pairs: Pairs, names: Sequence[str], n: int = 6) -> list[str]:
    rows = ["| pair | truth | kind | score |", "|---|---|---|---|"]
    neg = np.flatnonzero(~pairs.positive & pairs.measured)
    pos = np.flatnonzero(pairs.positive & pairs.measured)
    for k in [*neg[np.argsort(-s[neg], kind="stable")[:n]], *pos[np.argsort(s[pos], kind="stable")[:n]]]:
        truth = "copy" if pairs.positive[k] else "different"
        rows.append(f"| {names[pairs.i[k]]} / {names[pairs.j[k]]} | {truth} | {pairs.kind[k]} | "
                    f"{s[k]:.3f} |")
    return rows


def retrieval_rows(extra: OursExtra, pairs: Pairs, k: int) -> list[str]:
    pos = [(int(a), int(b)) for a, b in zip(pairs.i[pairs.positive], pairs.j[pairs.positive])]
    held = pairs.heldout[pairs.positive]
    rows = ["| retrieval | positives found (all) | positives found (held-out) |", "|---|---|---|"]
    for name, found in ((f"video k-NN (256-d, k={k})", extra.video_knn_pairs),
                        ("candidates (video + frame k-NN)", extra.candidate_pairs)):
        hit = np.array([p in found for p in pos])
        rows.append(f"| {name} | {hit.mean():.3f} ({int(hit.sum())}/{len(hit)}) | "
                    f"{hit[held].mean() if held.any() else float('nan'):.3f} |")
    return rows


# --- method results kept between runs ----------------------------------------------------------

def save_result(path: Path, r: MethodResult, cpu: float, names: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, scores=r.scores, names=np.array(names), meta=np.array(json.dumps(
            {"name": r.name, "default_threshold": r.default_threshold, "seconds": r.seconds,
             "note": r.note, "cpu": cpu})))
    tmp.replace(path)


def load_result(path: Path, names: Sequence[str]) -> tuple[MethodResult, float]:
    """A result saved by an earlier run on the same files (--cached), for re-running only some
    methods; refused when the set's files differ."""
    with np.load(path) as z:
        if list(z["names"]) != list(names):
            raise ValueError(f"{path} was computed on another set of files; run it again")
        meta = json.loads(str(z["meta"]))
        r = MethodResult(meta["name"], z["scores"], meta["default_threshold"], meta["seconds"],
                         meta["note"] + " (cached result of an earlier run)")
    return r, meta["cpu"]


# --- main -------------------------------------------------------------------------------------

METHODS = ("ours", "vpdq", "signature", "phash")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench accuracy", description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a few-second set (smoke run)")
    ap.add_argument("--rebuild", action="store_true", help="delete and rebuild the cached set")
    ap.add_argument("--data", type=Path, help="where the set is built (default bench/data/...)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    ap.add_argument("--cached", default="", help="methods whose result of an earlier run on the "
                    "same files is reused (e.g. vpdq,signature,phash while tuning ours)")
    ap.add_argument("--weights", type=Path, help="model weights (default: the shipped base.pt)")
    ap.add_argument("--workers", type=int, default=2, help="decoding/encoding processes")
    ap.add_argument("--preset", choices=("accurate", "fast"), default="accurate",
                    help="our sampling preset (vfpd/presets.py); fast results are saved apart")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out",
                    help="where accuracy.md and accuracy.json are written")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = (set(methods) | {m.strip() for m in args.cached.split(",") if m.strip()}) - set(METHODS)
    if unknown:
        print(f"unknown method(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    spec = dataset.tiny_spec() if args.tiny else dataset.full_spec()
    root = args.data or (dataset.DEFAULT_ROOT.with_name("accuracy-tiny") if args.tiny
                         else dataset.DEFAULT_ROOT)
    if args.rebuild:
        dataset.clean(root)
    t0 = time.perf_counter()
    ds = dataset.build(spec, root, workers=args.workers, log=log)
    log(f"dataset: {len(ds.items)} files, {sum(i.duration for i in ds.items):.0f} s of video, "
        f"ready in {time.perf_counter() - t0:.0f} s ({root})")
    paths = [ds.path(it) for it in ds.items]
    names = [it.name for it in ds.items]
    cached = {m.strip() for m in args.cached.split(",") if m.strip()}
    pairs = label_pairs(ds.items)
    video_seconds = sum(it.duration for it in ds.items)

    results: list[MethodResult] = []
    extra: OursExtra | None = None
    failures: dict[str, str] = {}
    runners: dict[str, Callable[[], MethodResult]] = {
        "vpdq": lambda: baselines.run_vpdq(paths),
        "signature": lambda: baselines.run_signature(paths),
        "phash": lambda: baselines.run_phash(paths, workers=args.workers),
    }
    cpu: dict[str, float] = {}
    for m in methods:
        log(f"running {m} ...")
        c0 = cpu_seconds()
        stem = f"{m}-{args.preset}" if m == "ours" and args.preset != "accurate" else m
        saved = root / "results" / f"{stem}.npz"
        if m in cached:
            r, cpu_s = load_result(saved, names)
            cpu[r.name] = cpu_s
            results.append(r)
            continue
        try:
            if m == "ours":
                r, extra = run_ours(paths, args.workers, log, args.weights, args.preset)
            else:
                r = runners[m]()
        except Exception as e:  # one broken tool must not hide the others' numbers
            failures[m] = f"{type(e).__name__}: {e}"
            log(f"{m} failed: {failures[m]}")
            continue
        # Ours: the whole scan's CPU, not the extra all-pairs scoring done for the tables.
        cpu[r.name] = extra.scan_cpu if m == "ours" and extra is not None else cpu_seconds() - c0
        save_result(saved, r, cpu[r.name], names)
        log(f"{m}: {r.seconds:.0f} s wall, {cpu[r.name]:.0f} s CPU")
        results.append(r)

    n_pos = int(pairs.positive.sum())
    measured = pairs.measured
    held = pairs.heldout & measured
    out: list[str] = [
        f"Set: {len(ds.items)} files ({video_seconds / 60:.0f} min of video), "
        f"{len(pairs.i)} pairs: {n_pos} positive, {len(pairs.i) - n_pos} negative "
        f"({int(np.sum(~pairs.positive & (pairs.kind != NEG_DIFFERENT)))} hard). "
        f"Held-out: {int(np.sum(pairs.positive & held))} positive, "
        f"{int(np.sum(~pairs.positive & held))} negative pairs.", "",
        f"Picture-in-picture copies ({int(np.sum(pairs.positive & ~measured))} positive pairs) "
        "are measured per kind only, outside the summary and the calibration.", "",
        "**All pairs**", "", *summary_rows(results, pairs, measured, video_seconds, cpu), "",
        "**Held-out footage only** (originals never seen in training)", "",
        *summary_rows(results, pairs, held, video_seconds, cpu), "",
        "**Per transformation**: AP of (original, copy) pairs of that kind vs all negatives; "
        "in brackets the recall at the method's default threshold", "",
        *per_kind_rows(results, pairs, np.ones(len(pairs.i), bool)), "",
        "**Per transformation, held-out only**", "",
        *per_kind_rows(results, pairs, held), "",
        "**Hard negatives**: pairs at or above each method's default threshold (highest score)", "",
        *negative_rows(results, pairs), "",
    ]
    report: dict[str, object] = {"files": len(ds.items), "video_seconds": video_seconds,
                                 "failures": failures, "methods": {}}
    if extra is not None:
        out += ["**Our candidate retrieval** (does the k-NN lose positives before verification?)",
                "", *retrieval_rows(extra, pairs, extra.k), "",
                f"Our time: the whole `vfpctl scan` of the set (no cache) {extra.scan_s:.0f} s wall, "
                f"{extra.scan_cpu:.0f} s CPU (the time in the tables); by stage, run one after "
                f"the other: sampling {extra.sample_s:.0f} s, embedding {extra.embed_s:.0f} s, "
                f"candidates + verification {extra.match_s:.0f} s "
                f"(verifying all {len(pairs.i)} pairs for this table: {extra.all_pairs_s:.0f} s; "
                f"not part of a scan). Decode errors: {len(extra.errors)}.", ""]
        report["ours"] = {"scan_s": extra.scan_s, "scan_cpu": extra.scan_cpu,
                          "sample_s": extra.sample_s, "embed_s": extra.embed_s,
                          "match_s": extra.match_s, "errors": extra.errors,
                          "model_version": extra.model_version}
    ours = next((r for r in results if r.name == OURS), None)
    if ours is not None:
        s = _scores_of(ours.scores, pairs)
        cal = calibrate(s[measured], pairs.positive[measured])
        cal_held = calibrate(s[held], pairs.positive[held])
        at_default = (s >= ours.default_threshold) & measured
        out += ["**Threshold calibration (ours)**", "",
                f"- highest-scoring negative: {cal.max_negative:.3f} "
                f"(held-out: {cal_held.max_negative:.3f})",
                f"- lowest threshold with precision 1.0: {_f(cal.precision1_threshold)} "
                f"(recall {cal.precision1_recall:.3f})",
                f"- best F1 {cal.best_f1:.3f} at threshold {_f(cal.best_f1_threshold)}",
                f"- suggested DEFAULT_THRESHOLD (halfway between the highest negative and the next "
                f"positive): {_f(cal.suggested)} (recall {cal.suggested_recall:.3f})",
                f"- current DEFAULT_THRESHOLD {ours.default_threshold:g}: recall "
                f"{np.mean(at_default[pairs.positive & measured]):.3f}, "
                f"{int(np.sum(at_default & ~pairs.positive))} negatives at or above it", "",
                *sweep_rows(s, pairs), "",
                "Hardest pairs for ours (highest negatives, lowest positives):", "",
                *hardest_rows(s, pairs, names), ""]
        report["calibration"] = cal.__dict__
        report["calibration_heldout"] = cal_held.__dict__
    for m, why in failures.items():
        out.append(f"- {m}: not run ({why})")
    for r in results:
        s = _scores_of(r.scores, pairs)
        report["methods"][r.name] = {  # type: ignore[index]
            "ap": average_precision(s[measured], pairs.positive[measured]),
            "ap_heldout": average_precision(s[held], pairs.positive[held]),
            "default_threshold": r.default_threshold, "seconds": r.seconds, "note": r.note}
    text = "\n".join(out)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "accuracy" if args.preset == "accurate" else f"accuracy-{args.preset}"
    (args.out / f"{stem}.md").write_text(text + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    scores_file = args.out / f"{stem}-scores.npz"
    np.savez_compressed(scores_file, names=np.array([it.name for it in ds.items]),
                        **{r.name: r.scores for r in results})
    log(f"wrote {args.out / (stem + '.md')}, {stem}.json, {scores_file.name}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
