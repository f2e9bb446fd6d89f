"""Shared fixtures: real clips and freshly encoded videos."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from media_factory import make_video, sample_clip  # noqa: E402


@pytest.fixture(scope="session")
def bikes() -> Path:
    return sample_clip("bikes")


@pytest.fixture(scope="session")
def bunny() -> Path:
    return sample_clip("bigbuckbunny")


@pytest.fixture(scope="session")
def carphone() -> Path:
    return sample_clip("carphone_pristine")


@pytest.fixture
def small_video(tmp_path: Path) -> Path:
    return make_video(tmp_path / "small.mp4", seconds=4.0)
