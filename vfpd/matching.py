"""Confirm candidate duplicates by aligning two videos' frame features in time (candidates.py finds
the candidates, grouping.py groups the confirmed pairs).

verify(a, b) is the core: a pure function of two Fingerprints (plus optional per-frame weights that
down-weight recurring content) giving a Match with a score in [0, 1], a kind and matched segments.

What the score means: the weighted share of the footage the two videos have in common under the best
time alignment (offset and speed) whose frames match. 1.0 = every informative frame of the overlap
matches its counterpart; 0.8 = four fifths of it does. A threshold of T therefore says "at least T of
the overlapping footage is the same picture"; DEFAULT_THRESHOLD is the value measured to keep
precision high (see docs/scan.md for how it was measured). Too little evidence scores less, in
proportion: an overlap needs min_evidence_frames informative frames, and partial_evidence_frames
when it holds only a part of each video (their ends overlap, neither is inside the other).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from vfpd.detail import agreement
from vfpd.fingerprint import Fingerprint

DEFAULT_THRESHOLD = 0.75
"""Pairs scoring at least this are reported: three quarters of the common footage matches frame by
frame. Chosen for precision with a margin on the first accuracy benchmark; on the grown one it keeps
precision 0.999 but without a margin (two negatives at 0.750-0.752). docs/scan.md has both
measurements and says what it guarantees."""

MatchKind = Literal["exact", "near", "partial", "none"]
"""How two videos match: the catalog stores the first three (vfpd.catalog.vocabulary.Kind)."""
EXACT: MatchKind = "exact"
NEAR: MatchKind = "near"
PARTIAL: MatchKind = "partial"
NONE: MatchKind = "none"


@dataclass(frozen=True)
class MatchSettings:
    """Knobs of the temporal verification. The defaults were measured with the shipped model."""

    # Per-frame cosine similarity (of centred features, see frame_center) mapped linearly to a
    # match value in [0, 1]: at or below frame_sim_floor a frame pair counts as "different
    # picture", at or above frame_sim_ceil as "same picture". Measured with the preliminary
    # shipped models on tests/test_scan.py's library: aligned frames of re-encoded, scaled,
    # padded, colour-shifted copies average 0.84-0.97; frames of different videos -0.6-0.3 on
    # average, but single frames (and whole procedural videos of one generator) up to ~0.8; the
    # same scene one second later about 0.1.
    # The ceiling was 0.9 at first; on the accuracy benchmark that saturated copies and
    # look-alikes alike at a score of 1.0, and raising it to 0.99 took average precision from
    # 0.974 to 0.995 (held-out footage 0.967 -> 0.993): near-perfect frames must be near-perfect.
    frame_sim_floor: float = 0.6
    frame_sim_ceil: float = 0.99
    # Speeds tried for the alignment (copy time = slope * original time + offset). 1.0 covers
    # re-encodes, trims and frame-rate changes (sampling is by time); the others cover sped-up or
    # slowed-down copies, which are common for clips re-posted to fit a time limit. 0.5x and 2x
    # were tried and dropped: on the accuracy benchmark they found no copy the others missed and
    # let 124 more pairs of different videos past 0.65 (a slope that steep fits repetitive
    # footage almost anywhere).
    slopes: tuple[float, ...] = (1.0, 0.8, 1.25)
    # Each frame of A votes for the offsets given by its best few frames in B; more would let
    # repetitive footage spread votes thin, fewer would miss the true offset when a frame's best
    # match is a look-alike moment.
    votes_per_frame: int = 3
    # Only frame pairs at least this similar vote; below it they are noise that only flattens
    # the offset histogram.
    vote_min_sim: float = 0.2
    # An alignment with a speed change must score this much better than the best one without:
    # on static footage several speeds fit equally well, and "same speed" is the likelier story.
    speed_change_margin: float = 0.02
    # The best few offsets at the same speed (and the best one of each other speed) are each
    # scored exactly; the best wins. A small number, since every extra hypothesis is one more
    # chance for two different videos to look alike.
    hypotheses: int = 4
    # A frame looks for its counterpart within this many sampling steps of where the alignment
    # puts it: copies sampled on a shifted grid (trims) are at most half a step off.
    time_tolerance_steps: float = 0.75
    # Fewer informative frames than this in the overlap is too little evidence for a full score:
    # the score is scaled down proportionally (two matching frames prove little).
    # 6 rather than 3: on the accuracy benchmark, short chance alignments of 3-5 frames between
    # different videos were the largest group of false matches; copies share far more. A video
    # shorter than that cannot offer 6 frames, so it needs all of its own, but never fewer than
    # min_evidence_floor.
    min_evidence_frames: int = 6
    min_evidence_floor: int = 3
    # A partial overlap -- neither video has at least `contained_share` of its informative frames
    # inside the overlap -- needs this many frames of evidence instead. The alignment search is
    # free to slide two videos until only their ends overlap, and the fewer frames an overlap
    # holds, the likelier a chance look-alike fills it; a clip inside a longer video, a trim or a
    # full copy has (nearly) all of its own footage in the overlap and keeps the smaller number.
    # Measured on the accuracy benchmark: 11 of the 12 pairs of different videos at or above the
    # threshold before this rule were such partial overlaps of 6-8 frames (0.5-0.67 of either
    # video inside; the 12th was two watermarked black leaders, see picture.informative_mask); of
    # 1464 copies all but 3 have 0.8 or more of one video inside, and of those 3 two overlap by 13
    # frames. On top of the texture test it took AP from 0.997 to 0.999 and the highest-scoring
    # pair of different videos from 0.91 to 0.72.
    contained_share: float = 0.8
    partial_evidence_frames: int = 12
    # What moves decides (issue 12). Two clips of one fixed camera share their background, and
    # a global frame feature is mostly background: aligned frame by frame they look alike (0.9+
    # on real surveillance footage) though what moves in them differs. So an alignment must also
    # explain what changes: each video's static component over the overlap (the mean of its raw
    # frame features there) is removed, and the residuals of aligned frames must correlate
    # (_motion_evidence). The correlation maps linearly to agreement in [0, 1], from
    # motion_corr_floor to motion_corr_ceil; how much disagreement costs depends on how much the
    # overlap changes at all (RMS residual): not at all below motion_static (a still shot: the
    # picture is all there is, and no one can tell two clips of one still shot apart), fully
    # above motion_moving. Measured on the accuracy benchmark's scene series (weights
    # 50c1575854b2): a still title card's residual is 0.002-0.005, clips with people walking
    # through a still scene 0.18-0.37, ordinary footage more. Re-encoded copies of those clips
    # correlate 0.81-0.98, other moments of the same camera 0.02-0.62 (screen recordings that
    # scroll at a steady pace up to 0.82: a steady drift looks the same at any moment).
    motion_static: float = 0.08
    motion_moving: float = 0.2
    motion_corr_floor: float = 0.5
    motion_corr_ceil: float = 0.85
    # Motion that disagrees costs at most this share of the score: half, so that a pair whose
    # pictures match perfectly but whose motion does not stays at or below 0.5, well under any
    # threshold one would use, while weak evidence of a real copy (a short clip of fast footage
    # sampled between the original's frames) keeps some score to rank it by.
    motion_penalty: float = 0.5
    # What a still overlap shows decides (issue 12). Where nothing moves the motion rule has
    # nothing to go on, and two title cards of one template with other words score 1.0 on the
    # 64x64 features. So the more still an overlap is (the complement of the motion rule's
    # "moving" share), the more its still pictures must agree in detail (vfpd.detail.agreement:
    # the lowest block correlation once registered), mapped linearly to [0, 1] from
    # detail_agree_floor to detail_agree_ceil; disagreement costs up to detail_penalty, as
    # motion does. Measured on the benchmark's title cards and copies of them and of still
    # photographs (docs/scan.md): other words on one template 0.57 at most (a re-encode of
    # one against another card, sampled at keyframes); re-encoded, scaled, mirrored, colour,
    # grey, blurred and noisy copies 0.71 or more. The floor sits above the first with a
    # margin, so that other words lose the whole penalty and stay below even the fast
    # preset's threshold (0.57); the ceiling just above where copies begin. Boxes, logos and
    # captions drawn over a still picture also disagree where they cover detail: such copies of
    # still footage are not found (a still picture with an overlay and one with other words are
    # told apart by meaning, which a block comparison does not see).
    still_detail: bool = True
    detail_agree_floor: float = 0.6
    detail_agree_ceil: float = 0.72
    detail_penalty: float = 0.5
    # At most this many distinct pairs of still pictures are compared per alignment (the most
    # frequent ones): each costs tens of milliseconds, and a slideshow's first few slides speak
    # for it.
    detail_pairs: int = 8
    # Frames that move are also compared by what moves in them (each video's static component
    # removed, see _similarity), mapped onto the frame-similarity scale: residual_sim_floor
    # lands on frame_sim_floor, residual_sim_ceil on frame_sim_ceil. A box or logo drawn over a
    # copy, or a crop, shifts every frame's feature alike and mostly leaves the residuals: on
    # the benchmark's moving copies with boxes and crops their aligned residuals are 0.7-0.9
    # similar while the centred features are 0.45-0.67. Off by default: on the accuracy set it
    # raised AP from 0.746 to 0.817 and found more crops, boxes and captions, but it also scored
    # a clip of one video against another video 0.79 (different footage whose motion resembles,
    # e.g. two pans), and no pair of different footage may pass the default threshold
    # (docs/scan.md has the measurement).
    residual_similarity: bool = False
    residual_sim_floor: float = 0.5
    residual_sim_ceil: float = 0.9
    # The alignment is chosen by the picture score, and the motion rule then only confirms or
    # refutes it (False: it may pick the alignment, which lets a static background be searched
    # for an offset where the motion happens to agree).
    motion_confirms: bool = True
    # Matched frames further apart than this many sampling steps start a new segment.
    segment_gap_steps: float = 3.0
    # A match covering at least this share of both videos' informative footage is "near", a
    # smaller share "partial" (one is a clip of the other, or they overlap only in a segment).
    near_coverage: float = 0.8
    # A frame similar to frames of more than this many other videos is recurring content (an
    # intro, a logo) and counts less, in proportion. Above 3 so that ordinary groups of a few
    # copies are never down-weighted.
    recurring_min_videos: int = 3


@dataclass(frozen=True)
class Segment:
    """A stretch of footage both videos share: seconds in A and the corresponding seconds in B."""

    a_start: float
    a_end: float
    b_start: float
    b_end: float

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Match:
    """The result of verifying two fingerprints. `offset`/`slope`: b_time = slope * a_time + offset."""

    score: float
    kind: MatchKind
    segments: tuple[Segment, ...] = ()
    offset: float = 0.0
    slope: float = 1.0


NO_MATCH = Match(0.0, NONE)


@dataclass(frozen=True)
class Prepared:
    """The informative frames of one video, as verification uses them (prepare()): made once
    for a video verified against many candidates."""

    model_version: str
    features: np.ndarray  # (n, FRAME_DIM) float32, centred on the collection's background
    raw: np.ndarray  # (n, FRAME_DIM) the same frames' features as the model gave them
    times: np.ndarray  # (n,) seconds
    weights: np.ndarray  # (n,) recurring-content weights in (0, 1]
    adjacent: np.ndarray  # (max(n - 1, 1),) similarity of each centred feature with the next
    step: float  # typical sampling interval, seconds
    start: float  # time range of all sampled frames, informative or not
    end: float
    duration: float  # of the video: segments never end after it
    stills: np.ndarray | None  # (n,) the still picture of each frame (-1: moving), or None
    pictures: np.ndarray | None  # the still pictures (vfpd.detail.Stills.pictures)

    @cached_property
    def residual(self) -> tuple[np.ndarray, np.ndarray]:
        """(raw minus the video's static component as unit rows, the size of each residual):
        only the residual similarity needs it."""
        residual = self.raw - self.raw.mean(axis=0) if len(self.raw) else self.raw
        size = np.linalg.norm(residual, axis=1)
        return (residual / np.maximum(size, 1e-9)[:, None]).astype(np.float32), size


def _sampling_step(times: np.ndarray) -> float:
    """The typical sampling interval; 1 s (the sampler's nominal rate) when a video has one frame."""
    if len(times) < 2:
        return 1.0
    gaps = np.diff(times)
    half = len(gaps) // 2
    # np.median's value (the middle gap, or the mean of the middle two), without its overhead.
    if len(gaps) % 2:
        middle = float(np.partition(gaps, half)[half])
    else:
        low, high = np.partition(gaps, (half - 1, half))[half - 1:half + 1]
        middle = float((low + high) / 2)
    return max(middle, 1e-3)


def frame_center(fps: Sequence[Fingerprint]) -> np.ndarray | None:
    """The background of frame features: the mean informative frame feature, each video counted
    once. Subtracting it leaves what is particular to a moment; without it, frame features of any
    two videos are very similar (they share a large common component) and cosine similarity
    cannot tell a copy from another video. None when no video has an informative frame."""
    means = [f.frame_features[f.informative].mean(axis=0) for f in fps if f.informative.any()]
    return np.mean(means, axis=0).astype(np.float32) if means else None


def centred(features: np.ndarray, center: np.ndarray | None) -> np.ndarray:
    """Rows minus the background, L2-normalised again (float32, contiguous)."""
    x = np.asarray(features, np.float32)
    if center is not None:
        x = x - center
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-6), dtype=np.float32)


