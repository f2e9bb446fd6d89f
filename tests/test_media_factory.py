from __future__ import annotations

from pathlib import Path

import av

from media_factory import make_video, sample_clip


def test_make_video_is_a_real_h264_file(tmp_path: Path) -> None:
    p = make_video(tmp_path / "a.mp4", seconds=2.0)
    with av.open(str(p)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert sum(1 for _ in c.decode(s)) == 50


def test_sample_clips_are_installed() -> None:
    for name in ("bikes", "bigbuckbunny", "carphone_pristine", "carphone_distorted"):
        assert sample_clip(name).stat().st_size > 5_000
