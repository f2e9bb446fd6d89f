"""The README's first command: the demo builds real clips and copies and finds every copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_groups_every_copy_and_nothing_else(tmp_path: Path) -> None:
    folder = tmp_path / "Videos"
    out = subprocess.run([sys.executable, "-m", "vfpd.demo", "--keep", str(folder)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    groups = [block for block in out.stdout.split("\n\n") if block.startswith("Group")]
    names = [{line.split("/")[-1].split()[0] for line in g.splitlines()[1:]} for g in groups]
    assert sorted(map(sorted, names)) == sorted(map(sorted, [
        {"bikes.mp4", "bikes-exact-copy.mp4", "bikes-small.mp4", "bikes-cropped-trimmed.mp4"},
        {"bunny.mp4", "bunny-mirrored.mp4", "bunny-letterboxed.mp4"},
    ]))
    assert "carphone.mp4" not in out.stdout
    assert (folder / "carphone.mp4").is_file()  # built, scanned, alone
