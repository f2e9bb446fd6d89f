"""Contrastive training of FingerprintNet, with its losses and validation: transformed views of
overlapping segments (batches.py, of frame_cache.py's videos) match and everything else does not."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vfpd import media, picture
from vfpd.atomic import atomic_writer
from vfpd.model.augment import AugmentConfig, TimeConfig, augment_views, time_view
from vfpd.model.batches import (
    VIEW_INTERVAL,
    VIEW_MIN_SHARE,
    Batch,
    BatchStream,
    Link,
    collate,
)
from vfpd.model.frame_cache import (
    CACHE_INTERVAL,
    CachedVideo,
    TrainingError,
    build_cache,
    split_videos,
)
from vfpd.model.network import (
    FingerprintNet,
    NetConfig,
    WeightsError,
    load_blob,
    save_weights,
)

POSITIVE_SECONDS = 0.5
"""Frames of two views count as the same moment when their source times are this close (media
samples copies on a grid that may be shifted by up to half an interval)."""

IGNORE_SECONDS = 3.0
"""...and as neither positive nor negative up to this far apart: within a shot, frames a second
or two apart differ less than a crop changes one frame, so pushing them apart would fight the
crop invariance; telling those apart is the temporal alignment's job."""

VAL_FRAME_SECONDS = 1.5
"""Validation counts a query frame as found when its nearest database frame is of the same video
and within this many seconds of the same moment."""

STATIC_DIFF = 0.02
"""Two source frames whose 8x8 gray thumbnails differ nowhere by this much (0-1) are the same
picture, however far apart in time; they are never pushed apart. The largest difference, not the
mean: a person walking through one block of a still scene is another moment of it."""

VIDEO_TEMPERATURE = 0.07
FRAME_TEMPERATURE = 0.1
"""Softmax temperatures of the two InfoNCE losses (common values for unit-length embeddings)."""

FRAME_LOSS_WEIGHT = 1.0
"""Weight of the per-frame loss beside the video loss: verification relies on frames as much as
retrieval relies on the video vector."""

WARMUP_STEPS = 30
"""Linear learning-rate warm-up, then cosine decay to MIN_LR_SHARE of the peak."""
MIN_LR_SHARE = 0.05

VAL_SEGMENT_SECONDS = 10.0
"""Validation database: consecutive segments of this length from every held-out video."""

VAL_QUERIES_PER_SEGMENT = 2
VAL_SEED = 12345
"""The validation queries are the same at every epoch: fixed seed."""


