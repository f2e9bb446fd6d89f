"""Announce duplicates from the persisted outbox: log line, desktop, webhook, exec hook.

The pipeline writes each event into the catalog's outbox in the same transaction as the duplicate
itself; one thread per sink takes it from there. Every sink marks an event delivered *before* it
announces it, and puts it back for a retry when the announcement fails: so no event is ever
announced twice, even across kill -9. The price is that a kill in the milliseconds between the
two loses that one announcement; the duplicate itself stays in the catalog (`vfpctl duplicates`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import vfpd
from vfpd.catalog import Catalog, OutboxItem, RetryPolicy
from vfpd.config import NotifyConfig

log = logging.getLogger("vfpd.notify")
duplicates_log = logging.getLogger("vfpd.duplicate")

SINK_LOG = "log"
SINK_DESKTOP = "desktop"
SINK_WEBHOOK = "webhook"
SINK_EXEC = "exec"
PAYLOAD_VERSION = 2  # 2: the event id became 128 random bits (a string) instead of the outbox row
# Events fetched from the outbox per round: a burst of hundreds is delivered in a few rounds.
CLAIM_BATCH = 50
# notify-send returns in milliseconds; a stuck session bus must not hold the sink for long.
DESKTOP_TIMEOUT = 10.0
# The catalog counts one attempt when an event is marked delivered and one more when a failure
# puts it back, so each failed try of a sink counts twice against the retry policy.
ATTEMPTS_PER_TRY = 2
OUTBOX_RETENTION_S = 7 * 86400.0
"""Announced events stay in the outbox for a week, then are pruned: long enough to look up what
was sent (a webhook's `id`, a failed delivery's error) after a weekend away, short enough that the
outbox does not grow with every duplicate ever found."""
OUTBOX_PRUNE_EVERY_S = 3600.0
"""Pruning runs at most once an hour, and only when a sink wakes up anyway (an idle daemon stays
asleep): events a few minutes past the retention harm no one."""
# Output of an exec hook kept for the log: enough for an error message, not a flood.
EXEC_OUTPUT_CHARS = 500


class DeliveryError(Exception):
    """A sink could not deliver an event; it is retried with back-off."""


def delivery_policy(retries: int, backoff_s: float, backoff_max_s: float) -> RetryPolicy:
    """The catalog's retry policy that gives each sink `retries` further tries after a failure,
    the n-th after about backoff_s * 4**(n-1) seconds (see ATTEMPTS_PER_TRY)."""
    return RetryPolicy(max_attempts=ATTEMPTS_PER_TRY * (retries + 1), backoff_s=backoff_s / 2,
                       backoff_max_s=backoff_max_s)


def enabled_sinks(config: NotifyConfig, env: Mapping[str, str]) -> list[str]:
    """The sinks an event is queued for with this config and environment."""
    sinks = []
    if config.log:
        sinks.append(SINK_LOG)
    if config.desktop and env.get("DBUS_SESSION_BUS_ADDRESS") and shutil.which(
            "notify-send", path=env.get("PATH")):
        sinks.append(SINK_DESKTOP)
    if config.webhook is not None:
        sinks.append(SINK_WEBHOOK)
    if config.exec:
        sinks.append(SINK_EXEC)
    return sinks


def body(item: OutboxItem) -> dict[str, Any]:
    """What a sink receives: the stored event (vfpd.events.DuplicateEvent) with the format's
    version (docs/webhook.md)."""
    return {"version": PAYLOAD_VERSION, **item.payload}


def log_line(event: Mapping[str, Any]) -> str:
    """One grep-able line: paths JSON-quoted so spaces and odd characters stay unambiguous."""
    existing = ",".join(json.dumps(e["path"]) for e in event.get("existing", []))
    return (f"duplicate kind={event.get('kind')} score={float(event.get('score', 0)):.3f} "
            f"new={json.dumps(event['new']['path'])} existing={existing}")


def deliver_webhook(url: str, event: Mapping[str, Any], timeout: float,
                    headers: tuple[tuple[str, str], ...] = ()) -> None:
    data = json.dumps(event, sort_keys=True).encode("utf-8")
    req = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"vfpd/{vfpd.__version__}",
        "X-Vfpd-Event": str(event.get("event", "duplicate")), **dict(headers)})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read(1 << 16)
            status = resp.status
    except urllib.error.HTTPError as e:
        raise DeliveryError(f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DeliveryError(f"cannot reach {url}: {reason}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status}")


def exec_env(event: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    """The hook's environment: ours plus VFPD_* variables describing the event (docs/webhook.md)."""
    existing = event.get("existing", [])
    env = dict(base)
    # One variable per path: any separator inside one variable could be part of a file name
    # (a newline injected paths), and NUL, the one byte names cannot hold, ends a variable.
    env.update({f"VFPD_EXISTING_PATH_{n}": str(e["path"]) for n, e in enumerate(existing, 1)})
    env.update({
        "VFPD_EVENT": str(event.get("event", "duplicate")),
        "VFPD_ID": str(event.get("id", "")),
        "VFPD_KIND": str(event.get("kind", "")),
        "VFPD_SCORE": f"{float(event.get('score', 0)):.4f}",
        "VFPD_NEW_PATH": str(event["new"]["path"]),
        "VFPD_NEW_HASH": str(event["new"].get("hash", "")),
        "VFPD_EXISTING_PATH": str(existing[0]["path"]) if existing else "",
        "VFPD_EXISTING_COUNT": str(len(existing)),
        "VFPD_EXISTING_HASH": str(existing[0].get("hash", "")) if existing else "",
        "VFPD_JSON": json.dumps(event, sort_keys=True),
    })
    return env


