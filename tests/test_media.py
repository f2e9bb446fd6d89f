"""vfpd.media on real files encoded here with PyAV: codecs, containers, rotation, VFR, bars, errors."""

from __future__ import annotations

import os
import struct
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from media_factory import encode, make_video, moving_scene, read_frames
from vfpd import media, picture
from vfpd.media import SamplingSettings

BAD_FILE_SECONDS = 1.0  # the promise: a small bad file is refused within a second


def _has_encoder(name: str) -> bool:
    return name in av.codecs_available


def _native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _enc_options(codec: str) -> dict[str, str] | None:
    if codec in ("mpeg4", "mpeg2video", "wmv2", "flv"):
        return {"b": "2000000"}  # their default 200 kb/s smears a 160x128 picture
    return {"libx265": {"x265-params": "log-level=none"}, "libsvtav1": {"preset": "12"}}.get(codec)


CODECS = [
    ("libx264", "mp4", "yuv420p"),
    ("libx264", "m4v", "yuv420p"),
    ("libx264", "mov", "yuv420p"),
    ("libx265", "mkv", "yuv420p"),
    ("libvpx-vp9", "webm", "yuv420p"),
    ("libvpx", "webm", "yuv420p"),
    ("mpeg4", "avi", "yuv420p"),
    ("mpeg2video", "ts", "yuv420p"),
    ("mpeg2video", "mpg", "yuv420p"),
    ("mjpeg", "avi", "yuvj420p"),
    ("mjpeg", "mov", "yuvj420p"),
    ("libsvtav1", "mkv", "yuv420p"),
    ("wmv2", "wmv", "yuv420p"),
    ("flv", "flv", "yuv420p"),
]


def _expected(fn: object, times: np.ndarray, fps: float) -> np.ndarray:
    """The source pictures at `times`, brought to FRAME_SIZE the way the sampler does."""
    out = []
    for t in times:
        img = fn(int(round(t * fps)), float(t))  # type: ignore[operator]
        small = av.VideoFrame.from_ndarray(img, format="rgb24").to_ndarray(
            width=picture.DETECT_SIZE, height=picture.DETECT_SIZE, format="rgb24", interpolation="AREA")
        out.append(av.VideoFrame.from_ndarray(small, format="rgb24").to_ndarray(
            width=picture.FRAME_SIZE, height=picture.FRAME_SIZE, format="rgb24", interpolation="AREA"))
    return np.stack(out)


@pytest.mark.parametrize("codec,ext,pix_fmt", CODECS, ids=[f"{c}-{e}" for c, e, _ in CODECS])
def test_codecs_and_containers_sample_the_same_picture(tmp_path: Path, codec: str, ext: str,
                                                        pix_fmt: str) -> None:
    if not _has_encoder(codec):
        pytest.skip(f"PyAV's FFmpeg has no {codec} encoder")
    path = make_video(tmp_path / f"v.{ext}", seconds=3.2, width=160, height=128, codec=codec,
                      pix_fmt=pix_fmt, options=_enc_options(codec))
    s = media.sample(path)
    assert s.frames.shape == (4, 64, 64, 3) and s.frames.dtype == np.uint8
    # Keyframes-only decoding (intra codecs, short GOPs) lands within a quarter interval here.
    np.testing.assert_allclose(s.timestamps, [0, 1, 2, 3], atol=0.25 if s.keyframes_only else 0.05)
    assert abs(s.duration - 3.2) < 0.1
    assert s.info.width == 160 and s.info.height == 128
    expected = _expected(moving_scene(160, 128, 0), s.timestamps, 25.0).astype(float)
    diff = np.abs(s.frames.astype(float) - expected).mean()
    other = np.abs(s.frames.astype(float) - expected[::-1]).mean()
    assert diff < 12 and diff < other / 3, f"{codec}/{ext}: {diff:.1f} from the source, {other:.1f} from others"
    assert s.informative.all()


