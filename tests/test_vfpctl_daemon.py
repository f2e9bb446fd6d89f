"""`vfpctl` daemon commands: human and JSON output against a real control server and catalog."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_helpers import Library, make_library

from vfpd.cli import ctl
from vfpd.service.control import ControlServer

VFPCTL = [sys.executable, "-m", "vfpd.cli.ctl"]


@pytest.fixture
def lib(tmp_path: Path) -> Iterator[Library]:
    library = make_library(tmp_path)
    yield library
    library.catalog.close()


@pytest.fixture
def sock(lib: Library, tmp_path: Path) -> Iterator[Path]:
    with ControlServer(tmp_path / "run" / "vfpd.sock", lib.context) as srv:
        yield srv.socket_path


def vfpctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = ctl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_table_and_json(sock: Path, lib: Library, capsys: pytest.CaptureFixture[str]
                               ) -> None:
    code, out, _ = vfpctl(capsys, "status", "--socket", str(sock))
    assert code == 0
    assert "7 files, 6 distinct contents, 6 fingerprints" in out
    assert f"{lib.root}  [inotify: local disk]" in out
    assert "queue:" in out and "flat, 6 vectors" in out and "test-model-1" in out
    code, out, _ = vfpctl(capsys, "status", "--socket", str(sock), "--json")
    assert code == 0 and json.loads(out)["files"] == 7


def test_duplicates_table_and_json(sock: Path, lib: Library,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = vfpctl(capsys, "duplicates", "--socket", str(sock))
    assert code == 0
    assert out.index("Group 1: exact") < out.index("Group 2: partial") < out.index("Group 3: near")
    assert "SIZE" in out and "640x360" in out and str(lib.files[0]) in out
    assert "3 group(s), 13.0 KB reclaimable" in out
    code, out, _ = vfpctl(capsys, "duplicates", "--socket", str(sock), "--json", "--kind", "near",
                          "--min-score", "0.5", "--since", "1d", "--path", str(lib.root))
    groups = json.loads(out)
    assert code == 0 and [g["kind"] for g in groups] == ["near"]
    assert len(groups[0]["members"]) == 3
    code, out, _ = vfpctl(capsys, "duplicates", "--socket", str(sock), "--json", "--since",
                          "2999-01-01")
    assert json.loads(out) == []
    code, out, _ = vfpctl(capsys, "duplicates", "--socket", str(sock), "--kind", "partial",
                          "--path", str(lib.root / "nowhere"))
    assert "No duplicates found" in out


def test_query_any_readable_file(sock: Path, lib: Library, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "elsewhere" / "copy.mp4"
    outside.parent.mkdir()
    outside.write_bytes(lib.files[0].read_bytes())
    monkeypatch.chdir(outside.parent)  # a relative name is resolved by vfpctl, not by the daemon
    code, out, _ = vfpctl(capsys, "query", "copy.mp4", "-k", "2", "--socket", str(sock))
    assert code == 0
    assert f"Nearest to {outside}" in out
    assert str(lib.files[1]) in out and str(lib.files[2]) in out
    code, out, _ = vfpctl(capsys, "query", str(lib.files[3]), "--json", "--socket", str(sock))
    result = json.loads(out)
    assert code == 0 and result["k"] == 10 and len(result["matches"]) == 5


def test_query_errors(sock: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = vfpctl(capsys, "query", str(tmp_path / "missing.mp4"), "--socket", str(sock))
    assert code == 1 and "cannot open" in err
    unknown = tmp_path / "new.mp4"
    unknown.write_bytes(b"never fingerprinted")
    code, _, err = vfpctl(capsys, "query", str(unknown), "--socket", str(sock))
    assert code == 1 and "[unreadable]" in err and "not fingerprinted" in err


def test_control_commands(sock: Path, lib: Library, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    s = ["--socket", str(sock)]
    assert vfpctl(capsys, "pause", *s)[1].startswith("paused")
    assert "PAUSED" in vfpctl(capsys, "status", *s)[1]
    assert vfpctl(capsys, "resume", *s)[1] == "resumed\n"
    code, out, _ = vfpctl(capsys, "rescan", *s)
    assert code == 0 and out == "queued 7 file(s) for a rescan of every root\n"
    code, out, err = vfpctl(capsys, "rescan", str(tmp_path), *s)
    assert code == 1 and "outside-roots" in err and "not inside a watched folder" in err
    code, out, _ = vfpctl(capsys, "failures", *s)
    assert out == "No failed files.\n"
    code, out, err = vfpctl(capsys, "retry", str(lib.files[0]), *s)
    assert code == 1 and "not a failed file" in err
    code, out, _ = vfpctl(capsys, "ignore", str(lib.files[3]), str(lib.files[4]), *s)
    assert code == 0 and "NOT duplicates" in out
    code, out, _ = vfpctl(capsys, "duplicates", "--json", "--kind", "partial", *s)
    assert json.loads(out) == []
    code, out, _ = vfpctl(capsys, "confirm", str(lib.files[3]), str(lib.files[4]), "--json", *s)
    assert code == 0 and json.loads(out)["verdict"] == "confirmed"


def test_failures_table(sock: Path, lib: Library, capsys: pytest.CaptureFixture[str]) -> None:
    bad = lib.root / "bad.mp4"
    bad.write_bytes(b"text")
    lib.catalog.enqueue(str(bad), "new")
    for _ in range(3):
        job = lib.catalog.job(str(bad))
        assert job is not None
        lib.catalog.fail_job(job, "not a video: no video stream")
    code, out, _ = vfpctl(capsys, "failures", "--socket", str(sock))
    assert code == 0 and str(bad) in out and "not a video: no video stream" in out
    code, out, _ = vfpctl(capsys, "retry", str(bad), "--socket", str(sock))
    assert code == 0 and out == f"queued {bad} again\n"


def test_bad_usage(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["duplicates", "--min-score", "7"], ["duplicates", "--since", "soon"],
                 ["query", "x", "-k", "0"], ["duplicates", "--kind", "fuzzy"]):
        with pytest.raises(SystemExit) as e:
            ctl.main([*argv, "--socket", str(sock)])
        assert e.value.code == 2
        assert "error" in capsys.readouterr().err


def test_socket_from_config_and_env(lib: Library, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cfg" / "vfpd.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'[watch]\npaths = ["{lib.root}"]\n[control]\nsocket = "{path}"\n')
    with ControlServer(path, lib.context):
        code, out, _ = vfpctl(capsys, "status", "--config", str(config), "--json")
        assert code == 0 and json.loads(out)["files"] == 7
        monkeypatch.setenv("VFPD_SOCKET", str(path))
        code, out, _ = vfpctl(capsys, "status", "--json")
        assert code == 0 and json.loads(out)["files"] == 7
    broken = tmp_path / "broken.toml"
    broken.write_text("[control]\nsocket_mode = 'rw'\n")
    monkeypatch.delenv("VFPD_SOCKET")
    code, _, err = vfpctl(capsys, "status", "--config", str(broken))
    assert code == 2 and "broken.toml" in err and "socket_mode" in err


def test_no_daemon_one_line_and_exit_3(tmp_path: Path) -> None:
    """A real vfpctl process: no socket file, then a stale socket file nobody listens on."""
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()
    for path in (tmp_path / "absent.sock", stale):
        proc = subprocess.run([*VFPCTL, "status", "--socket", str(path)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 3
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "vfpd is not running" in lines[0]
        assert "systemctl --user start vfpd" in lines[0]


def test_vfpctl_process_against_live_server(sock: Path) -> None:
    proc = subprocess.run([*VFPCTL, "duplicates", "--json", "--socket", str(sock)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 3
