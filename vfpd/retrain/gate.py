"""The gate: a candidate model against the running one on the same pairs, scored the way the
daemon scores pairs (matching.verify), with retrieval metrics; promote only if clearly better on
the library and not worse on the fixed regression suite."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vfpd import media, picture
from vfpd.fingerprint import Fingerprint
from vfpd.matching import NONE, MatchSettings, verify
from vfpd.model.augment import AugmentConfig, TimeConfig, augment_views, time_view
from vfpd.model.batches import VIEW_INTERVAL, VIEW_MIN_SHARE
from vfpd.model.center import video_mean
from vfpd.model.frame_cache import CachedVideo

PRECISION_TARGET = 0.99
"""Recall is reported where precision is at least this: a duplicate finder whose announcements are
wrong more than once in a hundred is not trusted (the accuracy benchmark's operating point)."""

SUITE_TOLERANCE = 0.01
"""How much lower the candidate's AP on the regression suite may be and still count as "not
worse": AP moves by thousandths when a few pairs swap ranks; a real loss is larger."""

SUITE_RECALL_COPIES = 1
"""Recall at precision 0.99 may be lower by this many copies' worth (1/positives each): on a
suite of 20 copies one copy is 0.05, and which single copy crosses the cut flips with tiny
weight changes; two copies lost is forgetting."""

QUERIES_PER_VIDEO = 2
"""Synthetic transformed copies per held-out video: each a different segment and transformation."""

EVAL_SEED = 4242
"""The copies are the same for both models and every run on one library: a fixed seed."""


@dataclass(frozen=True)
class EvalSet:
    """Originals, transformed copies (`source[i]`: the original copy i was made from) and extra
    labelled pairs of originals (the user's verdicts: (i, j, same))."""

    originals: list[media.SampledVideo]
    copies: list[media.SampledVideo]
    source: list[int]
    judged: list[tuple[int, int, bool]]

    @property
    def pairs(self) -> int:
        return len(self.copies) * len(self.originals) + len(self.judged)


@dataclass(frozen=True)
class Scores:
    """One model on one EvalSet."""

    ap: float  # average precision over every pair, ranked by score
    recall_at_p99: float  # highest recall at precision >= PRECISION_TARGET
    false_positives: int  # pairs that are not duplicates but pass the accept rule
    positives: int
    pairs: int

    def to_json(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _sampled(frames: np.ndarray, times: np.ndarray, informative: np.ndarray | None = None
             ) -> media.SampledVideo:
    inf = picture.informative_mask(frames) if informative is None else informative
    dur = float(times[-1]) + VIEW_INTERVAL if len(times) else 0.0
    return media.SampledVideo(frames, times.astype(np.float64), inf, dur,
                              media.VideoInfo("eval", "eval", frames.shape[2], frames.shape[1],
                                              dur, None, 0))


def transformed_copies(videos: list[CachedVideo], per_video: int = QUERIES_PER_VIDEO,
                       seed: int = EVAL_SEED) -> tuple[list[media.SampledVideo], list[int]]:
    """Copies of segments of each video, transformed as training transforms (crops, colour,
    overlays, re-encoding, speed and trims): (copies, index of the original of each)."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    acfg, tcfg = AugmentConfig(), TimeConfig()
    copies, source = [], []
    for vid, v in enumerate(videos):
        dur = max(v.duration, VIEW_INTERVAL)
        for _ in range(per_video):
            length = dur * rng.uniform(VIEW_MIN_SHARE, 1.0)
            start = rng.uniform(0, dur - length)
            idx, ts = time_view(v.times, start, length, VIEW_INTERVAL, tcfg, rng)
            x = torch.from_numpy(v.frames[idx]).permute(0, 3, 1, 2).float().div(255.0)[None]
            y = augment_views(x, acfg, g)[0].clamp(0, 1).mul(255).round().byte()
            frames = y.permute(0, 2, 3, 1).contiguous().numpy()
            copies.append(_sampled(frames, np.asarray(ts, np.float64) - float(ts[0])))
            source.append(vid)
    return copies, source


def eval_set(videos: list[CachedVideo], judged: list[tuple[int, int, bool]] = (),
             seed: int = EVAL_SEED) -> EvalSet:
    copies, source = transformed_copies(videos, seed=seed)
    originals = [_sampled(v.frames, v.times) for v in videos]
    return EvalSet(originals, copies, source, list(judged))


def metrics(scores: np.ndarray, labels: np.ndarray, accepted: np.ndarray) -> Scores:
    """AP, recall at precision >= PRECISION_TARGET and false positives of the accept rule."""
    labels = labels.astype(bool)
    n_pos = int(labels.sum())
    fp = int((accepted & ~labels).sum())
    if n_pos == 0:
        return Scores(0.0, 0.0, fp, 0, len(labels))
    order = np.argsort(-scores, kind="stable")
    hit = labels[order]
    tp = np.cumsum(hit)
    precision = tp / np.arange(1, len(hit) + 1)
    recall = tp / n_pos
    ap = float((precision * hit).sum() / n_pos)
    # Ties: a cut is only possible where the score changes.
    s = scores[order]
    cut = np.r_[s[1:] != s[:-1], True]
    ok = cut & (precision >= PRECISION_TARGET)
    r = float(recall[ok].max()) if ok.any() else 0.0
    return Scores(ap, r, fp, n_pos, len(labels))


def score(embed: Callable[[list[media.SampledVideo]], list[Fingerprint]], es: EvalSet,
          match: MatchSettings, threshold: float) -> Scores:
    """Fingerprint the set with one model and score every copy against every original, and each
    judged pair, with the daemon's verification (background: the originals' mean)."""
    orig = embed(es.originals)
    cops = embed(es.copies)
    means = [m for m in (video_mean(fp) for fp in orig) if m is not None]
    center = np.mean(means, axis=0).astype(np.float32) if means else None
    s, y, acc = [], [], []
    for ci, c in enumerate(cops):
        for oi, o in enumerate(orig):
            m = verify(c, o, match, center=center)
            s.append(m.score)
            y.append(es.source[ci] == oi)
            acc.append(m.score >= threshold and m.kind != NONE)
    for i, j, same in es.judged:
        m = verify(orig[i], orig[j], match, center=center)
        s.append(m.score)
        y.append(same)
        acc.append(m.score >= threshold and m.kind != NONE)
    return metrics(np.asarray(s, np.float64), np.asarray(y), np.asarray(acc, bool))


def embedder_for(weights: Path, device: str) -> Callable[[list[media.SampledVideo]],
                                                          list[Fingerprint]]:
    from vfpd.model.embed import Embedder

    e = Embedder(weights=weights, device=device)
    return e.embed_many


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(current: dict[str, Scores], candidate: dict[str, Scores], min_gain: float
           ) -> Decision:
    """Promote when the candidate's AP on the library beats the current one's by `min_gain`
    without more false positives there, and on the regression suite AP is not lower by more
    than SUITE_TOLERANCE, recall by more than SUITE_RECALL_COPIES copies, nor false positives
    more."""
    lc, lk = current["library"], candidate["library"]
    sc, sk = current["suite"], candidate["suite"]
    if lk.ap < lc.ap + min_gain:
        return Decision(False, f"library AP {lk.ap:.4f} is not above the running model's "
                               f"{lc.ap:.4f} by {min_gain}")
    if lk.false_positives > lc.false_positives:
        return Decision(False, f"more false positives on the library ({lk.false_positives} > "
                               f"{lc.false_positives})")
    if sk.ap < sc.ap - SUITE_TOLERANCE:
        return Decision(False, f"regression suite AP fell from {sc.ap:.4f} to {sk.ap:.4f}")
    slack = SUITE_RECALL_COPIES / max(1, sc.positives) + 1e-9
    if sk.recall_at_p99 < sc.recall_at_p99 - slack:
        return Decision(False, f"regression suite recall at precision {PRECISION_TARGET} fell "
                               f"from {sc.recall_at_p99:.4f} to {sk.recall_at_p99:.4f}")
    if sk.false_positives > sc.false_positives:
        return Decision(False, f"more false positives on the regression suite "
                               f"({sk.false_positives} > {sc.false_positives})")
    return Decision(True, f"library AP {lc.ap:.4f} -> {lk.ap:.4f}; regression suite AP "
                          f"{sc.ap:.4f} -> {sk.ap:.4f}")
