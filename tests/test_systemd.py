"""The systemd units (systemd-analyze verify/security, sysusers, tmpfiles) and vfpd run under the
exact environment a unit gives it: directory variables, a real NOTIFY_SOCKET, WATCHDOG_USEC."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfpd import config as config_mod
from vfpd.client import Client

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
VFPD = Path(sys.executable).parent / "vfpd"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (apt-get install systemd)")


def run_check(units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(units / "check.sh"), str(VFPD)], capture_output=True, text=True,
                          timeout=120)


@needs_analyze
def test_units_verify_clean_and_system_unit_exposure_at_most_2() -> None:
    proc = run_check(UNITS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("verify clean") == 4
    found = re.search(r"security exposure ([0-9.]+)", proc.stdout)
    assert found is not None, proc.stdout
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE


@needs_analyze
def test_check_catches_a_broken_unit(tmp_path: Path) -> None:
    units = tmp_path / "systemd"
    shutil.copytree(UNITS, units)
    unit = units / "vfpd.user.service"
    unit.write_text(unit.read_text().replace("[Service]\n", "[Service]\nRestartt=always\n"))
    proc = run_check(units)
    assert proc.returncode == 1
    assert "FAIL vfpd.user.service: not clean" in proc.stdout and "Restartt" in proc.stdout


@needs_analyze
def test_check_catches_a_weak_sandbox(tmp_path: Path) -> None:
    units = tmp_path / "systemd"
    shutil.copytree(UNITS, units)
    unit = units / "vfpd.service"
    weakened = [line for line in unit.read_text().splitlines()
                if not line.startswith(("Protect", "Private", "SystemCall", "Restrict"))]
    unit.write_text("\n".join(weakened) + "\n")
    proc = run_check(units)
    assert proc.returncode == 1 and "FAIL vfpd.service: security exposure" in proc.stdout


SECCOMP_HARDENING = ("NoNewPrivileges=yes", "LockPersonality=yes", "RestrictRealtime=yes",
                     "RestrictSUIDSGID=yes", "RestrictNamespaces=yes",
                     "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                     "SystemCallArchitectures=native", "SystemCallFilter=@system-service",
                     "SystemCallFilter=~@privileged", "SystemCallErrorNumber=EPERM")
"""The system unit's hardening that needs no privilege (seccomp): the user unit has it too."""


def test_user_unit_has_the_system_units_unprivileged_hardening() -> None:
    system = (UNITS / "vfpd.service").read_text()
    user = (UNITS / "vfpd.user.service").read_text()
    for line in (*SECCOMP_HARDENING, "OOMPolicy=continue"):
        assert f"\n{line}\n" in system, line
        assert f"\n{line}\n" in user, line


