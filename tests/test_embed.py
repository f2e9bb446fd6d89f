"""The shipped weights on real footage: transformed copies made here with PyAV are closest to their
own original (not to another video, not to another segment of the same footage), and the frames of
a copy find the original's frames of the same moment. Plus the Embedder's contract."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from media_factory import encode, read_frames, sample_clip
from PIL import Image

from vfpd import media
from vfpd.cli import ctl
from vfpd.fingerprint import Fingerprint
from vfpd.model.embed import DEFAULT_WEIGHTS, Embedder, pooling_mask, weights_version
from vfpd.model.version import WeightsError

Frames = list[tuple[float, np.ndarray]]
Edit = Callable[[np.ndarray], np.ndarray]


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))


def crop(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return img[int(0.1 * h):int(0.85 * h), int(0.12 * w):int(0.9 * w)]


def letterbox(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    out = np.zeros((int(w * 0.75) // 2 * 2, w, 3), np.uint8)  # 4:3 frame, picture centred
    top = (out.shape[0] - h) // 2
    out[top:top + h] = img
    return out


def colour(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float32)
    x = (x - 128) * 1.25 + 128 + 20
    x[..., 2] *= 0.8  # bluish cast removed
    return np.clip(x, 0, 255).astype(np.uint8)


def logo(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    h, w = img.shape[:2]
    out[h // 20:h // 20 + h // 6, w - w // 5:w - w // 40] = (255, 255, 0)
    return out


def copy_of(src: Frames, path: Path, edits: Iterable[Edit] = (), fps: float = 25.0, step: int = 1,
            start: float = 0.0, end: float = 1e9, **kw: object) -> Path:
    """Encode a transformed copy: every `step`-th frame between start and end, edited."""
    chosen = [f for i, (t, f) in enumerate(src) if start <= t < end and i % step == 0]

    def gen() -> Iterable[np.ndarray]:
        for f in chosen:
            for e in edits:
                f = e(f)
            yield f

    if kw.get("codec", "libx264") == "libx264":
        # The fastest preset: these copies test the model, not the encoder's care.
        kw["options"] = {"preset": "ultrafast", **kw.get("options", {})}  # type: ignore[dict-item]
    return encode(path, gen(), fps=fps, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(device="cpu")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> dict[str, Fingerprint]:
    """Originals (two segments of bikes as separate videos, bigbuckbunny, carphone) and copies."""
    d = tmp_path_factory.mktemp("library")
    bikes = list(read_frames(sample_clip("bikes")))
    bunny = list(read_frames(sample_clip("bigbuckbunny")))
    files = {
        "bikes_a": copy_of(bikes, d / "bikes_a.mp4", end=5.0, options={"crf": "18"}),
        "bikes_b": copy_of(bikes, d / "bikes_b.mp4", start=5.0, options={"crf": "18"}),
        "bunny": sample_clip("bigbuckbunny"),
        "carphone": sample_clip("carphone_pristine"),
        # Copies of bikes' first half.
        "reencode": copy_of(bikes, d / "reencode.avi", end=5.0, codec="mpeg4", options={"qscale": "12"}),
        "scale": copy_of(bikes, d / "scale.mkv", [lambda f: _resize(f, 240, 102)], end=5.0),
        "crop": copy_of(bikes, d / "crop.mp4", [crop], end=5.0),
        "letterbox": copy_of(bikes, d / "letterbox.mp4", [letterbox], end=5.0),
        "flip": copy_of(bikes, d / "flip.mp4", [lambda f: f[:, ::-1]], end=5.0),
        "colour": copy_of(bikes, d / "colour.mp4", [colour, logo], end=5.0),
        "fps": copy_of(bikes, d / "fps.mp4", [], fps=12.5, step=2, end=5.0),
        "trim": copy_of(bikes, d / "trim.mp4", [], start=1.0, end=4.6),
        # Copies of bigbuckbunny.
        "bunny_small": copy_of(bunny, d / "bunny_small.webm", [lambda f: _resize(f, 320, 180)],
                               codec="libvpx-vp9", options={"crf": "40", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
        "bunny_crop_flip": copy_of(bunny, d / "bunny_cf.mp4",
                                   [crop, lambda f: f[:, ::-1], colour, lambda f: _resize(f, 512, 256)]),
    }
    videos = [media.sample(p) for p in files.values()]
    return dict(zip(files, embedder.embed_many(videos)))


ORIGINALS = ("bikes_a", "bikes_b", "bunny", "carphone")
COPIES = {"reencode": "bikes_a", "scale": "bikes_a", "crop": "bikes_a", "letterbox": "bikes_a",
          "flip": "bikes_a", "colour": "bikes_a", "fps": "bikes_a", "trim": "bikes_a",
          "bunny_small": "bunny", "bunny_crop_flip": "bunny"}


@pytest.mark.parametrize("copy", sorted(COPIES))
def test_copy_is_closest_to_its_original(library: dict[str, Fingerprint], copy: str) -> None:
    sims = {name: float(library[copy].vector @ library[name].vector) for name in ORIGINALS}
    assert max(sims, key=sims.get) == COPIES[copy], sims  # type: ignore[arg-type]


@pytest.mark.parametrize("copy", ["scale", "crop", "colour", "flip", "reencode", "trim"])
def test_copy_frames_find_the_same_moment(library: dict[str, Fingerprint], copy: str) -> None:
    c, o = library[copy], library["bikes_a"]
    sim = c.frame_features @ o.frame_features.T
    offset = 1.0 if copy == "trim" else 0.0  # the trimmed copy starts 1 s into the original
    best = o.timestamps[sim.argmax(axis=1)]
    hits = np.abs(best - (c.timestamps + offset)) <= 0.6
    assert hits.mean() >= 0.75, (best, c.timestamps)


def test_fingerprint_contract(library: dict[str, Fingerprint], embedder: Embedder) -> None:
    fp = library["bikes_a"]
    assert fp.model_version == embedder.model_version == weights_version(DEFAULT_WEIGHTS)
    assert abs(float(np.linalg.norm(fp.vector)) - 1.0) < 1e-4
    assert np.allclose(np.linalg.norm(fp.frame_features, axis=1), 1.0, atol=1e-4)
    assert fp.vector.dtype == np.float32 and fp.frame_features.dtype == np.float32


def test_embed_many_equals_embed_one_by_one(embedder: Embedder) -> None:
    a, b = media.sample(sample_clip("bikes")), media.sample(sample_clip("carphone_pristine"))
    together = embedder.embed_many([a, b])
    alone = [embedder.embed(a), embedder.embed(b)]
    for x, y in zip(together, alone):
        assert np.allclose(x.vector, y.vector, atol=1e-4)
        assert np.allclose(x.frame_features, y.frame_features, atol=1e-4)


def test_all_black_video_still_gets_a_vector(tmp_path: Path, embedder: Embedder) -> None:
    path = encode(tmp_path / "black.mp4", (np.zeros((64, 96, 3), np.uint8) for _ in range(50)), fps=10)
    video = media.sample(path)
    assert not video.informative.any()
    fp = embedder.embed(video)
    assert np.isfinite(fp.vector).all() and abs(float(np.linalg.norm(fp.vector)) - 1.0) < 1e-4
    assert pooling_mask(video.informative).all()


def test_lazy_load_unload_and_threads(embedder: Embedder) -> None:
    e = Embedder(device="cpu")
    assert not e.loaded
    video = media.sample(sample_clip("carphone_pristine"))
    results: list[Fingerprint] = []
    threads = [threading.Thread(target=lambda: results.append(e.embed(video))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert e.loaded and len(results) == 3
    assert all(np.allclose(r.vector, results[0].vector, atol=1e-5) for r in results)
    e.unload()
    assert not e.loaded
    assert np.allclose(e.embed(video).vector, results[0].vector, atol=1e-5)


def test_cpu_threads_change_speed_not_fingerprints() -> None:
    video = media.sample(sample_clip("carphone_pristine"))
    before = torch.get_num_threads()
    try:
        one = Embedder(device="cpu", cpu_threads=1).embed(video)
        assert torch.get_num_threads() == 1
        two = Embedder(device="cpu", cpu_threads=2).embed(video)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert np.allclose(one.vector, two.vector, atol=1e-4)
    with pytest.raises(ValueError, match="cpu_threads"):
        Embedder(device="cpu", cpu_threads=0)


def test_version_suffix_names_the_sampling() -> None:
    e = Embedder(device="cpu", version_suffix="+keyframes")
    assert e.model_version == weights_version(DEFAULT_WEIGHTS) + "+keyframes"


def test_missing_or_bad_weights_and_device(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no weights file"):
        Embedder(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    e = Embedder(bad, device="cpu")  # the version is a hash of the bytes; loading comes later
    with pytest.raises(WeightsError, match="not a readable weights file"):
        e.embed(media.sample(sample_clip("carphone_pristine")))
    with pytest.raises(ValueError, match="device"):
        Embedder(device="tpu")


def test_vfpctl_fingerprint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "text.mp4"
    bad.write_text("hello, not a video")
    clip = sample_clip("carphone_pristine")
    assert ctl.main(["fingerprint", str(clip), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "frames used" in out and weights_version(DEFAULT_WEIGHTS) in out
    assert ctl.main(["fingerprint", str(clip), str(bad), "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines[0]["vector"]) == 256 and lines[0]["frames_total"] >= lines[0]["frames_informative"] > 0
    assert lines[1]["error"] == "not-a-video" and lines[1]["reason"]
    assert ctl.main(["fingerprint", str(clip), "--weights", str(tmp_path / "none.pt")]) == 3
    assert "no weights file" in capsys.readouterr().err
