"""The README's first command: the demo builds real clips and copies and finds every copy, then
shows the daemon announcing a copy dropped into a watched folder, and stops it cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_groups_every_copy_then_the_daemon_announces_one(tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    out = subprocess.run([sys.executable, "-m", "vfpd.demo", "--keep", str(keep)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    groups = [block for block in out.stdout.split("\n\n") if block.startswith("Group")]
    names = [{line.split("/")[-1].split()[0] for line in g.splitlines()[1:]} for g in groups]
    assert sorted(map(sorted, names)) == sorted(map(sorted, [
        {"bikes.mp4", "bikes-exact-copy.mp4", "bikes-small.mp4", "bikes-cropped-trimmed.mp4"},
        {"bunny.mp4", "bunny-mirrored.mp4", "bunny-letterboxed.mp4"},
    ]))
    assert not any("carphone.mp4" in g for g in groups)
    assert "carphone.mp4 is the unrelated video" in out.stdout
    assert (keep / "Videos" / "carphone.mp4").is_file()  # built, scanned, alone
    # The daemon part: the copy dropped in is announced against the file that was there.
    watched = keep / "Watched"
    announced = re.search(r"^    duplicate kind=(\w+) score=([\d.]+) new=\"(.*?)\" existing=\"(.*?)\"$",
                          out.stdout, flags=re.M)
    assert announced, out.stdout
    assert announced[3] == str(watched / "bikes-small.mp4")
    assert announced[4] == str(watched / "bikes.mp4")
    assert float(announced[2]) >= 0.75
    assert "stopped with SIGTERM: exit code 0" in out.stdout
    assert f"The videos are kept in {keep}." in out.stdout
