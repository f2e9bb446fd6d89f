"""The exec hook gets each existing path whole: a file name with a newline (or any byte but NUL)
cannot inject paths. A real script reads the variables the way docs/webhook.md shows."""

from __future__ import annotations

import os

from vfpd.service.notify import deliver_exec

EVENT = {
    "event": "duplicate", "kind": "near", "score": 0.912,
    "new": {"path": "/v/new copy.mp4", "hash": "b" * 64},
}


def test_exec_hook_gets_each_existing_path_whole_even_with_a_newline(tmp_path) -> None:
    """A file name with a newline cannot inject paths: each path is its own variable. A real
    script prints them NUL-separated, the way docs/webhook.md shows."""
    existing = ["/v/evil\n/home/me/precious.mp4", "/v/plain.mp4", "/v/caf\udce9 \t*.mp4"]
    event = {**EVENT, "existing": [{"path": p, "hash": "a" * 64} for p in existing]}
    out = tmp_path / "paths.bin"
    script = tmp_path / "hook.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"exec > '{out}'\n"
        "i=1\n"
        "while [ \"$i\" -le \"$VFPD_EXISTING_COUNT\" ]; do\n"
        "    eval \"path=\\$VFPD_EXISTING_PATH_$i\"\n"
        "    printf '%s\\0' \"$path\"\n"
        "    i=$((i + 1))\n"
        "done\n"
        "printf '%s\\0' \"${VFPD_EXISTING_PATHS-unset}\"\n")
    script.chmod(0o755)
    deliver_exec((str(script),), event, 10.0, {"PATH": os.environ["PATH"]})
    fields = out.read_bytes().split(b"\0")
    assert fields[:-2] == [os.fsencode(p) for p in existing]
    assert fields[-2:] == [b"unset", b""]
