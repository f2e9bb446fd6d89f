"""A confined process (vfpd.sandbox, applied by every decode worker) still reads and decodes, but
writes no file, reaches no TCP port and signals no one, on this machine's real kernel."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vfpd.workers import DecodePool, PoolSettings

PROBE = textwrap.dedent("""
    import json, os, socket, sys
    from vfpd import media, sandbox
    from vfpd.media import SamplingSettings
    video, scratch, port, parent = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    c = sandbox.confine()
    out = {"abi": c.abi, "no_tcp": c.no_tcp, "scoped": c.scoped}
    def attempt(name, fn):
        try:
            fn()
            out[name] = "allowed"
        except PermissionError:
            out[name] = "denied"
    attempt("write", lambda: open(os.path.join(scratch, "new.txt"), "w").close())
    attempt("append", lambda: open(os.path.join(scratch, "existing.txt"), "a").close())
    attempt("unlink", lambda: os.unlink(os.path.join(scratch, "existing.txt")))
    attempt("connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=5))
    attempt("signal", lambda: os.kill(parent, 0))
    out["read"] = open(os.path.join(scratch, "existing.txt")).read()
    out["frames"] = len(media.sample(video, SamplingSettings()).frames)
    print(json.dumps(out))
""")


def test_a_confined_process_reads_and_decodes_but_writes_and_connects_nowhere(
        tmp_path: Path, small_video: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "existing.txt").write_text("readable")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        proc = subprocess.run([sys.executable, "-c", PROBE, str(small_video), str(scratch),
                               str(port), str(os.getpid())],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    if out["abi"] == 0:
        pytest.skip("this kernel has no Landlock")
    assert (out["write"], out["append"], out["unlink"]) == ("denied",) * 3
    assert out["read"] == "readable" and out["frames"] > 0
    assert out["connect"] == ("denied" if out["no_tcp"] else "allowed")
    assert out["signal"] == ("denied" if out["scoped"] else "allowed")
    assert sorted(p.name for p in scratch.iterdir()) == ["existing.txt"]


def test_decode_workers_run_confined(small_video: Path) -> None:
    if "\nNoNewPrivs:\t1\n" in Path("/proc/self/status").read_text():
        pytest.skip("the tests already run with no_new_privs: the worker's flag would prove nothing")
    with DecodePool(PoolSettings(workers=1)) as pool:
        assert pool.decode(small_video).error is None
        (pid,) = pool.pids()
        status = Path(f"/proc/{pid}/status").read_text()
    # Landlock requires no_new_privs first; the worker sets it only on its way to confinement.
    assert "\nNoNewPrivs:\t1\n" in status