def test_probe_reports_the_stream(tmp_path: Path) -> None:
    path = make_video(tmp_path / "p.mp4", seconds=2.0, width=320, height=240, fps=30)
    info = media.probe(path)
    assert (info.codec, info.width, info.height, info.rotation) == ("h264", 320, 240, 0)
    assert info.container.startswith("mov")
    assert abs(info.fps - 30) < 0.01 and abs(info.duration - 2.0) < 0.05


def _marked(w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), 90, np.uint8)
    img[: h // 4, : w // 4] = (255, 40, 40)  # a red block in the top-left corner
    img[h // 2:, :, 1] = 160  # and a textured lower half so the frame is informative
    img[h // 2::4, :, 2] = 250
    return img


@pytest.mark.parametrize("ccw,where", [(90, "bottom-left"), (270, "top-right"), (180, "bottom-right")])
def test_display_matrix_rotation_is_applied(tmp_path: Path, ccw: int, where: str) -> None:
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 96, "yuv420p"
        s.set_display_rotation(ccw)  # counter-clockwise, as in the display matrix
        for _ in range(30):
            for p in s.encode(av.VideoFrame.from_ndarray(_marked(160, 96), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    sampled = media.sample(path)
    assert sampled.info.rotation == (360 - ccw) % 360
    if ccw in (90, 270):
        assert (sampled.info.width, sampled.info.height) == (96, 160)
    assert media.probe(path).rotation == sampled.info.rotation
    red = np.argwhere((sampled.frames[0, ..., 0] > 200) & (sampled.frames[0, ..., 1] < 100)).mean(axis=0)
    vert = "bottom" if red[0] > 32 else "top"
    horiz = "right" if red[1] > 32 else "left"
    assert f"{vert}-{horiz}" == where


def test_variable_frame_rate_samples_by_time(tmp_path: Path) -> None:
    """Frames at irregular times (30 fps, then 4 fps, then a 2 s gap): each sample shows the picture
    of its timestamp; brightness encodes the time."""
    times = [i / 30 for i in range(60)] + [2 + i / 4 for i in range(8)] + [6 + i / 30 for i in range(60)]
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for t in times:
            img = np.full((64, 64, 3), int(20 + 25 * t), np.uint8)
            img[::8] = 0  # edges, so the frame counts as informative
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = int(round(t * 1000)), Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    sampled = media.sample(path, SamplingSettings(keyframes="all"))
    ts = sampled.timestamps
    assert np.all(np.diff(ts) > 0)
    # Targets 0..8: 3.75 s is the nearest frame to 4; 5 falls into the gap (no frame within half
    # a second); 7 may land one 30 fps frame early because non-reference frames are skipped.
    np.testing.assert_allclose(ts, [0, 1, 2, 3, 3.75, 6, 7, 8], atol=0.04)
    level = sampled.frames[..., 1][:, 1:7, 1:7].mean(axis=(1, 2))
    np.testing.assert_allclose(level, 20 + 25 * ts, atol=8)  # 8 levels: a third of a second


def test_odd_size(tmp_path: Path) -> None:
    fn = moving_scene(321, 241, seed=3)
    path = tmp_path / "odd.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 321, 241, "yuv444p"  # 4:4:4 allows odd sizes
        for i in range(50):
            for p in s.encode(av.VideoFrame.from_ndarray(fn(i, i / 25), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    sampled = media.sample(path)
    assert (sampled.info.width, sampled.info.height) == (321, 241)
    assert sampled.frames.shape == (3, 64, 64, 3)  # 0, 1 and 1.96 s


def _pad(img: np.ndarray, top: int, bottom: int, left: int, right: int,
         colour: tuple[int, int, int]) -> np.ndarray:
    return np.stack([np.pad(img[..., c], ((top, bottom), (left, right)), constant_values=v)
                     for c, v in enumerate(colour)], axis=-1)


@pytest.mark.parametrize("pad,colour", [
    ((104, 104, 0, 0), (0, 0, 0)),
    ((0, 0, 120, 120), (0, 0, 0)),
    ((40, 40, 60, 60), (0, 0, 0)),
    ((36, 36, 64, 64), (46, 139, 87)),  # the picture shrunk inside a coloured frame
    ((0, 0, 90, 90), (240, 230, 140)),  # pale side panels
], ids=["letterbox", "pillarbox", "windowbox", "coloured-frame", "pale-panels"])
def test_bars_are_removed(tmp_path: Path, bikes: Path, pad: tuple[int, int, int, int],
                          colour: tuple[int, int, int]) -> None:
    frames = [img for _, img in read_frames(bikes, limit=125)]
    orig = media.sample(encode(tmp_path / "o.mp4", frames))
    boxed = media.sample(encode(tmp_path / "b.mp4", (_pad(f, *pad, colour) for f in frames)))
    h, w = frames[0].shape[:2] + np.array([pad[0] + pad[1], pad[2] + pad[3]])
    expected = (pad[0] / h, pad[1] / h, pad[2] / w, pad[3] / w)
    np.testing.assert_allclose(boxed.crop, expected, atol=2.5 / picture.DETECT_SIZE)
    assert orig.crop == (0.0, 0.0, 0.0, 0.0)
    diff = np.abs(boxed.frames.astype(float) - orig.frames.astype(float)).mean()
    kept = media.sample(tmp_path / "b.mp4", SamplingSettings(remove_bars=False))
    diff_kept = np.abs(kept.frames.astype(float) - orig.frames.astype(float)).mean()
    assert diff < 8 and diff < diff_kept / 4, (diff, diff_kept)


def test_dark_scene_is_not_a_bar(tmp_path: Path) -> None:
    """A picture whose top is dark but textured (night sky with stars) keeps its top."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(75):
        img = moving_scene(160, 128, 1)(i, i / 25)
        sky = rng.integers(0, 12, size=(40, 160, 3), dtype=np.uint8)
        sky[rng.random((40, 160)) < 0.03] = 230
        img[:40] = sky
        frames.append(img)
    sampled = media.sample(encode(tmp_path / "n.mp4", frames))
    assert sampled.crop[0] == 0.0


def test_black_flat_and_faded_frames_are_not_informative(tmp_path: Path) -> None:
    fn = moving_scene(160, 128, seed=5)

    def frame(i: int) -> np.ndarray:
        t = i / 25
        if t < 2:
            return np.zeros((128, 160, 3), np.uint8)  # black leader
        if t < 3:
            return np.full((128, 160, 3), 128, np.uint8)  # flat grey card
        img = fn(i, t).astype(np.float32)
        if t >= 6:
            img *= 0.06 * max(0.0, 1 - (t - 6) / 2)  # the last steps of a fade to black
        return img.astype(np.uint8)

    sampled = media.sample(encode(tmp_path / "f.mp4", (frame(i) for i in range(200))))
    np.testing.assert_allclose(sampled.timestamps, np.arange(9), atol=0.05)
    assert sampled.informative.tolist() == [False] * 3 + [True] * 3 + [False] * 3


@pytest.mark.parametrize("fps,gop,keyframes_only,tolerance", [
    (30, 250, False, 0.045),  # sparse keyframes: every reference frame decoded, within one frame
    (25, 7, True, 0.15),  # keyframes every 0.28 s: keyframes alone, within half a GOP
], ids=["all-frames", "keyframes-only"])
def test_trimmed_copy_samples_line_up(tmp_path: Path, fps: int, gop: int, keyframes_only: bool,
                                      tolerance: float) -> None:
    """A copy trimmed by 3.0 s, re-encoded with other keyframes (and frame rate): its sample
    times are the original's minus 3 s, with the same pictures."""
    fn = moving_scene(192, 144, seed=7)
    orig = media.sample(encode(tmp_path / "o.mp4", (fn(0, i / 25) for i in range(12 * 25))))
    copy = media.sample(encode(tmp_path / "c.mkv", (fn(0, 3.0 + i / fps) for i in range(9 * fps)),
                               fps=fps, gop=gop))
    assert copy.keyframes_only is keyframes_only and not orig.keyframes_only
    later = orig.timestamps >= 3.0 - 1e-6
    shifted = orig.timestamps[later] - 3.0
    n = min(len(shifted), len(copy.timestamps))
    assert n >= 8
    np.testing.assert_allclose(copy.timestamps[:n], shifted[:n], atol=tolerance)
    a = copy.frames[:n].astype(float)
    b = orig.frames[later][:n].astype(float)
    aligned = np.abs(a - b).mean()
    off_by_one = np.abs(a[1:] - b[:-1]).mean()
    assert aligned < off_by_one / 3, (aligned, off_by_one)


def test_interval_grows_by_doubling_for_long_videos() -> None:
    s = SamplingSettings(interval=1.0, max_frames=512)
    assert media.grid_interval(60, s) == 1.0
    assert media.grid_interval(3600, s) == 8.0  # 451 samples
    assert media.grid_interval(None, s) == 1.0
    for d in (100, 1000, 10000, 100000):
        step = media.grid_interval(d, s)
        assert d / step + 1 <= 512 and np.log2(step) == int(np.log2(step))


def test_dense_keyframes_decode_keyframes_only(tmp_path: Path) -> None:
    path = make_video(tmp_path / "k.mp4", seconds=4.2, gop=5)
    s = media.sample(path)
    assert s.keyframes_only
    np.testing.assert_allclose(s.timestamps, [0, 1, 2, 3, 4], atol=0.05)
    sparse = media.sample(make_video(tmp_path / "s.mp4", seconds=4.2, gop=250))
    assert not sparse.keyframes_only and len(sparse.timestamps) == 5


def test_wrong_header_duration_still_works(tmp_path: Path) -> None:
    """A Matroska file whose header claims three times its real length is intact: it samples fine."""
    path = make_video(tmp_path / "w.mkv", seconds=3.0)
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89\x88") + 3  # Segment Info Duration, an 8-byte float
    (d,) = struct.unpack(">d", data[at:at + 8])
    data[at:at + 8] = struct.pack(">d", d * 3)
    path.write_bytes(bytes(data))
    assert media.probe(path).duration > 8
    s = media.sample(path)
    assert abs(s.duration - 3.0) < 0.1 and len(s.timestamps) == 4  # 0, 1, 2, 2.96 s


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=44100)
        for i in range(20):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 44100, i * 1024
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _bad(kind: str, tmp_path: Path) -> Path:
    if kind == "zero":
        p = tmp_path / "zero.mp4"
        p.touch()
    elif kind == "text":
        p = tmp_path / "notes.mp4"
        p.write_text("This is a shopping list, not a film.\n" * 40)
    elif kind == "random":
        p = tmp_path / "noise.mp4"
        p.write_bytes(np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    elif kind == "audio":
        p = _audio_only(tmp_path / "song.m4a")
    elif kind == "truncated-mp4":
        p = make_video(tmp_path / "cut.mp4", seconds=4.0)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif kind == "truncated-faststart":
        p = tmp_path / "cutfs.mp4"
        src = make_video(tmp_path / "src.mp4", seconds=4.0)
        with av.open(str(src)) as i, av.open(str(p), "w", options={"movflags": "faststart"}) as o:
            out = o.add_stream_from_template(i.streams.video[0])
            for pkt in i.demux(i.streams.video[0]):
                if pkt.dts is not None:
                    pkt.stream = out
                    o.mux(pkt)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif kind == "truncated-mkv":
        p = make_video(tmp_path / "cut.mkv", seconds=4.0)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    elif kind == "missing":
        p = tmp_path / "gone.mp4"
    elif kind == "directory":
        p = tmp_path / "folder.mp4"
        p.mkdir()
    elif kind == "fifo":
        p = tmp_path / "pipe.mp4"
        os.mkfifo(p)
    else:
        raise AssertionError(kind)
    return p


BAD = [
    ("zero", media.NotAVideo, "empty"),
    ("text", media.NotAVideo, "not recognise"),
    ("random", media.NotAVideo, ""),
    ("audio", media.NoVideoStream, "no video"),
    ("truncated-mp4", media.Truncated, "cut off"),
    ("truncated-faststart", media.Truncated, "cut off"),
    ("truncated-mkv", media.Truncated, "cut off"),
    ("missing", media.Unreadable, "does not exist"),
    ("directory", media.Unreadable, "directory"),
    ("fifo", media.Unreadable, "not a regular file"),
]


@pytest.mark.parametrize("kind,error,words", BAD, ids=[b[0] for b in BAD])
def test_broken_inputs_raise_typed_errors_quickly(tmp_path: Path, kind: str, error: type, words: str) -> None:
    path = _bad(kind, tmp_path)
    threads = _native_threads()
    # probe() reads headers only; a cut-off body is for sample() to find.
    for fn in (media.sample,) if kind.startswith("truncated") else (media.sample, media.probe):
        start = time.monotonic()
        with pytest.raises(media.MediaError) as exc:
            fn(path)
        elapsed = time.monotonic() - start
        assert type(exc.value) is error, exc.value
        assert words in exc.value.reason
        assert exc.value.path == str(path) and exc.value.reason
        assert elapsed < BAD_FILE_SECONDS
    assert _native_threads() == threads
    assert threading.active_count() >= 1


def test_unsupported_codec(tmp_path: Path) -> None:
    """An AVI whose video FourCC names a codec FFmpeg does not know."""
    path = make_video(tmp_path / "x.avi", seconds=1.0, codec="mpeg4")
    data = path.read_bytes()
    assert b"FMP4" in data
    path.write_bytes(data.replace(b"FMP4", b"QQQQ"))
    with pytest.raises(media.UnsupportedCodec) as exc:
        media.sample(path)
    assert "decoder" in exc.value.reason


def test_too_large(tmp_path: Path) -> None:
    path = make_video(tmp_path / "big.mp4", seconds=1.0, width=320, height=240)
    with pytest.raises(media.TooLarge, match="320x240"):
        media.sample(path, SamplingSettings(max_pixels=200 * 200))
    with pytest.raises(media.TooLarge, match="bytes"):
        media.probe(path, SamplingSettings(max_bytes=1000))


def test_errors_pickle_with_their_reason() -> None:
    import pickle

    e = pickle.loads(pickle.dumps(media.Truncated("/x.mp4", "cut off at 3 s")))
    assert type(e) is media.Truncated and e.path == "/x.mp4" and e.reason == "cut off at 3 s"
    assert e.kind == "truncated"


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        SamplingSettings(interval=0)
    with pytest.raises(ValueError):
        SamplingSettings(keyframes="some")


def test_gpu_decoding_falls_back_to_software_without_nvdec(tmp_path: Path) -> None:
    """`--device cuda` asks the workers for NVDEC; a machine without one (this one, or a CUDA
    GPU whose device FFmpeg cannot create) decodes the same frames in software. The GPU path
    itself is unmeasured (no GPU where this was written)."""
    if "cuda" in media._hw_unusable:  # noqa: SLF001 - a process learns it once
        media._hw_unusable.discard("cuda")  # noqa: SLF001
    path = make_video(tmp_path / "v.mp4", seconds=3)
    soft = media.sample(path, SamplingSettings())
    for _ in range(2):  # the first finds the device missing, the second goes straight to software
        hw = media.sample(path, SamplingSettings(hwaccel="cuda"))
        np.testing.assert_array_equal(hw.timestamps, soft.timestamps)
        if "cuda" in media._hw_unusable:  # noqa: SLF001 - software: the very same frames
            np.testing.assert_array_equal(hw.frames, soft.frames)
        else:  # a real NVDEC deblocks (skip_loop_filter is software's): nearly the same
            assert np.abs(hw.frames.astype(int) - soft.frames).mean() < 2
    with pytest.raises(ValueError):
        SamplingSettings(hwaccel="vaapi")