def prepare(fp: Fingerprint, weights: np.ndarray | None, center: np.ndarray | None,
            stacked: tuple[np.ndarray, np.ndarray] | None = None) -> Prepared:
    """fp as verify_many() takes it. weights: per-frame weights of all its frames (see
    verify); center: the background of the collection it is compared in; stacked: its
    informative frames already centred on it and their neighbours' similarities
    (Stacked.part), else they are computed here."""
    keep = np.asarray(fp.informative, dtype=bool)
    w = np.ones(len(keep), np.float64) if weights is None else np.asarray(weights, np.float64)
    times = np.asarray(fp.timestamps, np.float64)
    if stacked is None:
        features = centred(fp.frame_features[keep], center)
        adjacent = (np.sum(features[:-1] * features[1:], axis=1) if len(features) > 1
                    else np.ones(1, np.float32))
    else:
        features, adjacent = stacked
    return Prepared(
        model_version=fp.model_version,
        features=features,
        raw=np.asarray(fp.frame_features[keep], np.float64),
        times=times[keep],
        weights=w[keep],
        adjacent=adjacent,
        step=_sampling_step(times),
        start=float(times[0]) if len(times) else 0.0,
        end=float(times[-1]) if len(times) else 0.0,
        duration=float(fp.duration) if fp.duration > 0 else float("inf"),
        stills=None if fp.stills is None else fp.stills.of[keep],
        pictures=None if fp.stills is None else fp.stills.pictures,
    )


