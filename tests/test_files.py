"""The one set of file rules (vfpd/files.py): the scan's walk, the daemon's reconcile and watcher,
and training see the same files."""

from __future__ import annotations

import os
from pathlib import Path

from vfpd import files
from vfpd.config import WatchConfig
from vfpd.files import FileRules
from vfpd.scan import walk as scan_walk
from vfpd.service.watcher import Filter


def _tree(root: Path) -> None:
    for rel in ["a.mp4", "B.MKV", "notes.txt", "sub/c.webm", "sub/deeper/d.vob", "sub/e.mts",
                ".hidden.mp4", ".cache/f.mp4", "$RECYCLE.BIN/g.mp4", "@eaDir/h.mp4",
                "#recycle/i.mp4", ".Trash-1000/files/j.mp4", "tmp/k.mp4", "keep/tmp/l.mp4"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (root / "link.mp4").symlink_to(root / "a.mp4")
    (root / "loop").symlink_to(root)
    (root / "outside").symlink_to(root / "sub")


def _rel(root: Path, paths) -> list[str]:
    return sorted(os.path.relpath(p, root) for p in paths)


def test_scan_daemon_and_training_see_the_same_files(tmp_path: Path) -> None:
    _tree(tmp_path)
    exclude = (".*", "tmp")
    expected = ["B.MKV", "a.mp4", "sub/c.webm", "sub/deeper/d.vob", "sub/e.mts"]
    rules = FileRules.of(files.VIDEO_EXTENSIONS, exclude)
    scanned, errors = scan_walk([str(tmp_path)], rules)
    assert errors == []
    assert _rel(tmp_path, scanned) == expected
    flt = Filter.of(WatchConfig(paths=(tmp_path,), exclude=exclude))
    assert _rel(tmp_path, [p for p, _ in flt.walk(tmp_path)]) == expected
    # The watcher's per-path test agrees with the walk, files and skipped folders alike.
    for rel in ["a.mp4", "sub/e.mts", "keep/tmp/l.mp4", "@eaDir/h.mp4", "$RECYCLE.BIN/g.mp4",
                ".Trash-1000/files/j.mp4", "notes.txt"]:
        assert flt.is_video(str(tmp_path / rel)) == (rel in expected), rel
    from vfpd.model.frame_cache import list_videos

    assert _rel(tmp_path, list_videos(tmp_path)) == sorted(
        _rel(tmp_path, [p for p, _ in files.walk(tmp_path, FileRules())]))


def test_trash_folders_are_skipped_whatever_the_user_excludes(tmp_path: Path) -> None:
    _tree(tmp_path)
    got = _rel(tmp_path, [p for p, _ in files.walk(tmp_path, FileRules.of(exclude=()))])
    assert not any(g.split("/")[0] in ("$RECYCLE.BIN", "@eaDir", "#recycle", ".Trash-1000")
                   for g in got)
    assert ".hidden.mp4" in got and ".cache/f.mp4" in got  # only the default excludes those


def test_a_walk_below_a_root_applies_the_root_s_rules(tmp_path: Path) -> None:
    _tree(tmp_path)
    flt = Filter.of(WatchConfig(paths=(tmp_path,), exclude=("keep/tmp",)))
    assert _rel(tmp_path, [p for p, _ in flt.walk(tmp_path / "keep")]) == []
    assert _rel(tmp_path, [p for p, _ in flt.walk(tmp_path / "tmp")]) == ["tmp/k.mp4"]


def test_a_root_named_as_a_file_or_a_link_is_followed(tmp_path: Path) -> None:
    _tree(tmp_path)
    got, _ = scan_walk([str(tmp_path / "link.mp4"), str(tmp_path / "outside")], FileRules())
    assert _rel(tmp_path, got) == ["a.mp4", "outside/c.webm", "outside/deeper/d.vob",
                                   "outside/e.mts"]
