"""The scan matches contents while later ones still decode (scan.WalkOrderMatcher), in walk
order whatever order the decoder finishes them in: the same pairs as matching them all at the
end, which is what the daemon does with the folder's files as they are queued."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from media_factory import make_video

from vfpd import media
from vfpd.media import MediaError, SampledVideo
from vfpd.model.embed import Embedder
from vfpd.scan import ScanSettings, find_pairs, scan


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("walk")
    for seed in range(3):
        make_video(d / f"v{seed}.mp4", seconds=4, width=160, height=120, seed=seed)
        make_video(d / f"v{seed}-gop.mp4", seconds=4, width=160, height=120, seed=seed, gop=10)
    shutil.copyfile(d / "v1.mp4", d / "v1-exact.mp4")
    (d / "broken.mp4").write_text("not a video")
    return d


def _decoder(reverse: bool):  # noqa: ANN202 - a chain.Decoder
    def decode(paths: Sequence[str]) -> Iterator[tuple[str, SampledVideo | MediaError]]:
        for p in (list(reversed(paths)) if reverse else paths):
            try:
                yield p, media.sample(p)
            except MediaError as e:
                yield p, e
    return decode


def _pairs(pairs: Sequence[object]) -> list[tuple[str, str, float, str]]:
    return [(Path(p.a).name, Path(p.b).name, p.score, p.kind) for p in pairs]  # type: ignore[attr-defined]


def test_matching_while_decoding_gives_the_pairs_of_matching_at_the_end(folder: Path) -> None:
    settings = ScanSettings(roots=(str(folder),), workers=1)
    embedder = Embedder(device="cpu")
    in_order = scan(settings, embedder, _decoder(reverse=False))
    reversed_ = scan(settings, embedder, _decoder(reverse=True))
    at_end = find_pairs(in_order.files, {e.hash: embedder.embed(media.sample(e.path))
                                         for e in in_order.files}, settings,
                        embedder.frame_center)
    assert _pairs(in_order.pairs) == _pairs(reversed_.pairs) == _pairs(
        [p for p in at_end if p.score >= settings.threshold])
    names = {frozenset((a, b)) for a, b, _, _ in _pairs(in_order.pairs)}
    assert frozenset(("v1.mp4", "v1-exact.mp4")) in names
    assert any(frozenset((f"v{s}.mp4", f"v{s}-gop.mp4")) in names for s in range(3))
    assert [Path(e.path).name for e in in_order.errors] == ["broken.mp4"]
