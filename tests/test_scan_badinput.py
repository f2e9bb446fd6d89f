"""The scan on a folder full of bad input: every bad file is reported with its reason, every good
pair is still found, the exit code says so, nothing crashes or hangs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from media_factory import encode, moving_scene
from vfpd.cli import ctl
from vfpd.chain import pool_decoder
from vfpd.files import FileRules
from vfpd.scan import ScanSettings, identify, scan, walk

SECONDS, FPS = 5.0, 25.0


@pytest.fixture(scope="module")
def embedder():
    from vfpd.model.embed import Embedder

    return Embedder(device="cpu")


def _frames(seed: int) -> list[np.ndarray]:
    fn = moving_scene(160, 120, seed)
    return [fn(i, i / FPS) for i in range(int(SECONDS * FPS))]


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=22050)
        t = np.arange(22050 * 2) / 22050
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for i in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, i:i + 1024], format="fltp",
                                               layout="mono")
            frame.sample_rate = 22050
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    frames = _frames(7)
    encode(d / "good.mp4", frames, fps=FPS)
    encode(d / "good-reencoded.mkv", frames, fps=FPS, options={"crf": "35"})
    shutil.copyfile(d / "good.mp4", d / "good-exact.mp4")
    os.link(d / "good.mp4", d / "good-hardlink.mp4")
    shutil.copyfile(d / "good-reencoded.mkv", os.path.join(os.fsencode(d), b"caf\xe9-copy.mkv"))
    encode(d / "other.mp4", _frames(8), fps=FPS)
    (d / "empty.mp4").write_bytes(b"")
    data = (d / "other.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "truncated-copy.mp4").write_bytes(data[: len(data) // 3])
    (d / "text.mp4").write_text("this is a shopping list, not a video\n" * 50)
    _audio_only(d / "audio-only.mp4")
    os.symlink(d / "missing-target.mp4", d / "broken-link.mp4")
    os.symlink("self-loop.mp4", d / "self-loop.mp4")
    (d / "sub").mkdir()
    os.symlink("..", d / "sub" / "back-to-parent")
    shutil.copyfile(d / "other.mp4", d / "deleted-before-hashing.mp4")
    shutil.copyfile(d / "other.mp4", d / "deleted-before-decoding.avi")
    (d / "notes.txt").write_text("not scanned: not a video extension")
    return d


# Symbolic links (broken-link.mp4, self-loop.mp4, sub/back-to-parent) are not followed, so they
# are neither files nor errors (vfpd/files.py): the scan and the daemon skip them alike.
EXPECTED_ERRORS = {
    "empty.mp4": "empty",
    "truncated.mp4": "",
    "truncated-copy.mp4": "",
    "text.mp4": "",
    "audio-only.mp4": "no video",
    "deleted-before-hashing.mp4": "disappeared",
    "deleted-before-decoding.avi": "",
}


def _deleting_progress(d: Path) -> Callable[[str, int], Callable[[int], None]]:
    """Deletes one file as hashing starts and another as decoding starts: files vanishing
    mid-scan, at the two moments that matter."""

    def progress(stage: str, total: int) -> Callable[[int], None]:
        victim = {"hashing": "deleted-before-hashing.mp4",
                  "fingerprinting": "deleted-before-decoding.avi"}.get(stage)
        if victim:
            (d / victim).unlink(missing_ok=True)
        return lambda n: None

    return progress


def test_bad_input_folder(bad_dir: Path, embedder) -> None:
    work = bad_dir.parent / "bad-work"
    shutil.copytree(bad_dir, work, symlinks=True)
    (work / "good-hardlink.mp4").unlink()  # copytree copies hard links as separate files
    os.link(work / "good.mp4", work / "good-hardlink.mp4")
    settings = ScanSettings(roots=(str(work),), workers=2)
    result = scan(settings, embedder, pool_decoder(2, settings.sampling), None,
                  _deleting_progress(work))
    errors = {os.path.basename(e.path): e.reason for e in result.errors}
    assert set(errors) == set(EXPECTED_ERRORS), errors
    for name, words in EXPECTED_ERRORS.items():
        assert words in errors[name], (name, errors[name])
        assert errors[name], name
    # The hard-linked names are one file: one entry (the first name found), the other an alias,
    # never a duplicate of it.
    (good,) = [f for f in result.files
               if os.path.basename(f.path) in ("good.mp4", "good-hardlink.mp4")]
    assert sorted(os.path.basename(p) for p in [good.path, *good.aliases]) == [
        "good-hardlink.mp4", "good.mp4"]
    g = os.path.basename(good.path)
    pairs = {frozenset((os.path.basename(p.a), os.path.basename(p.b))): p for p in result.pairs}
    assert pairs[frozenset((g, "good-exact.mp4"))].kind == "exact"
    assert pairs[frozenset((g, "good-reencoded.mkv"))].kind in ("near", "partial")
    weird = os.fsdecode(b"caf\xe9-copy.mkv")
    assert pairs[frozenset(("good-reencoded.mkv", weird))].kind == "exact"
    assert pairs[frozenset((g, weird))].score >= settings.threshold
    assert not any("other.mp4" in k for k in pairs)
    assert sorted(map(len, result.groups)) == [4]


def test_bad_input_through_the_cli(bad_dir: Path, tmp_path: Path) -> None:
    """The real command in a subprocess: JSON on stdout, errors listed, exit code 1."""
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "vfpd.cli.ctl", "scan", str(bad_dir), "--json", "--no-cache",
         "--workers", "2", "--output", str(out)],
        capture_output=True, timeout=300, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert proc.returncode == 1, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == doc
    assert doc["threshold"] == doc["default_threshold"]
    names = {os.path.basename(e["path"]) for e in doc["errors"]}
    # Nothing deletes files in this run: those two are fine here.
    assert names == set(EXPECTED_ERRORS) - {"deleted-before-hashing.mp4",
                                            "deleted-before-decoding.avi"}
    assert all(e["reason"] for e in doc["errors"])
    weird = os.fsdecode(b"caf\xe9-copy.mkv")
    groups = {frozenset(os.path.basename(p) for p in g) for g in doc["groups"]}
    # The hard link pair is one file, shown under the name found first.
    assert groups == {frozenset(["deleted-before-decoding.avi", "deleted-before-hashing.mp4",
                                 "other.mp4"]),
                      frozenset([weird, "good-exact.mp4", "good-hardlink.mp4",
                                 "good-reencoded.mkv"])}
    for p in doc["pairs"]:
        assert {"a", "b", "score", "kind", "segments"} <= set(p)
        assert p["score"] >= doc["threshold"]


def test_clean_folder_exits_zero(tmp_path: Path) -> None:
    frames = _frames(9)
    encode(tmp_path / "a.mp4", frames[:50], fps=FPS)
    shutil.copyfile(tmp_path / "a.mp4", tmp_path / "b.mp4")
    proc = subprocess.run(
        [sys.executable, "-m", "vfpd.cli.ctl", "scan", str(tmp_path), "--no-cache"],
        capture_output=True, timeout=300, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 group(s) of duplicates" in proc.stdout
    assert "b.mp4" in proc.stdout and "exact" in proc.stdout


@pytest.mark.parametrize("argv, message", [
    (["--threshold", "1.5"], "between 0 and 1"),
    (["--action", "shred"], "unknown action"),
    (["--workers", "0"], "at least 1"),
    (["--output", "/nonexistent-dir/x.json"], "does not exist"),
])
def test_bad_usage_exits_two(tmp_path: Path, argv: list[str], message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["scan", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_missing_folder_exits_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["scan", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_unknown_option_exits_two(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        ctl.main(["scan", str(tmp_path), "--keep", "prettiest"])
    assert e.value.code == 2


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    """chmod 000 stops everyone but root. As root, the check runs in a child process that gives
    up root first (the same code path a normal user hits)."""
    d = tmp_path / "perm"
    d.mkdir()
    encode(d / "locked.mp4", _frames(3)[:25], fps=FPS)
    os.chmod(d / "locked.mp4", 0)
    if os.geteuid() != 0:
        entries, errors = identify(walk([str(d)], FileRules.of([".mp4"]))[0], None)
        assert [(os.path.basename(e.path), e.reason) for e in errors] == [
            ("locked.mp4", "permission denied")]
        return
    # The child (uid nobody) must be able to walk down to the folder.
    ancestors = [tmp_path, tmp_path.parent, tmp_path.parent.parent]
    modes = [os.stat(p).st_mode for p in ancestors]
    for p, m in zip(ancestors, modes):
        os.chmod(p, m | 0o011)
    try:
        errors = _identify_as_nobody(d)
    finally:
        for p, m in zip(ancestors, modes):
            os.chmod(p, m)
    assert [(os.path.basename(p), r) for p, r in errors] == [("locked.mp4", "permission denied")]


def _identify_as_nobody(d: Path) -> list[list[str]]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            os.setgid(65534)
            os.setuid(65534)
            entries, errors = identify(walk([str(d)], FileRules.of([".mp4"]))[0], None)
            os.write(write_fd, json.dumps([[e.path, e.reason] for e in errors]).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_cuda_asked_without_cuda_exits_three(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert ctl.main(["scan", str(tmp_path), "--device", "cuda", "--no-cache"]) == 3
    assert "cuda" in capsys.readouterr().err


def test_symlinks_are_not_files_and_hardlinks_are_one_file(tmp_path: Path) -> None:
    encode(tmp_path / "z-real.mp4", _frames(4)[:25], fps=FPS)
    os.symlink("z-real.mp4", tmp_path / "a-link.mp4")
    os.link(tmp_path / "z-real.mp4", tmp_path / "m-hard.mp4")
    (tmp_path / "linked-folder").symlink_to(tmp_path)
    entries, errors = identify(walk([str(tmp_path)], FileRules.of([".mp4"]))[0], None)
    assert errors == []
    (entry,) = entries
    assert os.path.basename(entry.path) == "m-hard.mp4"  # first in walk order
    # The symbolic link is no copy (and no space to reclaim); the hard link is the same file.
    assert [os.path.basename(a) for a in entry.aliases] == ["z-real.mp4"]


def test_dbscan_without_scikit_learn_is_a_clear_usage_error(tmp_path: Path) -> None:
    """scikit-learn is an optional extra: a Python where it cannot be imported gets exit 2 and the
    install command (the import is blocked the way a missing package fails)."""
    code = ("import sys; sys.modules['sklearn'] = None; from vfpd.cli import ctl; "
            f"sys.exit(ctl.main(['scan', {str(tmp_path)!r}, '--cluster', 'dbscan']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "pip install 'vfpd[cluster]'" in proc.stderr
