"""Keep policies, every action and its undo, on real video files in a temp dir."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from media_factory import make_video
from vfpd import trash
from vfpd.hashing import hash_file
from vfpd.actions import apply, open_journal
from vfpd.journal import JournalError, load_key, read_journal
from vfpd.planning import NOT_DIRECT, ActionSpec, FileFacts, choose_keeper, parse_action, plan
from vfpd.undo import undo


@pytest.fixture(autouse=True)
def home_trash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    return data / "Trash"


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    return load_key(tmp_path / "state")


def act_in(tmp_path: Path, steps, group: list[FileFacts], spec: ActionSpec, journal: Path):
    """apply() with a journal sealed by the test's key, every file under tmp_path."""
    sealed = open_journal(journal, load_key(tmp_path / "state"), spec, [str(tmp_path)])
    try:
        return apply(steps, group, spec, sealed)
    finally:
        sealed.close()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("src") / "v.mp4", seconds=1.0, width=96, height=64)


@pytest.fixture(scope="module")
def other_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("src") / "w.mp4", seconds=1.0, width=96, height=64,
                      seed=3)


def facts(path: Path, content_hash: str | None = None, res: tuple[int, int] = (96, 64)) -> FileFacts:
    """What a scan records: stat, identity and (unless given) the real content hash."""
    st = os.stat(path)
    return FileFacts(str(path), st.st_size, st.st_mtime_ns, res[0], res[1],
                     content_hash or hash_file(path), st.st_dev, st.st_ino)


def copies(video: Path, d: Path, names: list[str]) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i, n in enumerate(names):
        p = d / n
        shutil.copyfile(video, p)
        os.utime(p, ns=(1_000_000_000 * (i + 1),) * 2)
        out.append(p)
    return out


def every_pair(group: list[FileFacts]) -> set[frozenset[str]]:
    return {frozenset((a.path, b.path)) for a in group for b in group if a != b}


def run(group: list[FileFacts], action: str, tmp_path: Path, keep: str = "oldest"):
    spec = parse_action(action)
    steps = plan([group], spec, keep, every_pair(group))
    journal = tmp_path / f"journal-{len(list(tmp_path.glob('journal-*')))}.jsonl"
    return act_in(tmp_path, steps, group, spec, journal), journal


def test_keep_policies_choose_the_expected_file(tmp_path: Path) -> None:
    group = [FileFacts("/x/long/name.mp4", 10, 3, 640, 480), FileFacts("/x/a.mp4", 30, 1, 320, 240),
             FileFacts("/x/bb.mp4", 20, 2, 1920, 1080)]
    pick = {p: choose_keeper(group, p).path for p in
            ("oldest", "newest", "largest", "highest-res", "shortest-path")}
    assert pick == {"oldest": "/x/a.mp4", "newest": "/x/long/name.mp4", "largest": "/x/a.mp4",
                    "highest-res": "/x/bb.mp4", "shortest-path": "/x/a.mp4"}
    with pytest.raises(ValueError, match="keep policy"):
        choose_keeper(group, "finest")


def test_parse_action_rejects_unknown_and_empty_move() -> None:
    assert parse_action("move:/tmp/dups") == ActionSpec("move", "/tmp/dups")
    with pytest.raises(ValueError, match="unknown action"):
        parse_action("shred")
    with pytest.raises(ValueError, match="needs a directory"):
        parse_action("move:")


def test_report_plans_nothing_and_the_keeper_is_never_in_a_plan(video: Path, tmp_path: Path) -> None:
    files = copies(video, tmp_path / "d", ["a.mp4", "b.mp4", "c.mp4"])
    group = [facts(p) for p in files]
    assert plan([group], parse_action("report"), "oldest", every_pair(group)) == []
    steps = plan([group], parse_action("delete"), "newest", every_pair(group))
    assert sorted(s.path for s in steps) == [str(files[0]), str(files[1])]
    assert all(s.keep == str(files[2]) for s in steps)


