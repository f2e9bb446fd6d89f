"""A destructive action proves its ground when it acts: the file it removes still has the matched
content (hashed through the descriptor it acts on), the kept copy is still there with its content,
and no folder on either path was swapped. Real files, real symbolic links, a real scan."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from media_factory import make_video
from vfpd.actions import apply, open_journal
from vfpd.cli import ctl
from vfpd.hashing import hash_fd, hash_file
from vfpd.journal import load_key
from vfpd.planning import FileFacts, parse_action, plan
from vfpd.undo import undo

SAME_MTIME_NS = 1_600_000_000_000_000_000
SWAP_HOLD_SECONDS = 0.001
"""How long the racing attacker holds each state: long enough that a path-based check-then-unlink
(the code before act-time proofs) lost 12-26 of 50 kept files in two runs, short enough that the
loop swaps many times during the deletions."""


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("src") / "v.mp4", seconds=1.0, width=96, height=64)


def copy_to(video: Path, path: Path, mtime_ns: int = SAME_MTIME_NS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(video, path)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def facts(path: Path) -> FileFacts:
    st = os.stat(path)
    return FileFacts(str(path), st.st_size, st.st_mtime_ns, 96, 64, hash_file(path), st.st_dev,
                     st.st_ino)


def flip_in_place(path: Path) -> bytes:
    """Other bytes, same size, same mtime, same inode: what a size+mtime check cannot see."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return bytes(data)


def act_on(group: list[FileFacts], action: str, tmp_path: Path, keep: str = "shortest-path"):
    spec = parse_action(action)
    direct = {frozenset((a.path, b.path)) for a in group for b in group if a != b}
    steps = plan([group], spec, keep, direct)
    tmp_path.mkdir(parents=True, exist_ok=True)
    sealed = open_journal(tmp_path / "journal.jsonl", load_key(tmp_path / "state"), spec, ["/"])
    try:
        return apply(steps, group, spec, sealed)
    finally:
        sealed.close()


