"""The action journal: append-only JSON lines, each fsynced before the change it announces, and each
sealed with an HMAC chained to the one before, so that `vfpctl undo` follows only what this tool
wrote. The key is random, made on first use, and kept 0600 in the user's state directory.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

JOURNAL_FORMAT = "vfpd-actions"
JOURNAL_VERSION = 2
"""2: every line carries a chained HMAC ("mac"); version 1 journals had none and are refused."""

KEY_NAME = "journal.key"
KEY_BYTES = 32
"""256 random bits: the HMAC-SHA256 key length that leaves nothing to guess."""

MAC_FIELD = "mac"


class JournalError(ValueError):
    """The journal file is missing, not a vfpd journal, or damaged."""


class JournalRefused(JournalError):
    """The journal fails its seal: not written by this tool with this user's key, or altered."""


def default_key_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("vfpd"))


def load_key(directory: Path) -> bytes:
    """The user's journal key, created (0600, in a 0700 folder) on first use. A key that others
    can read or replace is refused: it would let them seal journals of their own."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / KEY_NAME
    if not os.path.lexists(path):
        # Written whole under a private name, then linked into place (never replacing): a second
        # process starting at the same moment reads one complete key, never a half-written one.
        tmp = directory / f".{KEY_NAME}.{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise JournalError(f"cannot read the journal key {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise JournalError(f"the journal key {path} must be a file of yours that only you can "
                               "read (mode 0600)")
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise JournalError(f"the journal key {path} is damaged (not {KEY_BYTES} bytes)")
    return key


def _seal(key: bytes, previous: str, record: dict[str, object]) -> tuple[str, str]:
    """(the line's JSON without the seal, the seal). ensure_ascii keeps non-UTF-8 names (surrogate
    escapes) exact through a round trip, and makes the body's bytes reproducible when re-read."""
    body = json.dumps(record, ensure_ascii=True)
    mac = hmac.new(key, previous.encode() + b"\n" + body.encode(), hashlib.sha256).hexdigest()
    return body, mac


class Journal:
    """An open journal. The header records the action and the scanned roots (resolved), which undo
    holds every line to."""

    def __init__(self, path: str | Path, key: bytes, action: dict[str, object],
                 roots: list[str]) -> None:
        self.path = Path(path)
        self.key = key
        self.roots = [os.path.realpath(r) for r in roots]
        self._last = ""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "w", encoding="utf-8")
        self.write({"journal": JOURNAL_FORMAT, "version": JOURNAL_VERSION,
                    "id": secrets.token_hex(16),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": action,
                    "roots": self.roots})
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @classmethod
    def reopen(cls, read: ReadJournal, key: bytes) -> Journal:
        """Append to a journal that was read (and verified); a torn last line is cut off first."""
        self = cls.__new__(cls)
        self.path, self.key, self.roots, self._last = read.path, key, read.roots, read.last_mac
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        os.ftruncate(fd, read.good_length)
        os.lseek(fd, 0, os.SEEK_END)
        self._file = os.fdopen(fd, "w", encoding="utf-8")
        return self

    def write(self, record: dict[str, object]) -> None:
        body, mac = _seal(self.key, self._last, record)
        self._file.write(f'{body[:-1]}, "{MAC_FIELD}": "{mac}"}}\n')
        self._file.flush()
        os.fsync(self._file.fileno())
        self._last = mac

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class ReadJournal:
    path: Path
    header: dict[str, object]
    records: list[dict[str, object]]  # every line after the header, seals removed
    roots: list[str]
    last_mac: str
    good_length: int  # bytes up to the end of the last whole line


def read_journal(path: str | Path, key: bytes) -> ReadJournal:
    """Read and verify a journal: every line's seal, in order. Raises JournalError (missing, not a
    journal) or JournalRefused (a seal fails: altered, reordered, or not sealed with `key`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise JournalError(f"{path}: no such journal") from None
    except OSError as e:
        raise JournalError(f"{path}: cannot read: {e.strerror}") from None
    lines = data.split(b"\n")
    records: list[dict[str, object]] = []
    previous, offset, good = "", 0, 0
    for n, raw in enumerate(lines, 1):
        offset += len(raw) + 1
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except (UnicodeDecodeError, ValueError):
            # Only the last line can be torn by a crash mid-write; anything else is damage.
            if n == len(lines):
                break
            raise JournalError(f"{path}:{n}: not a JSON line") from None
        if n == 1 and record.get("journal") != JOURNAL_FORMAT:
            raise JournalError(f"{path}: not a vfpd action journal")
        if n == 1 and record.get("version") != JOURNAL_VERSION:
            raise JournalRefused(f"{path}: a version {record.get('version')} journal has no seal "
                                 "to verify; undo it by hand")
        mac = record.pop(MAC_FIELD, None)
        _, expected = _seal(key, previous, record)
        if not isinstance(mac, str) or not hmac.compare_digest(mac, expected):
            raise JournalRefused(f"{path}: line {n} fails its seal: the journal was not written by "
                                 "this vfpd for this user, or has been altered")
        records.append(record)
        previous, good = mac, min(offset, len(data))
    if not records:
        raise JournalError(f"{path}: not a vfpd action journal")
    header = records[0]
    roots = header.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, str) and os.path.isabs(r)
                                              for r in roots):
        raise JournalError(f"{path}: the journal records no scanned folders")
    return ReadJournal(path, header, records[1:], roots, previous, good)