def test_trash_follows_freedesktop_and_undo_restores(key: bytes, video: Path, tmp_path: Path,
                                                     home_trash: Path) -> None:
    a, b = copies(video, tmp_path / "d", ["a.mp4", "b.mp4"])
    content = b.read_bytes()
    outcomes, journal = run([facts(a), facts(b)], "trash", tmp_path)
    assert [o.done for o in outcomes] == [True]
    assert a.exists() and not b.exists()
    assert (home_trash / "files" / "b.mp4").read_bytes() == content
    info = (home_trash / "info" / "b.mp4.trashinfo").read_text()
    assert info.startswith("[Trash Info]\n")
    assert f"Path={b}\n" in info and "DeletionDate=" in info
    results = undo(journal, key)
    assert [r.undone for r in results] == [True]
    assert b.read_bytes() == content
    assert not (home_trash / "files" / "b.mp4").exists()
    assert not (home_trash / "info" / "b.mp4.trashinfo").exists()
    # Running undo again does nothing: the journal remembers.
    assert undo(journal, key) == []


def test_trash_name_clash_gets_a_new_name(video: Path, tmp_path: Path, home_trash: Path) -> None:
    a, b = copies(video, tmp_path / "d1", ["a.mp4", "x.mp4"])
    c, d = copies(video, tmp_path / "d2", ["c.mp4", "x.mp4"])
    run([facts(a), facts(b)], "trash", tmp_path)
    run([facts(c), facts(d)], "trash", tmp_path)
    assert sorted(p.name for p in (home_trash / "files").iterdir()) == ["x 1.mp4", "x.mp4"]


def test_move_and_undo(key: bytes, video: Path, tmp_path: Path) -> None:
    a, b, c = copies(video, tmp_path / "d", ["a.mp4", "b.mp4", "c.mp4"])
    target = tmp_path / "dups"
    outcomes, journal = run([facts(a), facts(b), facts(c)], f"move:{target}", tmp_path)
    assert all(o.done for o in outcomes)
    assert sorted(p.name for p in target.iterdir()) == ["b.mp4", "c.mp4"]
    assert a.exists() and not b.exists() and not c.exists()
    assert all(r.undone for r in undo(journal, key))
    assert b.exists() and c.exists() and list(target.iterdir()) == []


def test_hardlink_and_undo(key: bytes, video: Path, tmp_path: Path) -> None:
    a, b = copies(video, tmp_path / "d", ["a.mp4", "b.mp4"])
    os.chmod(b, 0o640)
    before = os.stat(b)
    outcomes, journal = run([facts(a), facts(b)], "hardlink", tmp_path)
    assert [o.done for o in outcomes] == [True]
    assert os.path.samefile(a, b)
    assert not any(p.name.startswith(".vfpd-tmp") for p in b.parent.iterdir())
    assert all(r.undone for r in undo(journal, key))
    after = os.stat(b)
    assert not os.path.samefile(a, b)
    assert b.read_bytes() == a.read_bytes()
    assert (after.st_mode & 0o777, after.st_mtime_ns) == (0o640, before.st_mtime_ns)


def test_symlink_and_undo(key: bytes, video: Path, tmp_path: Path) -> None:
    a, b = copies(video, tmp_path / "d", ["a.mp4", "b.mp4"])
    outcomes, journal = run([facts(a), facts(b)], "symlink", tmp_path)
    assert [o.done for o in outcomes] == [True]
    assert b.is_symlink() and os.readlink(b) == str(a)
    assert all(r.undone for r in undo(journal, key))
    assert not b.is_symlink() and b.read_bytes() == a.read_bytes()


def test_links_only_for_byte_identical_files(video: Path, other_video: Path, tmp_path: Path) -> None:
    (a,) = copies(video, tmp_path / "d", ["a.mp4"])
    (b,) = copies(other_video, tmp_path / "e", ["b.mp4"])
    group = [facts(a), facts(b)]
    for action in ("hardlink", "symlink"):
        outcomes, _ = run(group, action, tmp_path)
        assert [o.done for o in outcomes] == [False]
        assert "byte-identical" in outcomes[0].detail
    assert not b.is_symlink() and not os.path.samefile(a, b)


def test_link_refused_when_content_differs_despite_same_recorded_hash(
        video: Path, other_video: Path, tmp_path: Path) -> None:
    (a,) = copies(video, tmp_path / "d", ["a.mp4"])
    (b,) = copies(other_video, tmp_path / "e", ["b.mp4"])
    outcomes, _ = run([facts(a, "same"), facts(b, "same")], "hardlink", tmp_path)
    assert not outcomes[0].done and "no longer has the content that was matched" in \
        outcomes[0].detail
    assert not os.path.samefile(a, b)


