"""vfpctl's dispatcher: every sub-command is reachable, daemon commands start light, and the
command line works as people type it (options before the command, --version, pipes, mistakes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from control_helpers import Library, lib  # noqa: F401 - lib is a fixture

import vfpd
from vfpd.cli import ctl
from vfpd.service.control import ControlServer


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


# -- the command line as people type it ----------------------------------------------------------

VFPCTL = [sys.executable, "-m", "vfpd.cli.ctl"]
VFPD = [sys.executable, "-m", "vfpd.cli.daemon"]


def run(*argv: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VFPCTL, *argv], capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize("argv, moved", [
    (["--config", "c.toml", "status"], ["status", "--config", "c.toml"]),
    (["--config=c.toml", "--json", "duplicates", "--kind", "near"],
     ["duplicates", "--config=c.toml", "--json", "--kind", "near"]),
    (["--socket", "s", "--timeout", "3", "query", "f.mp4"],
     ["query", "--socket", "s", "--timeout", "3", "f.mp4"]),
    (["status", "--config", "c.toml"], ["status", "--config", "c.toml"]),
    (["--version"], ["--version"]),
    (["--config", "c.toml", "--bogus", "status"], ["--config", "c.toml", "--bogus", "status"]),
    (["--config", "c.toml"], ["--config", "c.toml"]),
])
def test_options_before_the_command_are_moved_behind_it(argv: list[str], moved: list[str]) -> None:
    assert ctl.command_first(argv) == moved


def test_config_before_or_after_the_command_is_the_same(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[control]\nsocket = "{tmp_path}/mine.sock"\n')
    before = run("--config", str(cfg), "status")
    after = run("status", "--config", str(cfg))
    assert before.returncode == after.returncode == 3  # no daemon at that socket
    assert f"{tmp_path}/mine.sock" in before.stderr
    assert before.stderr == after.stderr and before.stderr.count("\n") == 1
    alone = run("--config", str(cfg))
    assert alone.returncode == 2 and "required: COMMAND" in alone.stderr


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"vfpctl {vfpd.__version__}"


def test_apply_without_an_action_is_an_error(tmp_path: Path) -> None:
    done = run("scan", str(tmp_path), "--apply")
    assert done.returncode == 2
    assert "--apply needs an --action" in done.stderr and done.stdout == ""


def test_output_into_a_closed_pipe_ends_quietly(lib: Library, tmp_path: Path) -> None:
    """`vfpctl duplicates | head -0`: the reader is gone before the first line is written."""
    with ControlServer(tmp_path / "run" / "vfpd.sock", lib.context) as srv:
        for argv in (["duplicates"], ["--json", "duplicates"], ["status"]):
            proc = subprocess.Popen([*VFPCTL, "--socket", str(srv.socket_path), *argv],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            proc.stdout.close()
            err = proc.stderr.read()
            proc.stderr.close()
            assert proc.wait(120) == 0 and err == b"", err.decode()


@pytest.mark.parametrize("content", [b"\xd8\x00\x13binary\xff" * 100, b"# a README\n\ntext\n",
                                     b'{"journal": "something-else"}\n', b"[1, 2]\n"])
def test_undo_of_a_file_that_is_not_a_journal_says_so_in_one_line(tmp_path: Path,
                                                                  content: bytes) -> None:
    bogus = tmp_path / "notes.jsonl"
    bogus.write_bytes(content)
    done = run("undo", str(bogus))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"vfpctl undo: error: {bogus} is not a vfpd action journal (the file " \
                          "`vfpctl scan --apply` names)\n"
    assert bogus.read_bytes() == content


def test_check_config_warns_about_watched_folders_that_do_not_exist(tmp_path: Path) -> None:
    there, missing, a_file = tmp_path / "videos", tmp_path / "nas" / "videos", tmp_path / "f"
    there.mkdir()
    a_file.write_text("")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[watch]\npaths = ["{there}", "{missing}", "{a_file}"]\n'
                   f'[storage]\nstate_dir = "{tmp_path}/state"\n')
    done = subprocess.run([*VFPD, "--config", str(cfg), "--check-config"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("config ok")
    warnings = done.stderr.splitlines()
    assert len(warnings) == 2
    assert f"watched folder {missing} does not exist" in warnings[0]
    assert f"watched folder {a_file} is not a folder" in warnings[1]


def test_readme_lists_every_training_option_with_its_default() -> None:
    import argparse
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(--\w+)[^`]*` \| ([^|]+) \|", readme, flags=re.M))
    parser = ctl.build_parser("train")
    train = parser._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    for action in train._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[0]
        assert flag in rows, f"README's training table misses {flag}"
        shown = rows[flag].strip()
        if action.required:
            assert shown == "(required)", flag
        elif isinstance(action, argparse._StoreTrueAction):
            assert shown == "off", flag
        elif isinstance(action.default, (int, float)):
            assert float(shown) == action.default, (flag, shown, action.default)
        elif isinstance(action.default, str):
            assert shown == action.default, (flag, shown, action.default)
