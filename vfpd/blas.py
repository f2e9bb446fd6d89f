"""numpy's BLAS on one thread in vfpd's own processes: set before numpy is imported."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

BLAS_THREADS = "1"
"""OpenBLAS threads in the scan's and the daemon's main process. Their matrix products are small
(a video's frames against a candidate's, or against all candidates at once), and OpenBLAS threads
that wait for work spin on cores the decode workers need. Measured on 2 cores: the uncached scan
of the accuracy set 58.4 s wall / 96.7 s CPU with numpy's default (a thread per core), 49.8 s /
81.0 s with one; a cached rescan of 10,000 files 91.7 s / 166 s against 88.9 s / 85 s."""


def limit_blas_threads(environ: MutableMapping[str, str] = os.environ) -> None:
    """Ask OpenBLAS for BLAS_THREADS threads unless the user chose a number. Takes effect only if
    numpy is not imported yet: entry points call it first."""
    environ.setdefault("OPENBLAS_NUM_THREADS", BLAS_THREADS)