def test_delete_is_journalled_and_reported_irreversible(key: bytes, video: Path, tmp_path: Path) -> None:
    a, b = copies(video, tmp_path / "d", ["a.mp4", "b.mp4"])
    outcomes, journal = run([facts(a), facts(b)], "delete", tmp_path)
    assert outcomes[0].done and not b.exists() and a.exists()
    changes = [r for r in read_journal(journal, key).records if "op" in r]
    assert [(c["op"], c["path"]) for c in changes] == [("delete", str(b))]
    (result,) = undo(journal, key)
    assert not result.undone and "cannot be undone" in result.detail


def test_changed_file_and_missing_keeper_are_left_alone(video: Path, tmp_path: Path) -> None:
    a, b, c = copies(video, tmp_path / "d", ["a.mp4", "b.mp4", "c.mp4"])
    group = [facts(a), facts(b), facts(c)]
    with open(c, "ab") as f:
        f.write(b"more")
    outcomes, _ = run(group, "delete", tmp_path)
    assert [(o.step.path, o.done) for o in outcomes] == [(str(b), True), (str(c), False)]
    assert "changed since the scan" in outcomes[1].detail
    # A group whose kept file vanished keeps all its other copies.
    d, e = copies(video, tmp_path / "e", ["d.mp4", "e.mp4"])
    group = [facts(d), facts(e)]
    d.unlink()
    outcomes, _ = run(group, "trash", tmp_path)
    assert not outcomes[0].done and "kept file" in outcomes[0].detail and e.exists()


def test_non_utf8_name_survives_trash_and_undo(key: bytes, video: Path, tmp_path: Path) -> None:
    d = tmp_path / "d"
    (a,) = copies(video, d, ["a.mp4"])
    raw = os.path.join(os.fsencode(d), b"caf\xe9.mp4")
    shutil.copyfile(video, raw)
    b = Path(os.fsdecode(raw))
    outcomes, journal = run([facts(a), facts(b)], "trash", tmp_path)
    assert outcomes[0].done and not os.path.lexists(raw)
    assert all(r.undone for r in undo(journal, key))
    assert os.path.exists(raw)


def test_undo_of_an_intent_that_never_happened(key: bytes, video: Path, tmp_path: Path) -> None:
    """A crash between the journal line and the change: undo sees the file in place and only
    releases the trash reservation."""
    (a,) = copies(video, tmp_path / "d", ["a.mp4"])
    slot = trash.reserve(a)
    j = open_journal(tmp_path / "j.jsonl", key, ActionSpec("trash"), [str(tmp_path)])
    j.write({"seq": 1, "op": "trash", "path": str(a), "keep": "x", "trash_file": slot.file_path,
             "trash_info": slot.info_path, "size": 1, "mtime_ns": 1, "mode": 0o644})
    j.close()
    (result,) = undo(tmp_path / "j.jsonl", key)
    assert result.undone and "never" in result.detail
    assert a.exists() and not os.path.exists(slot.info_path)


def test_undo_refuses_to_overwrite_a_new_file(key: bytes, video: Path, tmp_path: Path) -> None:
    a, b = copies(video, tmp_path / "d", ["a.mp4", "b.mp4"])
    _, journal = run([facts(a), facts(b)], "trash", tmp_path)
    b.write_bytes(b"a new file took the name")
    (result,) = undo(journal, key)
    assert not result.undone and b.read_bytes() == b"a new file took the name"