def test_system_unit_has_what_an_administrator_expects() -> None:
    text = (UNITS / "vfpd.service").read_text()
    for line in ("Type=notify", "User=vfpd", "Restart=on-failure", "StateDirectory=vfpd",
                 "RuntimeDirectory=vfpd", "ConfigurationDirectory=vfpd", "CacheDirectory=vfpd",
                 "ProtectSystem=strict", "ProtectHome=read-only", "NoNewPrivileges=yes",
                 "PrivateTmp=yes", "SystemCallFilter=@system-service", "IOSchedulingClass=idle",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "Nice=10"):
        assert f"\n{line}\n" in text, line
    assert re.search(r"\nWatchdogSec=\d+s\n", text) and re.search(r"\nMemoryMax=\d+G\n", text)


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers missing")
def test_sysusers_creates_the_vfpd_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}",
                    str(UNITS / "sysusers.d" / "vfpd.conf")], check=True, capture_output=True,
                   timeout=60)
    passwd = (tmp_path / "etc" / "passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("vfpd:"))
    fields = entry.split(":")
    assert int(fields[2]) < 1000 and fields[5] == "/var/lib/vfpd"
    assert fields[6] == "/usr/sbin/nologin"
    assert any(g.startswith("vfpd:") for g in (tmp_path / "etc" / "group").read_text().split())


@pytest.mark.skipif(shutil.which("systemd-tmpfiles") is None
                    or shutil.which("systemd-sysusers") is None,
                    reason="systemd-tmpfiles or systemd-sysusers missing")
def test_tmpfiles_seeds_the_config_once_readable_by_root_and_vfpd_only(tmp_path: Path) -> None:
    """The config may hold a webhook's Authorization header: never world-readable."""
    example = tmp_path / "usr/local/share/vfpd/config.example.toml"
    example.parent.mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    shutil.copy(UNITS / "config.example.toml", example)
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}",
                    str(UNITS / "sysusers.d" / "vfpd.conf")], check=True, capture_output=True,
                   timeout=60)
    conf = str(UNITS / "tmpfiles.d" / "vfpd.conf")
    cmd = ["systemd-tmpfiles", "--create", f"--root={tmp_path}", conf]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    seeded = tmp_path / "etc/vfpd/config.toml"
    assert seeded.read_text() == example.read_text()
    st = seeded.stat()
    vfpd_gid = next(int(line.split(":")[2]) for line in
                    (tmp_path / "etc/group").read_text().splitlines() if line.startswith("vfpd:"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, vfpd_gid)
    seeded.write_text("# edited by the admin\n")
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    assert seeded.read_text() == "# edited by the admin\n"


def test_example_config_is_valid() -> None:
    cfg = config_mod.load(UNITS / "config.example.toml",
                          env={"CONFIGURATION_DIRECTORY": "/etc/vfpd",
                               "STATE_DIRECTORY": "/var/lib/vfpd",
                               "RUNTIME_DIRECTORY": "/run/vfpd"})
    assert cfg.control.socket == Path("/run/vfpd/vfpd.sock")
    assert cfg.control.socket_mode == 0o660 and cfg.control.socket_group == "vfpd"
    assert cfg.storage.state_dir == Path("/var/lib/vfpd")


# -- vfpd under a unit's environment ------------------------------------------------------------

def _daemon_available() -> bool:
    try:
        import vfpd.service.daemon  # noqa: F401
    except ImportError:
        return False
    return VFPD.exists()


def _weights_line(tmp_path: Path) -> str:
    """Until base weights ship, an untrained model of the real architecture stands in: this test
    is about the service environment, not about matching."""
    from vfpd.model.embed import DEFAULT_WEIGHTS
    if DEFAULT_WEIGHTS.exists():
        return ""
    from vfpd.model.network import FingerprintNet, save_weights
    path = tmp_path / "untrained.pt"
    save_weights(path, FingerprintNet())
    return f'[model]\nweights = "{path}"\n'


class NotifyListener:
    """The manager's end of NOTIFY_SOCKET: a bound datagram socket, as systemd makes it."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str | None = None, timeout: float = 120.0,
                 proc: subprocess.Popen[str] | None = None) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        for m in self.messages:
            if key in m and (value is None or m[key] == value):
                return m
        while time.monotonic() < deadline:
            self.sock.settimeout(min(1.0, max(0.01, deadline - time.monotonic())))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if proc is not None and proc.poll() is not None:
                    err = proc.stderr.read()[-3000:] if proc.stderr else ""
                    raise AssertionError(f"vfpd exited with {proc.returncode} before {key}: "
                                         f"{err}") from None
                continue
            m = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(m)
            if key in m and (value is None or m[key] == value):
                return m
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s; got {self.messages}")

    def drain(self, seconds: float) -> None:
        """Collect every datagram that arrives in the next `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()
                                      if "=" in line))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def unit_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], NotifyListener]]:
    dirs = {name: tmp_path / sub for name, sub in (
        ("STATE_DIRECTORY", "var/lib/vfpd"), ("RUNTIME_DIRECTORY", "run/vfpd"),
        ("CONFIGURATION_DIRECTORY", "etc/vfpd"), ("CACHE_DIRECTORY", "var/cache/vfpd"))}
    for d in dirs.values():
        d.mkdir(parents=True)  # systemd creates them before ExecStart
    videos = tmp_path / "videos"
    videos.mkdir()
    (dirs["CONFIGURATION_DIRECTORY"] / "config.toml").write_text(
        f'[watch]\npaths = ["{videos}"]\n[notify]\ndesktop = false\n' + _weights_line(tmp_path))
    listener = NotifyListener(tmp_path / "notify.sock")
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "LANG": "C.UTF-8", "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
           "WATCHDOG_USEC": "1000000", "INVOCATION_ID": "0" * 32,
           **{k: str(v) for k, v in dirs.items()}}
    yield env, listener
    listener.close()


@pytest.mark.slow
@pytest.mark.skipif(not _daemon_available(), reason="the daemon (vfpd/service/daemon.py) is not "
                                                    "built yet")
def test_vfpd_under_a_units_environment(unit_env: tuple[dict[str, str], NotifyListener],
                                        tmp_path: Path) -> None:
    env, listener = unit_env
    # WATCHDOG_PID is the main process's pid, as systemd sets it: `exec` keeps the shell's pid.
    proc = subprocess.Popen(["/bin/sh", "-c", f'WATCHDOG_PID=$$ exec "{VFPD}"'], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = listener.wait_for("READY", "1", proc=proc)
        assert "STATUS" in ready and "queued" in ready["STATUS"]
        assert ready.get("MAINPID") == str(proc.pid)
        first = len(listener.messages)
        listener.drain(2.5)
        pings = [m for m in listener.messages[first:] if m.get("WATCHDOG") == "1"]
        assert len(pings) >= 3  # every WATCHDOG_USEC/2 = 0.5 s

        state = Path(env["STATE_DIRECTORY"])
        runtime = Path(env["RUNTIME_DIRECTORY"])
        sock = runtime / "vfpd.sock"
        assert (state / "catalog.db").is_file()
        st = os.lstat(sock)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        with Client(sock) as c:
            status = c.call("status")
        assert status["roots"][0]["path"] == str(tmp_path / "videos")
        # Nothing of the daemon's lands in the home directory when systemd names the places.
        assert not [p for p in Path(env["HOME"]).rglob("*")]

        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING", "1", timeout=30)
        assert proc.wait(timeout=30) == 0
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
