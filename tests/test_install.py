"""`./dev install`: vfpd for everyday use in a venv of its own, vfpd/vfpctl linked into a folder
on PATH. A whole install (torch included) takes minutes on a shared machine, so it runs where
VFPD_TEST_INSTALL=1 (.ci/run sets it); the usage check always runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import vfpd

DEV = Path(__file__).resolve().parent.parent / "dev"
INSTALL_TIMEOUT = 1800  # a cold pip cache downloads torch's CPU build (~200 MB)


def test_install_usage_error() -> None:
    done = subprocess.run([str(DEV), "install", "--bogus"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("usage: ./dev install")


@pytest.mark.skipif(os.environ.get("VFPD_TEST_INSTALL") != "1",
                    reason="a whole install takes minutes: set VFPD_TEST_INSTALL=1 (CI does)")
def test_install_into_a_temporary_prefix(tmp_path: Path) -> None:
    venv, bin_dir, home = tmp_path / "venv", tmp_path / "bin", tmp_path / "home"
    env = {**os.environ, "HOME": str(home)}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([str(DEV), "install", "--venv", str(venv), "--bin", str(bin_dir)],
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"vfpctl: {bin_dir}/vfpctl" in done.stdout
    assert f"{bin_dir} is not on your PATH" in done.stdout
    # The linked commands run from anywhere, with the venv's own copy of vfpd (not the clone's)
    # and the CPU build of torch.
    version = subprocess.run([str(bin_dir / "vfpctl"), "--version"], capture_output=True,
                             text=True, timeout=120, env=env, cwd=tmp_path)
    assert version.stdout.strip() == f"vfpctl {vfpd.__version__}"
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import torch, vfpd; print(vfpd.__file__, torch.version.cuda)"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    path, cuda = where.stdout.split()
    assert Path(path).is_relative_to(venv) and cuda == "None"
    check = subprocess.run([str(bin_dir / "vfpd"), "--check-config"], capture_output=True,
                           text=True, timeout=120, env=env, cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.startswith("config ok"), check.stderr
