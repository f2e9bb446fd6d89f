"""Matching on real encoded videos with the shipped model: look-alike content that is not the same
footage -- a watermarked black leader, procedural "life" textures -- must not make a duplicate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import av.filter
import numpy as np
import pytest

from media_factory import encode, read_frames, sample_clip, sample_photo
from vfpd import media
from vfpd.fingerprint import Fingerprint
from vfpd.matching import DEFAULT_THRESHOLD, MatchSettings, frame_center, verify

FPS = 10.0
W, H = 320, 180


@pytest.fixture(scope="module")
def embedder():
    from vfpd.model.embed import Embedder

    return Embedder(device="cpu")


def _fit(img: np.ndarray, w: int = W, h: int = H) -> np.ndarray:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    return frame.reformat(width=w, height=h, format="rgb24").to_ndarray()


def _clip(name: str, seconds: float) -> list[np.ndarray]:
    """`seconds` of a real clip at FPS, scaled to W x H."""
    out, every = [], None
    for t, img in read_frames(sample_clip(name)):
        if every is None or t >= every:
            out.append(_fit(img))
            every = len(out) / FPS
        if len(out) >= seconds * FPS:
            break
    return out


def _leader(seconds: float, seed: int) -> list[np.ndarray]:
    """A VHS-like black leader: raised black level and a little noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    return [np.clip(16 + rng.normal(0, 3, (H, W, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


def _watermarked(frames: list[np.ndarray]) -> list[np.ndarray]:
    """One channel's logo (a photograph's thumbnail) top right and a caption bar bottom left."""
    with av.open(str(sample_photo("coffee"))) as c:
        logo = _fit(next(c.decode(video=0)).to_ndarray(format="rgb24"), W // 4, H // 6)
    out = []
    for img in frames:
        img = img.copy()
        img[6:6 + logo.shape[0], W - 6 - logo.shape[1]:W - 6] = logo
        caption = img[H - 16:H - 6, 6:W // 3]
        caption[:] = 220
        caption[:, ::3] = 40  # letters
        out.append(img)
    return out


def _life(seconds: float, seed: int, colour: str, skip: float = 0.0) -> list[np.ndarray]:
    """FFmpeg's "life" source (Conway's game of life with mould) from `skip` seconds on, scaled to
    W x H: procedural footage that looks alike from any seed but is never the same picture."""
    graph = av.filter.Graph()
    src = graph.add("life", f"s=320x180:seed={seed}:ratio=0.12:mold=12:life_color={colour}:"
                            f"death_color=#101030:mold_color=#306020:rate={FPS:g}")
    fmt = graph.add("format", "pix_fmts=rgb24")
    sink = graph.add("buffersink")
    src.link_to(fmt)
    fmt.link_to(sink)
    graph.configure()
    for _ in range(int(skip * FPS)):
        sink.pull()
    return [_fit(sink.pull().to_ndarray()) for _ in range(int(seconds * FPS))]


def _fingerprint(embedder, path: Path, frames: list[np.ndarray]) -> Fingerprint:
    encode(path, frames, fps=FPS, options={"crf": "23"})
    return embedder.embed(media.sample(path))


def test_watermarked_black_leader_does_not_make_two_videos_duplicates(
        tmp_path: Path, embedder) -> None:
    a_frames = _watermarked(_leader(20, seed=1) + _clip("bikes", 4))
    b_frames = _watermarked(_leader(20, seed=2) + _clip("bigbuckbunny", 4))
    a = _fingerprint(embedder, tmp_path / "a.mp4", a_frames)
    b = _fingerprint(embedder, tmp_path / "b.mp4", b_frames)
    # The leader with its logo is not a picture to match on...
    assert not a.informative[a.timestamps < 19.5].any()
    assert a.informative[a.timestamps > 20.5].all()
    assert verify(a, b).score < DEFAULT_THRESHOLD
    # ...while a copy of the same video (smaller, re-encoded) still matches.
    copy = _fingerprint(embedder, tmp_path / "a-small.mp4", [_fit(f, 192, 108) for f in a_frames])
    assert verify(a, copy).score >= DEFAULT_THRESHOLD


def test_different_life_videos_are_not_duplicates(tmp_path: Path, embedder) -> None:
    """One video starts with a run of the game of life, another ends with a different run: the
    alignment can slide them until only those look-alike textures overlap, which is not a
    duplicate (the shipped model scores such frame pairs up to ~0.95; 0.70 before the overlap
    rule, 0.42 with it)."""
    a_frames = _life(8, seed=23, colour="#40c0e0") + _clip("bikes", 8)
    b_frames = _clip("bigbuckbunny", 5) + _life(8, seed=11, colour="#e0c040", skip=30)
    a = _fingerprint(embedder, tmp_path / "a.mp4", a_frames)
    b = _fingerprint(embedder, tmp_path / "b.mp4", b_frames)
    assert verify(a, b).score < DEFAULT_THRESHOLD
    # A copy of one of them (smaller, re-encoded) still matches.
    copy = _fingerprint(embedder, tmp_path / "a-small.mp4", [_fit(f, 192, 108) for f in a_frames])
    assert verify(a, copy).score >= DEFAULT_THRESHOLD


def _photo(name: str, w: int = W, h: int = H) -> np.ndarray:
    with av.open(str(sample_photo(name))) as c:
        return _fit(next(c.decode(video=0)).to_ndarray(format="rgb24"), w, h)


def _fixed_camera(start: float, seconds: float) -> list[np.ndarray]:
    """A fixed camera on a still scene (a photograph) with two cut-outs of other photographs
    walking across it, slow lighting drift and sensor noise. Frames from `start` seconds of the
    camera's timeline on: consecutive calls with consecutive starts are consecutive clips."""
    background = _photo("rocket").astype(np.float32)
    walkers = [(_photo("astronaut", W // 6, H // 2).astype(np.float32), 45.0, H // 3),
               (_photo("chelsea", W // 5, H // 3).astype(np.float32), -60.0, H // 2)]
    rng = np.random.default_rng(int(start * 10))
    out = []
    for k in range(int(seconds * FPS)):
        t = start + k / FPS
        img = background.copy()
        for sprite, speed, lane in walkers:
            sh, sw = sprite.shape[:2]
            loop = W + sw + 80
            # Walks out on one side and comes back on the other, each time on another line.
            walked = t * speed + 1000
            x = int(walked % loop) - sw
            y = lane + int(H // 6 * np.sin(2.3 * (walked // loop)))
            lo, hi = max(x, 0), min(x + sw, W)
            if lo < hi:
                img[y:y + sh, lo:hi] = sprite[:, lo - x:hi - x]
        img *= 1.0 + 0.06 * np.sin(2 * np.pi * t / 17)
        img += rng.normal(0, 3, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _box(frames: list[np.ndarray]) -> list[np.ndarray]:
    """A filled box at 70 % opacity over about a fifth of the picture."""
    out = []
    for img in frames:
        img = img.astype(np.float32)
        region = img[H // 10:H // 10 + int(H * 0.45), W // 2:W // 2 + int(W * 0.45)]
        region[:] = 0.3 * region + 0.7 * np.array([200.0, 30, 30])
        out.append(img.astype(np.uint8))
    return out


def test_consecutive_clips_of_a_fixed_camera_are_not_duplicates_but_copies_are(
        tmp_path: Path, embedder) -> None:
    """Issue 12: two clips of one fixed camera share their background, which is most of every
    frame; what moves in them differs, so they are different footage. A re-encode is the same
    footage and matches. An 80 % crop ranks above the other clips but scores below the default
    threshold (0.27-0.33 here); a copy with a box over a fifth of the picture is not found at all
    (0.00-0.09): the shipped weights' frame features change too much for either (a model limit,
    issue 12 open; MatchSettings.residual_similarity finds both, at a measured cost)."""
    first = _fixed_camera(0.0, 12)
    a = _fingerprint(embedder, tmp_path / "a.mp4", first)
    others = [_fingerprint(embedder, tmp_path / "b.mp4", _fixed_camera(12.0, 12)),
              _fingerprint(embedder, tmp_path / "c.mp4", _fixed_camera(17.0, 12))]
    center = frame_center([a, *others])
    worst = 0.0
    for other in others:
        for c in (None, center):
            worst = max(worst, verify(a, other, center=c).score)
    assert worst < DEFAULT_THRESHOLD / 2
    reencoded = tmp_path / "a-crf35.mp4"
    encode(reencoded, first, fps=FPS, options={"crf": "35"})
    copy = embedder.embed(media.sample(reencoded))
    assert verify(a, copy).score >= DEFAULT_THRESHOLD
    assert verify(a, copy, center=center).score >= DEFAULT_THRESHOLD
    x0, y0 = int(W * 0.05), int(H * 0.15)
    hard = {
        "crop 80 %": _fingerprint(embedder, tmp_path / "a-crop.mp4",
                                  [f[y0:y0 + int(H * 0.8), x0:x0 + int(W * 0.8)] for f in first]),
        "box": _fingerprint(embedder, tmp_path / "a-box.mp4", _box(first)),
    }
    # Ranks above: by 0.15-0.16 in most runs, 0.149 in one (libx264 through PyAV does not give
    # the same bytes in every process, and the scores move with them).
    for c in (None, center):
        assert verify(a, hard["crop 80 %"], center=c).score > worst + 0.1
    residuals = replace(MatchSettings(), residual_similarity=True)
    for name, copy in hard.items():
        for c in (None, center):
            assert verify(a, copy, residuals, center=c).score > worst + 0.3, name