@dataclass(frozen=True)
class TrainSettings:
    """Everything `vfpctl train` and scheduled retraining choose."""

    data_dir: Path
    checkpoint: Path
    batch_size: int = 8  # videos per step (each gives up to two segments, each two views)
    epochs: int = 50
    lr: float = 1e-4
    weight_decay: float = 0.05
    num_workers: int = 4  # decoding processes, and batch-building processes during training
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA
    val_fraction: float = 0.1
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    seed: int = 0
    cache_dir: Path | None = None  # default: <checkpoint>.cache/ beside the checkpoint
    init: Path | None = None  # start from these weights (e.g. the shipped ones) when not resuming
    max_steps: int = 0  # 0: no cap; otherwise stop after this many optimiser steps in total
    max_minutes: float = 0.0  # 0: no cap; otherwise stop (after the current epoch) past this time
    freeze_norm: bool = False  # keep BatchNorm statistics as in `init` (fine-tuning on few videos)
    net: NetConfig = field(default_factory=NetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    time: TimeConfig = field(default_factory=TimeConfig)


def info_nce(z: Tensor, pos: Tensor, valid: Tensor, temperature: float) -> Tensor:
    """Multi-positive InfoNCE over unit rows z: -log(sum over positives / sum over valid pairs),
    averaged over rows with at least one positive."""
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(~valid, float("-inf"))
    log_all = torch.logsumexp(sim, dim=1)
    log_pos = torch.logsumexp(sim.masked_fill(~pos, float("-inf")), dim=1)
    has = pos.any(dim=1)
    if not has.any():
        return z.sum() * 0.0
    return (log_all[has] - log_pos[has]).mean()


def same_pictures(thumbs: Tensor) -> Tensor:
    """(N, N) bool: which of N frames (their 8x8 gray thumbnails, flattened, 0-1) show the same
    picture (STATIC_DIFF)."""
    return torch.cdist(thumbs, thumbs, p=float("inf")) < STATIC_DIFF


def losses(model: FingerprintNet, b: Batch) -> tuple[Tensor, Tensor]:
    """(video loss, frame loss) of one batch."""
    vec, feats = model(b.frames, b.times, b.mask)
    s = len(b.anchor)
    eye = torch.eye(s, dtype=torch.bool, device=vec.device)
    anchor = b.anchor.to(vec.device)
    # Positives: the other view of the same segment. Negatives: every other view, including
    # views of the other segment of the same video.
    vloss = info_nce(vec.float(), (anchor[:, None] == anchor[None, :]) & ~eye, ~eye, VIDEO_TEMPERATURE)

    m = b.mask.flatten().to(vec.device)
    f = feats.reshape(-1, feats.shape[-1])[m].float()
    view = torch.arange(s, device=vec.device).repeat_interleave(b.mask.shape[1])[m]
    video = b.video.to(vec.device).repeat_interleave(b.mask.shape[1])[m]
    src = b.src_time.flatten().to(vec.device)[m]
    th = b.thumbs.reshape(-1, 64).to(vec.device)[m]
    same_video = video[:, None] == video[None, :]
    dt = (src[:, None] - src[None, :]).abs()
    other_view = view[:, None] != view[None, :]
    pos = same_video & other_view & (dt <= POSITIVE_SECONDS)
    same_picture = same_pictures(th)
    ignore = (same_video & (dt < IGNORE_SECONDS) & ~pos) | (same_picture & ~pos)
    if b.link is not None:  # frames of a confirmed pair: which moments correspond is unknown
        link = b.link.to(vec.device).repeat_interleave(b.mask.shape[1])[m]
        ignore |= (link[:, None] == link[None, :]) & (link[:, None] > 0) & ~same_video
    ignore |= torch.eye(len(f), dtype=torch.bool, device=f.device)
    floss = info_nce(f, pos, ~ignore, FRAME_TEMPERATURE)
    return vloss, floss


def lr_at(step: int, progress: float, peak: float) -> float:
    """Linear warm-up over the first steps, then cosine decay over `progress` (0..1 of the run)."""
    if step < WARMUP_STEPS:
        return peak * (step + 1) / WARMUP_STEPS
    p = min(1.0, max(0.0, progress))
    return peak * (MIN_LR_SHARE + (1 - MIN_LR_SHARE) * 0.5 * (1 + math.cos(math.pi * p)))


@dataclass(frozen=True)
class ValSet:
    """Fixed validation: database segments (untransformed) and transformed queries of them."""

    db: Batch
    queries: Batch
    query_target: Tensor  # (Q,) index of the database segment each query was cut from


def make_val_set(videos: list[CachedVideo], acfg: AugmentConfig, tcfg: TimeConfig) -> ValSet:
    rng = np.random.default_rng(VAL_SEED)
    g = torch.Generator().manual_seed(VAL_SEED)
    db_views, q_views, target = [], [], []
    plain = TimeConfig(p_speed=0.0, max_speed=0.0, max_jitter=0.0)
    for vid, v in enumerate(videos):
        n_seg = max(1, int(v.duration // VAL_SEGMENT_SECONDS))
        seg = v.duration / n_seg if n_seg > 1 else max(v.duration, VIEW_INTERVAL)
        for k in range(n_seg):
            start = k * seg
            idx, ts = time_view(v.times, start, seg, VIEW_INTERVAL, plain, np.random.default_rng(0))
            db_views.append((len(db_views), vid, idx, ts))
            for _ in range(VAL_QUERIES_PER_SEGMENT):
                ql = seg * rng.uniform(VIEW_MIN_SHARE, 1.0)
                qs = start + rng.uniform(0, seg - ql)
                qi, qt = time_view(v.times, qs, ql, VIEW_INTERVAL, tcfg, rng)
                q_views.append((len(q_views), vid, qi, qt))
                target.append(len(db_views) - 1)
    db = collate(videos, db_views)
    q = collate(videos, q_views)
    q.frames = augment_views(q.frames, acfg, g) * q.mask[:, :, None, None, None]
    return ValSet(db, q, torch.tensor(target))


@torch.inference_mode()
def _embed_batch(model: FingerprintNet, b: Batch, device: torch.device, chunk: int = 32) -> tuple[Tensor, Tensor]:
    vecs, feats = [], []
    for i in range(0, len(b.mask), chunk):
        v, f = model(b.frames[i:i + chunk].to(device), b.times[i:i + chunk].to(device), b.mask[i:i + chunk].to(device))
        vecs.append(v.float().cpu())
        feats.append(f.float().cpu())
    t = b.mask.shape[1]
    return torch.cat(vecs), torch.cat([F.pad(f, (0, 0, 0, t - f.shape[1])) for f in feats])


def set_train_mode(model: FingerprintNet, freeze_norm: bool) -> None:
    """Training mode; with `freeze_norm`, BatchNorm layers stay in eval mode, so their running
    statistics keep what the initial weights learnt on varied footage."""
    model.train()
    if freeze_norm:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def validate(model: FingerprintNet, val: ValSet, device: torch.device,
             frozen_norm: bool = False) -> dict[str, float]:
    """Recall@1 of transformed queries against all segments (other segments of the same video
    included), and the share of query frames whose nearest database frame is the same moment
    (same video, within VAL_FRAME_SECONDS). score = their mean."""
    was = model.training
    model.eval()  # (set_train_mode below puts back what the loop had)
    dv, df = _embed_batch(model, val.db, device)
    qv, qf = _embed_batch(model, val.queries, device)
    if was:
        set_train_mode(model, frozen_norm)
    r1 = (qv @ dv.T).argmax(dim=1).eq(val.query_target).float().mean().item()

    dm, qm = val.db.mask.flatten(), val.queries.mask.flatten()
    d_feat, q_feat = df.reshape(-1, df.shape[-1])[dm], qf.reshape(-1, qf.shape[-1])[qm]
    d_vid = val.db.video.repeat_interleave(val.db.mask.shape[1])[dm]
    q_vid = val.queries.video.repeat_interleave(val.queries.mask.shape[1])[qm]
    d_src, q_src = val.db.src_time.flatten()[dm], val.queries.src_time.flatten()[qm]
    nn_idx = (q_feat @ d_feat.T).argmax(dim=1)
    frame_hit = (d_vid[nn_idx] == q_vid) & ((d_src[nn_idx] - q_src).abs() <= VAL_FRAME_SECONDS)
    fr = frame_hit.float().mean().item()
    return {"recall_at_1": r1, "frame_top1": fr, "score": (r1 + fr) / 2}


def _atomic_json(path: Path, obj: object) -> None:
    with atomic_writer(path) as f:
        f.write(json.dumps(obj, indent=2).encode())


def best_path(checkpoint: Path) -> Path:
    """Where the best weights (model only, ready for Embedder) are kept beside the checkpoint."""
    return checkpoint.with_name(checkpoint.stem + ".best.pt")


def train(s: TrainSettings, log: Callable[[str], None] = print) -> dict[str, object]:
    """Train (or resume from s.checkpoint) and return a summary; the best weights end up in
    best_path(s.checkpoint)."""
    if s.batch_size < 2:
        raise TrainingError("batch_size must be at least 2 (other videos are the negatives)")
    cache_dir = s.cache_dir or s.checkpoint.with_name(s.checkpoint.name + ".cache")
    t0 = time.monotonic()
    videos = build_cache(s.data_dir, cache_dir, s.num_workers, log)
    if len(videos) < 2:
        raise TrainingError(f"{s.data_dir}: need at least 2 readable videos, found {len(videos)}")
    train_v, val_v = split_videos(videos, s.val_fraction, s.seed)
    log(f"{len(train_v)} training videos, {len(val_v)} validation videos, "
        f"{sum(len(v.frames) for v in videos)} cached frames ({time.monotonic() - t0:.0f} s)")
    summary = fit(train_v, val_v, s, log)
    store_background(best_path(s.checkpoint), videos, s.device, log)
    return summary


def fit(train_v: list[CachedVideo], val_v: list[CachedVideo], s: TrainSettings,
        log: Callable[[str], None] = print, *, links: tuple[Link, ...] = (),
        should_stop: Callable[[], bool] = lambda: False,
        on_step: Callable[[dict[str, float]], None] | None = None,
        progress_bars: bool = True) -> dict[str, object]:
    """The training loop on videos already in memory (`vfpctl train`'s cache, or the catalog's
    stored frames for a retrain): resume from s.checkpoint or start from s.init, keep the best
    weights in best_path(s.checkpoint). `links` are the user's verdicts (indices into train_v);
    `should_stop` ends the run after the current step; `on_step` hears {epoch, step, loss}."""
    from tqdm import tqdm

    from vfpd.model.embed import resolve_device

    if s.batch_size < 2:
        raise TrainingError("batch_size must be at least 2 (other videos are the negatives)")
    if s.threads > 0:
        torch.set_num_threads(s.threads)
    device = resolve_device(s.device)
    use_amp = s.amp and device.type == "cuda"
    torch.manual_seed(s.seed)

    model = FingerprintNet(s.net).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    epoch, step, best, history, minutes_before = 0, 0, float("-inf"), [], 0.0
    if s.checkpoint.exists():
        blob = _load_into(model, s.checkpoint, device, s.net, "cannot resume",
                          "checkpoint was made with another network configuration")
        if "optimizer" in blob:
            opt.load_state_dict(blob["optimizer"])
        epoch, step = int(blob.get("epoch", 0)), int(blob.get("step", 0))
        best, history = float(blob.get("best_score", float("-inf"))), list(blob.get("history", []))
        minutes_before = float(blob.get("minutes", 0.0))
        log(f"resumed from {s.checkpoint} at epoch {epoch}, step {step}, best score {best:.4f}")
    elif s.init is not None:
        _load_into(model, s.init, device, s.net, "cannot start from --init",
                   "--init weights have another network configuration")
        log(f"starting from the weights in {s.init}")

    val = make_val_set(val_v, s.augment, s.time) if val_v else None
    if val is not None and not history:
        first = validate(model, val, device)
        history.append({"epoch": 0, "step": 0, **first})
        log(f"before training: {first}")
    stream = BatchStream(train_v, s.batch_size, s.seed, s.augment, s.time, epoch, links)
    per_epoch = stream.batches_per_epoch()
    total_steps = per_epoch * s.epochs
    if s.max_steps:
        total_steps = min(total_steps, s.max_steps)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=max(0, s.num_workers),
                                         persistent_workers=False, collate_fn=lambda b: b)
    started = time.monotonic()
    it = iter(loader)
    summary: dict[str, object] = {}
    try:
        while epoch < s.epochs and step < total_steps:
            set_train_mode(model, s.freeze_norm)
            bar = tqdm(range(per_epoch), desc=f"epoch {epoch + 1}/{s.epochs}", unit="step",
                       leave=False, disable=not progress_bars)
            sums = np.zeros(2)
            done = 0
            for _ in bar:
                if step >= total_steps or should_stop():
                    break
                b = next(it)
                # With a time budget the schedule follows the clock, so the rate has decayed
                # when the budget ends, however fast the steps turn out to be.
                progress = step / total_steps
                if s.max_minutes:
                    progress = max(progress, (time.monotonic() - started) / 60 / s.max_minutes)
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, progress, s.lr)
                b.frames = b.frames.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    vloss, floss = losses(model, b)
                    loss = vloss + FRAME_LOSS_WEIGHT * floss
                if not torch.isfinite(loss):
                    raise TrainingError(f"loss became {loss.item()} at step {step}; lower --lr")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
                step += 1
                done += 1
                sums += (vloss.item(), floss.item())
                bar.set_postfix(video=f"{vloss.item():.3f}", frame=f"{floss.item():.3f}")
                if on_step is not None:
                    on_step({"epoch": epoch + 1, "epochs": s.epochs, "step": step,
                             "loss": float(loss.item())})
            bar.close()
            if done == 0:  # stopped before a step of this epoch: nothing new to validate
                break
            epoch += 1
            minutes = minutes_before + (time.monotonic() - started) / 60
            rec: dict[str, float] = {"epoch": epoch, "step": step, "minutes": round(minutes, 2),
                                     "video_loss": float(sums[0] / max(1, done)),
                                     "frame_loss": float(sums[1] / max(1, done))}
            if val is not None:
                rec.update(validate(model, val, device, s.freeze_norm))
            else:
                rec["score"] = -rec["video_loss"] - rec["frame_loss"]
            history.append(rec)
            improved = rec["score"] > best
            if improved:
                best = rec["score"]
                save_weights(best_path(s.checkpoint), model,
                             meta={"epoch": epoch, "step": step, "minutes": round(minutes, 2),
                                   "validation": {k: v for k, v in rec.items()},
                                   "train_videos": len(train_v), "val_videos": len(val_v)})
            save_weights(s.checkpoint, model, meta={"epoch": epoch},
                         extra={"optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                                "best_score": best, "history": history, "minutes": minutes,
                                "settings": _settings_dict(s)})
            log(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in rec.items()) + (" (best)" if improved else ""))
            if s.max_minutes and (time.monotonic() - started) / 60 >= s.max_minutes:
                log(f"stopping: --max_minutes {s.max_minutes} reached")
                break
            if should_stop():
                break
    finally:
        del it, loader
    summary = {"epochs": epoch, "steps": step, "best_score": best, "history": history,
               "best_weights": str(best_path(s.checkpoint))}
    _atomic_json(s.checkpoint.with_name(s.checkpoint.stem + ".history.json"), history)
    return summary


