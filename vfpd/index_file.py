"""The file both indexes are saved in, and loading a saved one (or saying why it is rebuilt).

A container is HEADER_SIZE bytes (magic, the JSON header's length as u32 LE, the header), then
the payload, whose length and BLAKE3 the header holds. The header is patched in after the payload
has streamed to disk, so the checksum is computed on the way. vfpd/index.py and
vfpd/frame_index.py each define their own magic, format and payload.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar

import blake3
import faiss

from vfpd.atomic import remove_stale_temps

if TYPE_CHECKING:
    from vfpd.catalog import Catalog

log = logging.getLogger(__name__)

HEADER_SIZE = 4096
"""Fixed space for the JSON header at the start of the file, patched after the payload is
written (so the payload can stream to disk while its checksum is computed)."""


class IndexLoadError(Exception):
    """The index file cannot be used; the caller rebuilds from the catalog."""



# HEADER_SIZE bytes: magic, the JSON header's length (u32 LE) and the header; then the payload,
# whose length and BLAKE3 the header holds. The header is patched in after the payload has
# streamed to disk, so the checksum is computed on the way.

PayloadSink = Callable[[bytes | memoryview], int]


def write_container(f: BinaryIO, magic: bytes, header: Mapping[str, Any],
                    payload: Callable[[PayloadSink], Mapping[str, Any]]) -> None:
    """Write `payload(sink)` after a reserved header, then the header, with the fields the
    payload returns (section lengths), payload_len and payload_blake3 added. `f` is a fresh file
    (an atomic_writer's)."""
    f.write(b"\0" * HEADER_SIZE)
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    length = 0

    def sink(chunk: bytes | memoryview) -> int:
        nonlocal length
        f.write(chunk)
        hasher.update(chunk)
        length += len(chunk)
        return len(chunk)

    sections = payload(sink)
    blob = json.dumps({**header, **sections, "payload_len": length,
                       "payload_blake3": hasher.hexdigest()}).encode("utf-8")
    if len(blob) + len(magic) + 4 > HEADER_SIZE:
        raise ValueError("index header too large (model version name too long?)")
    f.seek(0)
    f.write(magic + struct.pack("<I", len(blob)) + blob)


def open_container(path: Path, magic: bytes, fmt: int, keys: Sequence[str], what: str,
                   old_formats: Mapping[int, str] | None = None) -> tuple[BinaryIO, dict[str, Any]]:
    """Open a container and check its header and size: (open file, header). Raises
    IndexLoadError saying why the file cannot be used; the caller closes the file."""
    try:
        f = open(path, "rb")
    except FileNotFoundError as e:
        raise IndexLoadError(f"{path}: missing") from e
    except OSError as e:
        raise IndexLoadError(f"{path}: {e.strerror}") from e
    try:
        head = f.read(HEADER_SIZE)
        if len(head) < HEADER_SIZE or not head.startswith(magic):
            raise IndexLoadError(f"{path}: not a vfpd {what} file (bad magic or too short)")
        (n,) = struct.unpack("<I", head[len(magic):len(magic) + 4])
        try:
            header = json.loads(head[len(magic) + 4:len(magic) + 4 + n])
            got = header.get("format")
            if old_formats and got in old_formats:
                raise IndexLoadError(f"{path}: {old_formats[got]}")
            if got != fmt:
                raise IndexLoadError(f"{path}: {what} format {got}, need {fmt}")
            for key in (*keys, "model_version", "payload_len", "payload_blake3"):
                header[key]  # noqa: B018 - presence check
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise IndexLoadError(f"{path}: unreadable header ({e})") from e
        size = os.fstat(f.fileno()).st_size
        if size != HEADER_SIZE + header["payload_len"]:
            raise IndexLoadError(f"{path}: truncated or padded ({size} bytes, expected "
                                 f"{HEADER_SIZE + header['payload_len']})")
    except BaseException:
        f.close()
        raise
    return f, header


def verify_payload(view: memoryview, header: Mapping[str, Any], path: Path) -> None:
    """Check the payload (everything after the header) against the header's BLAKE3."""
    digest = blake3.blake3(max_threads=blake3.blake3.AUTO)
    digest.update(view[HEADER_SIZE:])
    if digest.hexdigest() != header["payload_blake3"]:
        raise IndexLoadError(f"{path}: checksum mismatch (corrupt file)")


def write_faiss(index: faiss.Index, sink: Callable[[bytes], object]) -> None:
    """Stream a FAISS index into the payload through `sink`."""
    writer = faiss.PyCallbackIOWriter(sink)
    faiss.write_index(index, writer)
    del writer  # flushes its buffer


def read_faiss(f: BinaryIO, path: Path) -> faiss.Index:
    """Read the FAISS index that starts at `f`'s position."""
    try:
        reader = faiss.PyCallbackIOReader(f.read)
        index = faiss.read_index(reader)
        del reader
    except RuntimeError as e:
        raise IndexLoadError(f"{path}: FAISS cannot read it: {e}") from e
    return index


class _Covering(Protocol):
    covered_seq: int


L = TypeVar("L", bound=_Covering)


def _rebuild_log_level(error: IndexLoadError, catalog: Catalog) -> int:
    """How loudly to say an index is rebuilt: a missing file beside a catalog that never held a
    fingerprint is a first start (INFO); anything else lost work or a fault (WARNING)."""
    first = isinstance(error.__cause__, FileNotFoundError) and catalog.sequence() == 0
    return logging.INFO if first else logging.WARNING


def load_saved(load: Callable[[], L], catalog: Catalog, path: Path | str, what: str) -> L | None:
    """A saved index (`load()`), after removing the temporary files of an interrupted save;
    None, with a log line saying why, when it is missing, unusable or ahead of the catalog (a
    restored catalog) and must be rebuilt. Shared by the video and the frame index."""
    if remove_stale_temps(path):
        log.info("removed temporary %s files left by an interrupted save", what)
    try:
        index = load()
        if index.covered_seq > catalog.sequence():
            raise IndexLoadError(f"{path}: covers catalog sequence {index.covered_seq}, but the "
                                 f"catalog is at {catalog.sequence()} (catalog restored?)")
    except IndexLoadError as e:
        log.log(_rebuild_log_level(e, catalog), "rebuilding %s from catalog: %s", what, e)
        return None
    return index
