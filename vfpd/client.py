"""The control protocol as both ends see it, and the client that `vfpctl` uses to talk to vfpd.

Wire format (docs/protocol.md): one JSON object per line each way over a Unix stream socket.
The server imports the constants from here so both ends share one definition.
"""

from __future__ import annotations

import array
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = 1

MAX_LINE_BYTES = 1 << 20
"""Largest request line the server accepts (1 MiB): far above any real request, far below harm."""

MAX_REPLY_LINE_BYTES = 64 << 20
"""Largest reply line the client reads; replies are small or streamed, so this only stops a
runaway peer from filling the client's memory."""

CONNECT_TIMEOUT_S = 5.0
"""A live daemon accepts in microseconds; five seconds covers a machine under heavy load."""

DEFAULT_REPLY_TIMEOUT_S = 300.0
"""`query` of a file outside the library decodes and embeds it on the daemon, loading the model
first if it is idle: minutes on a slow CPU for a long video, so the default is generous."""

# Error codes: stable strings that scripts can switch on (docs/protocol.md lists each).
E_BAD_JSON = "bad-json"
E_BAD_REQUEST = "bad-request"
E_TOO_LARGE = "too-large"
E_VERSION = "unsupported-version"
E_UNKNOWN_COMMAND = "unknown-command"
E_BAD_ARGS = "bad-args"
E_OUTSIDE_ROOTS = "outside-roots"
E_NOT_FOUND = "not-found"
E_BUSY = "busy"
E_FORBIDDEN = "forbidden"
E_TIMEOUT = "timeout"
E_UNREADABLE = "unreadable"
E_INTERNAL = "internal"


def encode(message: dict[str, Any]) -> bytes:
    """One protocol line. ASCII-only JSON, so undecodable file names (surrogates) survive."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
        "ascii"
    ) + b"\n"


class ControlError(Exception):
    """The daemon answered with an error, or the conversation broke."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class DaemonNotRunning(ControlError):
    """Nothing listens on the socket."""

    def __init__(self, socket_path: Path, reason: str) -> None:
        super().__init__("not-running",
                         f"vfpd is not running (no daemon at {socket_path}: {reason})")
        self.socket_path = socket_path


@dataclass(frozen=True)
class Stream:
    """A streamed reply: iterate `items` (read from the socket as they are consumed)."""

    items: Iterator[Any]


class Client:
    """One connection to the daemon; requests are sent one after another on it."""

    def __init__(self, socket_path: Path, timeout: float = DEFAULT_REPLY_TIMEOUT_S) -> None:
        self.socket_path = Path(socket_path)
        self._timeout = timeout
        self._next_id = 1
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(os.fsencode(self.socket_path))
        except FileNotFoundError:
            sock.close()
            raise DaemonNotRunning(self.socket_path, "no socket file") from None
        except ConnectionRefusedError:
            sock.close()
            raise DaemonNotRunning(self.socket_path,
                                   "stale socket file, nobody listening") from None
        except PermissionError:
            sock.close()
            raise ControlError(
                E_FORBIDDEN, f"permission denied on {self.socket_path} (run as the daemon's user "
                "or a member of its group)"
            ) from None
        except OSError as exc:
            sock.close()
            raise DaemonNotRunning(self.socket_path, exc.strerror or str(exc)) from None
        sock.settimeout(timeout)
        self._sock = sock
        self._reader = sock.makefile("rb")

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, cmd: str, args: dict[str, Any], fds: list[int] | None) -> int:
        request_id = self._next_id
        self._next_id += 1
        line = encode({"v": PROTOCOL_VERSION, "id": request_id, "cmd": cmd, "args": args})
        try:
            if fds:
                # The descriptors ride on the first bytes of the line; the server attaches them to
                # the request that line completes.
                ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                sent = self._sock.sendmsg([line], ancillary)
                self._sock.sendall(line[sent:])
            else:
                self._sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # A daemon past its connection limit answers `busy` and closes before reading the
            # request: its line is already waiting here and says why.
            try:
                refusal = self._read()
            except ControlError:
                refusal = {}
            if refusal.get("ok") is False:
                self._raise_error(refusal)
            raise ControlError("disconnected",
                               f"the daemon closed the connection ({exc})") from None
        return request_id

    def _read(self) -> dict[str, Any]:
        try:
            line = self._reader.readline(MAX_REPLY_LINE_BYTES + 1)
        except TimeoutError:
            raise ControlError(E_TIMEOUT, f"no reply within {self._timeout:g} s") from None
        except ConnectionResetError as exc:
            raise ControlError("disconnected",
                               f"the daemon closed the connection ({exc})") from None
        if not line:
            raise ControlError("disconnected", "the daemon closed the connection")
        if not line.endswith(b"\n"):
            raise ControlError(E_TOO_LARGE, "reply line too long or cut short")
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise ControlError(E_BAD_JSON, f"the daemon sent invalid JSON: {exc}") from None
        if not isinstance(message, dict):
            raise ControlError(E_BAD_JSON, "the daemon sent a reply that is not an object")
        return message

    @staticmethod
    def _raise_error(message: dict[str, Any]) -> None:
        error = message.get("error") or {}
        raise ControlError(str(error.get("code", E_INTERNAL)), str(error.get("message", "")))

    def call(self, cmd: str, args: dict[str, Any] | None = None, fds: list[int] | None = None
             ) -> Any:
        """Send one request; return its result, or a Stream for streamed replies."""
        request_id = self._send(cmd, args or {}, fds)
        reply = self._read()
        if reply.get("id") != request_id and reply.get("id") is not None:
            raise ControlError(E_BAD_REQUEST, f"reply for request {reply.get('id')!r}, "
                               f"expected {request_id!r}")
        if not reply.get("ok"):
            self._raise_error(reply)
        if reply.get("stream") == "begin":
            return Stream(self._stream_items(request_id))
        return reply.get("result")

    def _stream_items(self, request_id: int) -> Iterator[Any]:
        while True:
            message = self._read()
            if message.get("id") != request_id:
                raise ControlError(E_BAD_REQUEST, "stream interleaved with another reply")
            if message.get("end"):
                if message.get("ok") is False:
                    self._raise_error(message)
                return
            yield message.get("item")

    def collect(self, cmd: str, args: dict[str, Any] | None = None) -> list[Any]:
        """Send a request whose reply is streamed and gather every item."""
        result = self.call(cmd, args)
        if isinstance(result, Stream):
            return list(result.items)
        return list(result or [])


def resolve_client_path(path: str | os.PathLike[str]) -> str:
    """Absolute form of a path the user typed, resolved from the client's working directory.

    Symlinks are resolved here too so the daemon's roots check sees the real location; the
    daemon resolves again itself and never trusts this.
    """
    return os.path.realpath(os.path.abspath(os.fspath(path)))
