"""What /proc says about a process the tests started or watch."""

from __future__ import annotations

from pathlib import Path


def ended(pid: int) -> bool:
    """Gone, or exited and waiting to be reaped by whoever is its parent now (a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
