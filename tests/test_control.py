"""The control server over a real Unix socket, with a real catalog behind it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_helpers import Library, lib  # noqa: F401 - lib is a fixture

from vfpd.catalog import JobState
from vfpd.client import Client, ControlError, DaemonNotRunning, encode
from vfpd.hashing import FileStat
from vfpd.service.control import ControlLimits, ControlServer
from vfpd.service.unix_socket import ControlSocketError


@pytest.fixture
def server(lib: Library, tmp_path: Path) -> Iterator[ControlServer]:
    before = threading.active_count()
    srv = ControlServer(tmp_path / "run" / "vfpd.sock", lib.context,
                        limits=ControlLimits(idle_timeout_s=2.0, request_timeout_s=1.0,
                                             write_timeout_s=2.0, max_connections=16))
    srv.start()
    yield srv
    srv.stop()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before, "control server leaked threads"


def raw(sock_path: Path, timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(sock_path))
    return s


_pending: dict[int, bytes] = {}


def read_line(s: socket.socket) -> dict:
    """One reply line; bytes after it are kept for the next call on the same socket."""
    buf = _pending.pop(s.fileno(), b"")
    while b"\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError(buf)
        buf += chunk
    line, rest = buf.split(b"\n", 1)
    if rest:
        _pending[s.fileno()] = rest
    return json.loads(line)


def closed(s: socket.socket) -> bool:
    _pending.pop(s.fileno(), None)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


# -- commands ---------------------------------------------------------------------------------


def test_status_reports_catalog_and_daemon_state(server: ControlServer, lib: Library) -> None:
    with Client(server.socket_path) as c:
        st = c.call("status")
    assert st["files"] == 7 and st["hashes"] == 6 and st["fingerprints"] == 6
    assert st["duplicates"] == 3 and st["failed"] == 0 and st["queue"] == 0
    assert st["roots"] == [{"path": str(lib.root), "mode": "inotify", "reason": "local disk"}]
    assert st["index"]["size"] == 6 and st["model_version"] == "test-model-1"
    assert st["paused"] is False and st["uptime_s"] >= 0 and st["pid"] == os.getpid()
    assert st["notify_backlog"] == 0 and st["last_retrain"] is None


def test_duplicates_groups_largest_waste_first(server: ControlServer, lib: Library) -> None:
    with Client(server.socket_path) as c:
        groups = c.collect("duplicates")
    wastes = [g["waste"] for g in groups]
    assert wastes == sorted(wastes, reverse=True) and len(groups) == 3
    by_paths = {frozenset(m["path"] for m in g["members"]): g for g in groups}
    f = [str(p) for p in lib.files]
    near = by_paths[frozenset(f[0:3])]
    assert near["kind"] == "near" and near["waste"] == 1000 + 2000
    assert [m["size"] for m in near["members"]] == [3000, 2000, 1000]  # keep-the-largest first
    assert all(m["width"] == 640 and m["height"] == 360 for m in near["members"])
    exact = by_paths[frozenset([f[5], f[6]])]
    assert exact["kind"] == "exact" and exact["waste"] == 6000
    assert by_paths[frozenset(f[3:5])]["kind"] == "partial"


def test_duplicates_filters(server: ControlServer, lib: Library) -> None:
    f = [str(p) for p in lib.files]
    with Client(server.socket_path) as c:
        partial = c.collect("duplicates", {"kind": "partial"})
        assert [sorted(m["path"] for m in g["members"]) for g in partial] == [sorted(f[3:5])]
        strong = c.collect("duplicates", {"min_score": 0.85})
        assert {g["kind"] for g in strong} == {"near", "exact"}
        assert c.collect("duplicates", {"since": time.time() + 3600}) == []
        assert len(c.collect("duplicates", {"since": "2000-01-01"})) == 3
        assert c.collect("duplicates", {"path": str(lib.root / "elsewhere")}) == []
        assert len(c.collect("duplicates", {"path": str(lib.root)})) == 3
        exact = c.collect("duplicates", {"kind": "exact"})
        assert [len(g["members"]) for g in exact] == [2]


def test_query_by_path_inside_roots(server: ControlServer, lib: Library) -> None:
    with Client(server.socket_path) as c:
        result = c.call("query", {"path": str(lib.files[0]), "k": 2})
    assert result["file"] == str(lib.files[0])
    paths = {p for m in result["matches"] for p in m["paths"]}
    assert paths == {str(lib.files[1]), str(lib.files[2])}
    assert all(0.9 < m["score"] <= 1.0 for m in result["matches"])


def test_query_refuses_paths_outside_roots_but_takes_a_descriptor(
        server: ControlServer, lib: Library, tmp_path: Path) -> None:
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(lib.files[0].read_bytes())
    sneaky = str(lib.root / ".." / "outside.mp4")
    with Client(server.socket_path) as c:
        for p in (str(outside), sneaky, "/etc/shadow"):
            with pytest.raises(ControlError) as e:
                c.call("query", {"path": p})
            assert e.value.code == "outside-roots"
        with outside.open("rb") as f:
            result = c.call("query", {"name": "outside.mp4", "k": 1}, fds=[f.fileno()])
    assert result["file"] == "outside.mp4"
    assert result["matches"][0]["score"] > 0.9


def test_query_descriptor_must_be_a_regular_file(server: ControlServer) -> None:
    r, w = os.pipe()
    try:
        with Client(server.socket_path) as c, pytest.raises(ControlError) as e:
            c.call("query", {}, fds=[r])
        assert e.value.code == "bad-args"
    finally:
        os.close(r)
        os.close(w)


def test_symlink_out_of_a_root_is_outside(server: ControlServer, lib: Library,
                                          tmp_path: Path) -> None:
    (tmp_path / "secret").mkdir()
    (lib.root / "link").symlink_to(tmp_path / "secret")
    with Client(server.socket_path) as c, pytest.raises(ControlError) as e:
        c.call("rescan", {"path": str(lib.root / "link")})
    assert e.value.code == "outside-roots"


def test_rescan_pause_resume(server: ControlServer, lib: Library) -> None:
    with Client(server.socket_path) as c:
        assert c.call("pause") == {"paused": True}
        assert c.call("status")["paused"] is True
        assert c.call("resume") == {"paused": False}
        assert c.call("rescan", {"path": str(lib.root)}) == {"path": str(lib.root), "queued": 7}
        assert c.call("rescan")["queued"] == 7
        assert c.call("status")["queue"] == 7
    assert lib.context.rescanned == [lib.root, None]


def _fail(lib: Library, path: Path) -> None:
    lib.catalog.enqueue(str(path), "new")
    for _ in range(lib.catalog.job_policy.max_attempts):
        job = lib.catalog.job(str(path))
        assert job is not None
        lib.catalog.fail_job(job, "decoder hang: killed after 600 s")


def test_failures_and_retry(server: ControlServer, lib: Library) -> None:
    bad = lib.root / "broken.mp4"
    bad.write_bytes(b"not a video")
    _fail(lib, bad)
    with Client(server.socket_path) as c:
        failures = c.collect("failures")
        assert failures == [{"path": str(bad), "reason": "decoder hang: killed after 600 s",
                             "attempts": 3, "job": "new"}]
        assert c.call("status")["failed"] == 1
        with pytest.raises(ControlError) as e:
            c.call("retry", {"path": str(lib.files[0])})
        assert e.value.code == "not-found"
        assert c.call("retry", {"path": str(bad)}) == {"path": str(bad), "queued": True}
        assert c.collect("failures") == []
    job = lib.catalog.job(str(bad))
    assert job is not None and job.state != JobState.FAILED


def test_ignore_and_confirm_store_verdicts_by_hash(server: ControlServer, lib: Library) -> None:
    a, b = str(lib.files[3]), str(lib.files[4])
    with Client(server.socket_path) as c:
        result = c.call("ignore", {"a": a, "b": b})
        assert result["verdict"] == "not-a-duplicate"
        assert all(len(h) == 64 for h in result["hashes"])
        kinds = {g["kind"] for g in c.collect("duplicates")}
        assert "partial" not in kinds  # a rejected pair is not shown
        c.call("confirm", {"a": a, "b": b})
        assert "partial" in {g["kind"] for g in c.collect("duplicates")}
        with pytest.raises(ControlError) as e:
            c.call("confirm", {"a": a, "b": str(lib.root / "never-seen.mp4")})
        assert e.value.code == "not-found"
        with pytest.raises(ControlError) as e:
            c.call("ignore", {"a": a, "b": a})
        assert e.value.code == "bad-args"
    verdicts = [d.verdict for d in lib.catalog.duplicates(include_rejected=True) if d.verdict]
    assert verdicts == ["confirmed"]


def test_ignored_pair_is_never_in_one_group_whatever_links_it(server: ControlServer,
                                                               lib: Library) -> None:
    """0~1 and 1~2 are pairs; 0~2 is too. `ignore 0 2` keeps 0 and 2 apart although 1 links
    both to each other: the verdict is a cannot-link for the grouping (issue 17)."""
    h = [lib.catalog.file_by_path(str(f)).hash for f in lib.files[:3]]  # type: ignore[union-attr]
    lib.catalog.add_duplicate(h[0], h[2], 0.91, "near")

    def groups(c: Client) -> list[set[str]]:
        return [{m["path"] for m in g["members"]} for g in c.collect("duplicates")]

    a, b = str(lib.files[0]), str(lib.files[2])
    with Client(server.socket_path) as c:
        assert any({a, b} <= g for g in groups(c))
        c.call("ignore", {"a": a, "b": b})
        after = groups(c)
        assert not any({a, b} <= g for g in after), after
        assert any(str(lib.files[1]) in g for g in after)  # the rest still grouped


# -- protocol errors ----------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "code"), [
    (b"{not json", "bad-json"),
    (b"\xff\xfe\n", "bad-json"),
    (b"[1, 2]", "bad-request"),
    (b'{"v": 1, "id": 1, "cmd": "launch-missiles"}', "unknown-command"),
    (b'{"v": 2, "id": 1, "cmd": "status"}', "unsupported-version"),
    (b'{"v": 1, "id": {"x": 1}, "cmd": "status"}', "bad-request"),
    (b'{"v": 1, "id": 1, "cmd": 7}', "bad-request"),
    (b'{"v": 1, "id": 1, "cmd": "status", "args": []}', "bad-args"),
    (b'{"v": 1, "id": 1, "cmd": "status", "args": {"x": 1}}', "bad-args"),
    (b'{"v": 1, "id": 1, "cmd": "query", "args": {"path": "relative.mp4"}}', "bad-args"),
    (b'{"v": 1, "id": 1, "cmd": "query", "args": {"k": "ten", "path": "/a"}}', "bad-args"),
    (b'{"v": 1, "id": 1, "cmd": "query", "args": {"k": 0, "path": "/a"}}', "bad-args"),
    (b'{"v": 1, "id": 1, "cmd": "query", "args": {"k": true, "path": "/a"}}', "bad-args"),
    (b'{"v": 1, "id": 1, "cmd": "duplicates", "args": {"min_score": NaN}}', "bad-json"),
    (b'{"v": 1, "id": 1, "cmd": "duplicates", "args": {"min_score": 2}}', "bad-args"),
    (b'{"v": 1, "id": 1, "cmd": "duplicates", "args": {"kind": "fuzzy"}}', "bad-args"),
    (b'{"v": 1, "id": 1, "cmd": "duplicates", "args": {"since": "yesterday"}}', "bad-args"),
    (b'{"v": 1, "id": 1, "cmd": "retry", "args": {}}', "bad-args"),
    (b'{"v": 1, "id": 1, "cmd": "retry", "args": {"path": "/a\\u0000b"}}', "bad-args"),
    (b"[" * 100_000 + b"]" * 100_000, "bad-json"),
])
def test_bad_requests_get_an_error_and_the_connection_lives(
        server: ControlServer, line: bytes, code: str) -> None:
    with raw(server.socket_path) as s:
        s.sendall(line + b"\n")
        reply = read_line(s)
        assert reply["ok"] is False and reply["error"]["code"] == code, reply
        assert reply["error"]["message"]
        s.sendall(encode({"v": 1, "id": "after", "cmd": "pause"}))
        assert read_line(s) == {"id": "after", "ok": True, "result": {"paused": True}}


def test_oversized_request_is_refused_and_closed(server: ControlServer) -> None:
    with raw(server.socket_path) as s:
        try:
            s.sendall(b"x" * (server.limits.max_request_bytes + 10))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may hang up before all of it is sent
        reply = read_line(s)
        assert reply["error"]["code"] == "too-large"
        assert closed(s)
    with Client(server.socket_path) as c:
        assert c.call("resume") == {"paused": False}


def test_several_requests_on_one_connection_keep_their_ids(server: ControlServer) -> None:
    with raw(server.socket_path) as s:
        s.sendall(b"".join(encode({"v": 1, "id": i, "cmd": "status"}) for i in range(5)))
        assert [read_line(s)["id"] for _ in range(5)] == list(range(5))


def test_stream_framing(server: ControlServer) -> None:
    with raw(server.socket_path) as s:
        s.sendall(encode({"v": 1, "id": "d", "cmd": "duplicates"}))
        assert read_line(s) == {"id": "d", "ok": True, "stream": "begin"}
        items = [read_line(s) for _ in range(3)]
        assert all(m["id"] == "d" and "members" in m["item"] for m in items)
        assert read_line(s) == {"id": "d", "end": True, "ok": True, "count": 3}


# -- slow, silent and many clients ---------------------------------------------------------------

def test_silent_client_is_closed_after_the_idle_limit(server: ControlServer) -> None:
    with raw(server.socket_path, timeout=10) as s:
        started = time.monotonic()
        reply = read_line(s)
        assert reply["error"]["code"] == "timeout"
        assert closed(s)
        assert time.monotonic() - started < 8
    assert server.active_connections() == 0 or _drains(server)


def _drains(server: ControlServer) -> bool:
    deadline = time.monotonic() + 3
    while server.active_connections() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.active_connections() == 0


def test_trickling_client_is_cut_off(server: ControlServer) -> None:
    with raw(server.socket_path, timeout=10) as s:
        request = encode({"v": 1, "id": 1, "cmd": "status"})
        cut = False
        for byte in request[:-1]:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            time.sleep(0.1)
        if not cut:
            reply = read_line(s)
            assert reply["error"]["code"] == "timeout"


def test_a_stuck_client_does_not_hold_up_others(server: ControlServer) -> None:
    with raw(server.socket_path) as stuck:
        stuck.sendall(b'{"v": 1, "id": 1, "cmd": "sta')  # never finished
        with Client(server.socket_path) as c:
            started = time.monotonic()
            assert c.call("status")["files"] == 7
            assert time.monotonic() - started < 0.5


def test_hundred_clients_at_once(server: ControlServer) -> None:
    n = 100
    socks = []
    for _ in range(n):
        socks.append(raw(server.socket_path, timeout=10))
    try:
        for s in socks:
            try:
                s.sendall(encode({"v": 1, "id": "x", "cmd": "status"}))
            except (BrokenPipeError, ConnectionResetError):
                pass
        outcomes = {"ok": 0, "busy": 0}
        for s in socks:
            reply = read_line(s)
            outcomes["ok" if reply["ok"] else reply["error"]["code"]] += 1
        # One process may hold only its share of the pool (the per-process limit).
        assert outcomes["ok"] >= min(server.limits.max_connections,
                                     server.limits.max_connections_per_process)
        assert outcomes["ok"] + outcomes["busy"] == n
        assert outcomes["busy"] > 0  # 16 allowed in this fixture: the rest were told so
    finally:
        for s in socks:
            s.close()
    assert _drains(server)
    with Client(server.socket_path) as c:
        assert c.call("status")["files"] == 7


def test_client_that_stops_reading_a_stream_is_dropped(lib: Library, tmp_path: Path) -> None:
    # One group with 2000 paths: a reply line far larger than the socket buffers. A client that
    # never reads makes the server's write time out; the server drops it and serves on.
    original = lib.catalog.file_by_path(str(lib.files[0]))
    assert original is not None and original.hash is not None
    st = FileStat.of(lib.files[0])
    with lib.catalog.transaction():
        for i in range(2000):
            lib.catalog.store_result(str(lib.root / f"copy{i:04d}.mp4"), st, original.hash)
    with ControlServer(tmp_path / "slow.sock", lib.context,
                       limits=ControlLimits(write_timeout_s=0.5)) as srv:
        s = raw(srv.socket_path)
        s.sendall(encode({"v": 1, "id": 1, "cmd": "duplicates"}))
        deadline = time.monotonic() + 5
        while not srv.active_connections() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _drains_within(srv, 5)
        received = b""
        while chunk := s.recv(1 << 20):
            received += chunk
        s.close()
        assert b'"end":true' not in received  # cut off, not completed
        with Client(srv.socket_path) as c:
            assert c.call("status")["files"] == 2007


def _drains_within(server: ControlServer, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while server.active_connections() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.active_connections() == 0


# -- the socket file ----------------------------------------------------------------------------

def test_socket_mode_is_0600_by_default(server: ControlServer) -> None:
    st = os.lstat(server.socket_path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert not [p for p in server.socket_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_socket_with_group_is_0660_and_group_owned(lib: Library, tmp_path: Path) -> None:
    path = tmp_path / "grp" / "vfpd.sock"
    with ControlServer(path, lib.context, mode=0o660, group="nogroup"):
        st = os.lstat(path)
        import grp
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == grp.getgrnam("nogroup").gr_gid


def test_unknown_group_is_a_clear_error(lib: Library, tmp_path: Path) -> None:
    with pytest.raises(ControlSocketError, match="no-such-group"):
        ControlServer(tmp_path / "x.sock", lib.context, group="no-such-group")


def test_stale_socket_is_replaced_and_live_one_is_not(lib: Library, tmp_path: Path) -> None:
    path = tmp_path / "vfpd.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a kill -9 leaves behind
    with pytest.raises(DaemonNotRunning, match="stale"):
        Client(path)
    with ControlServer(path, lib.context) as first:
        with Client(path) as c:
            assert c.call("status")["files"] == 7
        with pytest.raises(ControlSocketError, match="already answering"):
            ControlServer(path, lib.context).start()
        with Client(path) as c:  # the live server was not disturbed
            assert c.call("status")["files"] == 7
        # The three closed connections (two clients, the second server's probe) are let go;
        # under load the server threads may take a moment to see the hang-ups.
        deadline = time.monotonic() + 10
        while first.active_connections() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.active_connections() == 0
    assert not path.exists()


def test_stop_leaves_a_newer_daemons_socket_alone(lib: Library, tmp_path: Path) -> None:
    path = tmp_path / "vfpd.sock"
    old = ControlServer(path, lib.context)
    old.start()
    path.unlink()  # e.g. an admin removed it and a new daemon took the name
    with ControlServer(path, lib.context):
        old.stop()
        assert path.exists()
        with Client(path) as c:
            assert c.call("status")["files"] == 7


def test_non_socket_file_is_never_replaced(lib: Library, tmp_path: Path) -> None:
    path = tmp_path / "vfpd.sock"
    path.write_text("important")
    with pytest.raises(ControlSocketError, match="not a socket"):
        ControlServer(path, lib.context).start()
    assert path.read_text() == "important"


def test_too_long_socket_path_is_a_clear_error(lib: Library, tmp_path: Path) -> None:
    with pytest.raises(ControlSocketError, match="too long"):
        ControlServer(tmp_path / ("d" * 120) / "vfpd.sock", lib.context).start()


def test_client_without_daemon(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="no socket file"):
        Client(tmp_path / "nothing.sock")


# -- other users -------------------------------------------------------------------------------

NOBODY = 65534


def _as_nobody(path: Path) -> str:
    """Connect from a forked child running as uid nobody; return what happened."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        outcome = "?"
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(path))
            try:
                s.sendall(encode({"v": 1, "id": 1, "cmd": "status"}))
            except BrokenPipeError:
                pass  # refused before we spoke; the reason is still waiting to be read
            data = s.recv(65536)
            reply = json.loads(data) if data else None
            outcome = "closed" if reply is None else "ok" if reply["ok"] else reply["error"]["code"]
        except PermissionError:
            outcome = "permission-denied"
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            outcome = f"error {exc!r}"
        finally:
            os.write(w, outcome.encode())
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        outcome = f.read().decode()
    os.waitpid(pid, 0)
    return outcome


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_other_uid_is_refused(lib: Library, tmp_path: Path) -> None:
    # pytest's tmp root is 0700; the other user needs a directory it can enter.
    shared = Path(tempfile.mkdtemp(prefix="vfpd-peer-", dir="/tmp"))
    shared.chmod(0o755)
    try:
        _refusals(lib, shared)
    finally:
        shutil.rmtree(shared)


