"""The entry points keep numpy's BLAS on one thread (vfpd/blas.py) unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import os, sys
sys.argv = ["vfpctl", "--version"]
from vfpd.cli.{module} import main
try:
    main({argv})
except SystemExit:
    pass
import numpy
print(os.environ.get("OPENBLAS_NUM_THREADS"), len(os.listdir("/proc/self/task")))
"""


def _probe(module: str, argv: list[str], env: dict[str, str]) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module, argv=argv)],
                         capture_output=True, text=True, check=True, env=env).stdout.split()
    return out[-2], int(out[-1])


@pytest.mark.parametrize("module, argv", [("ctl", ["--version"]), ("daemon", ["--version"])])
def test_entry_points_run_numpy_on_one_blas_thread(module: str, argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    threads, tasks = _probe(module, argv, env)
    assert threads == "1"
    assert tasks == 1  # OpenBLAS started no threads of its own
    chosen, _ = _probe(module, argv, {**env, "OPENBLAS_NUM_THREADS": "2"})
    assert chosen == "2"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts no threads on one core")
def test_numpy_alone_would_start_blas_threads() -> None:
    """The check above can fail: without the limit, numpy starts a thread per core."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", "import os, numpy; "
                          "print(len(os.listdir('/proc/self/task')))"],
                         capture_output=True, text=True, check=True, env=env).stdout
    assert int(out) > 1