def _similarity(a: Prepared, b: Prepared, s: MatchSettings) -> np.ndarray:
    """Frame-by-frame similarity: of the features centred on the collection's background, or --
    where both frames move -- of what moves in them (each video's static component removed),
    whichever is higher. A box, a logo or a frame drawn over a copy, or a crop, shifts every
    frame's feature alike; removing each video's own static component removes most of that
    shift, and what is left still lines up with the original's changes."""
    sim = a.features @ b.features.T
    if not s.residual_similarity:
        return sim
    (ra, size_a), (rb, size_b) = a.residual, b.residual
    res = ra @ rb.T
    # Put residual similarity on the scale of the centred one: residual_sim_floor lands on
    # frame_sim_floor and residual_sim_ceil on frame_sim_ceil.
    res = s.frame_sim_floor + (res - s.residual_sim_floor) * (
        (s.frame_sim_ceil - s.frame_sim_floor) / (s.residual_sim_ceil - s.residual_sim_floor))
    # Only frames whose residual is more than noise.
    res[size_a < s.motion_static] = -1.0
    res[:, size_b < s.motion_static] = -1.0
    return np.maximum(sim, res)


def _clip(x: np.ndarray | float, lo: float, hi: float) -> np.ndarray:
    """np.clip without its dispatch (a third of its time on the small arrays of verification,
    which runs tens of thousands of times a scan); the same values."""
    return np.minimum(np.maximum(x, lo), hi)


def _frame_match(sim: np.ndarray, s: MatchSettings) -> np.ndarray:
    return _clip((sim - s.frame_sim_floor) / (s.frame_sim_ceil - s.frame_sim_floor), 0.0, 1.0)


PAD_SIM = -4.0
"""The similarity a batch gives the padding past a candidate's last frame: below any cosine, so
padding never votes, never matches and never beats a real frame."""

BATCH_CELLS = 1 << 21
"""Most (alignment, frame, frame) cells one batch of candidates is scored in (8 MB per float32
array): dozens of short clips at once, a pair of long videos alone. Batching is what makes a
scan's ~100,000 small alignments cheap; the bound keeps the arrays in memory."""

ALIGNMENTS_PER_CANDIDATE = 6
"""The most alignments a candidate gets with the default settings (hypotheses at the same speed
plus one for each other speed): what a batch's size is planned with."""


def _width(n: int) -> int:
    """The padded frame count of a video of n frames in a batch: the next power of two (at least
    2, so that a neighbouring sample always exists). Candidates are batched only with others of
    the same width, so a candidate's sums are the same whichever batch it is in."""
    return max(2, 1 << (n - 1).bit_length())


@dataclass(frozen=True)
class _Batch:
    """Candidates of one padded width, scored against one video together: their similarity
    blocks and per-frame data padded to `width` columns (times +inf, weights 0, similarity
    PAD_SIM)."""

    members: list[int]  # which of verify_many's candidates each is
    sim: np.ndarray  # (C, n, W) float32: a's informative frames against each candidate's
    times: np.ndarray  # (C, W)
    weights: np.ndarray  # (C, W)
    adjacent: np.ndarray  # (C, W)
    raw: np.ndarray  # (C, W, FRAME_DIM) the model's features (padding: 0)
    lengths: np.ndarray  # (C,) frames before the padding
    steps: np.ndarray  # (C,)
    starts: np.ndarray  # (C,)
    ends: np.ndarray  # (C,)
    durations: np.ndarray  # (C,)


