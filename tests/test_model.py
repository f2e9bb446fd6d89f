"""FingerprintNet and augmentations: the invariances built into the architecture, masking, the
weights file, and that every augmentation keeps shapes and value range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vfpd.fingerprint import FRAME_DIM, VECTOR_DIM
from vfpd.model import augment
from vfpd.model.network import (
    FingerprintNet,
    NetConfig,
    WeightsError,
    load_model,
    normalise_frames,
    save_weights,
    time_buckets,
)


@pytest.fixture(scope="module")
def net() -> FingerprintNet:
    torch.manual_seed(0)
    return FingerprintNet().eval()


def _frames(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(base, size=(64, 64), mode="bilinear", align_corners=False)


def test_shapes_and_unit_length(net: FingerprintNet) -> None:
    x = _frames(10).view(2, 5, 3, 64, 64)
    ts = torch.arange(5.0).repeat(2, 1)
    with torch.no_grad():
        vec, feats = net(x, ts, torch.ones(2, 5, dtype=torch.bool))
    assert vec.shape == (2, VECTOR_DIM) and feats.shape == (2, 5, FRAME_DIM)
    assert torch.allclose(vec.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(feats.norm(dim=2), torch.ones(2, 5), atol=1e-5)


def test_frame_feature_ignores_mirror_brightness_and_neighbours(net: FingerprintNet) -> None:
    x = _frames(6)
    with torch.no_grad():
        f = net.frame_features(x)
        assert torch.allclose(f, net.frame_features(x.flip(-1)), atol=1e-5)
        # Brightness offset and contrast gain are normalised away before the CNN (up to the
        # small constant that keeps flat frames from being amplified).
        assert float((f * net.frame_features(x * 0.6 + 0.1)).sum(dim=1).min()) > 0.99
        # Each frame's feature depends on that frame alone.
        assert torch.allclose(f[2:3], net.frame_features(x[2:3]), atol=1e-5)
        assert not torch.allclose(f[0], f[1], atol=1e-4)


def test_padding_and_time_shift_do_not_change_the_video_vector(net: FingerprintNet) -> None:
    feats = torch.nn.functional.normalize(torch.randn(1, 7, FRAME_DIM), dim=-1)
    ts = torch.arange(7.0)[None]
    with torch.no_grad():
        alone = net.video_embedding(feats, ts, torch.ones(1, 7, dtype=torch.bool))
        padded = net.video_embedding(torch.cat([feats, torch.randn(1, 5, FRAME_DIM)], 1),
                                     torch.cat([ts, torch.full((1, 5), 99.0)], 1),
                                     torch.tensor([[True] * 7 + [False] * 5]))
        shifted = net.video_embedding(feats, ts + 123.0, torch.ones(1, 7, dtype=torch.bool))
        other = net.video_embedding(feats.flip(1), ts, torch.ones(1, 7, dtype=torch.bool))
    assert torch.allclose(alone, padded, atol=1e-5)
    assert torch.allclose(alone, shifted, atol=1e-5)
    assert not torch.allclose(alone, other, atol=1e-4)  # order matters


def test_time_buckets_grow_with_log_of_seconds() -> None:
    b = time_buckets(torch.tensor([[0.0, 0.2, 1.5, 3.0, 100.0, 1e6]]), 12)[0, 0]
    assert b[0] == b[1] == 12  # same moment
    assert 12 < b[2] < b[3] < b[4] < b[5] == 12 + 11
    assert time_buckets(torch.tensor([[5.0, 0.0]]), 12)[0, 0, 1] < 12  # earlier frames: other side


def test_normalise_frames_removes_colour_cast() -> None:
    x = _frames(2)
    cast = x + torch.tensor([0.1, -0.05, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(normalise_frames(x), normalise_frames(cast), atol=1e-5)


def test_weights_roundtrip_and_errors(net: FingerprintNet, tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    save_weights(path, net, meta={"note": "test"})
    loaded, meta = load_model(path)
    assert meta == {"note": "test"}
    x = _frames(3)
    with torch.no_grad():
        assert torch.allclose(loaded.frame_features(x), net.frame_features(x), atol=1e-6)
    with pytest.raises(WeightsError, match="no weights file"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="not a readable weights file"):
        load_model(tmp_path / "junk.pt")
    torch.save({"something": 1}, tmp_path / "foreign.pt")
    with pytest.raises(WeightsError, match="not a vfpd"):
        load_model(tmp_path / "foreign.pt")


def test_config_roundtrip() -> None:
    cfg = NetConfig(layers=1, heads=2)
    assert NetConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("fn", [augment.geometry, augment.rescale, augment.blocks, augment.quantise,
                                augment.colour, augment.blur, augment.noise, augment.overlays,
                                augment.boxes, augment.rot90])
def test_each_augmentation_keeps_shape_and_range(fn) -> None:  # type: ignore[no-untyped-def]
    x = _frames(12).view(3, 4, 3, 64, 64)
    cfg = augment.AugmentConfig(**{f: 1.0 for f in augment.AugmentConfig.__dataclass_fields__
                                   if f.startswith("p_")})
    y = fn(x, cfg, torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    assert float(y.min()) >= -1e-6 and float(y.max()) <= 1 + 1e-6
    assert not torch.allclose(x, y, atol=1e-3)  # with probability 1 the edit happens


def test_augment_views_is_one_edit_per_view() -> None:
    # The same frame repeated in a view must stay identical to itself: edits are per view, except
    # noise and captions, which are switched off here.
    x = _frames(1).repeat(4, 1, 1, 1).view(2, 2, 3, 64, 64)
    cfg = augment.AugmentConfig(p_noise=0.0, p_text=0.0)
    y = augment.augment_views(x, cfg, torch.Generator().manual_seed(3))
    assert torch.allclose(y[:, 0], y[:, 1], atol=1e-6)


def test_rot90_is_a_quarter_turn_and_boxes_cover_about_a_fifth() -> None:
    x = _frames(8).view(2, 4, 3, 64, 64)
    cfg = augment.AugmentConfig(p_rot90=1.0, p_boxes=1.0)
    y = augment.rot90(x, cfg, torch.Generator().manual_seed(2))
    for i in range(2):
        turns = [torch.allclose(y[i], torch.rot90(x[i], k, dims=(2, 3))) for k in (1, 3)]
        assert any(turns)
    z = augment.boxes(x, cfg, torch.Generator().manual_seed(4))
    changed = (z - x).abs().amax(dim=(1, 2)) > 1e-6  # (views, H, W): pixels any box touched
    share = changed.float().mean(dim=(1, 2))
    assert bool(((share > 0.08) & (share < 0.3)).all()), share


def test_time_view_follows_speed_and_phase() -> None:
    src = np.arange(0, 60, 0.25)
    rng = np.random.default_rng(0)
    cfg = augment.TimeConfig(p_speed=1.0, max_speed=0.2, max_jitter=0.0)
    idx, ts = augment.time_view(src, 10.0, 20.0, 1.0, cfg, rng)
    assert ts[0] == 0.0 and np.allclose(np.diff(ts), 1.0)
    assert len(idx) == len(ts) == 20
    speed = (src[idx[-1]] - src[idx[0]]) / (ts[-1] - ts[0])
    assert 0.78 <= speed <= 1.22
    assert 10.0 <= src[idx[0]] <= 11.5
