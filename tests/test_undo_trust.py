"""`vfpctl undo` trusts no journal: it follows only lines this tool sealed for this user, only
inside the journal's scanned folders as they are now, and never restores setuid/setgid/sticky
bits. Real files, real journals written by the actions and then edited by the test."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from media_factory import make_video
from vfpd.actions import apply, open_journal
from vfpd.cli import ctl
from vfpd.cli.cmd_undo import EXIT_REFUSED
from vfpd.hashing import hash_file
from vfpd.journal import Journal, JournalError, JournalRefused, default_key_dir, load_key
from vfpd.planning import FileFacts, parse_action, plan
from vfpd.undo import undo


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture
def key() -> bytes:
    return load_key(default_key_dir())  # the one `vfpctl undo` uses, under XDG_STATE_HOME


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("src") / "v.mp4", seconds=1.0, width=96, height=64)


def facts(path: Path) -> FileFacts:
    st = os.stat(path)
    return FileFacts(str(path), st.st_size, st.st_mtime_ns, 96, 64, hash_file(path), st.st_dev,
                     st.st_ino)


def scanned_and_acted(video: Path, root: Path, action: str, key: bytes,
                      names: tuple[str, ...] = ("a.mp4", "b.mp4")) -> tuple[list[Path], Path]:
    """Copies of one video under `root`, the action applied to all but the first: a real journal."""
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for n, name in enumerate(names):
        shutil.copyfile(video, root / name)
        os.utime(root / name, ns=(10**9 * (n + 1),) * 2)
        files.append(root / name)
    group = [facts(p) for p in files]
    spec = parse_action(action)
    direct = {frozenset((group[0].path, f.path)) for f in group[1:]}
    journal = root.parent / f"journal-{action.split(':')[0]}.jsonl"
    sealed = open_journal(journal, key, spec, [str(root)])
    try:
        outcomes = apply(plan([group], spec, "oldest", direct), group, spec, sealed)
    finally:
        sealed.close()
    assert all(o.done for o in outcomes)
    return files, journal


def append_line(journal: Path, record: dict[str, object]) -> None:
    with open(journal, "a") as f:
        f.write(json.dumps(record) + "\n")


def test_a_hand_written_line_is_refused_and_nothing_is_undone(
        video: Path, tmp_path: Path, key: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """The attack: a line that 'undoes a hard link' at a file outside every scanned tree would
    overwrite it with a copy of another file."""
    (a, b), journal = scanned_and_acted(video, tmp_path / "lib", "trash", key)
    victim = tmp_path / "outside" / "precious.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"nobody scanned me")
    append_line(journal, {"seq": 9, "op": "hardlink", "path": str(victim), "keep": str(a),
                          "size": a.stat().st_size, "mtime_ns": 1, "mode": 0o644})
    assert ctl.main(["undo", str(journal)]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vfpctl undo: refused: ")
    assert "fails its seal" in err and "nothing was undone" in err
    assert victim.read_bytes() == b"nobody scanned me"
    assert not b.exists(), "the genuine trash line is not followed either"


@pytest.mark.parametrize("edit", ["move-onto", "setuid", "reorder", "drop-middle", "other-key"])
def test_every_edit_of_a_real_journal_breaks_its_seal(video: Path, tmp_path: Path, key: bytes,
                                                     edit: str) -> None:
    target = tmp_path / "dups"
    (a, b, c), journal = scanned_and_acted(video, tmp_path / "lib", f"move:{target}", key,
                                           ("a.mp4", "b.mp4", "c.mp4"))
    lines = journal.read_text().splitlines()
    victim = tmp_path / "outside" / "keys.txt"
    victim.parent.mkdir()
    victim.write_text("secret")
    if edit == "move-onto":
        # Rewrite a genuine move line so that undo 'moves back' an outside file onto a free name.
        n = next(i for i, ln in enumerate(lines) if '"op": "move"' in ln)
        record = json.loads(lines[n])
        record.update(dest=str(victim), path=str(tmp_path / "lib" / "stolen.txt"))
        lines[n] = json.dumps(record)
    elif edit == "setuid":
        n = next(i for i, ln in enumerate(lines) if '"op": "move"' in ln)
        record = json.loads(lines[n])
        record["mode"] = 0o4755
        lines[n] = json.dumps(record)
    elif edit == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    elif edit == "drop-middle":
        del lines[2]
    journal.write_text("\n".join(lines) + "\n")
    other = load_key(tmp_path / "other-user") if edit == "other-key" else key
    with pytest.raises(JournalRefused):
        undo(journal, other)
    assert victim.read_text() == "secret"
    assert not b.exists() and not c.exists()
    assert not (tmp_path / "lib" / "stolen.txt").exists()


def test_sealed_lines_outside_the_scanned_folders_are_still_refused(video: Path, tmp_path: Path,
                                                                    key: bytes) -> None:
    """Defence in depth: even a line with a valid seal is held to the journal's roots, its move
    folder and the trash."""
    victim = tmp_path / "outside" / "file.mp4"
    victim.parent.mkdir()
    shutil.copyfile(video, victim)
    lib = tmp_path / "lib"
    lib.mkdir()
    journal = Journal(tmp_path / "j.jsonl", key, {"op": "move", "target_dir": str(tmp_path / "d")},
                      [str(lib)])
    base = {"size": 1, "mtime_ns": 1, "mode": 0o644}
    journal.write({"seq": 1, "op": "hardlink", "path": str(victim), "keep": str(victim), **base})
    journal.write({"seq": 2, "op": "move", "path": str(lib / "new.mp4"), "dest": str(victim),
                   **base})
    journal.write({"seq": 3, "op": "trash", "path": str(lib / "x.mp4"), "keep": str(victim),
                   "trash_file": str(victim), "trash_info": str(victim) + ".trashinfo", **base})
    journal.write({"seq": 4, "op": "move", "path": str(lib / "../outside/y.mp4"),
                   "dest": str(tmp_path / "d" / "y.mp4"), **base})
    journal.close()
    results = {r.seq: r for r in undo(tmp_path / "j.jsonl", key)}
    assert not any(r.undone for r in results.values())
    assert "outside the journal's scanned folders" in results[1].detail
    assert "not in the journal's move folder" in results[2].detail
    assert "not a trash folder" in results[3].detail
    assert "outside the journal's scanned folders" in results[4].detail
    assert victim.read_bytes() == video.read_bytes()
    assert not (lib / "new.mp4").exists() and not (lib / "x.mp4").exists()


def test_a_folder_swapped_for_a_link_after_the_action_is_not_followed_by_undo(
        video: Path, tmp_path: Path, key: bytes) -> None:
    (a, b), journal = scanned_and_acted(video, tmp_path / "lib" / "sub", "trash", key)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "lib" / "sub").rename(tmp_path / "lib" / "moved-away")
    (tmp_path / "lib" / "sub").symlink_to(elsewhere, target_is_directory=True)
    (result,) = undo(journal, key)
    assert not result.undone and "symbolic link" in result.detail
    assert list(elsewhere.iterdir()) == []


def test_undo_never_restores_setuid_setgid_or_sticky_bits(video: Path, tmp_path: Path,
                                                          key: bytes) -> None:
    """A copy made setuid by its owner, replaced by a symbolic link, comes back as an ordinary
    file: undo may run as another user (root) than the one the bits belonged to."""
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copyfile(video, lib / "a.mp4")
    shutil.copyfile(video, lib / "b.mp4")
    os.utime(lib / "a.mp4", ns=(10**9, 10**9))
    os.chmod(lib / "b.mp4", 0o6755 | stat.S_ISVTX)
    group = [facts(lib / "a.mp4"), facts(lib / "b.mp4")]
    spec = parse_action("symlink")
    sealed = open_journal(tmp_path / "j.jsonl", key, spec, [str(lib)])
    try:
        (outcome,) = apply(plan([group], spec, "oldest", {frozenset(f.path for f in group)}),
                           group, spec, sealed)
    finally:
        sealed.close()
    assert outcome.done and (lib / "b.mp4").is_symlink()
    (result,) = undo(tmp_path / "j.jsonl", key)
    assert result.undone
    mode = os.lstat(lib / "b.mp4").st_mode
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o755


def test_the_key_is_private_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "state"
    first = load_key(d)
    assert load_key(d) == first and len(first) == 32
    assert stat.S_IMODE(os.stat(d / "journal.key").st_mode) == 0o600
    os.chmod(d / "journal.key", 0o644)
    with pytest.raises(JournalError, match="only you can read"):
        load_key(d)