def test_hash_fd_hashes_the_whole_file_whatever_the_offset(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    fd = os.open(p, os.O_RDONLY)
    try:
        os.lseek(fd, 12345, os.SEEK_SET)
        assert hash_fd(fd) == hash_file(p)
        assert hash_fd(fd, block_size=4096) == hash_file(p)
    finally:
        os.close(fd)


@pytest.mark.parametrize("action", ["delete", "trash", "hardlink", "move:MOVED"])
def test_other_bytes_of_the_same_size_and_mtime_are_never_removed(video: Path, tmp_path: Path,
                                                                  action: str) -> None:
    keep, other = copy_to(video, tmp_path / "d" / "a.mp4"), copy_to(video, tmp_path / "d" / "bb.mp4")
    group = [facts(keep), facts(other)]
    unique = flip_in_place(other)
    action = action.replace("MOVED", str(tmp_path / "moved"))
    (outcome,) = act_on(group, action, tmp_path)
    assert not outcome.done and "no longer has the content that was matched" in outcome.detail
    assert other.read_bytes() == unique and not other.is_symlink()
    assert sorted(p.name for p in other.parent.iterdir()) == ["a.mp4", "bb.mp4"]


def test_a_file_replaced_by_another_of_same_size_and_mtime_is_left(video: Path,
                                                                   tmp_path: Path) -> None:
    keep, other = copy_to(video, tmp_path / "d" / "a.mp4"), copy_to(video, tmp_path / "d" / "bb.mp4")
    group = [facts(keep), facts(other)]
    # A new inode with identical bytes: the file the scan matched went elsewhere (kept alive so
    # its inode number is not reused); this one is not it.
    other.rename(tmp_path / "d" / "old.bin")
    copy_to(video, other)
    (outcome,) = act_on(group, "delete", tmp_path)
    assert not outcome.done and "another file than the one scanned" in outcome.detail
    assert other.exists()


def test_a_folder_swapped_for_a_link_to_the_kept_files_folder_never_costs_the_last_copy(
        video: Path, tmp_path: Path) -> None:
    """d2/x.mp4 was matched against d1/x.mp4 (kept); then d2 becomes a symlink to d1, so the name
    d2/x.mp4 leads to the kept file itself."""
    keep = copy_to(video, tmp_path / "d1" / "x.mp4")
    other = copy_to(video, tmp_path / "d2" / "x.mp4")
    group = [facts(keep), facts(other)]
    content = keep.read_bytes()
    (tmp_path / "d2").rename(tmp_path / "elsewhere")
    (tmp_path / "d2").symlink_to(tmp_path / "d1", target_is_directory=True)
    for action in ("delete", "trash", "hardlink", "symlink", f"move:{tmp_path / 'moved'}"):
        outcomes = act_on(group, action, tmp_path / action.split(":")[0])
        assert [o.done for o in outcomes] == [False], action
        assert keep.read_bytes() == content and not keep.is_symlink(), action
    assert (tmp_path / "elsewhere" / "x.mp4").read_bytes() == content


def test_a_folder_swapped_with_identity_unknown_still_spares_the_kept_file(
        video: Path, tmp_path: Path) -> None:
    """Without the scan's device and inode (a decisions file, say) the content check passes, as the
    name leads to the kept file: the two-files check refuses."""
    keep = copy_to(video, tmp_path / "d1" / "x.mp4")
    other = copy_to(video, tmp_path / "d2" / "x.mp4")
    digest = hash_file(keep)
    group = [FileFacts(str(p), 1, SAME_MTIME_NS, 96, 64, digest) for p in (keep, other)]
    (tmp_path / "d2").rename(tmp_path / "elsewhere")
    (tmp_path / "d2").symlink_to(tmp_path / "d1", target_is_directory=True)
    (outcome,) = act_on(group, "delete", tmp_path)
    assert not outcome.done and "kept file itself" in outcome.detail
    assert keep.exists()


def test_a_symlinked_file_or_missing_kept_copy_is_refused(video: Path, tmp_path: Path) -> None:
    keep, other = copy_to(video, tmp_path / "d" / "a.mp4"), copy_to(video, tmp_path / "d" / "bb.mp4")
    group = [facts(keep), facts(other)]
    other.unlink()
    other.symlink_to(keep)
    (outcome,) = act_on(group, "delete", tmp_path / "1")
    assert not outcome.done and "symbolic link" in outcome.detail and keep.exists()
    other.unlink()
    copy_to(video, other)
    group = [facts(keep), facts(other)]
    keep.unlink()
    (outcome,) = act_on(group, "trash", tmp_path / "2")
    assert not outcome.done and "kept file" in outcome.detail and other.exists()


def test_a_kept_copy_rewritten_in_place_protects_its_duplicates(video: Path,
                                                                tmp_path: Path) -> None:
    keep, other = copy_to(video, tmp_path / "d" / "a.mp4"), copy_to(video, tmp_path / "d" / "bb.mp4")
    group = [facts(keep), facts(other)]
    flip_in_place(keep)
    (outcome,) = act_on(group, "delete", tmp_path)
    assert not outcome.done and "kept file" in outcome.detail and other.exists()


def test_cached_scan_then_in_place_rewrite_never_deletes_the_unique_content(
        video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scan with the cache, rewrite a copy in place keeping size and mtime, scan again with
    --action delete --apply: the cache still calls it a duplicate, the act-time hash does not."""
    d = tmp_path / "videos"
    copy_to(video, d / "a.mp4", SAME_MTIME_NS - 10**9)
    other = copy_to(video, d / "b.mp4")
    argv = ["scan", str(d), "--cache", str(tmp_path / "cache"), "--device", "cpu", "--workers",
            "1", "--json"]
    assert ctl.main(argv) == 0
    assert len(json.loads(capsys.readouterr().out)["groups"]) == 1
    unique = flip_in_place(other)
    rc = ctl.main([*argv, "--action", "delete", "--keep", "oldest", "--apply",
                   "--journal", str(tmp_path / "j.jsonl")])
    doc = json.loads(capsys.readouterr().out)
    (step,) = doc["actions"]["steps"]
    assert step["path"] == str(other) and not step["done"]
    assert "no longer has the content that was matched" in step["detail"]
    assert other.read_bytes() == unique
    assert rc == 1


def test_a_name_swapped_after_the_checks_is_put_back(video: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The attacker's best moment: every check passed, then the name is swapped for a file with
    unique content before the rename. The file taken is proven by inode and put back."""
    from vfpd import actions

    keep, other = copy_to(video, tmp_path / "d" / "a.mp4"), copy_to(video, tmp_path / "d" / "bb.mp4")
    group = [facts(keep), facts(other)]
    real_hash_fd, calls = actions.hashing.hash_fd, []

    def hash_then_swap(fd: int) -> str:
        digest = real_hash_fd(fd)
        calls.append(fd)
        if len(calls) == 2:  # the kept file's hash: the last check before acting
            other.rename(tmp_path / "d" / "matched.bin")
            other.write_bytes(b"unique content that was never matched")
        return digest

    monkeypatch.setattr(actions.hashing, "hash_fd", hash_then_swap)
    (outcome,) = act_on(group, "delete", tmp_path)
    assert not outcome.done and "replaced by another file while being acted on" in outcome.detail
    assert other.read_bytes() == b"unique content that was never matched"
    assert sorted(p.name for p in other.parent.iterdir()) == ["a.mp4", "bb.mp4", "matched.bin"]
    # The journal says the change failed with the file left in place: undo has nothing to do.
    assert undo(tmp_path / "journal.jsonl", load_key(tmp_path / "state")) == []


def test_a_file_reached_through_a_link_to_outside_the_scanned_folders_is_left(
        video: Path, tmp_path: Path) -> None:
    """The scan follows folder links; acting would put a file outside the journal's roots, which
    undo would then refuse to touch: so it is not acted on."""
    lib, outside = tmp_path / "lib", tmp_path / "outside"
    keep = copy_to(video, lib / "a.mp4")
    copy_to(video, outside / "b.mp4")
    (lib / "link").symlink_to(outside, target_is_directory=True)
    group = [facts(keep), facts(lib / "link" / "b.mp4")]
    spec = parse_action("delete")
    sealed = open_journal(tmp_path / "j.jsonl", load_key(tmp_path / "state"), spec, [str(lib)])
    try:
        (outcome,) = apply(plan([group], spec, "oldest", {frozenset(f.path for f in group)}),
                           group, spec, sealed)
    finally:
        sealed.close()
    assert not outcome.done and "outside the scanned folders" in outcome.detail
    assert (outside / "b.mp4").exists()


def test_an_attacker_swapping_a_folder_for_a_link_in_a_loop_never_costs_a_kept_file(
        tmp_path: Path) -> None:
    """A real race: while fifty deletions run, another thread keeps swapping the members' folder
    for a symbolic link to the kept files' folder (same names, same content). Every kept file
    survives, whatever the timing; each member is either deleted or left."""
    import threading
    import time

    kept_dir, member_dir = tmp_path / "kept", tmp_path / "members"
    kept_dir.mkdir()
    member_dir.mkdir()
    group_list = []
    for i in range(50):
        data = os.urandom(4096)
        for d in (kept_dir, member_dir):
            (d / f"{i}.mp4").write_bytes(data)
            os.utime(d / f"{i}.mp4", ns=(SAME_MTIME_NS, SAME_MTIME_NS))
        group_list.append([facts(kept_dir / f"{i}.mp4"), facts(member_dir / f"{i}.mp4")])
    real = tmp_path / "members-real"
    stop = threading.Event()
    swaps = 0

    def attacker() -> None:
        nonlocal swaps
        while not stop.is_set():
            member_dir.rename(real)
            member_dir.symlink_to(kept_dir, target_is_directory=True)
            time.sleep(SWAP_HOLD_SECONDS)
            member_dir.unlink()
            real.rename(member_dir)
            time.sleep(SWAP_HOLD_SECONDS)
            swaps += 1

    spec = parse_action("delete")
    direct = {frozenset(f.path for f in g) for g in group_list}
    steps = plan(group_list, spec, "shortest-path", direct)
    assert all(s.keep.startswith(str(kept_dir)) for s in steps)
    thread = threading.Thread(target=attacker)
    thread.start()
    try:
        sealed = open_journal(tmp_path / "j.jsonl", load_key(tmp_path / "state"), spec, ["/"])
        try:
            outcomes = apply(steps, [f for g in group_list for f in g], spec, sealed)
        finally:
            sealed.close()
    finally:
        stop.set()
        thread.join()
    assert swaps > 0
    assert sorted(p.name for p in kept_dir.iterdir()) == sorted(f"{i}.mp4" for i in range(50))
    for g in group_list:
        assert hash_file(g[0].path) == g[0].content_hash
    left = {p.name for p in member_dir.iterdir()}
    for o in outcomes:
        assert o.done != (os.path.basename(o.step.path) in left), o
