"""Training batches: transformed views of overlapping segments of the training videos (two per
segment, a positive pair), and of the pairs the user judged."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vfpd.model.augment import AugmentConfig, TimeConfig, augment_views, time_view
from vfpd.model.frame_cache import CachedVideo

VIEW_INTERVAL = 1.0
"""Seconds between a view's frames: what fingerprints use (media.SamplingSettings.interval)."""

SEGMENT_SECONDS = (5.0, 14.0)
"""Length of an anchor segment; views are 60-100 % of it, so two views always overlap. Short:
on a CPU the frames per step are the cost, and more short segments give more negatives."""

VIEW_MIN_SHARE = 0.6
"""Shortest view as a share of its anchor segment: two views then overlap by at least 20 %."""

SEGMENT_GAP = 2.0
"""Seconds between two anchor segments of one video, so they share no frame, even with jitter."""


@dataclass(frozen=True)
class Link:
    """A pair of training videos the user judged: `same` (confirmed duplicates: a positive pair
    of video vectors) or not (marked "not a duplicate": always put in one batch, hard negatives)."""

    a: int
    b: int
    same: bool


LINK_VIEW_SECONDS = SEGMENT_SECONDS[1]
"""Length of the view of each video of a confirmed pair: where they share footage is unknown, so
each side is a view of its start, as long as an anchor segment at most."""


@dataclass
class Batch:
    frames: Tensor  # (S, T, 3, 64, 64) float in [0, 1], views padded to T
    times: Tensor  # (S, T) copy timestamps
    mask: Tensor  # (S, T) bool
    anchor: Tensor  # (S,) anchor segment id: two views with one id are a positive pair
    video: Tensor  # (S,) video id
    src_time: Tensor  # (S, T) source time of each frame
    thumbs: Tensor  # (S, T, 64) thumbnails of the source frames
    link: Tensor | None = None  # (S,) >0: views of one confirmed pair (frames neither pos nor neg)


def _anchor_segments(v: CachedVideo, rng: np.random.Generator) -> list[tuple[float, float]]:
    """One or two non-overlapping (start, length) segments of a video."""
    dur = max(v.duration, VIEW_INTERVAL)
    length = min(rng.uniform(*SEGMENT_SECONDS), dur)
    first = rng.uniform(0, dur - length)
    segs = [(first, length)]
    room_after = dur - (first + length + SEGMENT_GAP)
    room_before = first - SEGMENT_GAP
    if max(room_after, room_before) >= SEGMENT_SECONDS[0]:
        if room_after >= room_before:
            l2 = min(length, room_after)
            segs.append((first + length + SEGMENT_GAP + rng.uniform(0, room_after - l2), l2))
        else:
            l2 = min(length, room_before)
            segs.append((rng.uniform(0, room_before - l2), l2))
    return segs


def make_views(videos: list[CachedVideo], ids: list[int], rng: np.random.Generator,
               tcfg: TimeConfig) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(anchor id, video id, frame indices, copy timestamps) for two views of each anchor segment."""
    out: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    anchor = 0
    for vid in ids:
        v = videos[vid]
        for start, length in _anchor_segments(v, rng):
            for _ in range(2):
                vl = length * rng.uniform(VIEW_MIN_SHARE, 1.0)
                vs = start + rng.uniform(0, length - vl)
                idx, ts = time_view(v.times, vs, vl, VIEW_INTERVAL, tcfg, rng)
                out.append((anchor, vid, idx, ts))
            anchor += 1
    return out


def collate(videos: list[CachedVideo], views: list[tuple[int, int, np.ndarray, np.ndarray]]) -> Batch:
    s, t = len(views), max(len(idx) for _, _, idx, _ in views)
    frames = np.zeros((s, t, 64, 64, 3), np.uint8)
    times = np.zeros((s, t), np.float32)
    src = np.zeros((s, t), np.float32)
    thumbs = np.zeros((s, t, 64), np.float32)
    mask = np.zeros((s, t), bool)
    for i, (_, vid, idx, ts) in enumerate(views):
        v, n = videos[vid], len(idx)
        frames[i, :n] = v.frames[idx]
        times[i, :n] = ts
        src[i, :n] = v.times[idx]
        thumbs[i, :n] = v.thumbs[idx]
        mask[i, :n] = True
    x = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float().div_(255.0)
    return Batch(x, torch.from_numpy(times), torch.from_numpy(mask),
                 torch.tensor([a for a, _, _, _ in views]), torch.tensor([v for _, v, _, _ in views]),
                 torch.from_numpy(src), torch.from_numpy(thumbs))


def make_batch(videos: list[CachedVideo], ids: list[int], rng: np.random.Generator, g: torch.Generator,
               acfg: AugmentConfig, tcfg: TimeConfig, confirmed: list[Link] = ()) -> Batch:
    """Two views of one or two segments of each video of `ids`; for each confirmed link, a view of
    each of its two videos sharing one anchor (a positive pair of video vectors)."""
    views = make_views(videos, ids, rng, tcfg)
    links = [0] * len(views)
    anchor = 1 + max((a for a, _, _, _ in views), default=-1)
    for k, link in enumerate(confirmed, start=1):
        for vid in (link.a, link.b):
            v = videos[vid]
            length = min(max(v.duration, VIEW_INTERVAL), LINK_VIEW_SECONDS)
            idx, ts = time_view(v.times, 0.0, length, VIEW_INTERVAL, tcfg, rng)
            views.append((anchor, vid, idx, ts))
            links.append(k)
        anchor += 1
    b = collate(videos, views)
    b.link = torch.tensor(links)
    b.frames = augment_views(b.frames, acfg, g) * b.mask[:, :, None, None, None]
    return b


class BatchStream(torch.utils.data.IterableDataset):
    """Endless training batches: each epoch a fresh permutation of the training videos."""

    def __init__(self, videos: list[CachedVideo], batch_size: int, seed: int, acfg: AugmentConfig,
                 tcfg: TimeConfig, start_epoch: int, links: tuple[Link, ...] = ()) -> None:
        """`links`: the user's verdicts; each batch takes the next one in turn."""
        self.videos, self.batch_size, self.seed = videos, batch_size, seed
        self.acfg, self.tcfg, self.start_epoch = acfg, tcfg, start_epoch
        self.links = links

    def batches_per_epoch(self) -> int:
        return max(1, len(self.videos) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        if info:
            torch.set_num_threads(1)
        epoch = self.start_epoch
        while True:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.videos))
            for k in range(self.batches_per_epoch()):
                if k % nw != wid:
                    continue
                brng = np.random.default_rng([self.seed, epoch, k])
                g = torch.Generator().manual_seed(int(brng.integers(2**62)))
                ids = order[k * self.batch_size:(k + 1) * self.batch_size].tolist()
                if len(ids) < 2:  # one video gives no "other video" negatives; pad from elsewhere
                    ids = rng.choice(len(self.videos), size=min(2, len(self.videos)), replace=False).tolist()
                confirmed: list[Link] = []
                if self.links:
                    link = self.links[(epoch * self.batches_per_epoch() + k) % len(self.links)]
                    if link.same:
                        confirmed.append(link)
                    else:  # both in this batch: each is the other's hardest negative
                        ids += [i for i in (link.a, link.b) if i not in ids]
                yield make_batch(self.videos, ids, brng, g, self.acfg, self.tcfg, confirmed)
            epoch += 1
