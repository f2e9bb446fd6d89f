"""Signs that a video file was cut off, read from its container's own structure (index, header)
rather than from decoding it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import av.video.stream


def looks_like_mp4(path: Path) -> bool:
    """The file starts with an MP4/MOV box: when FFmpeg cannot open such a file, its index (the
    moov box) is missing, which is how a cut-off MP4 without faststart looks."""
    with open(path, "rb") as f:
        head = f.read(12)
    return head[4:8] in (b"ftyp", b"mdat", b"moov", b"free", b"wide")


def index_past_end(stream: av.video.stream.VideoStream, size: int) -> bool:
    """True when the container index points at data beyond the end of the file (cut off)."""
    try:
        entries = stream.index_entries
        n = len(entries)
        if n == 0:
            return False
        last = entries[n - 1]
        return last.pos + last.size > size
    except Exception:  # noqa: BLE001
        return False


def _ebml_vint(data: bytes, at: int, keep_marker: bool) -> tuple[int, int]:
    """(value, length) of the EBML variable-length integer at `at`; value -1 means unknown size."""
    first = data[at]
    length = 9 - first.bit_length() if first else 9
    if length > 8 or at + length > len(data):
        raise ValueError("bad EBML number")
    value = int.from_bytes(data[at:at + length], "big")
    if keep_marker:
        return value, length
    value &= (1 << (7 * length)) - 1
    return (-1 if value == (1 << (7 * length)) - 1 else value), length


def declared_size_exceeds(path: Path, size: int) -> bool:
    """True when the container's own header declares more bytes than the file has: the signature
    of a copy or download that stopped early (Matroska/WebM segment, AVI RIFF)."""
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    try:
        if head[:4] == b"RIFF":
            return int.from_bytes(head[4:8], "little") + 8 > size
        if head[:4] == b"\x1a\x45\xdf\xa3":
            at = 4
            hsize, n = _ebml_vint(head, at, False)
            at += n + hsize
            seg_id, n = _ebml_vint(head, at, True)
            if seg_id != 0x18538067:
                return False
            at += n
            seg_size, n = _ebml_vint(head, at, False)
            return seg_size >= 0 and at + n + seg_size > size
    except (ValueError, IndexError):
        return False
    return False
