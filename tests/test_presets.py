"""The fast preset through `vfpctl scan --fast`: keyframes only, its own threshold and cache key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from media_factory import encode
from scan_media import colour, load, photo_pan

from vfpd import media
from vfpd.cli import ctl
from vfpd.presets import ACCURATE, FAST, PICTURE_SUFFIX, PRESETS


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An original with 1 s GOPs, a colour-shifted copy with 2 s GOPs and an unrelated video."""
    d = tmp_path_factory.mktemp("videos")
    frames = [img for _, img in load("bikes")]
    encode(d / "bikes.mp4", frames, gop=25)
    encode(d / "bikes-colour.mkv", [colour(img) for img in frames], gop=50)
    photo_pan(d / "pan.mp4", "astronaut")
    return d


def test_fast_sampling_decodes_keyframes_only(videos: Path) -> None:
    fast = media.sample(videos / "bikes-colour.mkv", FAST.sampling)
    accurate = media.sample(videos / "bikes-colour.mkv", ACCURATE.sampling)
    assert fast.keyframes_only and not accurate.keyframes_only
    assert 2 <= len(fast.timestamps) < len(accurate.timestamps)


def _scan(videos: Path, cache: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> dict:
    assert ctl.main(["scan", str(videos), "--cache", str(cache), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_fast_scan_finds_the_copy_with_its_own_threshold(videos: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    doc = _scan(videos, tmp_path / "cache", "--fast", capsys=capsys)
    assert doc["preset"] == "fast"
    assert doc["threshold"] == doc["default_threshold"] == FAST.threshold
    assert doc["model_version"].endswith(FAST.version_suffix)
    assert [sorted(Path(p).name for p in g) for g in doc["groups"]] == [["bikes-colour.mkv", "bikes.mp4"]]
    assert all(p["score"] >= FAST.threshold for p in doc["pairs"])


def test_fast_and_accurate_fingerprints_are_cached_apart(videos: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    first = _scan(videos, cache, "--fast", capsys=capsys)["summary"]
    assert first["fingerprinted"] == 3 and first["from_cache"] == 0
    accurate = _scan(videos, cache, capsys=capsys)
    assert accurate["preset"] == "accurate" and accurate["default_threshold"] == ACCURATE.threshold
    assert accurate["summary"]["fingerprinted"] == 3, "keyframe fingerprints must not stand in"
    again = _scan(videos, cache, "--fast", capsys=capsys)["summary"]
    assert again["fingerprinted"] == 0 and again["from_cache"] == 3


def test_fingerprint_command_names_the_fast_version(videos: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["fingerprint", "--fast", "--json", str(videos / "bikes.mp4")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model_version"].endswith(FAST.version_suffix)
    assert doc["frames_total"] == len(media.sample(videos / "bikes.mp4", FAST.sampling).timestamps)


def test_every_preset_threshold_is_a_score() -> None:
    for p in PRESETS.values():
        assert 0.0 < p.threshold < 1.0
    # Both name the picture rules; the fast preset also its sampling.
    assert ACCURATE.version_suffix == PICTURE_SUFFIX
    assert FAST.version_suffix.endswith(PICTURE_SUFFIX) and FAST.version_suffix != PICTURE_SUFFIX
