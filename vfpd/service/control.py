"""The control socket server: one JSON request per line in, one JSON reply per line out.

Each connection is served by a thread from a bounded pool (threads are reused, so the catalog's
per-thread read connections stay bounded too); every read and write has a deadline, a process
and a user may hold only a share of the pool, and a request whose client hangs up is cancelled,
so a slow, silent or hostile client costs a few threads for a few seconds and never the pipeline.
"""

from __future__ import annotations

import array
import json
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfpd.client import (
    E_BAD_JSON,
    E_BAD_REQUEST,
    E_BUSY,
    E_FORBIDDEN,
    E_INTERNAL,
    E_TIMEOUT,
    E_TOO_LARGE,
    E_UNKNOWN_COMMAND,
    E_VERSION,
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    encode,
)
from vfpd.service.commands import (
    COMMANDS,
    Command,
    CommandError,
    Request,
    validate_args,
)
from vfpd.service.context import ServiceContext
from vfpd.service.logging import RateLimit, suppressed
from vfpd.service.unix_socket import (
    bind_socket_atomically,
    peer_credentials,
    peer_gone,
    resolve_group,
)

log = logging.getLogger(__name__)

MAX_FDS_PER_MESSAGE = 4
"""A request carries at most one descriptor (query of a file); a little slack, the rest dropped."""

STREAM_FLUSH_BYTES = 64 * 1024
"""Streamed lines are sent in chunks of about this size: the default Unix socket buffer holds
several, and a client sees the first items without waiting for the whole answer."""

RECV_CHUNK = 65536

MAX_CONNECTIONS = 64
"""Threads are cheap but not free; 64 concurrent scripts is far past any real use, and further
clients get a "busy" reply at once instead of queueing."""

MAX_CONNECTIONS_PER_PROCESS = 8
"""vfpctl holds one connection, a script running requests in parallel a few: one process (a
runaway loop, a slowloris) can take an eighth of the pool, never all of it."""

MAX_CONNECTIONS_PER_UID = 32
"""Half the pool: with the system unit, one member of the socket group can never lock out the
others. (A client with the daemon's own uid could stop the daemon anyway.)"""

IDLE_TIMEOUT_S = 10.0
"""A connected client that sends nothing for this long is closed: vfpctl sends at once."""

REQUEST_TIMEOUT_S = 10.0
"""From a request's first byte to its newline: a real client needs microseconds; this bounds
trickling "slowloris" clients."""

WRITE_TIMEOUT_S = 10.0
"""A client that stops reading a reply is dropped after this long (per reply line)."""

STOP_JOIN_S = 3.0
"""How long stop() waits for connection threads. Their sockets are shut first, which cancels
running queries between blocks and stages; a decode already running in a worker is abandoned to
finish on its own (the daemon's decode pool is closed right after)."""

CLIENT_LOG_EVERY_S = 60.0
"""Client trouble (bad requests, refusals, a command failing) is logged once per client and kind
per minute: a client sending thousands of bad lines a second cannot fill the journal."""


@dataclass(frozen=True)
class ControlLimits:
    """What one client may cost the daemon."""

    max_request_bytes: int = MAX_LINE_BYTES
    max_connections: int = MAX_CONNECTIONS
    max_connections_per_process: int = MAX_CONNECTIONS_PER_PROCESS
    max_connections_per_uid: int = MAX_CONNECTIONS_PER_UID
    idle_timeout_s: float = IDLE_TIMEOUT_S
    request_timeout_s: float = REQUEST_TIMEOUT_S
    write_timeout_s: float = WRITE_TIMEOUT_S
    stop_join_s: float = STOP_JOIN_S
    log_every_s: float = CLIENT_LOG_EVERY_S


@dataclass(frozen=True)
class PeerPolicy:
    """Who may talk to the daemon: its own uid, root, and members of `group` when one is set."""

    uid: int
    gid: int | None = None

    def allows(self, uid: int, gid: int, groups: list[int]) -> bool:
        if uid in (self.uid, 0):
            return True
        return self.gid is not None and (gid == self.gid or self.gid in groups)


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    pid: int = 0
    uid: int = -1
    gid: int = -1
    groups: list[int] = field(default_factory=list)
    future: Future[None] | None = None
    fds: list[int] = field(default_factory=list)


