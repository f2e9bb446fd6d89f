"""Training on real (tiny) encoded videos: a step runs with a finite loss, the checkpoint resumes,
the best weights load into Embedder, and bad input gets a clear error."""

from __future__ import annotations

import math
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from media_factory import make_video
from vfpd import media
from vfpd.cli import ctl
from vfpd.model.embed import Embedder
from vfpd.model.network import NetConfig, load_blob
from vfpd.model.batches import Link, make_batch
from vfpd.model.frame_cache import TrainingError, build_cache
from vfpd.model.train import (
    STATIC_DIFF,
    TrainSettings,
    best_path,
    info_nce,
    losses,
    same_pictures,
    train,
)
from vfpd.model.augment import AugmentConfig, TimeConfig

TINY = NetConfig(channels=(8, 8, 16, 16), model_dim=32, heads=2, layers=1)
"""A network small enough that a training step on two videos takes a fraction of a second."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    make_video(d / "a.mp4", seconds=8.0, fps=10, width=96, height=64, seed=1)
    make_video(d / "b.mkv", seconds=8.0, fps=10, width=96, height=64, seed=2)
    (d / "notes.txt").write_text("not a video, and not named like one")
    return d


def _settings(data_dir: Path, tmp: Path, **kw: object) -> TrainSettings:
    base = dict(data_dir=data_dir, checkpoint=tmp / "ck.pt", batch_size=2, epochs=1, lr=1e-3,
                num_workers=0, device="cpu", val_fraction=0.0, net=TINY)
    base.update(kw)
    return TrainSettings(**base)  # type: ignore[arg-type]


def test_train_resume_and_load_into_embedder(data_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    first = train(_settings(data_dir, tmp_path), log=lambda m: None)
    assert first["epochs"] == 1 and first["steps"] == 1
    rec = first["history"][-1]
    assert math.isfinite(rec["video_loss"]) and math.isfinite(rec["frame_loss"])
    blob = load_blob(tmp_path / "ck.pt")
    assert blob["epoch"] == 1 and "optimizer" in blob

    # Same checkpoint, more epochs: continues from epoch 1 instead of starting over, and
    # decodes nothing again (the frame cache is reused).
    cache = tmp_path / "ck.pt.cache"
    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    second = train(_settings(data_dir, tmp_path, epochs=2), log=lambda m: None)
    assert second["epochs"] == 2 and second["steps"] == 2
    assert len(second["history"]) == 2
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps

    emb = Embedder(best_path(tmp_path / "ck.pt"), device="cpu")
    video = media.sample(data_dir / "a.mp4")
    fp = emb.embed(video)
    assert fp.vector.shape == (256,) and abs(float(np.linalg.norm(fp.vector)) - 1) < 1e-4
    assert fp.frame_features.shape == (len(video.frames), 128)


def test_validation_and_batch_workers(data_dir: Path, tmp_path: Path) -> None:
    # Four videos so that two are held out; one batch-building process (no leak afterwards).
    d = tmp_path / "four"
    d.mkdir()
    for name in ["a.mp4", "b.mkv"]:  # copies: training follows no symbolic link (vfpd/files.py)
        shutil.copyfile(data_dir / name, d / name)
    make_video(d / "c.mp4", seconds=6.0, fps=10, width=96, height=64, seed=3)
    make_video(d / "d.mp4", seconds=6.0, fps=10, width=96, height=64, seed=4)
    out = train(_settings(d, tmp_path, val_fraction=0.5, num_workers=1), log=lambda m: None)
    hist = out["history"]
    assert hist[0]["epoch"] == 0  # the untrained model's score is recorded first
    assert 0.0 <= hist[-1]["recall_at_1"] <= 1.0 and 0.0 <= hist[-1]["frame_top1"] <= 1.0
    assert best_path(tmp_path / "ck.pt").exists()
    assert multiprocessing.active_children() == []


def test_batch_pairs_overlapping_views_and_loss_prefers_them(data_dir: Path, tmp_path: Path) -> None:
    videos = build_cache(data_dir, tmp_path / "cache", workers=0, log=lambda m: None)
    rng = np.random.default_rng(0)
    b = make_batch(videos, [0, 1], rng, torch.Generator().manual_seed(0), AugmentConfig(), TimeConfig())
    # Two views per anchor segment, views of one anchor overlap in source time.
    anchors = b.anchor.tolist()
    assert all(anchors.count(a) == 2 for a in set(anchors))
    for a in set(anchors):
        i, j = [k for k, x in enumerate(anchors) if x == a]
        si = b.src_time[i][b.mask[i]]
        sj = b.src_time[j][b.mask[j]]
        assert min(si.max(), sj.max()) >= max(si.min(), sj.min())
    from vfpd.model.network import FingerprintNet

    v, f = losses(FingerprintNet(TINY), b)
    assert torch.isfinite(v) and torch.isfinite(f)

    z = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    pos = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.bool)
    valid = ~torch.eye(4, dtype=torch.bool)
    matched = torch.cat([z[:2], z[:2]])[[0, 2, 1, 3]]  # rows 0/1 and 2/3 identical
    assert info_nce(matched, pos, valid, 0.1) < info_nce(z, pos, valid, 0.1)


def test_confirmed_pair_is_a_positive_of_video_vectors(data_dir: Path, tmp_path: Path) -> None:
    videos = build_cache(data_dir, tmp_path / "cache", workers=0, log=lambda m: None)
    rng = np.random.default_rng(0)
    b = make_batch(videos, [0, 1], rng, torch.Generator().manual_seed(0), AugmentConfig(),
                   TimeConfig(), [Link(0, 1, same=True)])
    assert b.link is not None
    linked = [i for i, k in enumerate(b.link.tolist()) if k > 0]
    assert len(linked) == 2  # one view of each video of the pair ...
    assert b.video[linked].tolist() == [0, 1]
    assert b.anchor[linked[0]] == b.anchor[linked[1]]  # ... sharing one anchor: a positive
    assert (b.anchor == b.anchor[linked[0]]).sum() == 2
    from vfpd.model.network import FingerprintNet

    v, f = losses(FingerprintNet(TINY), b)
    assert torch.isfinite(v) and torch.isfinite(f)


def test_bad_input_is_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainingError, match="no video files"):
        train(_settings(empty, tmp_path), log=lambda m: None)
    with pytest.raises(TrainingError, match="not a directory"):
        train(_settings(tmp_path / "nope", tmp_path), log=lambda m: None)
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.mp4").symlink_to(data_dir / "a.mp4")
    (one / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(TrainingError, match="at least 2 readable videos"):
        train(_settings(one, tmp_path), log=lambda m: None)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(TrainingError, match="cannot resume"):
        train(_settings(data_dir, tmp_path, checkpoint=tmp_path / "bad.pt"), log=lambda m: None)


def test_cli_usage_errors(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["train", "--data_dir", str(tmp_path / "nope"), "--checkpoint",
                     str(tmp_path / "c.pt"), "--num_workers", "0"]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert ctl.main(["train", "--data_dir", str(data_dir), "--checkpoint", str(tmp_path / "c.pt"),
                     "--batch_size", "1"]) == 2
    assert "--batch_size is too small" in capsys.readouterr().err


def test_a_subject_moving_through_one_block_is_another_moment_of_a_still_scene() -> None:
    """The frame loss never pushes apart two frames of one picture; a still scene with a person
    walking through one part of it shows other moments, which it must tell apart."""
    rng = np.random.default_rng(3)
    scene = torch.from_numpy(rng.random(64).astype(np.float32) * 0.8)
    walker = scene.clone()
    walker[27] += 0.1  # one block of the 8x8 thumbnail
    drift = scene + 0.6 * STATIC_DIFF  # lighting drift, sensor noise: the whole picture alike
    same = same_pictures(torch.stack([scene, scene.clone(), walker, drift]))
    assert same[0, 1] and same[0, 3], "one picture, however far apart in time"
    assert not same[0, 2] and not same[2, 3], "a subject moved: another moment"
