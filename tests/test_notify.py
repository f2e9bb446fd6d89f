"""Notification sinks from a real catalog outbox: log line, webhook (real HTTP server), exec hook
(a real script), desktop (a fake notify-send on PATH: the only stand-in, for the session bus)."""

from __future__ import annotations

import http.server
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog_checks import outbox_ids
from vfpd.catalog import Catalog
from vfpd.config import NotifyConfig, WebhookConfig
from vfpd.events import DuplicateEvent, FileRef
from vfpd.service.notify import (
    OUTBOX_RETENTION_S,
    SINK_DESKTOP,
    SINK_EXEC,
    SINK_LOG,
    SINK_WEBHOOK,
    Notifier,
    deliver_desktop,
    delivery_policy,
    display_name,
    enabled_sinks,
    log_line,
)

EVENT = DuplicateEvent.make("near", 0.912, FileRef("/v/new copy.mp4", "b" * 64, 3811245, 30.0),
                            [FileRef("/v/orig.mp4", "a" * 64)], ()).to_json()


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []
    fail_first = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
        else:
            cls.received.append(data)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, type[Hook]]]:
    handler = type("H", (Hook,), {"received": [], "fail_first": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()
    t.join()


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    cat = Catalog(tmp_path / "catalog.db", deliveries=delivery_policy(2, 0.2, 1.0))
    yield cat
    cat.close()


def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.05)


def test_log_line_format() -> None:
    assert log_line({"id": 3, **EVENT}) == (
        'duplicate kind=near score=0.912 new="/v/new copy.mp4" existing="/v/orig.mp4"')


def test_enabled_sinks_need_a_session_bus_for_desktop(tmp_path: Path) -> None:
    cfg = NotifyConfig(desktop=True, exec=("true",))
    assert enabled_sinks(cfg, {"PATH": str(tmp_path)}) == [SINK_LOG, SINK_EXEC]
    (tmp_path / "notify-send").write_text("#!/bin/sh\n")
    (tmp_path / "notify-send").chmod(0o755)
    env = {"PATH": str(tmp_path), "DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent"}
    assert enabled_sinks(cfg, env) == [SINK_LOG, SINK_DESKTOP, SINK_EXEC]


def test_desktop_text_is_utf8_for_names_that_are_not(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "notify-send").write_text(
        f"#!/bin/sh\nprintf '%s' \"$4\" > {tmp_path}/desktop.txt\n")
    (bindir / "notify-send").chmod(0o755)
    new = os.fsdecode(b"/v/caf\xe9.mp4")
    event = {**EVENT, "new": {**EVENT["new"], "path": new}}
    deliver_desktop(event, {"PATH": f"{bindir}:{os.environ['PATH']}"})
    text = (tmp_path / "desktop.txt").read_bytes().decode("utf-8")  # strict: must be UTF-8
    assert text.startswith("caf\\xe9.mp4 duplicates orig.mp4")
    assert display_name("/v/café.mp4") == "café.mp4"


def test_every_sink_delivers_once(catalog, hook, tmp_path, caplog) -> None:
    url, handler = hook
    handler.fail_first = 1  # the first POST fails: retried with back-off
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "notify-send").write_text(
        f"#!/bin/sh\nprintf '%s|' \"$@\" >> {tmp_path}/desktop.txt\necho >> {tmp_path}/desktop.txt\n")
    (bindir / "notify-send").chmod(0o755)
    script = tmp_path / "hook.sh"
    script.write_text(f"#!/bin/sh\necho \"$VFPD_KIND $VFPD_SCORE $VFPD_NEW_PATH|$VFPD_EXISTING_PATH"
                      f"|$1\" >> {tmp_path}/exec.txt\n")
    script.chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "DBUS_SESSION_BUS_ADDRESS": "unix:abstract=x"}
    cfg = NotifyConfig(desktop=True, webhook=WebhookConfig(url=url, timeout=5),
                       exec=(str(script), "arg with space; $(not a shell)"))
    notifier = Notifier(catalog, cfg, env)
    oid = catalog.outbox_enqueue(EVENT, notifier.sinks())
    caplog.set_level(logging.INFO, logger="vfpd.duplicate")
    notifier.start()
    notifier.wake()
    try:
        wait_for(lambda: handler.received and (tmp_path / "exec.txt").exists()
                 and (tmp_path / "desktop.txt").exists())
        wait_for(lambda: catalog.counts().outbox_pending == 0)
    finally:
        notifier.stop()
    assert oid >= 1
    assert handler.received == [{"version": 2, **EVENT}]  # the event's own random id
    assert (tmp_path / "exec.txt").read_text() == (
        "near 0.9120 /v/new copy.mp4|/v/orig.mp4|arg with space; $(not a shell)\n")
    assert "new copy.mp4 duplicates orig.mp4: near, 91%" in (tmp_path / "desktop.txt").read_text()
    lines = [r.getMessage() for r in caplog.records if r.name == "vfpd.duplicate"]
    assert lines == [log_line(EVENT)]

    # A second notifier over the same catalog (a restart) announces nothing again.
    caplog.clear()
    again = Notifier(catalog, cfg, env)
    again.start()
    again.wake()
    time.sleep(0.5)
    again.stop()
    assert len(handler.received) == 1
    assert not [r for r in caplog.records if r.name == "vfpd.duplicate"]


