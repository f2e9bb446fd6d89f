"""The real daemon as a subprocess, for the tests: its config, start, log, stop; a real webhook
receiver and a real NOTIFY_SOCKET listener; a polling wait with a deadline."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vfpd.catalog import Catalog

SETTLE = 1.0
# Start-up imports torch and the model on a shared 2-core machine: slow, but bounded.
START_TIMEOUT = 120.0
# A deadline for "it happened", far above the few seconds it takes, so load never fails a test.
EVENT_TIMEOUT = 60.0
WEIGHTS = os.environ.get("VFPD_TEST_WEIGHTS")  # None: the shipped weights


def wait_until(cond: Callable[[], Any], timeout: float = EVENT_TIMEOUT,
               what: str | Callable[[], str] = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what() if callable(what) else what or cond}")
        time.sleep(0.1)


class NotifyListener:
    """A real AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append(data.decode())

    def fields(self) -> list[str]:
        return [f for m in list(self.messages) for f in m.split("\n")]

    def close(self) -> None:
        self._stop = True
        self._t.join()
        self.sock.close()


class Hook(http.server.BaseHTTPRequestHandler):
    events: list[dict]

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body["_received"] = time.time()
        self.events.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class WebhookServer:
    def __init__(self) -> None:
        self.events: list[dict] = []
        handler = type("H", (Hook,), {"events": self.events})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dup"
        self._t = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._t.start()

    def for_path(self, path: Path) -> list[dict]:
        return [e for e in list(self.events) if e["new"]["path"] == str(path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._t.join()


@dataclass
class Daemon:
    home: Path
    roots: list[Path]
    hook: WebhookServer
    notify: NotifyListener
    extra: str = ""
    model: str = ""
    """More [model] keys, one per line."""
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)
    config: Path = field(init=False)
    state: Path = field(init=False)
    starts: int = 0

    def __post_init__(self) -> None:
        self.state = self.home / "state"
        self.config = self.home / "vfpd.toml"
        self.write_config(self.roots)

    def write_config(self, roots: list[Path], extra: str | None = None) -> None:
        weights = f'weights = "{WEIGHTS}"\n' if WEIGHTS else ""
        self.config.write_text(f"""
[watch]
paths = {json.dumps([str(r) for r in roots])}
settle_seconds = {SETTLE}
[storage]
state_dir = "{self.state}"
[control]
socket = "{self.home}/ctl.sock"
[notify]
desktop = false
[notify.webhook]
url = "{self.hook.url}"
timeout = 5
[model]
device = "cpu"
{weights}{self.model}
[decode]
workers = 1
{extra if extra is not None else self.extra}
""")

    def start(self) -> None:
        self.starts += 1
        self.log = self.home / f"daemon{self.starts}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM",
                                                                "DBUS_SESSION_BUS_ADDRESS")}
        env.update(NOTIFY_SOCKET=self.notify.path, WATCHDOG_USEC="2000000")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "vfpd.cli.daemon", "--config",
                                          str(self.config)], stdout=out, stderr=out, env=env)
        n = self.notify.fields().count("READY=1")
        wait_until(lambda: self.notify.fields().count("READY=1") > n or self.proc.poll() is not None,
                   START_TIMEOUT, "READY=1")
        assert self.proc.poll() is None, self.text()

    def stacks(self) -> str:
        """The log's end with every thread's stack (SIGUSR1), to see why something never came."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
        return self.text()[-12000:]

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self, needle: str) -> list[str]:
        return [ln for ln in self.text().splitlines() if needle in ln]

    def wait_log(self, needle: str, count: int = 1, timeout: float = EVENT_TIMEOUT) -> None:
        wait_until(lambda: len(self.lines(needle)) >= count or self.proc.poll() is not None,
                   timeout, lambda: f"{needle!r} in the log, which ends:\n{self.stacks()}")
        assert self.proc.poll() is None, self.text()[-3000:]

    def catalog(self) -> Catalog:
        return Catalog(self.state / "catalog.db", readonly=True)

    def close(self) -> None:
        """Stop the daemon if it was started, close its listeners and remove its home."""
        if self.proc is not None:
            self.stop()
        self.hook.close()
        self.notify.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
