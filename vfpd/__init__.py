"""vfpd: find duplicate videos, and keep finding them."""

from __future__ import annotations

__version__ = "0.1.0"