def test_bad_journals_give_clear_errors(key: bytes, tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no such journal"):
        read_journal(tmp_path / "missing.jsonl", key)
    (tmp_path / "other.jsonl").write_text(json.dumps({"hello": 1}) + "\n")
    with pytest.raises(JournalError, match="not a vfpd action journal"):
        read_journal(tmp_path / "other.jsonl", key)
    (tmp_path / "v1.jsonl").write_text(json.dumps({"journal": "vfpd-actions", "version": 1}) + "\n")
    with pytest.raises(JournalError, match="no seal to verify"):
        read_journal(tmp_path / "v1.jsonl", key)
    open_journal(tmp_path / "torn.jsonl", key, ActionSpec("trash"), [str(tmp_path)]).close()
    header = (tmp_path / "torn.jsonl").read_text()
    (tmp_path / "torn.jsonl").write_text(header + "{not json\n" + header)
    with pytest.raises(JournalError, match="not a JSON line"):
        read_journal(tmp_path / "torn.jsonl", key)
    # A line torn by a crash at the very end is ignored, and cut off by the next append.
    (tmp_path / "torn.jsonl").write_text(header + '{"seq": 1, "und')
    assert read_journal(tmp_path / "torn.jsonl", key).records == []


def test_a_member_joined_through_a_chain_is_never_removed_for_the_keeper(
        video: Path, other_video: Path, tmp_path: Path) -> None:
    """A~B and B~C verified, A~C not: keeping A removes B, never C."""
    a, b = copies(video, tmp_path / "d", ["a.mp4", "b.mp4"])
    (c,) = copies(other_video, tmp_path / "e", ["c.mp4"])
    os.utime(c, ns=(10**10, 10**10))
    group = [facts(a), facts(b), facts(c)]
    direct = {frozenset((str(a), str(b))), frozenset((str(b), str(c)))}
    steps = plan([group], parse_action("delete"), "oldest", direct)
    assert [(s.path, s.keep, s.skip) for s in steps] == [
        (str(b), str(a), None), (str(c), str(a), NOT_DIRECT)]
    outcomes = act_in(tmp_path, steps, group, parse_action("delete"), tmp_path / "j.jsonl")
    assert [(o.done, o.detail) for o in outcomes] == [(True, "deleted"), (False, NOT_DIRECT)]
    assert a.exists() and not b.exists() and c.exists()


def test_scan_of_two_clips_of_one_video_removes_only_what_matches_the_keeper(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole clip and two clips of it that barely overlap form one group (each clip is verified
    against the whole); keeping the first clip, the whole is a verified copy of it, the other clip
    is not: deleting it would lose footage the kept file does not have."""
    from scan_media import load, segment
    from vfpd.cli import ctl

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    frames = load("bigbuckbunny")
    d = tmp_path / "videos"
    d.mkdir()
    end = frames[-1][0] + 1
    first = segment(frames, 0.0, end * 0.4, d / "first.mp4")
    whole = segment(frames, 0.0, end, d / "whole.mp4")
    later = segment(frames, end * 0.3, end * 0.7, d / "later.mp4")
    for n, p in enumerate((first, whole, later)):
        os.utime(p, ns=(10**9 * (n + 1),) * 2)
    argv = ["scan", str(d), "--no-cache", "--device", "cpu", "--workers", "1", "--json",
            "--action", "delete", "--keep", "oldest", "--apply", "--journal",
            str(tmp_path / "j.jsonl")]
    ctl.main(argv)
    doc = json.loads(capsys.readouterr().out)
    assert sorted(map(sorted, doc["groups"])) == [sorted(map(str, (first, whole, later)))]
    assert {frozenset((p["a"], p["b"])) for p in doc["pairs"]} == {
        frozenset((str(whole), str(first))), frozenset((str(whole), str(later)))}
    steps = {s["path"]: s for s in doc["actions"]["steps"]}
    assert steps[str(whole)]["done"] and not whole.exists()
    assert not steps[str(later)]["done"] and steps[str(later)]["detail"] == NOT_DIRECT
    assert first.exists() and later.exists()


def test_undo_puts_back_a_file_a_crash_left_under_its_private_name(key: bytes, video: Path,
                                                                    tmp_path: Path) -> None:
    """A crash after the file was taken (renamed to its private name) and before the change."""
    a, b = copies(video, tmp_path / "d", ["a.mp4", "b.mp4"])
    temp = b.parent / ".vfpd-tmp-0123456789abcdef-b.mp4"
    j = open_journal(tmp_path / "j.jsonl", key, ActionSpec("delete"), [str(tmp_path)])
    j.write({"seq": 1, "op": "delete", "path": str(b), "keep": str(a), "temp": str(temp),
             "size": 1, "mtime_ns": 1, "mode": 0o644})
    j.close()
    content = b.read_bytes()
    b.rename(temp)
    (result,) = undo(tmp_path / "j.jsonl", key)
    assert result.undone and "interrupted" in result.detail
    assert b.read_bytes() == content and not temp.exists()
