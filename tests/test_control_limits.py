"""What one client may cost the control server (issue 16, items 8-10), over real sockets: idle
connections that would starve others, clients that leave mid-query, a stop with clients
connected, descriptors that do not allow reading, and requests made to crash the server's log."""

from __future__ import annotations

import array
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from control_helpers import CatalogContext, Library, lib  # noqa: F401 - lib is a fixture

from vfpd.client import Client, ControlError, encode
from vfpd.hashing import HashCancelled, OpenFile
from vfpd.service.commands import COMMANDS, Command
from vfpd.service.control import ControlLimits, ControlServer
from vfpd.service.logging import RateLimit

PROBE_TIMEOUT_S = 30.0
"""A status probe from another process; it is answered in milliseconds, this only bounds a hang
(and is shorter than the idle limit below, so the held connections are still held)."""

HELD_IDLE_S = 120.0
"""Idle limit while a test holds connections open: longer than the test, so any room left for
others comes from the per-peer limits, not from idle connections timing out."""

SETTLE_S = 10.0
"""Bounds waits for the server to notice something (a hang-up, a stop); reached only on a bug."""


def _raw(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(SETTLE_S)
    s.connect(str(path))
    return s


def _line(s: socket.socket) -> dict | None:
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    return json.loads(data.split(b"\n")[0])


def _until(condition: Callable[[], bool], seconds: float = SETTLE_S) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def _status_from_another_process(sock_path: Path) -> dict:
    code = ("import json, sys; from vfpd.client import Client; "
            "c = Client(sys.argv[1], timeout=10); print(json.dumps(c.call('status')))")
    proc = subprocess.run([sys.executable, "-c", code, str(sock_path)], capture_output=True,
                          text=True, timeout=PROBE_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- item 9: per-peer limits, idle clients, clients that leave, stop -----------------------------

def test_64_idle_connections_from_one_process_leave_room_for_others(lib: Library,
                                                                    tmp_path: Path) -> None:
    limits = ControlLimits(idle_timeout_s=HELD_IDLE_S)
    with ControlServer(tmp_path / "run" / "v.sock", lib.context, limits=limits) as srv:
        held = [_raw(srv.socket_path) for _ in range(64)]
        try:
            assert _until(lambda: srv.active_connections() == limits.max_connections_per_process)
            # Past its share, the process is told `busy` in a line (not reset) and closed.
            refused = [_line(s) for s in held[limits.max_connections_per_process:]]
            assert all(r is not None and r["error"]["code"] == "busy" for r in refused), refused
            assert "too many connections from process" in refused[0]["error"]["message"]
            # Another process is answered while the 8 accepted ones still sit idle.
            assert _status_from_another_process(srv.socket_path)["files"] == 7
            assert srv.active_connections() == limits.max_connections_per_process
        finally:
            for s in held:
                s.close()
        assert _until(lambda: srv.active_connections() == 0)


def test_per_uid_limit_and_client_sees_busy_not_a_reset(lib: Library, tmp_path: Path) -> None:
    limits = ControlLimits(idle_timeout_s=HELD_IDLE_S, max_connections_per_uid=2)
    with ControlServer(tmp_path / "run" / "v.sock", lib.context, limits=limits) as srv:
        held = [_raw(srv.socket_path) for _ in range(2)]
        try:
            assert _until(lambda: srv.active_connections() == 2)
            # vfpd.client may find the connection closed when it sends: it still reads the
            # waiting line and reports `busy`, not "connection reset".
            for _ in range(20):
                with Client(srv.socket_path) as c, pytest.raises(ControlError) as e:
                    c.call("status")
                assert e.value.code == "busy", e.value
                assert f"uid {os.getuid()}" in e.value.message
        finally:
            for s in held:
                s.close()
        assert _until(lambda: srv.active_connections() == 0)
        with Client(srv.socket_path) as c:
            assert c.call("status")["files"] == 7


class SlowQueries(CatalogContext):
    """The test library whose `query` works until told to stop, as a long decode would: it
    polls should_stop() as the daemon's hashing and decoding stages do."""

    def __init__(self, base: CatalogContext) -> None:
        super().__init__(base.config, base.catalog)
        self.started = threading.Event()
        self.cancelled = threading.Event()

    def query(self, file: OpenFile, k: int, should_stop: Callable[[], bool]
              ) -> list[dict[str, object]]:
        self.started.set()
        deadline = time.monotonic() + 3 * SETTLE_S
        while time.monotonic() < deadline:
            if should_stop():
                self.cancelled.set()
                raise HashCancelled(file.path, "the client left")
            time.sleep(0.01)
        return []


def _start_query(srv: ControlServer, lib: Library) -> socket.socket:
    s = _raw(srv.socket_path)
    s.sendall(encode({"v": 1, "id": 1, "cmd": "query", "args": {"path": str(lib.files[0])}}))
    return s


def test_client_leaving_mid_query_cancels_it_and_frees_its_slot(lib: Library,
                                                               tmp_path: Path) -> None:
    slow = SlowQueries(lib.context)
    with ControlServer(tmp_path / "run" / "v.sock", slow) as srv:
        s = _start_query(srv, lib)
        assert slow.started.wait(SETTLE_S)
        assert not slow.cancelled.is_set()
        s.close()
        assert slow.cancelled.wait(SETTLE_S), "the query went on after its client left"
        assert _until(lambda: srv.active_connections() == 0)


def test_half_closed_client_still_gets_its_answer(lib: Library, tmp_path: Path) -> None:
    # socat and `nc -N` shut their sending side after the request: not a client that left.
    with ControlServer(tmp_path / "run" / "v.sock", lib.context) as srv, _raw(srv.socket_path) as s:
        s.sendall(encode({"v": 1, "id": 1, "cmd": "query", "args": {"path": str(lib.files[0])}}))
        s.shutdown(socket.SHUT_WR)
        reply = _line(s)
    assert reply is not None and reply["ok"], reply


def test_stop_returns_quickly_with_idle_and_busy_clients(lib: Library, tmp_path: Path) -> None:
    slow = SlowQueries(lib.context)
    srv = ControlServer(tmp_path / "run" / "v.sock", slow,
                        limits=ControlLimits(idle_timeout_s=HELD_IDLE_S))
    srv.start()
    idle = [_raw(srv.socket_path) for _ in range(6)]
    busy = _start_query(srv, lib)
    try:
        assert slow.started.wait(SETTLE_S)
        assert _until(lambda: srv.active_connections() == 7)
        started = time.monotonic()
        srv.stop()
        took = time.monotonic() - started
        assert took < srv.limits.stop_join_s, f"stop() took {took:.1f} s"
        assert slow.cancelled.is_set()
        assert all(_line(s) is None for s in idle)  # closed, nothing more to read
    finally:
        for s in idle + [busy]:
            s.close()


# -- item 8: only descriptors opened for reading --------------------------------------------------

def _send_fd(sock_path: Path, fd: int) -> dict:
    with _raw(sock_path) as s:
        line = encode({"v": 1, "id": 1, "cmd": "query", "args": {"name": "passed.mp4", "k": 2}})
        s.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        reply = _line(s)
    assert reply is not None
    return reply


@pytest.fixture
def server(lib: Library, tmp_path: Path) -> Iterator[ControlServer]:
    with ControlServer(tmp_path / "run" / "v.sock", lib.context) as srv:
        yield srv


def test_o_path_and_write_only_descriptors_are_refused(server: ControlServer, lib: Library,
                                                       tmp_path: Path) -> None:
    secret = tmp_path / "secret.mp4"
    shutil.copyfile(lib.files[0], secret)
    secret.chmod(0o600)
    for flags in (os.O_PATH, os.O_PATH | os.O_NOFOLLOW, os.O_WRONLY):
        fd = os.open(secret, flags)
        try:
            reply = _send_fd(server.socket_path, fd)
        finally:
            os.close(fd)
        assert reply["error"]["code"] == "unreadable", (flags, reply)
        assert "not open for reading" in reply["error"]["message"]
    for flags in (os.O_RDONLY, os.O_RDWR):
        fd = os.open(secret, flags)
        try:
            reply = _send_fd(server.socket_path, fd)
        finally:
            os.close(fd)
        assert reply["ok"] and reply["result"]["matches"], (flags, reply)


def test_descriptor_is_read_itself_not_the_name_it_had(server: ControlServer, lib: Library,
                                                       tmp_path: Path) -> None:
    f = tmp_path / "passed.mp4"
    shutil.copyfile(lib.files[0], f)
    fd = os.open(f, os.O_RDONLY)
    try:
        f.rename(tmp_path / "moved.mp4")
        f.write_bytes(b"something else now has the name")
        os.lseek(fd, 100, os.SEEK_SET)  # the client's offset is not the daemon's business
        reply = _send_fd(server.socket_path, fd)
    finally:
        os.close(fd)
    paths = {p for m in reply["result"]["matches"] for p in m["paths"]}
    assert paths == {str(lib.files[1]), str(lib.files[2])}, reply  # file 0's neighbours


NOBODY = 65534


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_o_path_confused_deputy_as_another_user(lib: Library) -> None:
    """A socket group member who cannot read a 0600 file opens it O_PATH (allowed: it needs no
    read permission) and passes it: the daemon must not read it on their behalf."""
    shared = Path(tempfile.mkdtemp(prefix="vfpd-deputy-", dir="/tmp"))
    shared.chmod(0o755)
    try:
        secret = shared / "secret.mp4"
        shutil.copyfile(lib.files[0], secret)
        secret.chmod(0o600)  # root's, unreadable to nobody
        public = shared / "public.mp4"
        shutil.copyfile(lib.files[0], public)
        public.chmod(0o644)
        with ControlServer(shared / "v.sock", lib.context, mode=0o660, group=NOBODY) as srv:
            outcome = _as_nobody(lambda: [
                _send_fd(srv.socket_path, os.open(secret, os.O_PATH)),
                _send_fd(srv.socket_path, os.open(public, os.O_RDONLY))])
        assert outcome[0]["error"]["code"] == "unreadable", outcome
        assert outcome[1]["ok"], outcome
    finally:
        shutil.rmtree(shared)


def _as_nobody(fn: Callable[[], object]) -> object:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result: object = fn()
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            result = f"error {exc!r}"
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


# -- item 10: hostile strings get client errors, and the log stays small ---------------------------

LONE_SURROGATES = ["/\ud800", "/videos/\udfff.mp4", "/a/\ud83d", "\ud800"]


def _ask(s: socket.socket, request: dict) -> dict:
    s.sendall(encode(request))
    reply = _line(s)
    assert reply is not None
    return reply


def test_lone_surrogates_are_bad_args(server: ControlServer, lib: Library) -> None:
    with _raw(server.socket_path) as s:
        for bad in LONE_SURROGATES:
            for cmd, args in (("query", {"path": bad}), ("rescan", {"path": bad}),
                              ("retry", {"path": bad}), ("duplicates", {"path": bad}),
                              ("ignore", {"a": bad, "b": str(lib.files[0])})):
                reply = _ask(s, {"v": 1, "id": 1, "cmd": cmd, "args": args})
                assert reply["error"]["code"] == "bad-args", (cmd, bad, reply)
        # Surrogate escapes of undecodable bytes (\udc80-\udcff) are real names: not refused.
        weird = os.fsdecode(os.fsencode(str(lib.root)) + b"/caf\xe9.mp4")
        assert _ask(s, {"v": 1, "id": 2, "cmd": "query", "args": {"path": weird}}
                    )["error"]["code"] == "not-found"


def test_proc_paths_are_outside_the_roots(server: ControlServer, lib: Library) -> None:
    with _raw(server.socket_path) as s:
        for p in ("/proc/self/fd/0", "/proc/self/mem", "/proc/self/environ", "/proc/self/cwd",
                  f"/proc/{os.getpid()}/fd/1/..", "/proc/self/root/etc/shadow",
                  "/proc/self/task/1/fd/3", "/proc/" + "a" * 300, "/proc/self/fd/999999",
                  "/proc/1/cwd", "/proc/1/root/etc"):  # links realpath() cannot read
            for cmd, args in (("query", {"path": p}), ("rescan", {"path": p}),
                              ("retry", {"path": p})):
                reply = _ask(s, {"v": 1, "id": 1, "cmd": cmd, "args": args})
                assert reply["error"]["code"] == "outside-roots", (cmd, p, reply)


def test_a_flood_of_bad_requests_logs_a_line_a_minute(lib: Library, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    def explode(context: object, args: dict, request: object) -> None:
        raise RuntimeError("a bug in a command")

    commands = {**COMMANDS, "explode": Command("explode", explode)}
    caplog.set_level(logging.DEBUG, logger="vfpd.service.control")
    with ControlServer(tmp_path / "run" / "v.sock", lib.context, commands=commands) as srv, \
            _raw(srv.socket_path) as s:
        caplog.clear()
        for i in range(300):
            bad = LONE_SURROGATES[i % len(LONE_SURROGATES)]
            assert _ask(s, {"v": 1, "id": i, "cmd": "query", "args": {"path": bad}}
                        )["error"]["code"] == "bad-args"
            assert _ask(s, {"v": 1, "id": i, "cmd": "rescan", "args": {"path": "/proc/self/mem"}}
                        )["error"]["code"] == "outside-roots"
            reply = _ask(s, {"v": 1, "id": i, "cmd": "explode"})
            assert reply["error"]["code"] == "internal"
        records = [r for r in caplog.records if r.name == "vfpd.service.control"]
    # 900 refused requests: one line for the client errors, one traceback for the bug.
    assert len(records) == 2, [r.getMessage() for r in records]
    assert sum(r.exc_info is not None for r in records) == 1
    text = "\n".join(r.getMessage() for r in records)
    assert "bad-args" in text and "explode" in text


def test_rate_limit_counts_what_it_left_out_and_forgets_old_keys() -> None:
    limit = RateLimit(every_s=0.2, max_keys=8)
    assert limit.allow("a") == 0
    assert [limit.allow("a") for _ in range(3)] == [None] * 3
    assert limit.allow("b") == 0  # another client is not held back by the first
    time.sleep(0.3)
    assert limit.allow("a") == 3  # "3 similar ones left out"
    for i in range(100):  # many clients: memory stays bounded, the oldest are forgotten
        limit.allow(("uid", i))
    assert limit.allow("a") == 0 and limit.allow(("uid", 99)) is None


def test_blank_lines_do_not_keep_an_idle_connection(lib: Library, tmp_path: Path) -> None:
    limits = ControlLimits(idle_timeout_s=1.0)
    with ControlServer(tmp_path / "run" / "v.sock", lib.context, limits=limits) as srv, \
            _raw(srv.socket_path) as s:
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < 10 * limits.idle_timeout_s:
            try:
                s.sendall(b"\n")  # every 0.2 s: each one alone would restart a naive idle clock
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(0.2)
            if _until(lambda: srv.active_connections() == 0, 0):
                break
        assert srv.active_connections() == 0, "blank lines kept the connection open"
        assert sent < 10 * limits.idle_timeout_s / 0.2
        reply = _line(s)
        assert reply is not None and reply["error"]["message"] == "idle too long", reply


def test_query_by_path_of_a_fifo_or_sparse_file_in_a_root(server: ControlServer, lib: Library
                                                          ) -> None:
    os.mkfifo(lib.root / "fifo.mp4")  # no writer: opening it by name would wait forever
    sparse = lib.root / "sparse.mp4"
    with open(sparse, "wb"):
        pass
    os.truncate(sparse, 15 * 10**12)
    with _raw(server.socket_path) as s:
        reply = _ask(s, {"v": 1, "id": 1, "cmd": "query",
                         "args": {"path": str(lib.root / "fifo.mp4")}})
        assert reply["error"]["code"] == "not-found", reply
        assert "a FIFO" in reply["error"]["message"]
        reply = _ask(s, {"v": 1, "id": 2, "cmd": "query", "args": {"path": str(sparse)}})
        assert reply["error"]["code"] == "unreadable", reply
        assert "larger than the limit" in reply["error"]["message"]