def _refusals(lib: Library, shared: Path) -> None:
    # Default 0600: the kernel already refuses the connect.
    with ControlServer(shared / "private.sock", lib.context):
        assert _as_nobody(shared / "private.sock") == "permission-denied"
    # World-writable socket (a misconfiguration): SO_PEERCRED still keeps nobody out.
    with ControlServer(shared / "open.sock", lib.context, mode=0o666) as srv:
        assert _as_nobody(shared / "open.sock") == "forbidden"
        with Client(srv.socket_path) as c:
            assert c.call("status")["files"] == 7
    # A member of the socket's group is let in.
    with ControlServer(shared / "group.sock", lib.context, mode=0o660, group=NOBODY):
        assert _as_nobody(shared / "group.sock") == "ok"


def test_undecodable_file_names_survive_the_round_trip(server: ControlServer,
                                                       lib: Library) -> None:
    weird = os.fsdecode(b"/elsewhere/caf\xe9.mp4")  # not UTF-8: a lone surrogate in Python
    with raw(server.socket_path) as s:
        s.sendall(encode({"v": 1, "id": 1, "cmd": "rescan", "args": {"path": weird}}))
        data = b""
        while not data.endswith(b"\n"):
            data += s.recv(65536)
    assert data.isascii()  # escaped, so the reply is valid UTF-8 whatever the name
    reply = json.loads(data)
    assert reply["error"]["code"] == "outside-roots"
    assert os.fsencode(weird).decode("utf-8", "surrogateescape") in reply["error"]["message"]


def test_hard_links_reclaim_nothing_in_a_group_s_waste(server: ControlServer,
                                                       lib: Library) -> None:
    """clip5 has a byte-identical copy (clip5b, its own inode) and, now, a hard link: deleting
    the hard link frees nothing, so the group's waste stays one copy's size (the scan's rule)."""
    import os

    link = lib.root / "clip5-link.mp4"
    os.link(lib.files[5], link)
    h = lib.catalog.file_by_path(str(lib.files[5])).hash  # type: ignore[union-attr]
    lib.catalog.store_result(str(link), FileStat.of(link), h)
    with Client(server.socket_path) as c:
        (exact,) = [g for g in c.collect("duplicates") if g["kind"] == "exact"]
    assert exact["waste"] == 6000
