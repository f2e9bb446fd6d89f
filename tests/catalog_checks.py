"""SQLite's own checks on a catalog file, for the tests that prove a crash tore nothing. No part
of vfpd needs them at run time, so they are test helpers, not Catalog methods."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def _read(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def integrity_problems(path: Path) -> list[str]:
    """Problems found by SQLite's integrity check and the foreign-key check; [] when sound."""
    conn = _read(path)
    try:
        problems = [r[0] for r in conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {r[0]} row {r[1]} -> {r[2]}"
                     for r in conn.execute("PRAGMA foreign_key_check")]
        return problems
    finally:
        conn.close()


def schema_version(path: Path) -> int:
    conn = _read(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def outbox_ids(path: Path) -> set[int]:
    """Ids of the events still in the outbox (pruning deletes them)."""
    conn = _read(path)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM outbox")}
    finally:
        conn.close()