class ControlServer:
    """Serve the control protocol for one daemon.

    The daemon builds it with the socket path from its config and itself as the ServiceContext,
    calls start() once watching runs, and stop() on shutdown. start() returns at once; accepting
    and serving happen on threads of their own.
    """

    def __init__(
        self,
        socket_path: Path,
        context: ServiceContext,
        mode: int = 0o600,
        group: str | int | None = None,
        limits: ControlLimits = ControlLimits(),
        commands: Mapping[str, Command] = COMMANDS,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.context = context
        self.mode = mode
        self.gid = resolve_group(group)
        self.limits = limits
        self.commands = commands
        self.policy = PeerPolicy(uid=os.getuid(), gid=self.gid)
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._wake_r, self._wake_w = -1, -1
        self._acceptor: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._stopping = threading.Event()
        self._log_limit = RateLimit(limits.log_every_s)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("control server already started")
        self._listener, self._inode = bind_socket_atomically(self.socket_path, self.mode, self.gid)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(max_workers=self.limits.max_connections,
                                        thread_name_prefix="vfpd-control")
        self._acceptor = threading.Thread(target=self._accept_loop, name="vfpd-control-accept",
                                          daemon=True)
        self._acceptor.start()
        log.info("control socket listening on %s (mode %o)", self.socket_path, self.mode)

    def stop(self) -> None:
        if self._listener is None:
            return
        self._stopping.set()
        os.write(self._wake_w, b"x")
        assert self._acceptor is not None
        self._acceptor.join()
        self._listener.close()
        self._listener = None
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._remove_socket_file()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        assert self._pool is not None
        self._pool.shutdown(wait=False, cancel_futures=True)
        wait([c.future for c in connections if c.future is not None],
             timeout=self.limits.stop_join_s)
        for conn in connections:
            if conn.future is not None and conn.future.cancelled():
                conn.sock.close()
        self._pool = None

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def active_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def _remove_socket_file(self) -> None:
        # Only our own file: a newer daemon may already have replaced it.
        try:
            if os.lstat(self.socket_path).st_ino == self._inode:
                self.socket_path.unlink()
        except FileNotFoundError:
            pass

    # -- accepting -------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    if key.fileobj == self._wake_r:
                        return
                    try:
                        sock, _addr = self._listener.accept()
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        continue
                    except OSError as exc:
                        # EMFILE and friends: back off instead of spinning on a full fd table.
                        dropped = self._log_limit.allow("accept")
                        if dropped is not None:
                            log.warning("control socket accept failed: %s%s", exc,
                                        suppressed(dropped))
                        time.sleep(0.1)
                        continue
                    try:
                        self._admit(sock)
                    except Exception:
                        # The acceptor must outlive any one connection's trouble.
                        if self._log_limit.allow("admit") is not None:
                            log.exception("control socket: could not admit a connection")
                        sock.close()

    def _admit(self, sock: socket.socket) -> None:
        pid, uid, gid, groups = peer_credentials(sock)
        conn = _Connection(sock, pid, uid, gid, groups)
        limits = self.limits
        with self._lock:
            same_pid = sum(1 for c in self._connections if c.pid == pid)
            same_uid = sum(1 for c in self._connections if c.uid == uid)
            if len(self._connections) >= limits.max_connections:
                refusal = "too many control connections; try again shortly"
            # pid 0: a peer in a PID namespace we cannot see; such processes are told apart by
            # nothing, so only their uid's limit applies.
            elif pid != 0 and same_pid >= limits.max_connections_per_process:
                refusal = (f"too many connections from process {pid} "
                           f"({limits.max_connections_per_process} at most); close some first")
            elif same_uid >= limits.max_connections_per_uid:
                refusal = (f"too many connections from uid {uid} "
                           f"({limits.max_connections_per_uid} at most); close some first")
            else:
                refusal = None
                self._connections.add(conn)
        if refusal is not None:
            dropped = self._log_limit.allow((uid, E_BUSY))
            if dropped is not None:
                log.warning("control socket: busy for uid %d pid %d: %s%s", uid, pid, refusal,
                            suppressed(dropped))
            self._refuse(sock, E_BUSY, refusal)
            return
        assert self._pool is not None
        conn.future = self._pool.submit(self._serve, conn)

    def _refuse(self, sock: socket.socket, code: str, message: str) -> None:
        try:
            sock.settimeout(0.5)
            sock.sendall(encode({"id": None, "ok": False,
                                 "error": {"code": code, "message": message}}))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()

    # -- one connection --------------------------------------------------------------------------

    def _serve(self, conn: _Connection) -> None:
        try:
            if not self.policy.allows(conn.uid, conn.gid, conn.groups):
                dropped = self._log_limit.allow((conn.uid, E_FORBIDDEN))
                if dropped is not None:
                    log.warning("control socket: refused peer uid %d gid %d%s", conn.uid,
                                conn.gid, suppressed(dropped))
                self._write_safely(conn, {"id": None, "ok": False, "error": {
                    "code": E_FORBIDDEN, "message": f"uid {conn.uid} may not use this daemon"}})
                return
            self._serve_requests(conn)
        except Exception:
            if self._log_limit.allow((conn.uid, "connection")) is not None:
                log.exception("control connection of uid %d pid %d failed", conn.uid, conn.pid)
        finally:
            for fd in conn.fds:
                os.close(fd)
            conn.fds.clear()
            try:
                conn.sock.close()
            finally:
                with self._lock:
                    self._connections.discard(conn)

    def _serve_requests(self, conn: _Connection) -> None:
        buf = bytearray()
        while not self._stopping.is_set():
            # Blank lines (a person typing into socat) are not requests, and do not restart the
            # idle clock either: a client sending "\n" every few seconds is idle.
            idle_deadline = time.monotonic() + self.limits.idle_timeout_s
            line = self._read_line(conn, buf, idle_deadline)
            while line is not None and not line.strip():
                line = self._read_line(conn, buf, idle_deadline)
            if line is None:
                return
            fds, conn.fds = conn.fds, []
            try:
                keep_going = self._handle_line(conn, line, fds)
            finally:
                for fd in fds:
                    os.close(fd)
            if not keep_going:
                return

    def _read_line(self, conn: _Connection, buf: bytearray, idle_deadline: float
                   ) -> bytes | None:
        """The next request line (without newline), or None when the connection should end."""
        limits = self.limits
        deadline = idle_deadline
        started = bool(buf)
        if started:
            deadline = min(deadline, time.monotonic() + limits.request_timeout_s)
        while True:
            newline = buf.find(b"\n")
            if newline >= 0:
                if newline > limits.max_request_bytes:
                    break
                line = bytes(buf[:newline])
                del buf[: newline + 1]
                return line
            if len(buf) > limits.max_request_bytes:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._write_safely(conn, {"id": None, "ok": False, "error": {
                    "code": E_TIMEOUT,
                    "message": "request not completed in time" if started else "idle too long"}})
                return None
            conn.sock.settimeout(remaining)
            try:
                data, ancdata, _flags, _addr = conn.sock.recvmsg(
                    RECV_CHUNK, socket.CMSG_SPACE(MAX_FDS_PER_MESSAGE * 4))
            except TimeoutError:
                continue
            except OSError:
                return None
            self._take_fds(conn, ancdata)
            if not data:
                return None
            buf += data
            if not started:
                started = True
                deadline = min(deadline, time.monotonic() + limits.request_timeout_s)
        self._write_safely(conn, {"id": None, "ok": False, "error": {
            "code": E_TOO_LARGE,
            "message": f"request longer than {limits.max_request_bytes} bytes"}})
        return None

    @staticmethod
    def _take_fds(conn: _Connection, ancdata: list[tuple[int, int, bytes]]) -> None:
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                conn.fds.extend(fds)
        # Descriptors beyond what a request may use are closed at once, not hoarded.
        while len(conn.fds) > 1:
            os.close(conn.fds.pop())

    def _handle_line(self, conn: _Connection, line: bytes, fds: list[int]) -> bool:
        """Answer one request line; False when the connection should close."""
        request_id: Any = None
        try:
            message = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            return self._write_safely(conn, _error(None, E_BAD_JSON, f"invalid JSON: {exc}"))
        if not isinstance(message, dict):
            return self._write_safely(conn, _error(None, E_BAD_REQUEST,
                                                   "a request is a JSON object"))
        request_id = message.get("id")
        if request_id is not None and (not isinstance(request_id, (str, int))
                                       or isinstance(request_id, bool)):
            return self._write_safely(conn, _error(None, E_BAD_REQUEST,
                                                   "id must be a string, an integer or null"))
        if message.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
            return self._write_safely(conn, _error(
                request_id, E_VERSION, f"this daemon speaks protocol v{PROTOCOL_VERSION}"))
        cmd = message.get("cmd")
        if not isinstance(cmd, str):
            return self._write_safely(conn, _error(request_id, E_BAD_REQUEST,
                                                   "cmd must be a string"))
        command = self.commands.get(cmd)
        if command is None:
            return self._write_safely(conn, _error(
                request_id, E_UNKNOWN_COMMAND,
                f"unknown command {cmd[:80]!r}; known: {', '.join(sorted(self.commands))}"))
        try:
            args = validate_args(command, message.get("args", {}))
            result = command.run(self.context, args, Request(
                fd=fds[0] if fds else None,
                should_stop=lambda: self._stopping.is_set() or peer_gone(conn.sock)))
        except CommandError as exc:
            return self._write_safely(conn, _error(request_id, exc.code, exc.message))
        except Exception as exc:
            dropped = self._log_limit.allow((conn.uid, E_INTERNAL))
            if dropped is not None:
                log.exception("control command %s of uid %d pid %d failed%s", cmd[:80],
                              conn.uid, conn.pid, suppressed(dropped))
            return self._write_safely(conn, _error(request_id, E_INTERNAL,
                                                   f"{type(exc).__name__}: {exc}"))
        if command.streams:
            return self._write_stream(conn, request_id, result)
        return self._write_safely(conn, {"id": request_id, "ok": True, "result": result})

    def _log_client_error(self, conn: _Connection, code: str, message: str) -> None:
        """A refused request says something about the client, not the daemon: worth a line for
        whoever wonders why a script fails, at most once a minute per client."""
        dropped = self._log_limit.allow((conn.uid, "client-error"))
        if dropped is not None:
            log.info("control: request of uid %d pid %d refused: %s: %s%s", conn.uid, conn.pid,
                     code, message[:200], suppressed(dropped))

    def _write_stream(self, conn: _Connection, request_id: Any, items: Iterator[Any]) -> bool:
        """Begin line, item lines, end line. Lines are sent in chunks of STREAM_FLUSH_BYTES:
        thousands of groups cost a few dozen system calls, not one each."""
        buf = bytearray(encode({"id": request_id, "ok": True, "stream": "begin"}))
        count = 0
        end: dict[str, Any] | None = None
        try:
            for item in items:
                try:
                    buf += encode({"id": request_id, "item": item})
                except (TypeError, ValueError) as exc:
                    raise CommandError(E_INTERNAL, f"item not serialisable: {exc}") from None
                count += 1
                if len(buf) >= STREAM_FLUSH_BYTES:
                    if not self._send(conn, bytes(buf)):
                        return False
                    buf.clear()
        except CommandError as exc:
            end = {"id": request_id, "end": True, "ok": False,
                   "error": {"code": exc.code, "message": exc.message}}
        except Exception as exc:
            dropped = self._log_limit.allow((conn.uid, E_INTERNAL))
            if dropped is not None:
                log.exception("control stream of uid %d pid %d failed%s", conn.uid, conn.pid,
                              suppressed(dropped))
            end = {"id": request_id, "end": True, "ok": False, "error": {
                "code": E_INTERNAL, "message": f"{type(exc).__name__}: {exc}"}}
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        if end is None:
            end = {"id": request_id, "end": True, "ok": True, "count": count}
        return self._send(conn, bytes(buf + encode(end)))

    def _send(self, conn: _Connection, data: bytes) -> bool:
        try:
            conn.sock.settimeout(self.limits.write_timeout_s)
            conn.sock.sendall(data)
        except OSError:
            return False
        return True

    def _write_safely(self, conn: _Connection, message: dict[str, Any]) -> bool:
        """Send one reply line; False when the client is gone or too slow to take it."""
        try:
            data = encode(message)
        except (TypeError, ValueError) as exc:
            log.error("control reply not serialisable: %s", exc)
            data = encode(_error(message.get("id"), E_INTERNAL, "reply not serialisable"))
        error = message.get("error")
        if error and error["code"] not in (E_INTERNAL, E_FORBIDDEN):  # logged where they arise
            self._log_client_error(conn, error["code"], error["message"])
        if not self._send(conn, data):
            return False
        return not error or error["code"] not in _FATAL_CODES


_FATAL_CODES = frozenset({E_TOO_LARGE, E_FORBIDDEN, E_TIMEOUT})
"""After these the connection is closed: the stream can no longer be trusted to be in sync."""


def _error(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")