def test_unreachable_webhook_gives_up_and_others_go_on(catalog, tmp_path, caplog) -> None:
    cfg = NotifyConfig(desktop=False, webhook=WebhookConfig(url="http://127.0.0.1:9/", timeout=1))
    notifier = Notifier(catalog, cfg, {})
    caplog.set_level(logging.INFO)
    catalog.outbox_enqueue(EVENT, notifier.sinks())
    notifier.start()
    notifier.wake()
    try:
        wait_for(lambda: any("giving up" in r.getMessage() for r in caplog.records), 30)
    finally:
        notifier.stop()
    assert catalog.counts().outbox_pending == 0
    messages = [r.getMessage() for r in caplog.records]
    assert log_line(EVENT) in messages
    assert any("giving up announcing event" in m and "webhook" in m for m in messages)


def test_failing_exec_hook_is_retried_then_given_up(catalog, tmp_path, caplog) -> None:
    counter = tmp_path / "count"
    script = tmp_path / "fail.sh"
    script.write_text(f"#!/bin/sh\necho x >> {counter}\necho broken >&2\nexit 3\n")
    script.chmod(0o755)
    notifier = Notifier(catalog, NotifyConfig(log=False, desktop=False, exec=(str(script),)), {})
    catalog.outbox_enqueue(EVENT, notifier.sinks())
    caplog.set_level(logging.WARNING)
    notifier.start()
    notifier.wake()
    try:
        wait_for(lambda: any("giving up" in r.getMessage() for r in caplog.records))
    finally:
        notifier.stop()
    assert catalog.counts().outbox_pending == 0
    assert counter.read_text().count("x") == 3  # the first try and 2 retries
    assert any("exited with 3: broken" in r.getMessage() for r in caplog.records)


def test_announced_events_are_pruned_after_the_retention_pending_ones_never(catalog,
                                                                            caplog) -> None:
    notifier = Notifier(catalog, NotifyConfig(desktop=False), {})
    assert notifier.sinks() == [SINK_LOG]
    old = time.time() - OUTBOX_RETENTION_S - 60
    announced_old = catalog.outbox_enqueue(EVENT, [SINK_LOG], now=old)
    # Its webhook delivery waits for a sink that is not configured now (it may be again).
    pending_old = catalog.outbox_enqueue(EVENT, [SINK_LOG, SINK_WEBHOOK], now=old)
    announced_recent = catalog.outbox_enqueue(EVENT, [SINK_LOG])
    caplog.set_level(logging.INFO, logger="vfpd.notify")
    notifier.start()
    notifier.wake()
    try:
        wait_for(lambda: announced_old not in outbox_ids(catalog.path))
    finally:
        notifier.stop()
    assert catalog.outbox_next_due(SINK_LOG) is None, "all three were announced"
    assert outbox_ids(catalog.path) == {pending_old, announced_recent}
    assert catalog.outbox_next_due(SINK_WEBHOOK) is not None
    assert "pruned 1 announced events older than 7 days from the outbox" in caplog.text


def test_a_retry_left_by_an_earlier_run_is_made_when_due(catalog, tmp_path) -> None:
    out = tmp_path / "exec.txt"
    script = tmp_path / "hook.sh"
    script.write_text(f"#!/bin/sh\necho \"$VFPD_KIND\" >> {out}\n")
    script.chmod(0o755)
    notifier = Notifier(catalog, NotifyConfig(log=False, desktop=False, exec=(str(script),)), {})
    oid = catalog.outbox_enqueue(EVENT, notifier.sinks())
    # The previous daemon marked it, failed, and put it back for a retry; then it stopped.
    catalog.outbox_ack(oid, SINK_EXEC)
    assert not catalog.outbox_fail(oid, SINK_EXEC, "exited with 1")
    due = catalog.outbox_next_due(SINK_EXEC)
    assert due is not None and due > time.time() - 1
    notifier.start()  # no wake(): nothing new was committed, the retry's time alone wakes it
    try:
        wait_for(lambda: out.exists())
    finally:
        notifier.stop()
    assert time.time() >= due
    assert out.read_text() == "near\n"
    assert catalog.outbox_next_due(SINK_EXEC) is None