def _batch(members: list[int], bs: Sequence[Prepared], sims: list[np.ndarray],
           width: int) -> _Batch:
    c, n = len(members), sims[members[0]].shape[0]
    sim = np.full((c, n, width), PAD_SIM, np.float32)
    times = np.full((c, width), np.inf)
    weights = np.zeros((c, width))
    adjacent = np.ones((c, width))
    raw = np.zeros((c, width, bs[members[0]].raw.shape[1]))
    for row, k in enumerate(members):
        b, length = bs[k], len(bs[k].times)
        sim[row, :, :length] = sims[k]
        times[row, :length] = b.times
        weights[row, :length] = b.weights
        adjacent[row, :length - 1] = b.adjacent[:length - 1]
        raw[row, :length] = b.raw
    picked = [bs[k] for k in members]
    return _Batch(members, sim, times, weights, adjacent, raw,
                  np.array([len(b.times) for b in picked]), np.array([b.step for b in picked]),
                  np.array([b.start for b in picked]), np.array([b.end for b in picked]),
                  np.array([b.duration for b in picked]))


def _batches(bs: Sequence[Prepared], live: list[int], sims: list[np.ndarray], n: int
             ) -> list[_Batch]:
    """The live candidates in batches of one width, each within BATCH_CELLS."""
    by_width: dict[int, list[int]] = {}
    for k in live:
        by_width.setdefault(_width(len(bs[k].times)), []).append(k)
    dim = bs[live[0]].raw.shape[1] if live else 0
    out = []
    for width, members in sorted(by_width.items()):
        # Per candidate: its alignments' (frame, frame) arrays and its (frame, feature) ones.
        cells = ALIGNMENTS_PER_CANDIDATE * n * width + 2 * max(n, width) * dim
        size = max(1, BATCH_CELLS // cells)
        for i in range(0, len(members), size):
            out.append(_batch(members[i:i + size], bs, sims, width))
    return out


def _votes(a: Prepared, batch: _Batch, s: MatchSettings
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each frame of a votes with its votes_per_frame most similar frames of each candidate
    (ties to the earlier frame) that are at least vote_min_sim alike: (candidate row, a's
    frame, the candidate's frame, similarity), ordered by candidate."""
    sim = batch.sim
    width = sim.shape[2]
    k = min(s.votes_per_frame, width)
    kth = np.partition(sim, width - k, axis=2)[..., width - k:width - k + 1]
    above = sim > kth
    tied = sim == kth
    room = k - above.sum(axis=2, keepdims=True)
    vote = (above | (tied & (np.cumsum(tied, axis=2) <= room))) & (sim >= s.vote_min_sim)
    c, i, j = np.nonzero(vote)
    return c, i, j, sim[c, i, j]


def _offset_hypotheses(a: Prepared, batch: _Batch, s: MatchSettings
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidate row, slope, offset) of the alignments many frame pairs agree on, a Hough vote
    along diagonals per candidate; each candidate's in the order they are tried (by speed as in
    s.slopes, then strongest first)."""
    c, i, j, vs = _votes(a, batch, s)
    empty = np.zeros(0)
    if len(c) == 0:
        return np.zeros(0, np.int64), empty, empty
    weight = vs * a.weights[i]
    present, first = np.unique(c, return_index=True)
    group = np.repeat(np.arange(len(present)), np.diff(np.append(first, len(c))))
    found: list[tuple[np.ndarray, ...]] = []
    for order, slope in enumerate(s.slopes):
        offsets = batch.times[c, j] - slope * a.times[i]
        width = np.maximum(batch.steps, slope * a.step)[c]
        bins = np.floor(offsets / width).astype(np.int64)
        lo = np.minimum.reduceat(bins, first)
        span = np.maximum.reduceat(bins, first) - lo + 3  # a zero bin guards each end
        base = np.concatenate(([0], np.cumsum(span)[:-1]))
        flat = base[group] + bins - lo[group] + 1
        total = int(span.sum())
        hist = np.concatenate(([0.0], np.bincount(flat, weights=weight, minlength=total), [0.0]))
        moment = np.concatenate(([0.0], np.bincount(flat, weights=offsets * weight,
                                                     minlength=total), [0.0]))
        # Neighbouring bins are pooled: a true offset can sit on a bin edge.
        pooled = hist[1:-1] + hist[:-2] + hist[2:]
        pooled_moment = moment[1:-1] + moment[:-2] + moment[2:]
        owner = np.repeat(np.arange(len(present)), span)
        real = np.ones(total, bool)
        real[base] = False
        real[base + span - 1] = False
        bins_kept = np.flatnonzero(real & (pooled > 0))
        # Same speed is the common case and gets several offsets (repetitive footage can put a
        # wrong offset first); each speed change gets its strongest one.
        peaks = s.hypotheses if slope == 1.0 else 1
        ranked = bins_kept[np.lexsort((bins_kept, -pooled[bins_kept], owner[bins_kept]))]
        starts = np.searchsorted(owner[ranked], np.arange(len(present)))
        rank = np.arange(len(ranked)) - starts[owner[ranked]]
        chosen = ranked[rank < peaks]
        found.append((present[owner[chosen]], np.full(len(chosen), order), rank[rank < peaks],
                      pooled_moment[chosen] / pooled[chosen]))
    cand, order, rank, offset = (np.concatenate(x) for x in zip(*found))
    sequence = np.lexsort((rank, order, cand))
    return (cand[sequence], np.asarray(s.slopes, np.float64)[order[sequence]],
            offset[sequence])


def _neighbours(times: np.ndarray, lengths: np.ndarray, t: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each time t (R, m) of a row, the two samples of that row's `times` (R, W, +inf past
    `lengths`) around it: (row index (R, 1), left, right, the weight of right in [0, 1])."""
    right = _clip((times[:, None, :] < t[..., None]).sum(axis=-1), 1,
                  np.maximum(lengths - 1, 1)[:, None])
    left = right - 1
    row = np.arange(len(t))[:, None]
    t_left = times[row, left]
    w = _clip((t - t_left) / np.maximum(times[row, right] - t_left, 1e-9), 0.0, 1.0)
    return row, left, right, w


def _interpolated_sim(dst_times: np.ndarray, dst_adjacent: np.ndarray, dst_len: np.ndarray,
                      dst_step: np.ndarray, sim: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Similarity of each src frame to dst's feature interpolated at `pred`, between the two
    samples around it. A copy trimmed by half a sampling step is sampled half-way between the
    original's samples; on fast footage neither neighbour alone looks like it, their blend does.
    One row per alignment: pred (H, src frames), sim (H, src frames, dst frames), dst_* (H, ...)
    (dst_len: dst's frames before the padding, at least 2)."""
    row, left, right, w = _neighbours(dst_times, dst_len, pred)
    src = np.arange(pred.shape[1])[None, :]
    t_left, t_right = dst_times[row, left], dst_times[row, right]
    gap = t_right - t_left
    adjacent = dst_adjacent[row, left]
    norm = np.sqrt(np.maximum((1 - w) ** 2 + w ** 2 + 2 * w * (1 - w) * adjacent, 1e-12))
    s = ((1 - w) * sim[row, src, left] + w * sim[row, src, right]) / norm
    # Only between neighbouring samples: across a gap of dropped (non-informative) frames the
    # footage may have changed completely; and only between them, not beyond dst's first or last
    # informative frame (a black leader before it is no picture to compare with).
    between = (pred >= t_left) & (pred <= t_right)
    return np.where((gap <= 1.5 * dst_step[:, None]) & between, s, -np.inf)


def _side(dst_times: np.ndarray, dst_adjacent: np.ndarray, dst_len: np.ndarray,
          dst_step: np.ndarray, dst_start: np.ndarray, dst_end: np.ndarray, sim: np.ndarray,
          pred: np.ndarray, s: MatchSettings) -> tuple[np.ndarray, np.ndarray]:
    """For each src frame mapped to `pred` in dst's time: (valid, match value); one row per
    alignment (the shapes of _interpolated_sim; dst_start/dst_end (H,)).

    valid: the frame lands inside dst's footage and dst has an informative frame there; frames that
    land where dst has only non-informative frames count neither for nor against the match."""
    tol = (s.time_tolerance_steps * dst_step)[:, None]
    inside = (pred >= dst_start[:, None] - tol) & (pred <= dst_end[:, None] + tol)
    near = np.abs(dst_times[:, None, :] - pred[..., None]) <= tol[..., None]
    # In float64 whatever the rows' lengths: a row's value must not depend on its batch mates.
    best = np.where(near, sim, -np.inf).max(axis=-1, initial=-np.inf).astype(np.float64)
    several = dst_len > 1
    if several.any():
        blend = _interpolated_sim(dst_times, dst_adjacent, np.maximum(dst_len, 2), dst_step,
                                  sim, pred)
        best = np.maximum(best, np.where(several[:, None], blend, -np.inf))
    valid = inside & np.isfinite(best)
    return valid, np.where(valid, _frame_match(best, s), 0.0)



def _segments(a: Prepared, al: _Alignments, rows: np.ndarray, b_last: np.ndarray,
              s: MatchSettings) -> list[tuple[Segment, ...]]:
    """The stretches each of the alignments `rows` matches (b_last: where each candidate's
    footage ends)."""
    matched = al.valid_a[rows] & (al.m_a[rows] >= 0.5)
    out: list[list[Segment]] = [[] for _ in rows]
    r, f = np.nonzero(matched)
    if len(r) == 0:
        return [()] * len(rows)
    times = a.times[f]
    start = np.ones(len(r), bool)
    start[1:] = (r[1:] != r[:-1]) | (np.diff(times) > s.segment_gap_steps * a.step)
    first = np.flatnonzero(start)
    last = np.append(first[1:], len(r)) - 1
    run_row = r[first]
    slope, offset = al.slope[rows][run_row], al.offset[rows][run_row]
    # A matched sample stands for the step after it, and the time tolerance lets samples just past
    # either end of b match b's first or last frame: each run is cut to the stretch of a that the
    # alignment maps inside b (0 .. b's end), so both sides of a segment are the same footage.
    a0 = np.maximum(np.maximum(times[first], (0.0 - offset) / slope), 0.0)
    a1 = np.minimum(np.minimum(times[last] + a.step, a.duration),
                    (b_last[run_row] - offset) / slope)
    for i in np.flatnonzero(a1 > a0).tolist():
        x0, x1, k, c = float(a0[i]), float(a1[i]), float(slope[i]), float(offset[i])
        out[run_row[i]].append(Segment(x0, x1, k * x0 + c, k * x1 + c))
    return [tuple(x) for x in out]


def _informative_span(f: Prepared) -> float:
    return float(f.times[-1] - f.times[0] + f.step) if len(f.times) else 0.0


def _moving(energy: float, s: MatchSettings) -> float:
    """How much an overlap moves, in [0, 1], from _motion_evidence()'s energy."""
    return float(_clip((energy - s.motion_static) / (s.motion_moving - s.motion_static), 0.0, 1.0))


def _motion_factor(energy: float, corr: float, s: MatchSettings) -> float:
    """The share of a score an alignment keeps given _motion_evidence()'s two numbers."""
    moving = _moving(energy, s)
    agree = _clip((corr - s.motion_corr_floor) / (s.motion_corr_ceil - s.motion_corr_floor),
                    0.0, 1.0)
    return float(1.0 - s.motion_penalty * moving * (1.0 - agree))


def detail_agreement(a: Prepared, b: Prepared, valid_a: np.ndarray, pred_a: np.ndarray,
                     s: MatchSettings) -> float:
    """How well the still pictures of an alignment agree in detail, in [0, 1]: the frames of a
    in the overlap paired with b's frame nearest the aligned moment, each distinct pair of still
    pictures compared (vfpd.detail.agreement) and mapped from detail_agree_floor to
    detail_agree_ceil, weighted by how many frames show it. 1.0 when no pair can be compared (a
    frame that moves, a fingerprint without stills, too little detail)."""
    if a.stills is None or b.stills is None or a.pictures is None or b.pictures is None:
        return 1.0
    ia = np.flatnonzero(valid_a)
    if len(ia) == 0 or len(b.times) == 0:
        return 1.0
    right = _clip(np.searchsorted(b.times, pred_a[ia]), 0, len(b.times) - 1).astype(np.int64)
    left = np.maximum(right - 1, 0)
    jb = np.where(np.abs(b.times[left] - pred_a[ia]) < np.abs(b.times[right] - pred_a[ia]),
                  left, right)
    pa, pb = a.stills[ia], b.stills[jb]
    both = (pa >= 0) & (pb >= 0)
    if not both.any():
        return 1.0
    pairs, counts = np.unique(np.stack([pa[both], pb[both]], axis=1), axis=0, return_counts=True)
    total = weight = 0.0
    for k in np.argsort(-counts, kind="stable")[:s.detail_pairs]:
        value = agreement(a.pictures[pairs[k, 0]], b.pictures[pairs[k, 1]])
        if value is None:
            continue
        total += float(counts[k]) * float(_clip((value - s.detail_agree_floor)
                                                / (s.detail_agree_ceil - s.detail_agree_floor),
                                                0.0, 1.0))
        weight += float(counts[k])
    return total / weight if weight else 1.0


@dataclass(frozen=True)
class _Alignments:
    """Alignments of a batch's candidates, one row each, and their picture evidence: the score
    before the motion rule and what the rest of the match is made from."""

    cand: np.ndarray  # (H,) the candidate's row in the batch
    slope: np.ndarray  # (H,)
    offset: np.ndarray  # (H,)
    score: np.ndarray  # (H,)
    pred_a: np.ndarray  # (H, n) a's frames in the candidate's time
    valid_a: np.ndarray  # (H, n)
    m_a: np.ndarray  # (H, n)
    valid_b: np.ndarray  # (H, W) the candidate's frames (padding: False)


def _pictures(a: Prepared, batch: _Batch, cand: np.ndarray, slopes: np.ndarray,
              offsets: np.ndarray, s: MatchSettings) -> _Alignments:
    """How well the pictures match under each alignment (candidate row, slope, offset) (no
    motion rule, no segments), all alignments of the batch computed together."""
    h, n = len(cand), len(a.times)
    sim = batch.sim[cand]
    times, lengths = batch.times[cand], batch.lengths[cand]
    pred_a = slopes[:, None] * a.times + offsets[:, None]
    valid_a, m_a = _side(times, batch.adjacent[cand], lengths, batch.steps[cand],
                         batch.starts[cand], batch.ends[cand], sim, pred_a, s)
    pred_b = (times - offsets[:, None]) / slopes[:, None]
    a_times = np.broadcast_to(a.times, (h, n))
    a_adjacent = np.broadcast_to(np.append(a.adjacent[:n - 1], 1.0), (h, n))
    valid_b, m_b = _side(a_times, a_adjacent, np.full(h, n), np.full(h, a.step),
                         np.full(h, a.start), np.full(h, a.end), sim.transpose(0, 2, 1),
                         pred_b, s)
    weights_b = batch.weights[cand]
    evidence = np.minimum(valid_a.sum(axis=1), valid_b.sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):  # rows without overlap score 0 below
        score_a = np.sum(a.weights * m_a * valid_a, axis=1) / np.sum(a.weights * valid_a, axis=1)
        score_b = np.sum(weights_b * m_b * valid_b, axis=1) / np.sum(weights_b * valid_b, axis=1)
        base = np.minimum(s.min_evidence_frames,
                          np.maximum(s.min_evidence_floor, np.minimum(n, lengths)))
        partial = (np.maximum(valid_a.mean(axis=1), valid_b.sum(axis=1) / lengths)
                   < s.contained_share)
        needed = np.where(partial, np.maximum(base, s.partial_evidence_frames), base)
        score = np.where(evidence > 0, 0.5 * (score_a + score_b)
                         * np.minimum(1.0, evidence / needed), 0.0)
    return _Alignments(cand, slopes, offsets, score, pred_a, valid_a, m_a, valid_b)


def _raw_at(raw: np.ndarray, times: np.ndarray, lengths: np.ndarray, t: np.ndarray
            ) -> np.ndarray:
    """Each row's raw features (padded: raw (R, W, D), times (R, W) +inf past lengths) at the
    times t (R, m), interpolated linearly between the samples around each (a copy sampled on a
    shifted grid shows the moments between the original's samples); a video of one frame is
    that frame throughout."""
    row, left, right, w = _neighbours(times, lengths, t)
    w = w[..., None]
    return (1 - w) * raw[row, left] + w * raw[row, right]


def _motion_evidence(a: Prepared, batch: _Batch, al: _Alignments, rows: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(how much the overlap changes, how well its changes agree) for each of the alignments
    `rows`.

    Each video's static component over the overlap (the mean of its frames' raw features there)
    is removed; what is left is what moves or changes. The first number is the smaller of the two
    videos' RMS residuals (0 for a still shot); the second the correlation of A's residuals with
    those of B's frames at the aligned moments (1 for the same footage, lower when the same
    background shows other moments)."""
    cand = al.cand[rows]
    va, vb = al.valid_a[rows], al.valid_b[rows]
    raw_b, times_b = batch.raw[cand], batch.times[cand]
    na, nb = va.sum(axis=1), vb.sum(axis=1)
    mean_a = (va @ a.raw) / np.maximum(na, 1)[:, None]
    mean_b = np.einsum("rw,rwd->rd", vb, raw_b) / np.maximum(nb, 1)[:, None]
    ra = (a.raw - mean_a[:, None]) * va[..., None]
    rb = (_raw_at(raw_b, times_b, batch.lengths[cand], al.pred_a[rows])
          - mean_b[:, None]) * va[..., None]
    ra2, rb2 = np.sum(ra ** 2, axis=(1, 2)), np.sum(rb ** 2, axis=(1, 2))
    own_b = np.sum(((raw_b - mean_b[:, None]) * vb[..., None]) ** 2, axis=(1, 2))
    energy = np.minimum(np.sqrt(ra2 / np.maximum(na, 1)), np.sqrt(own_b / np.maximum(nb, 1)))
    denom = np.sqrt(ra2 * rb2)
    corr = np.where(denom > 0, np.sum(ra * rb, axis=(1, 2)) / np.where(denom > 0, denom, 1.0),
                    1.0)
    few = (na < 2) | (nb < 2)
    return np.where(few, 0.0, energy), np.where(few, 1.0, corr)


def _evaluate(a: Prepared, b: Prepared, al: _Alignments, r: int, energy: float, corr: float,
              segments: tuple[Segment, ...], s: MatchSettings, at_least: float = 0.0) -> Match:
    """The match under alignment r, given its motion evidence and segments: its picture score
    under the motion and still-detail rules, its kind. A score already below `at_least` is not
    compared in detail (each pair of still pictures costs tens of milliseconds, and the rule
    only lowers it further)."""
    slope, offset, score = float(al.slope[r]), float(al.offset[r]), float(al.score[r])
    valid_a, pred_a = al.valid_a[r], al.pred_a[r]
    if not valid_a.any() or not al.valid_b[r].any():
        return Match(0.0, NONE, (), offset, slope)
    factor = _motion_factor(energy, corr, s)
    still = 1.0 - _moving(energy, s)
    if s.still_detail and still > 0 and score * factor >= at_least:
        agree = detail_agreement(a, b, valid_a, pred_a, s)
        factor *= 1.0 - s.detail_penalty * still * (1.0 - agree)
    if not segments:
        return Match(score * factor, NONE, (), offset, slope)
    cover_a = sum(g.a_end - g.a_start for g in segments) / max(_informative_span(a), 1e-9)
    cover_b = sum(g.b_end - g.b_start for g in segments) / max(_informative_span(b), 1e-9)
    kind = NEAR if min(cover_a, cover_b) >= s.near_coverage else PARTIAL
    return Match(score * factor, kind, segments, offset, slope)


BOUND_SLACK = 1e-3
"""A pair is skipped only when its bound is this far below `at_least`: a bound computed from one
float32 product over many videos differs from the pair's own in the last bits, summed over up to
512 frames."""


def _blend_bound(sim: np.ndarray, adjacent: np.ndarray) -> np.ndarray:
    """The most a blend of two neighbouring samples (_interpolated_sim) can score, for each row
    of `sim` and each pair of neighbouring columns: the better of the two over the blend's
    smallest norm. Below zero a blend stays below zero, which no match floor counts."""
    pair = np.maximum(sim[:, :-1], sim[:, 1:])
    return np.maximum(pair, 0.0) / np.sqrt(np.maximum((1.0 + adjacent) / 2.0, 1e-12))


def _score_bounds(a: Prepared, features: np.ndarray, adjacent: np.ndarray, starts: np.ndarray,
                  weights: np.ndarray, min_weights: np.ndarray, sim: np.ndarray,
                  s: MatchSettings) -> np.ndarray:
    """An upper bound on the score of any alignment of a with each of several videos stacked in
    `features` (video c: rows starts[c] to starts[c + 1], none empty), `sim` = a.features @
    features.T. See _pictures: each side's score is a weighted mean of frame match values over
    the frames in the overlap, so at most the best match any frame can get (its best frame of
    the other video, or a blend of two neighbouring ones), and at most the sum of what all its
    frames can give over the fewest frames an overlap needs for a full score (fewer scale the
    score down in proportion), the weights in that sum being at most 1 and at least
    min_weights[c]. adjacent[j]: features[j] . features[j + 1] (ignored across videos). 1.0 (no
    bound) when a frame similarity of zero or less counts as a match."""
    if s.frame_sim_floor <= 0:
        return np.ones(len(starts))
    n = len(features)
    lengths = np.diff(np.append(starts, n))
    last = starts + lengths - 1
    needed = np.minimum(s.min_evidence_frames,
                        np.maximum(s.min_evidence_floor, np.minimum(len(a.times), lengths)))
    # a's frames: the best each can get in each video.
    best = sim
    if n > 1:
        blend = np.concatenate((_blend_bound(sim, adjacent[:n - 1]),
                                np.full((len(sim), 1), -np.inf)), axis=1)
        blend[:, last] = -np.inf  # no blend across two videos
        best = np.maximum(sim, blend)
    match_a = _frame_match(np.maximum.reduceat(best, starts, axis=1), s)
    w_a = a.weights
    term_a = np.minimum(match_a.max(axis=0),
                        (w_a @ match_a) / (needed * max(float(w_a.min()), 1e-9)))
    # The other videos' frames: the best each can get in a.
    best_b = sim.max(axis=0)
    if len(a.times) > 1:
        best_b = np.maximum(best_b, _blend_bound(sim.T, a.adjacent).max(axis=1))
    match_b = _frame_match(best_b, s)
    term_b = np.minimum(np.maximum.reduceat(match_b, starts),
                        np.add.reduceat(weights * match_b, starts)
                        / (needed * np.maximum(min_weights, 1e-9)))
    return 0.5 * (term_a + term_b)


@dataclass(frozen=True)
class Stacked:
    """Videos to verify one video against, their informative frames stacked so that bounds()
    screens them all with one product (stack())."""

    features: np.ndarray  # (N, FRAME_DIM) centred informative frames of the non-empty videos
    adjacent: np.ndarray  # (max(N - 1, 1),) each row's similarity with the next
    starts: np.ndarray  # (C,) the first row of each non-empty video
    rows: np.ndarray  # (C,) which of the videos given to stack() each is

    def bounds(self, a: Prepared, count: int, s: MatchSettings,
               a_weights: np.ndarray | None) -> np.ndarray:
        """An upper bound on verify's score of a against each of the `count` videos stacked
        (0 for videos without informative frames, which match nothing). a_weights: the weights
        of all of a's frames the pairs are verified with; each of the other videos' frames gets
        one of them or 1 (vfpd.library), so their smallest bounds those from below."""
        if s.residual_similarity:  # its similarities are not in the product: no bound here
            return np.ones(count)
        out = np.zeros(count)
        if len(self.starts) == 0 or len(a.times) == 0:
            return out
        floor = 1.0 if a_weights is None else float(np.min(a_weights, initial=1.0))
        sim = a.features @ self.features.T
        out[self.rows] = _score_bounds(a, self.features, self.adjacent, self.starts,
                                       np.ones(len(self.features)),
                                       np.full(len(self.starts), floor), sim, s)
        return out

    def part(self, video: int) -> tuple[np.ndarray, np.ndarray]:
        """The centred informative frames of the `video`-th video given to stack() and each
        one's similarity with the next, as prepare() would compute them (it takes them
        instead)."""
        at = int(np.searchsorted(self.rows, video))
        if at == len(self.rows) or self.rows[at] != video:
            return self.features[:0], np.ones(1, np.float32)
        start = int(self.starts[at])
        end = int(self.starts[at + 1]) if at + 1 < len(self.starts) else len(self.features)
        adjacent = self.adjacent[start:end - 1] if end - start > 1 else np.ones(1, np.float32)
        return self.features[start:end], adjacent


def stack(fps: Sequence[Fingerprint], center: np.ndarray | None) -> Stacked:
    """The informative frames of fps, centred as prepare() centres them."""
    keeps = [np.asarray(fp.informative, dtype=bool) for fp in fps]
    rows = np.array([i for i, k in enumerate(keeps) if k.any()], np.int64)
    lengths = [int(keeps[i].sum()) for i in rows]
    if len(rows) == 0:
        return Stacked(np.zeros((0, 1), np.float32), np.ones(1, np.float32),
                       np.zeros(0, np.int64), rows)
    features = centred(np.concatenate([fps[i].frame_features[keeps[i]] for i in rows]), center)
    adjacent = (np.sum(features[:-1] * features[1:], axis=1) if len(features) > 1
                else np.ones(1, np.float32))
    return Stacked(features, adjacent, np.cumsum([0, *lengths[:-1]]).astype(np.int64), rows)


def verify(a: Fingerprint, b: Fingerprint, settings: MatchSettings = MatchSettings(),
           a_weights: np.ndarray | None = None, b_weights: np.ndarray | None = None,
           center: np.ndarray | None = None, at_least: float = 0.0) -> Match:
    """Align the frame features of a and b in time and say how much of their overlap matches.

    a_weights/b_weights: optional per-frame weights (all frames, informative or not) in (0, 1],
    lower for recurring content; see recurring_weights().
    center: the background frame feature of the collection a and b come from (frame_center());
    when not given, the two videos' own mean is used, which works for a pair of videos with
    motion but is less sure than a collection's.
    at_least: a pair whose chosen alignment's pictures alone score less gets NO_MATCH, not
    judged further (callers that keep only pairs at a threshold skip most of the work for the
    many candidates that are other footage; Library.verified first screens its candidates with
    one bound, Stacked.bounds, and aligns none that cannot reach it); one already below it
    before its still pictures are compared keeps that score (still below it); 0 always
    aligns and compares."""
    if center is None:
        center = frame_center([a, b])
    return verify_many(prepare(a, a_weights, center), [prepare(b, b_weights, center)],
                       settings, at_least)[0]


def verify_many(fa: Prepared, fbs: Sequence[Prepared], settings: MatchSettings = MatchSettings(),
                at_least: float = 0.0) -> list[Match]:
    """verify() of fa against each of fbs (all prepared with the same background), in order.
    The alignments of candidates of one size are searched and scored together: a scan verifies
    ~10 candidates per video, most of them short, and per-pair array work is mostly overhead."""
    for fb in fbs:
        if fa.model_version != fb.model_version:
            raise ValueError(
                f"fingerprints of different model versions ({fa.model_version!r}, "
                f"{fb.model_version!r}) cannot be compared")
    out = [NO_MATCH] * len(fbs)
    if len(fa.times) == 0:
        return out
    live = [k for k, fb in enumerate(fbs) if len(fb.times)]
    sims = [_similarity(fa, fb, settings) if len(fb.times) else np.zeros(0) for fb in fbs]
    for batch in _batches(fbs, live, sims, len(fa.times)):
        cand, slopes, offsets = _offset_hypotheses(fa, batch, settings)
        if len(cand) == 0:
            continue
        al = _pictures(fa, batch, cand, slopes, offsets, settings)
        key = al.score - np.where(al.slope != 1.0, settings.speed_change_margin, 0.0)
        groups = np.split(np.arange(len(cand)), np.flatnonzero(np.diff(cand)) + 1)
        if settings.motion_confirms:
            # The alignment is chosen by the pictures; the motion rule then confirms or refutes
            # it. Letting it choose would search the offsets of a static background for one
            # whose motion happens to agree (a person walking the same way at another time).
            # So only each candidate's winning alignment is worth its motion and segments, and
            # none is when its pictures alone score below at_least (the rules only lower it).
            winners = [g[np.argmax(key[g])] for g in groups if key[g].max() > 0]
            rows = np.array([r for r in winners if al.score[r] >= at_least], np.int64)
        else:
            rows = np.arange(len(cand))
        energy, corr = _motion_evidence(fa, batch, al, rows)
        b_last = np.minimum(batch.ends + batch.steps, batch.durations)[cand[rows]]
        segments = _segments(fa, al, rows, b_last, settings)
        best = np.zeros(len(fbs))
        for r, e, c, g in zip(rows.tolist(), energy.tolist(), corr.tolist(), segments):
            k = batch.members[int(cand[r])]
            m = _evaluate(fa, fbs[k], al, r, e, c, g, settings, at_least)
            if settings.motion_confirms:
                out[k] = m
            elif m.score - (al.score[r] - key[r]) > best[k]:
                out[k], best[k] = m, m.score - (al.score[r] - key[r])
    return out


def recurring_weights(other_videos: np.ndarray, settings: MatchSettings = MatchSettings()
                      ) -> np.ndarray:
    """Per-frame weights from the number of other videos each frame is similar to: 1 up to
    `recurring_min_videos`, then falling in proportion, so an intro shared by many videos adds
    little to any pair's score while a handful of copies keep full weight."""
    n = np.asarray(other_videos, np.float64)
    return np.minimum(1.0, settings.recurring_min_videos / np.maximum(n, 1.0))
