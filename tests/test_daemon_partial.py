"""The real daemon finds a clip cut out of a longer video it already knows, although the clip's
whole-video vector is not among the nearest ones: the frame index makes the long video a candidate.
Real files (clips, panned photographs, procedural footage), a real webhook receiver."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from harness.daemon import WEIGHTS, Daemon, NotifyListener, WebhookServer, wait_until
from media_factory import encode, moving_scene, read_frames, sample_clip
from scan_media import pan_frames, resize

from vfpd.client import Client
from vfpd.frame_index import FrameIndex
from vfpd.hashing import hash_file
from vfpd.model.center import center_of
from vfpd.model.embed import DEFAULT_WEIGHTS
from vfpd.model.network import load_blob

FPS = 10.0  # the sampler takes one frame a second: 10 fps keeps the files small and quick
WIDTH, HEIGHT = 192, 144
CLIP_START, CLIP_END = 35.0, 48.0  # seconds of the long video the clip is cut from
LIBRARY = ("long", "alike0", "alike1", "alike2", "alike3")
CANDIDATES = 1


def real_clip(name: str) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for t, img in read_frames(sample_clip(name)):
        if t * FPS >= len(out):
            out.append(resize(img, WIDTH, HEIGHT))
    return out


def procedural(seed: int, seconds: float) -> list[np.ndarray]:
    fn = moving_scene(WIDTH, HEIGHT, seed)
    return [fn(i, i / FPS) for i in range(int(seconds * FPS))]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("partial")
    bikes, bunny, car = (real_clip(n) for n in ("bikes", "bigbuckbunny", "carphone_pristine"))

    def flip(frames: list[np.ndarray]) -> list[np.ndarray]:
        return [f[:, ::-1] for f in frames]

    # 74 s of edited footage: real clips forwards, backwards and mirrored, with a pan across a
    # photograph and a procedural scene in the middle (34.6-50.6 s).
    parts = [bikes, bunny, car, flip(bikes)[::-1], bunny[::-1], pan_frames("coffee", 8, FPS),
             procedural(42, 8), car[::-1], flip(bikes), flip(bunny), flip(car)[::-1]]
    frames = [f for p in parts for f in p]
    out = {"long": encode(d / "long.mp4", frames, fps=FPS, options={"crf": "23"})}
    # 13 s from the middle (the pan and the procedural scene), scaled down and re-encoded at a
    # lower quality.
    cut = frames[int(CLIP_START * FPS):int(CLIP_END * FPS)]
    out["clip"] = encode(d / "clip.mp4", (resize(f, 160, 120) for f in cut), fps=FPS,
                         options={"crf": "30"})
    out["clip2"] = encode(d / "clip2.mp4", (resize(f, 176, 132) for f in cut), fps=FPS,
                          options={"crf": "36"})
    out["other"] = encode(d / "other.mp4", pan_frames("hubble_deep_field", 12, FPS), fps=FPS)
    # Look-alikes of the clip's style (pans, procedural scenes), copies of nothing: their
    # whole-video vectors lie nearer to the clip's than the long video's does.
    for i, (photo, seed) in enumerate([("logo", 67), ("astronaut", 66), ("horse", 68)]):
        out[f"alike{i}"] = encode(d / f"alike{i}.mp4",
                                  pan_frames(photo, 7, FPS) + procedural(seed, 6), fps=FPS)
    out["alike3"] = encode(d / "alike3.mp4", pan_frames("motorcycle_right", 13, FPS), fps=FPS)
    return out


@pytest.fixture(scope="module")
def daemon(media: dict[str, Path]) -> Iterator[Daemon]:
    home = Path(tempfile.mkdtemp(prefix="vfpd-p-", dir="/tmp"))
    root = home / "videos"
    (root / "library").mkdir(parents=True)
    for name in LIBRARY:
        shutil.copyfile(media[name], root / "library" / f"{name}.mp4")
    hook, notify = WebhookServer(), NotifyListener(str(home / "notify.sock"))
    # One video-vector candidate (the pipeline asks the video index for one more, its own
    # content): whatever else is verified, the frame index proposed.
    d = Daemon(home, [root], hook, notify, extra=f"[detect]\ncandidates = {CANDIDATES}\n")
    d.start()
    d.wait_log("fingerprinted", count=len(LIBRARY))
    yield d
    d.close()


def test_clip_cut_from_a_long_video_is_a_partial_duplicate(daemon: Daemon, media) -> None:
    root = daemon.roots[0]
    shutil.copyfile(media["clip"], root / "clip.mp4")
    shutil.copyfile(media["other"], root / "other.mp4")
    wait_until(lambda: daemon.hook.for_path(root / "clip.mp4"), what="the clip's webhook event")
    daemon.wait_log(f"fingerprinted {root / 'other.mp4'}")

    (ev,) = daemon.hook.for_path(root / "clip.mp4")
    assert ev["kind"] == "partial" and ev["score"] >= 0.75
    assert [e["path"] for e in ev["existing"]] == [str(root / "library" / "long.mp4")]
    assert ev["existing"][0]["hash"] == hash_file(media["long"])
    # The segment: the clip's whole length, 28-41 s of the long video (a sampling step of slack).
    (seg,) = ev["segments"]
    assert seg["a_start"] <= 1.0 and seg["a_end"] >= CLIP_END - CLIP_START - 3.0
    assert abs(seg["b_start"] - CLIP_START) <= 1.0 and abs(seg["b_end"] - CLIP_END) <= 3.0
    assert not daemon.hook.for_path(root / "other.mp4")
    assert not [ln for ln in daemon.lines("vfpd.duplicate") if "other.mp4" in ln]

    # Only the frame index can have made the long video a candidate: the look-alikes' vectors
    # are nearer to the clip's than the long video's, and more of them than the video index
    # is asked for.
    with daemon.catalog() as cat:
        model = next(iter(cat.model_versions()))
        clip_fp = cat.fingerprint(hash_file(media["clip"]), model).fingerprint
        sims = {name: float(clip_fp.vector @ cat.fingerprint(hash_file(media[name]),
                                                             model).fingerprint.vector)
                for name in LIBRARY}
    nearer = [name for name in LIBRARY if sims[name] > sims["long"]]
    assert len(nearer) > CANDIDATES + 1, sims


def test_status_reports_the_frame_index(daemon: Daemon) -> None:
    with Client(daemon.home / "ctl.sock") as client:
        frames = client.call("status")["index"]["frames"]
    assert frames["type"] == "flat" and frames["videos"] == 7
    # The long video keeps its 64-frame budget; the six short ones their informative frames,
    # less repeats.
    assert 64 + 6 * 5 <= frames["frames"] <= 64 + 6 * 13
    assert frames["memory_bytes"] == frames["frames"] * frames["bytes_per_frame"]


def test_corrupt_frame_index_is_rebuilt_in_the_background_and_used(daemon: Daemon,
                                                                    media) -> None:
    daemon.stop()
    path = daemon.state / "frames.faiss"
    with daemon.catalog() as cat:
        model = next(iter(cat.model_versions()))
    background = center_of(load_blob(Path(WEIGHTS) if WEIGHTS else DEFAULT_WEIGHTS))
    assert len(FrameIndex.load(path, model, background)) == 7  # saved at the stop
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    daemon.start()
    daemon.wait_log("built from catalog")
    (warning,) = daemon.lines("rebuilding frame index from catalog")
    assert "checksum mismatch" in warning

    def videos() -> int:
        with Client(daemon.home / "ctl.sock") as client:
            return client.call("status")["index"]["frames"].get("videos", 0)

    wait_until(lambda: videos() == 7, what="the rebuilt frame index in status")
    # The rebuilt index is the one in use: another re-encode of the clip is found in the long
    # video too (its vector, like the clip's, is far from the long video's).
    root = daemon.roots[0]
    shutil.copyfile(media["clip2"], root / "clip2.mp4")
    long = str(root / "library" / "long.mp4")
    wait_until(lambda: any(e["existing"][0]["path"] == long
                           for e in daemon.hook.for_path(root / "clip2.mp4")),
               what=lambda: "clip2's event naming the long video; the log ends:\n"
               + daemon.text()[-4000:])
    assert FrameIndex.load(path, model, background) is not None  # the rebuild was saved
