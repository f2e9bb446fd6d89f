"""The notification outbox: events persisted with the change they announce, delivered per sink."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from vfpd.catalog.core import CatalogCore
from vfpd.catalog.vocabulary import DeliveryState


@dataclass(frozen=True)
class OutboxItem:
    id: int
    sink: str
    payload: dict
    attempts: int
    created: float


class OutboxStore(CatalogCore):
    """Events waiting to be delivered, and their deliveries."""

    def outbox_enqueue(self, payload: dict, sinks: Sequence[str],
                       now: float | None = None) -> int:
        """Persist an event for delivery to each sink. Call inside the transaction that records
        what the event is about, so the two are committed together."""
        now = time.time() if now is None else now
        with self.transaction() as w:
            oid = w.execute("INSERT INTO outbox(created, payload) VALUES (?, ?)",
                            (now, json.dumps(payload, sort_keys=True))).lastrowid
            w.executemany("INSERT INTO deliveries(outbox_id, sink, next_try) VALUES (?, ?, ?)",
                          [(oid, s, now) for s in dict.fromkeys(sinks)])
        return oid

    def outbox_claim(self, sink: str, limit: int = 100,
                     now: float | None = None) -> list[OutboxItem]:
        """Due, undelivered events for `sink`, oldest first. Deliver, then ack or fail each."""
        now = time.time() if now is None else now
        rows = self._reader().execute(
            "SELECT o.id, d.sink, o.payload, d.attempts, o.created FROM deliveries d "
            "JOIN outbox o ON o.id = d.outbox_id "
            f"WHERE d.sink = ? AND d.state = '{DeliveryState.PENDING}' "
            "AND d.next_try <= ? ORDER BY o.id LIMIT ?", (sink, now, limit)).fetchall()
        return [OutboxItem(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]

    def outbox_next_due(self, sink: str) -> float | None:
        """When the next undelivered event for `sink` is due (a retry's time, or the past for
        one due now), or None when none waits: how long the sink's thread may sleep."""
        return self._reader().execute(
            "SELECT MIN(next_try) FROM deliveries "
            f"WHERE sink = ? AND state = '{DeliveryState.PENDING}'",
            (sink,)).fetchone()[0]

    def outbox_ack(self, outbox_id: int, sink: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.transaction() as w:
            w.execute(f"UPDATE deliveries SET state = '{DeliveryState.DONE}', delivered_at = ?, "
                      "attempts = attempts + 1 WHERE outbox_id = ? AND sink = ?",
                      (now, outbox_id, sink))

    def outbox_fail(self, outbox_id: int, sink: str, error: str,
                    now: float | None = None) -> bool:
        """A delivery attempt failed: retry later with back-off, or give up after the policy's
        max attempts. Returns True when it gave up."""
        now = time.time() if now is None else now
        policy = self.delivery_policy
        with self.transaction() as w:
            row = w.execute("SELECT attempts FROM deliveries WHERE outbox_id = ? AND sink = ?",
                            (outbox_id, sink)).fetchone()
            if row is None:
                return True
            attempts = row[0] + 1
            gave_up = attempts >= policy.max_attempts
            w.execute("UPDATE deliveries SET attempts = ?, last_error = ?, next_try = ?, "
                      "state = ? WHERE outbox_id = ? AND sink = ?",
                      (attempts, error, now + policy.delay(attempts),
                       DeliveryState.FAILED if gave_up else DeliveryState.PENDING, outbox_id, sink))
        return gave_up

    def outbox_prune(self, older_than: float) -> int:
        """Delete events created before `older_than` whose deliveries are all finished (done or
        given up); a delivery still pending keeps its event. Returns the number deleted."""
        with self.transaction() as w:
            return w.execute(
                "DELETE FROM outbox WHERE created < ? AND NOT EXISTS (SELECT 1 FROM deliveries "
                f"d WHERE d.outbox_id = outbox.id AND d.state = '{DeliveryState.PENDING}')",
                (older_than,)).rowcount
