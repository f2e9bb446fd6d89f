"""Probe a video file and sample small frames from it by time, with PyAV: the only place that decodes.

CONTRACT (other parts code against these names):

    probe(path, settings: SamplingSettings | None = None) -> VideoInfo
    sample(path, settings: SamplingSettings = SamplingSettings()) -> SampledVideo
    MediaError and its subclasses, each with a human `.reason` and the `.path`.

What the decoded pictures show (informative frames, bars, the resize to picture.FRAME_SIZE) is
picture.py; the signs of a cut-off file read from its container's index and header, truncation.py.

How sampling works
------------------
Targets lie on a fixed time grid, k * interval seconds after the first frame's timestamp, so a
copy trimmed by a whole number of seconds, re-encoded with other keyframes or at another frame
rate gets frames at the same moments of the footage. The interval is `interval` (1 s) and doubles
until the video fits in `max_frames`; doubling (not stretching) keeps the coarse grid a subset of
the fine one, so a long original and its shorter excerpt still share sample moments.

For each target the decoded frame nearest to it is kept; only kept frames are converted (the
conversion to RGB is a large share of the cost), straight to a small intermediate of
DETECT_SIZE x DETECT_SIZE by swscale. Letterbox/pillarbox bars are found on those intermediates
over all informative frames, cropped, and the crop is resized to FRAME_SIZE.

Decoding policy (measured with bench/speed.py and by hand; 2 shared cores, 61.7 s of 720p H.264
from x264's defaults: keyint 250 = 10 s GOPs, 3 B-frames; numbers are decode wall time)
------------------------------------------------------------------------------------------------
    every frame, FFmpeg threads          3.4 s   18x realtime   (1 thread: the same, cores busy)
    every frame + RGB of every frame     6.0 s   10x            -> convert only the kept frames
    no deblocking (skip_loop_filter)     2.9 s   22x
    skip non-reference frames (NONREF)   1.8 s   34x
    NONREF + no deblocking               1.45 s  43x            64x64 samples differ by 0.6/255
    skip B-frames (BIDIR)                1.2 s   50x            REJECTED: B-pyramid refs; 11/255
    keyframes only (NONKEY)              0.14 s  450x           20 frames in 62 s, 10 s apart
    seek per sample                      -                      each seek decodes from the previous
                                                                keyframe: more than decoding it all
Keyframes alone are the only way past ~50x, but with 10 s GOPs they give a frame every 10 s at
moments set by the encoder, not by the footage: a re-encode of the same film gets other moments
(raw-frame chamfer similarity original vs re-encoded trimmed copy: p10 0.90 keyframes-only vs
0.999 on the time grid). So, per file ("auto"):
  * keyframes only, when the container index shows no keyframe gap above KEYFRAME_MAX_GAP
    intervals (phone and camera recordings with 1 s GOPs, intra-only codecs such as MJPEG, and
    long files where the grid has coarsened to the GOP); keyframes denser than the grid are not
    even decoded;
  * otherwise every reference frame, without deblocking, converting only the frames kept.
`SamplingSettings(keyframes="keyframes")` forces the fast path for users who prefer speed.
`./dev bench speed --policies` (load average 9-18 on the 2 cores while it ran) measured, for 60 s
of 720p from x264's defaults: auto 17x realtime (keyframe ceiling 191x, forced keyframes 128x,
vpdq 4x); for the same footage with 1 s GOPs auto takes the keyframe path at 48x (ceiling 37x).
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import av
import av.codec.hwaccel
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from vfpd.picture import DETECT_SIZE, model_frames
from vfpd.truncation import declared_size_exceeds, index_past_end, looks_like_mp4

TRUNCATED_FRACTION = 0.9
"""A damaged stream that stops before this share of its declared duration is called truncated."""


class MediaError(Exception):
    """A file that cannot be fingerprinted; `reason` says why in words a user understands."""

    kind = "unreadable"

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        # Errors travel from decode workers to the parent by pickle.
        return (type(self), (self.path, self.reason))


class NotAVideo(MediaError):
    kind = "not-a-video"


class NoVideoStream(MediaError):
    kind = "no-video-stream"


class Truncated(MediaError):
    kind = "truncated"


class Unreadable(MediaError):
    kind = "unreadable"


class UnsupportedCodec(MediaError):
    kind = "unsupported-codec"


class TooLarge(MediaError):
    kind = "too-large"


@dataclass(frozen=True)
class VideoInfo:
    """What probing tells about a file, before sampling."""

    container: str
    codec: str
    width: int  # as displayed, after rotation
    height: int
    duration: float | None  # seconds; None when the container does not say
    fps: float | None
    rotation: int  # degrees clockwise applied for display: 0, 90, 180, 270


@dataclass(frozen=True, eq=False)
class SampledVideo:
    """Frames sampled from one video.

    frames       (N, S, S, 3) uint8 RGB, S = picture.FRAME_SIZE; bars removed, rotation applied.
    timestamps   (N,) float64 seconds from the first frame, ascending.
    informative  (N,) bool: False for black, flat and fading frames.
    duration     seconds of video actually decoded/measured.
    info         the probe result.
    crop         (top, bottom, left, right) bars removed, as fractions of the displayed picture.
    keyframes_only  True when only keyframes were decoded (see DECODE POLICY).
    """

    frames: np.ndarray
    timestamps: np.ndarray
    informative: np.ndarray
    duration: float
    info: VideoInfo
    crop: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    keyframes_only: bool = False


HWACCELS = ("none", "cuda")
"""Hardware decoders a SamplingSettings may ask for: NVDEC through FFmpeg's CUDA device (PyAV's
wheels are built with it), or none."""

_hw_unusable: set[str] = set()
"""Hardware decoders this process failed to open a device for: every later file goes straight to
software (decode workers are processes, so each learns it once)."""


@dataclass(frozen=True)
class SamplingSettings:
    """How densely and how a file is sampled, and the limits that protect the decoder."""

    interval: float = 1.0  # seconds between samples (DESIGN.md: about one frame a second)
    max_frames: int = 512  # the interval doubles until the video fits; bounds memory and model cost
    # "auto" decodes keyframes only when they are dense enough (KEYFRAME_MAX_GAP); "keyframes"
    # always; "all" never.
    keyframes: str = "auto"
    # Keyframes alone must give at least this many frames; a file whose keyframes give fewer (a
    # clip shorter than its GOP has one) is sampled on the grid from its reference frames. 1: any.
    min_frames: int = 1
    decoder_threads: int = 0  # 0: FFmpeg picks (one per core)
    # "cuda": decode on the GPU (NVDEC) where FFmpeg can open one, in software otherwise. Not
    # part of what is cached: it changes how, not which, frames are decoded.
    hwaccel: str = "none"
    max_pixels: int = 8192 * 8192  # beyond 8K x 8K a single frame is over 200 MB of RGB
    max_bytes: int = 1 << 40  # 1 TiB: nothing a person keeps as one video file
    remove_bars: bool = True

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError("interval must be positive")
        if self.max_frames < 1:
            raise ValueError("max_frames must be at least 1")
        if self.min_frames < 1:
            raise ValueError("min_frames must be at least 1")
        if self.keyframes not in ("auto", "keyframes", "all"):
            raise ValueError("keyframes must be 'auto', 'keyframes' or 'all'")
        if self.hwaccel not in HWACCELS:
            raise ValueError(f"hwaccel must be one of {', '.join(HWACCELS)}")


KEYFRAME_MAX_GAP = 1.1
"""In "auto" mode keyframes alone are used when no two consecutive keyframes are more than this
many sample intervals apart. A keyframe then lies within half an interval of every target, which
is no worse than the misalignment a trim by a fraction of an interval causes anyway; 10 % slack
lets 1-second GOPs at 29.97 fps (1.001 s) through."""


def grid_interval(duration: float | None, settings: SamplingSettings) -> float:
    """Sampling interval for a video of `duration` seconds: `interval` doubled until it fits."""
    step = settings.interval
    if duration is None or not math.isfinite(duration):
        return step
    while duration / step + 1 > settings.max_frames:
        step *= 2
    return step


def _grid_points(duration: float, step: float) -> int:
    """Targets of the time grid in `duration` seconds (one at time zero)."""
    return int(duration // step) + 1


def _check_file(path: Path) -> int:
    """Size of a readable regular file, or the typed error saying why it is not one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise Unreadable(path, "the file does not exist (moved or deleted?)") from None
    except PermissionError:
        raise Unreadable(path, "permission denied") from None
    except OSError as e:
        raise Unreadable(path, f"cannot read the file: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise Unreadable(path, "this is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise Unreadable(path, "not a regular file (a pipe, socket or device)")
    if not os.access(path, os.R_OK):
        raise Unreadable(path, "permission denied")
    if st.st_size == 0:
        raise NotAVideo(path, "the file is empty (0 bytes)")
    return st.st_size


def _open(path: Path, settings: SamplingSettings) -> av.container.InputContainer:
    size = _check_file(path)
    if size > settings.max_bytes:
        raise TooLarge(path, f"the file is {size} bytes, over the limit of {settings.max_bytes}")
    try:
        return _open_hw(path, settings.hwaccel)
    except PermissionError:
        raise Unreadable(path, "permission denied") from None
    except FileNotFoundError:
        raise Unreadable(path, "the file vanished while being read") from None
    except MemoryError:
        raise  # the caller's memory limit, not a property of the file
    except av.error.InvalidDataError:
        if looks_like_mp4(path):
            raise Truncated(path, "the MP4/MOV file is cut off: its index (moov box) is missing") from None
        raise NotAVideo(path, "FFmpeg does not recognise this as a media file") from None
    except av.error.FFmpegError as e:
        raise NotAVideo(path, f"FFmpeg cannot open it: {e.strerror or e}") from None
    except OSError as e:
        raise Unreadable(path, f"cannot read the file: {e.strerror or e}") from None


def _open_hw(path: Path, hwaccel: str) -> av.container.InputContainer:
    """Open with the hardware decoder asked for; when its device cannot be created (no GPU, no
    driver: FFmpeg refuses before reading the file) the file is opened in software, and so is
    every later one in this process."""
    if hwaccel != "none" and hwaccel not in _hw_unusable:
        try:
            return av.open(str(path), "r", metadata_errors="ignore",
                           hwaccel=av.codec.hwaccel.HWAccel(device_type=hwaccel,
                                                            allow_software_fallback=True))
        except av.error.FFmpegError:
            container = av.open(str(path), "r", metadata_errors="ignore")
            _hw_unusable.add(hwaccel)  # software opened it: the device was at fault, not the file
            return container
    return av.open(str(path), "r", metadata_errors="ignore")


def _video_stream(path: Path, container: av.container.InputContainer) -> av.video.stream.VideoStream:
    for s in container.streams.video:
        if s.disposition & av.stream.Disposition.attached_pic:
            continue  # cover art of an audio file is one still picture
        return s
    if container.streams.audio:
        raise NoVideoStream(path, "the file has sound but no video stream")
    raise NotAVideo(path, f"no video stream in this {container.format.name} file")


def _rotation(stream: av.video.stream.VideoStream, frame: av.VideoFrame | None) -> int:
    """Clockwise display rotation in degrees: the display matrix FFmpeg attaches to decoded frames
    (counter-clockwise there), else a legacy 'rotate' tag (clockwise, as FFmpeg wrote it)."""
    ccw = frame.rotation if frame is not None else 0
    if ccw:
        return int(round(-ccw / 90.0)) * 90 % 360
    tag = stream.metadata.get("rotate")
    if tag is not None:
        try:
            return int(round(float(tag) / 90.0)) * 90 % 360
        except ValueError:
            pass
    return 0


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        d = float(stream.duration * stream.time_base)
        if d > 0:
            return d
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    return None


def _info(path: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
          rotation: int, settings: SamplingSettings) -> VideoInfo:
    cc = stream.codec_context
    w, h = cc.width, cc.height
    if w * h > settings.max_pixels:
        raise TooLarge(path, f"the picture is {w}x{h}, over the limit of {settings.max_pixels} pixels")
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        container=container.format.name,
        codec=cc.name,
        width=w,
        height=h,
        duration=_duration(container, stream),
        fps=float(rate) if rate else None,
        rotation=rotation,
    )


