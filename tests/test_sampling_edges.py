"""No preset silently fails (issue 15): short clips, files with one keyframe, all-intra files and
irregular GOPs each give enough frames for the preset's evidence rule, and `--fast` finds the copy
of a clip shorter than its GOP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from media_factory import encode, moving_scene
from scan_media import colour, load, photo_pan

from vfpd import media
from vfpd.cli import ctl
from vfpd.presets import FAST, PRESETS, Preset

NO_SCENECUT = {"x264-params": "scenecut=0"}
"""x264 adds keyframes at scene changes; these files must have exactly the keyframes asked for."""

LONG_GOP = 1000
"""Longer than every test file: its only keyframes are the first and the forced ones."""

FPS = 25


def _scene(path: Path, seconds: float, **kw: object) -> Path:
    fn = moving_scene(160, 120, seed=len(path.name))
    n = int(seconds * FPS)
    return encode(path, (fn(i, i / FPS) for i in range(n)), fps=FPS, **kw)  # type: ignore[arg-type]


KINDS = {
    "short": lambda p: _scene(p, 4, gop=LONG_GOP, options=NO_SCENECUT),
    "one-keyframe": lambda p: _scene(p, 12, gop=LONG_GOP, options=NO_SCENECUT),
    "all-intra": lambda p: _scene(p, 8, gop=1),
    # Keyframes 1 s apart for 4 s, then one 12 s GOP: dense and sparse in one file.
    "variable-gop": lambda p: _scene(p, 16, gop=LONG_GOP, options=NO_SCENECUT,
                                     keyframes_at=frozenset({0, 25, 50, 75, 100})),
}


@pytest.fixture(scope="module")
def edge_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("edges")
    return {kind: make(d / f"{kind}.mp4") for kind, make in KINDS.items()}


def _needed(preset: Preset, duration: float) -> int:
    """Frames the preset's evidence rule wants, capped by what the 1 s grid holds."""
    want = max(preset.sampling.min_frames, preset.match.min_evidence_frames)
    return min(want, int(duration // preset.sampling.interval) + 1)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_of_file_gives_enough_frames(edge_files: dict[str, Path], kind: str,
                                                preset: str) -> None:
    p = PRESETS[preset]
    sampled = media.sample(edge_files[kind], p.sampling)
    assert len(sampled.timestamps) >= _needed(p, sampled.duration)
    assert int(sampled.informative.sum()) >= _needed(p, sampled.duration)
    assert (sampled.timestamps[1:] > sampled.timestamps[:-1]).all()


def test_fast_falls_back_to_the_grid_only_when_keyframes_are_too_few(
        edge_files: dict[str, Path]) -> None:
    # One keyframe: the grid. Every frame a keyframe: keyframes (they give the grid's frames).
    assert not media.sample(edge_files["short"], FAST.sampling).keyframes_only
    assert not media.sample(edge_files["one-keyframe"], FAST.sampling).keyframes_only
    assert media.sample(edge_files["all-intra"], FAST.sampling).keyframes_only
    # Five keyframes in 16 s (one 12 s GOP among them) are enough: keyframes.
    assert media.sample(edge_files["variable-gop"], FAST.sampling).keyframes_only


def test_fast_keeps_keyframes_when_there_are_enough(tmp_path: Path) -> None:
    path = _scene(tmp_path / "gop2s.mp4", 20, gop=2 * FPS, options=NO_SCENECUT)
    sampled = media.sample(path, FAST.sampling)
    assert sampled.keyframes_only
    assert len(sampled.timestamps) >= FAST.sampling.min_frames


def test_min_frames_is_checked() -> None:
    with pytest.raises(ValueError):
        media.SamplingSettings(min_frames=0)


def test_fast_scan_finds_the_copy_of_a_clip_shorter_than_its_gop(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 15: one keyframe per file gave `--fast` one frame each, never enough evidence."""
    d = tmp_path / "videos"
    d.mkdir()
    frames = [img for _, img in load("bikes")]  # 10 s of real footage
    encode(d / "bikes.mp4", frames, gop=LONG_GOP, options=NO_SCENECUT)
    encode(d / "bikes-colour.mp4", [colour(img) for img in frames], gop=LONG_GOP,
           options=NO_SCENECUT)
    photo_pan(d / "pan.mp4", "astronaut")
    assert ctl.main(["scan", str(d), "--no-cache", "--json", "--fast"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [sorted(Path(p).name for p in g) for g in doc["groups"]] == [
        ["bikes-colour.mp4", "bikes.mp4"]]
    assert doc["threshold"] == FAST.threshold
