"""Confine a decode worker with Landlock, which any process may apply to itself: no file may be
written, created or removed anywhere (the catalog included), no TCP connection made or port bound,
no signal sent and no abstract socket reached outside the worker, as far as the kernel supports.

systemd sandboxes a unit as a whole, so the daemon's network and state directory are the workers'
too; the workers parse untrusted media and need neither. docs/systemd.md says what is covered.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

# Landlock system calls came after the architectures' tables were unified: the same numbers on
# every architecture Linux supports.
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_RESTRICT_SELF = 446
CREATE_RULESET_VERSION = 1 << 0
PR_SET_NO_NEW_PRIVS = 38

# Access rights (include/uapi/linux/landlock.h), and the ABI version that introduced each.
FS_WRITE_ABI1 = (
    (1 << 1)      # WRITE_FILE
    | (1 << 4)    # REMOVE_DIR
    | (1 << 5)    # REMOVE_FILE
    | (1 << 6)    # MAKE_CHAR
    | (1 << 7)    # MAKE_DIR
    | (1 << 8)    # MAKE_REG
    | (1 << 9)    # MAKE_SOCK
    | (1 << 10)   # MAKE_FIFO
    | (1 << 11)   # MAKE_BLOCK
    | (1 << 12))  # MAKE_SYM
FS_REFER_ABI2 = 1 << 13
FS_TRUNCATE_ABI3 = 1 << 14
NET_TCP_ABI4 = (1 << 0) | (1 << 1)  # BIND_TCP, CONNECT_TCP
SCOPE_ABI6 = (1 << 0) | (1 << 1)    # ABSTRACT_UNIX_SOCKET, SIGNAL


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


@dataclass(frozen=True)
class Confinement:
    """What confine() could enforce on this kernel."""

    abi: int  # 0: Landlock unavailable, nothing enforced
    no_writes: bool
    no_tcp: bool
    scoped: bool


def confine() -> Confinement:
    """Deny this process (and its future children) every file write and, where the kernel's
    Landlock ABI allows, TCP and signals/abstract sockets beyond itself. Reading stays allowed.
    Irreversible; returns what was enforced. Raises OSError only if Landlock is present but
    refuses a valid ruleset."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                       ctypes.c_uint32(CREATE_RULESET_VERSION))
    if abi < 1:
        return Confinement(0, False, False, False)  # ENOSYS / EOPNOTSUPP: kernel without it
    fs = FS_WRITE_ABI1 | (FS_REFER_ABI2 if abi >= 2 else 0) | (FS_TRUNCATE_ABI3 if abi >= 3 else 0)
    attr = _RulesetAttr(fs, NET_TCP_ABI4 if abi >= 4 else 0, SCOPE_ABI6 if abi >= 6 else 0)
    # Older kernels know a shorter struct: pass only the fields they know.
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    fd = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                      ctypes.c_uint32(0))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    try:
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"PR_SET_NO_NEW_PRIVS: {os.strerror(err)}")
        if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, fd, ctypes.c_uint32(0)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(fd)
    return Confinement(abi, True, abi >= 4, abi >= 6)