def _with_rotation(info: VideoInfo, rotation: int) -> VideoInfo:
    if rotation in (90, 270):
        return replace(info, rotation=rotation, width=info.height, height=info.width)
    return replace(info, rotation=rotation)


def _decoder_check(path: Path, stream: av.video.stream.VideoStream) -> None:
    try:
        cc = stream.codec_context
    except Exception:  # noqa: BLE001 - PyAV raises various types when no decoder exists
        cc = None
    if cc is None or not cc.is_decoder:
        raise UnsupportedCodec(path, "no decoder for this video codec in the bundled FFmpeg")


T = TypeVar("T")


def _bare_errors(run: Callable[[Path, SamplingSettings], T], path: str | Path,
                 settings: SamplingSettings) -> T:
    """run(path, settings), a MediaError it raises raised again without its traceback and context:
    those hold the decoder (and its threads) alive for as long as the caller keeps the exception."""
    try:
        return run(Path(path), settings)
    except MediaError as e:
        error = e
    error.__traceback__ = None
    error.__context__ = None
    error.__cause__ = None
    raise error


def probe(path: str | Path, settings: SamplingSettings | None = None) -> VideoInfo:
    """What the container says about the file's video stream; raises MediaError subclasses."""
    return _bare_errors(_probe, path, settings or SamplingSettings())


