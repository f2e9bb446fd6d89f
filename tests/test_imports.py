"""Importing the daemon, vfpctl or the scan does not import torch: torch comes with the model
(the daemon's runs in a process of its own and the daemon never imports it, as
tests/test_daemon_model_process.py checks of the running daemon; `vfpctl` commands that only
talk to the daemon never do). The weights' version is read without it (vfpd.model.version)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["vfpd.service.daemon", "vfpd.cli.daemon", "vfpd.cli.ctl",
                                    "vfpd.scan"])
def test_torch_is_not_imported_at_start(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import sys, {module}; "
                           "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"{module} imports torch at start: {done.stdout}"


def test_milvus_client_is_imported_only_for_its_backend() -> None:
    """The default (faiss) backend never imports pymilvus or Milvus Lite, installed or not."""
    code = ("import sys, vfpd.service.daemon, vfpd.service.wiring as w, vfpd.config as c; "
            "w.video_indexes(c.parse({}, None, {'STATE_DIRECTORY': '/nonexistent'})).close(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pymilvus', "
            "'milvus_lite')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
