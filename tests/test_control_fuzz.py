"""Throw garbage at the real control socket: every time an error reply or a closed connection,
never a crash or a hang, and a well-formed request afterwards is still answered."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_helpers import Library, make_library
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfpd.client import MAX_LINE_BYTES, encode
from vfpd.service.commands import COMMANDS
from vfpd.service.control import ControlLimits, ControlServer

READ_TIMEOUT_S = 10.0
"""Far above any reply time here; hitting it means the server hung."""


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    library = make_library(tmp_path_factory.mktemp("fuzz"))
    yield library
    library.catalog.close()


@pytest.fixture(scope="module")
def server(lib: Library) -> Iterator[ControlServer]:
    with ControlServer(lib.root.parent / "run" / "fuzz.sock", lib.context,
                       limits=ControlLimits(request_timeout_s=2.0, idle_timeout_s=5.0)) as srv:
        yield srv


class Conversation:
    """A raw connection that reads whole reply lines."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(READ_TIMEOUT_S)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def line(self) -> dict | None:
        """The next reply, or None when the server closed the connection."""
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        message = json.loads(line)  # the server only ever sends valid JSON
        assert isinstance(message, dict) and "id" in message
        return message

    def close(self) -> None:
        self.sock.close()


def still_serving(server: ControlServer) -> None:
    c = Conversation(server.socket_path)
    try:
        assert c.send(encode({"v": 1, "id": "probe", "cmd": "status"}))
        reply = c.line()
        assert reply is not None and reply["id"] == "probe" and reply["ok"] is True
    finally:
        c.close()


def throw(server: ControlServer, payload: bytes) -> None:
    """Send `payload` as one or more lines, then a sentinel request on the same connection.

    Each non-blank line must get exactly one answer (an error, or a result when the garbage
    happens to be a valid request), unless the server hangs up; after that, the sentinel on this
    connection if it is still open, and a fresh connection in any case, are answered.
    """
    c = Conversation(server.socket_path)
    try:
        sent = c.send(payload + b"\n") and c.send(encode({"v": 1, "id": "sentinel",
                                                          "cmd": "pause"}))
        replies = 0
        while True:
            reply = c.line()
            if reply is None:
                break  # closed: allowed, as long as the server lives on
            if reply.get("id") == "sentinel" and reply.get("ok"):
                break
            if reply.get("stream") == "begin" or "item" in reply:
                continue
            # Garbage is the client's error, never the daemon's (and never a logged traceback).
            assert (reply.get("error") or {}).get("code") != "internal", reply
            replies += 1
        lines = [ln for ln in payload.split(b"\n") if ln.strip()]
        if sent and reply is not None:
            assert replies >= min(1, len(lines))
    finally:
        c.close()
    still_serving(server)


FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(server: ControlServer, data: bytes) -> None:
    throw(server, data)


def _requests() -> st.SearchStrategy[dict]:
    json_value = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
        | st.text(max_size=50),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                    max_size=5),
        max_leaves=20)
    arg_names = st.sampled_from(sorted({p.name for c in COMMANDS.values() for p in c.params}
                                       | {"x"}))
    return st.fixed_dictionaries(
        {"cmd": st.sampled_from(sorted(COMMANDS)) | st.text(max_size=20) | json_value},
        optional={"v": st.sampled_from([1, 2, "1", None, 1.0]) | json_value,
                  "id": st.integers() | st.text(max_size=20) | json_value,
                  "args": st.dictionaries(arg_names, json_value, max_size=4) | json_value})


@FUZZ
@given(_requests())
def test_wrong_types(server: ControlServer, request: dict) -> None:
    # Never let fuzzing pause the test context for good, or rescan real paths: both are
    # harmless here (the context is a test one), and any outcome is acceptable.
    throw(server, json.dumps(request).encode())


@FUZZ
@given(_requests(), st.data())
def test_truncated_json(server: ControlServer, request: dict, data: st.DataObject) -> None:
    line = json.dumps(request).encode()
    cut = data.draw(st.integers(min_value=0, max_value=max(0, len(line) - 1)))
    throw(server, line[:cut])


@pytest.mark.parametrize("size", [MAX_LINE_BYTES - 200, MAX_LINE_BYTES + 1, 3 * MAX_LINE_BYTES])
def test_huge_lines(server: ControlServer, size: int) -> None:
    filler = "a" * size
    line = json.dumps({"v": 1, "id": 1, "cmd": "status", "args": {"x": filler}}).encode()
    c = Conversation(server.socket_path)
    try:
        c.send(line + b"\n")
        reply = c.line()
        assert reply is not None and reply["ok"] is False
        expected = "bad-args" if len(line) <= MAX_LINE_BYTES else "too-large"
        assert reply["error"]["code"] == expected
    finally:
        c.close()
    still_serving(server)


def test_garbage_without_newline_then_silence(server: ControlServer) -> None:
    """An unterminated request is cut off by the request time limit, not waited on forever."""
    c = Conversation(server.socket_path)
    try:
        c.send(b'{"v": 1, "id": 1, "cmd": "stat')
        reply = c.line()
        assert reply is not None and reply["error"]["code"] == "timeout"
        assert c.line() is None
    finally:
        c.close()
    still_serving(server)


PATH_COMMANDS = [("query", "path"), ("rescan", "path"), ("retry", "path"),
                 ("duplicates", "path"), ("ignore", "a")]

_lone = (st.integers(0xD800, 0xDC7F) | st.integers(0xDD00, 0xDFFF)).map(chr)
"""Surrogates that are not the \udc80-\udcff escapes of undecodable bytes (real names)."""
_name_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


def _ask(server: ControlServer, request: dict) -> dict:
    c = Conversation(server.socket_path)
    try:
        assert c.send(encode(request))
        reply = c.line()
    finally:
        c.close()
    assert reply is not None
    return reply


@FUZZ
@given(st.sampled_from(PATH_COMMANDS), _name_text, _lone, _name_text)
def test_lone_surrogates_in_paths_are_bad_args(server: ControlServer, command: tuple[str, str],
                                               before: str, lone: str, after: str) -> None:
    # encode() writes the surrogate as a \u escape, as a client's JSON would; alone (no
    # surrogates around it to pair with) it is no character and no file name.
    cmd, arg = command
    args = {arg: "/" + before + lone + after}
    if cmd == "ignore":
        args["b"] = "/x.mp4"
    reply = _ask(server, {"v": 1, "id": 1, "cmd": cmd, "args": args})
    assert reply["error"]["code"] == "bad-args", reply


@FUZZ
@given(st.sampled_from(PATH_COMMANDS), st.sampled_from(["self", "thread-self", "1", "self/task/1"]),
       st.lists(st.sampled_from(["fd", "0", "1", "3", "..", ".", "root", "cwd", "mem", "environ",
                                 "exe", "map_files", "ns", "net", "etc", "shadow"]), max_size=6))
def test_proc_paths_are_outside_roots(server: ControlServer, command: tuple[str, str], who: str,
                                      parts: list[str]) -> None:
    cmd, arg = command
    path = "/".join(["/proc", who, *parts])
    args = {arg: path}
    if cmd == "ignore":
        args["b"] = path
    reply = _ask(server, {"v": 1, "id": 1, "cmd": cmd, "args": args})
    if cmd == "duplicates":  # a filter, not a file: no groups, or a path it cannot resolve
        assert reply.get("ok") is True or reply["error"]["code"] == "bad-args", reply
    else:
        assert reply["error"]["code"] == "outside-roots", (path, reply)