def _probe(path: Path, settings: SamplingSettings) -> VideoInfo:
    with _open(path, settings) as container:
        stream = _video_stream(path, container)
        _decoder_check(path, stream)
        info = _info(path, container, stream, 0, settings)
        first = None
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError:
            pass  # probing only reads headers; sample() reports damaged data
        return _with_rotation(info, _rotation(stream, first))


KEYFRAME_PROBE_SECONDS = 10.0
"""Without a complete index (Matroska/WebM cues name one keyframe per cluster; MPEG-TS/PS have
none) the keyframe spacing is read from this much of the stream's packet headers: it spans a
whole GOP of x264's default (250 frames at 25 fps) and costs no decoding."""


def _keyframe_gap(path: Path, stream: av.video.stream.VideoStream) -> float | None:
    """Largest gap in seconds between consecutive keyframes, from a complete container index
    (every packet listed: MP4/MOV, AVI) or else from the first packets; None when unknown."""
    tb = stream.time_base
    if not tb:
        return None
    try:
        entries = stream.index_entries
        n = len(entries)
        complete = n > 1 and any(not entries[i].is_keyframe for i in range(min(n, 1000)))
        if complete:
            keys = [entries[i].timestamp for i in range(n) if entries[i].is_keyframe]
            ticks = np.diff(np.asarray(keys + [entries[n - 1].timestamp], dtype=np.float64))
            return float(ticks.max() * tb) if ticks.size else None
    except Exception:  # noqa: BLE001 - not every demuxer has an index
        pass
    return _keyframe_gap_by_demux(path, stream.index, tb)


