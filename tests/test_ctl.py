"""vfpctl's dispatcher: every sub-command is reachable, and daemon commands start light."""

from __future__ import annotations

import subprocess
import sys

from vfpd.cli import ctl


def test_every_owned_command_is_registered_by_its_owner() -> None:
    full = ctl.build_parser()
    choices = full._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(ctl.COMMAND_OWNERS) <= set(choices)
    for command in ctl.COMMAND_OWNERS:
        one = ctl.build_parser(command)
        assert command in one._subparsers._group_actions[0].choices  # type: ignore[union-attr]


def test_status_does_not_import_torch_or_faiss(tmp_path) -> None:
    code = ("import sys; from vfpd.cli import ctl; ctl.build_parser('status'); "
            "print(sorted(m for m in ('torch', 'faiss', 'av') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