def deliver_exec(argv: tuple[str, ...], event: Mapping[str, Any], timeout: float,
                 base_env: Mapping[str, str]) -> None:
    try:
        done = subprocess.run(list(argv), env=exec_env(event, base_env), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise DeliveryError(f"{argv[0]} did not finish within {timeout:.0f} s") from None
    except OSError as e:
        raise DeliveryError(f"cannot run {argv[0]}: {e.strerror or e}") from None
    if done.returncode != 0:
        out = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
        raise DeliveryError(f"{argv[0]} exited with {done.returncode}: "
                            f"{out[:EXEC_OUTPUT_CHARS]}")


def display_name(path: str) -> str:
    """A file's name as text a desktop can show: bytes that are not UTF-8 (carried as surrogate
    escapes) become \\xNN, since notify-send and the D-Bus protocol take UTF-8 only."""
    return os.fsencode(os.path.basename(path)).decode("utf-8", "backslashreplace")


def deliver_desktop(event: Mapping[str, Any], env: Mapping[str, str]) -> None:
    existing = event.get("existing", [])
    new = display_name(event["new"]["path"])
    other = display_name(existing[0]["path"]) if existing else "?"
    more = f" (+{len(existing) - 1} more)" if len(existing) > 1 else ""
    text = (f"{new} duplicates {other}{more}: {event.get('kind')}, "
            f"{100 * float(event.get('score', 0)):.0f}%")
    argv = ["notify-send", "--app-name=vfpd", "--icon=video-x-generic", "Duplicate video", text]
    try:
        done = subprocess.run(argv, env=dict(env), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=DESKTOP_TIMEOUT, check=False)
    except (subprocess.TimeoutExpired, OSError) as e:
        raise DeliveryError(f"notify-send failed: {e}") from None
    if done.returncode != 0:
        raise DeliveryError(f"notify-send exited with {done.returncode}: "
                            f"{done.stderr.decode('utf-8', 'replace').strip()[:200]}")


class Notifier:
    """One delivery thread per enabled sink, woken when the pipeline commits an event."""

    def __init__(self, catalog: Catalog, config: NotifyConfig,
                 env: Mapping[str, str] | None = None) -> None:
        self.catalog = catalog
        self.env = dict(os.environ if env is None else env)
        self._config = config
        self._cond = threading.Condition()
        self._stopping = False
        self._wakeups = 0
        self._threads: dict[str, threading.Thread] = {}
        self._pruned_at: float | None = None

    def sinks(self) -> list[str]:
        with self._cond:
            return enabled_sinks(self._config, self.env)

    def configure(self, config: NotifyConfig) -> None:
        """A reloaded [notify]: new events go to the new set of sinks; threads start as needed."""
        with self._cond:
            self._config = config
        self.start()

    def start(self) -> None:
        for sink in self.sinks():
            if sink not in self._threads:
                t = threading.Thread(target=self._run, args=(sink,), name=f"vfpd-notify-{sink}",
                                     daemon=True)
                self._threads[sink] = t
                t.start()

    def wake(self) -> None:
        with self._cond:
            self._wakeups += 1
            self._cond.notify_all()

    def stop(self, timeout: float = 3.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads.values():
            t.join(max(0.0, deadline - time.monotonic()))

    def _deliver(self, sink: str, item: OutboxItem) -> None:
        event = body(item)
        with self._cond:
            config = self._config
        if sink == SINK_WEBHOOK:
            if config.webhook is None:
                raise DeliveryError("webhook no longer configured")
            deliver_webhook(config.webhook.url, event, config.webhook.timeout,
                            config.webhook.headers)
        elif sink == SINK_EXEC:
            if not config.exec:
                raise DeliveryError("exec hook no longer configured")
            deliver_exec(config.exec, event, config.exec_timeout, self.env)
        elif sink == SINK_DESKTOP:
            deliver_desktop(event, self.env)
        else:
            raise DeliveryError(f"unknown sink {sink!r}")

    def _run(self, sink: str) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                seen = self._wakeups
            try:
                items = self.catalog.outbox_claim(sink, CLAIM_BATCH)
            except Exception:
                log.exception("cannot read the outbox for %s", sink)
                items = None
            for item in items or ():
                with self._cond:
                    if self._stopping:
                        return
                self._one(sink, item)
            self._prune()
            with self._cond:
                if self._stopping:
                    return
                if items is not None and len(items) == CLAIM_BATCH or self._wakeups != seen:
                    continue
                due = self._next_due(sink) if items is not None else self._retry_later()
                # Just past the due time, so that the delivery is due when we look again.
                self._cond.wait(None if due is None else max(0.0, due - time.time()) + 0.01)

    def _next_due(self, sink: str) -> float | None:
        try:
            return self.catalog.outbox_next_due(sink)
        except Exception:
            log.exception("cannot read the outbox for %s", sink)
            return self._retry_later()

    def _retry_later(self) -> float:
        """When to look at an outbox that could not be read again (not in a tight loop)."""
        return time.time() + self.catalog.delivery_policy.backoff_s

    def _prune(self) -> None:
        with self._cond:
            now = time.monotonic()
            if self._pruned_at is not None and now - self._pruned_at < OUTBOX_PRUNE_EVERY_S:
                return
            self._pruned_at = now
        try:
            pruned = self.catalog.outbox_prune(older_than=time.time() - OUTBOX_RETENTION_S)
        except Exception:
            log.exception("cannot prune the outbox")
            return
        if pruned:
            log.info("pruned %d announced events older than %.0f days from the outbox", pruned,
                     OUTBOX_RETENTION_S / 86400)

    def _one(self, sink: str, item: OutboxItem) -> None:
        cat = self.catalog
        cat.outbox_ack(item.id, sink)  # first: whatever happens next, never announced twice
        if sink == SINK_LOG:
            duplicates_log.info("%s", log_line(body(item)))
            return
        try:
            self._deliver(sink, item)
        except Exception as e:
            if not isinstance(e, DeliveryError):  # a bug in a sink must not kill its thread
                log.exception("event %d to %s", item.id, sink)
            tries = (item.attempts + 1) // ATTEMPTS_PER_TRY + 1
            if cat.outbox_fail(item.id, sink, str(e)):
                log.error("giving up announcing event %d to %s after %d tries: %s", item.id,
                          sink, tries, e)
            else:
                delay = cat.delivery_policy.delay(item.attempts + ATTEMPTS_PER_TRY)
                log.warning("event %d to %s failed (%s); retrying in %.0f s", item.id, sink, e,
                            delay)
            return
        log.debug("event %d delivered to %s", item.id, sink)