def _keyframe_gap_by_demux(path: Path, index: int, tb: Fraction) -> float | None:
    keys: list[int] = []
    last: int | None = None
    try:
        with av.open(str(path), "r", metadata_errors="ignore") as c:
            s = c.streams[index]
            for packet in c.demux(s):
                if packet.pts is None:
                    continue
                last = packet.pts if last is None else max(last, packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
                if keys and (last - keys[0]) * tb > KEYFRAME_PROBE_SECONDS:
                    break
    except (av.error.FFmpegError, OSError):
        return None
    if not keys or last is None:
        return None
    ticks = np.diff(np.asarray(sorted(keys) + [last], dtype=np.float64))
    return float(ticks.max() * tb) if ticks.size else None


def sample(path: str | Path, settings: SamplingSettings = SamplingSettings()) -> SampledVideo:
    """Frames at fixed times (see module doc); raises MediaError subclasses with a reason."""
    return _bare_errors(_sample, path, settings)


def _sample(path: Path, settings: SamplingSettings) -> SampledVideo:
    with _open(path, settings) as container:
        stream = _video_stream(path, container)
        _decoder_check(path, stream)
        info = _info(path, container, stream, 0, settings)
        sampled = _sample_open(path, container, stream, info, settings)
    step = grid_interval(info.duration, settings)
    if sampled.keyframes_only and len(sampled.timestamps) < min(settings.min_frames,
                                                                 _grid_points(sampled.duration, step)):
        # Too few keyframes for the evidence rule (a clip shorter than its GOP has one): the
        # reference frames give the grid's frames. The keyframe pass cost a frame or two.
        return _sample(path, replace(settings, keyframes="all"))
    return sampled


def _choose_keyframes(path: Path, stream: av.video.stream.VideoStream, step: float,
                      settings: SamplingSettings) -> bool:
    if settings.keyframes != "auto":
        return settings.keyframes == "keyframes"
    gap = _keyframe_gap(path, stream)
    return gap is not None and gap <= KEYFRAME_MAX_GAP * step


def prepare_decoder(path: Path, stream: av.video.stream.VideoStream, duration: float | None,
                    settings: SamplingSettings) -> tuple[float, bool]:
    """Set the stream's decoder up by the DECODE POLICY; (grid interval, keyframes only). The one
    place the policy lives: sampling uses it, and bench/stages.py times decoding alone with it."""
    step = grid_interval(duration, settings)
    keyframes_only = _choose_keyframes(path, stream, step, settings)
    cc = stream.codec_context
    cc.thread_type = "AUTO"
    cc.thread_count = settings.decoder_threads
    # DECODE POLICY: the deblocking filter changes no 64x64 sample measurably (keyframes of 720p
    # x264: mean 0.13/255, median 0) and costs a tenth of a keyframe's decode.
    cc.options = {"skip_loop_filter": "all"}
    if keyframes_only:
        cc.skip_frame = "NONKEY"
    else:
        # Non-reference frames and the deblocking filter cost half the decode and change no 64x64
        # sample measurably (median 0.6/255); a sample lands at most one frame from its grid time
        # instead of at it.
        cc.skip_frame = "NONREF"
    return step, keyframes_only


def _sample_open(path: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 info: VideoInfo, settings: SamplingSettings) -> SampledVideo:
    step, keyframes_only = prepare_decoder(path, stream, info.duration, settings)
    size = os.stat(path).st_size
    damaged = index_past_end(stream, size) or declared_size_exceeds(path, size)
    tb = stream.time_base

    kept: list[np.ndarray] = []
    times: list[float] = []
    # Time zero is the stream's start, not the first frame decoded: in a copy cut without
    # re-encoding, the frames before the cut's first keyframe are decoded but never shown, and
    # with keyframes only the first frame out would be the next keyframe, seconds later.
    t0: float | None = float(stream.start_time * tb) if stream.start_time is not None and tb else None
    end = 0.0  # latest presentation end seen in the packets, seconds from t0
    last_t = -1.0
    target = 0.0
    prev: av.VideoFrame | None = None
    prev_t = 0.0
    rotation: int | None = None
    # One scaler for the file: a frame's own to_ndarray() sets a new one up for every frame,
    # which cost as much as the conversion itself.
    scaler = VideoReformatter()

    def keep(frame: av.VideoFrame, t: float) -> None:
        nonlocal rotation, target
        if rotation is None:
            rotation = _rotation(stream, frame)
        img = scaler.reformat(frame, width=DETECT_SIZE, height=DETECT_SIZE, format="rgb24",
                              interpolation="AREA").to_ndarray()
        if rotation:
            img = np.rot90(img, k=-rotation // 90)  # np.rot90 turns counter-clockwise
        kept.append(np.ascontiguousarray(img))
        times.append(max(t, 0.0))  # a frame a hair before the start stands for time zero
        target = (math.floor(t / step + 0.5) + 1) * step

    try:
        for packet in container.demux(stream):
            if packet.is_corrupt:
                damaged = True
            if packet.pts is not None and tb and t0 is not None:
                # Integer true division rounds once, as float(Fraction) does, at a fraction of
                # its cost: this runs for every packet.
                pt = packet.pts * tb.numerator / tb.denominator - t0
                end = max(end, pt + (packet.duration or 0) * tb.numerator / tb.denominator)
                if keyframes_only and packet.is_keyframe and pt < target - step / 2:
                    continue  # keyframes denser than the grid: this one would be thrown away
            try:
                frames = packet.decode()
            except av.error.MemoryError:
                raise
            except av.error.InvalidDataError:
                damaged = True
                continue
            for frame in frames:
                if frame.time is None:
                    continue
                if t0 is None:
                    t0 = float(frame.time)
                t = float(frame.time) - t0
                if t <= last_t or t < -step / 2:
                    continue  # repeated, out-of-order or before the start; keep the series ascending
                last_t = t
                end = max(end, t)
                # Each target takes the frame nearest to it within half an interval; a target
                # with no frame that near (a gap in a variable-frame-rate stream) takes none.
                while t >= target + step / 2:
                    if prev is not None:
                        keep(prev, prev_t)
                        prev = None
                    else:
                        target = math.floor(t / step + 0.5) * step
                if t >= target - step / 2 and (prev is None or abs(t - target) < abs(prev_t - target)):
                    prev, prev_t = frame, t
    except MemoryError:
        raise  # the caller's memory limit (decode workers report it), not a property of the file
    except av.error.FFmpegError:
        damaged = True
    if prev is not None:
        keep(prev, prev_t)
    prev = None

    if not kept:
        if damaged:
            raise Truncated(path, "the file is damaged or cut off: no picture could be decoded")
        raise NotAVideo(path, "no picture could be decoded from the video stream")
    measured = max(end, last_t + (1.0 / info.fps if info.fps else 0.0))
    if damaged and info.duration and measured < TRUNCATED_FRACTION * info.duration:
        raise Truncated(path, f"the file is cut off or damaged: the picture stops at {measured:.1f} s "
                              f"of {info.duration:.1f} s")
    frames, informative, crop = model_frames(np.stack(kept), settings.remove_bars)
    return SampledVideo(frames=frames, timestamps=np.asarray(times, dtype=np.float64),
                        informative=informative, duration=measured,
                        info=_with_rotation(info, rotation or 0), crop=crop,
                        keyframes_only=keyframes_only)
