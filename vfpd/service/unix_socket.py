"""Unix socket plumbing for the control server: the socket file bound atomically with its mode and
group, and the kernel's word on who is at the other end.
"""

from __future__ import annotations

import array
import grp
import os
import pwd
import select
import socket
import stat
import struct
import threading
from pathlib import Path

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
"""Linux >= 4.13: the peer's supplementary groups. Python does not export it; 59 is its value on
every Linux architecture."""

SUN_PATH_MAX = 107
"""sockaddr_un.sun_path is 108 bytes including the terminating NUL."""


class ControlSocketError(Exception):
    """The control socket cannot be set up (a live daemon on the path, not a socket, too long)."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int, list[int]]:
    """(pid, uid, gid, supplementary groups) of the process at the other end, from the kernel."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    groups: list[int] = []
    try:
        raw_groups = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4096)
        groups = list(array.array("I", raw_groups[: len(raw_groups) // 4 * 4]))
    except OSError:
        # Older kernels: fall back to the group database for the peer's user.
        try:
            name = pwd.getpwuid(uid).pw_name
            groups = [g.gr_gid for g in grp.getgrall() if name in g.gr_mem]
        except KeyError:
            groups = []
    return pid, uid, gid, groups


def resolve_group(group: str | int | None) -> int | None:
    if group is None or isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ControlSocketError(f"control socket group {group!r} does not exist") from None


def _someone_listens(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fsencode(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        # Permission denied or a timeout: something is there and alive enough to matter.
        return True
    else:
        return True
    finally:
        probe.close()


def bind_socket_atomically(path: Path, mode: int, gid: int | None) -> tuple[socket.socket, int]:
    """Bind, chmod/chown and listen on a temp name, then rename over `path`.

    Returns the listening socket and the inode of the file, so stop() removes only its own file.
    A client can never connect while the permissions are still the umask's: connect() to a socket
    that is bound but not listening is refused, and listen() happens after chmod.
    """
    if len(os.fsencode(path)) > SUN_PATH_MAX - 16:
        raise ControlSocketError(
            f"control socket path {path} is too long for a Unix socket "
            f"(max {SUN_PATH_MAX - 16} bytes, leaving room for the temporary name)"
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlSocketError(f"{path} exists and is not a socket; not replacing it")
        if _someone_listens(path):
            raise ControlSocketError(f"another vfpd is already answering on {path}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident() % 100000}.tmp")
    tmp.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(os.fsencode(tmp))
        os.chmod(tmp, mode)
        if gid is not None:
            os.chown(tmp, -1, gid)
        sock.listen(128)
        os.rename(tmp, path)
        inode = os.lstat(path).st_ino
    except BaseException:
        sock.close()
        tmp.unlink(missing_ok=True)
        raise
    return sock, inode


def peer_gone(sock: socket.socket) -> bool:
    """Whether the client has closed its end (or we shut ours): POLLHUP on a Unix stream socket
    means both directions are shut. A client that only half-closes after its request (socat,
    nc -N) is still waiting for the answer and is not gone."""
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return any(events & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
                   for _fd, events in poller.poll(0))
    except (OSError, ValueError):  # closed under us
        return True