def _load_into(model: FingerprintNet, weights: Path, device: torch.device, net: NetConfig,
               unreadable: str, other_net: str) -> dict[str, Any]:
    """Load `weights` into `model` and return the whole file (load_blob's dictionary); a
    TrainingError when it cannot be read (`unreadable`) or holds another network than `net`
    (`other_net`)."""
    try:
        blob = load_blob(weights, device)
    except WeightsError as e:
        raise TrainingError(f"{unreadable}: {e}") from None
    if NetConfig.from_dict(blob["config"]) != net:
        raise TrainingError(f"{weights}: {other_net}")
    model.load_state_dict(blob["model"])
    return blob


def store_background(weights: Path, videos: list[CachedVideo], device: str,
                      log: Callable[[str], None]) -> None:
    """Estimate the weights' background frame feature (vfpd/model/center.py) on the training
    videos, sampled on the fingerprints' 1 s grid, and store it in the weights' meta."""
    from vfpd.model import center
    from vfpd.model.embed import Embedder

    if not weights.exists():
        return
    step = max(1, round(VIEW_INTERVAL / CACHE_INTERVAL))
    embedder = Embedder(weights=weights, device=device)
    fps = []
    for v in videos:
        frames = v.frames[::step]
        if len(frames):
            fps.append(embedder.embed(media.SampledVideo(
                frames, v.times[::step].astype(np.float64), picture.informative_mask(frames),
                v.duration, media.VideoInfo("cache", "cache", 64, 64, v.duration, None, 0))))
    try:
        center.store(weights, center.estimate(fps))
    except ValueError as e:
        log(f"no background stored in {weights} ({e}): the matcher uses each pair's own mean")
        return
    log(f"background frame feature of {len(fps)} videos stored in {weights}")


def _settings_dict(s: TrainSettings) -> dict[str, object]:
    d = asdict(s)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
