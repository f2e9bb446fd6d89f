"""Progress of `vfpctl scan` (vfpd.scan.Progress): every stage reports, file by file (or pair by
pair), never a batch of files at once; the decode step moves as each file is decoded."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from media_factory import make_video
from vfpd import media
from vfpd.media import MediaError, SampledVideo
from vfpd.chain import EMBED_BATCH_FILES
from vfpd.scan import ScanSettings, scan


class Recorder:
    def __init__(self) -> None:
        self.stages: list[tuple[str, int | None]] = []
        self.steps: dict[str, list[tuple[int, float]]] = {}

    def __call__(self, stage: str, total: int | None) -> Callable[[int], None]:
        self.stages.append((stage, total))
        steps = self.steps.setdefault(stage, [])
        return lambda n: steps.append((n, time.monotonic()))


def test_every_stage_moves_one_file_at_a_time(tmp_path: Path) -> None:
    from vfpd.model.embed import Embedder

    root = tmp_path / "videos"
    root.mkdir()
    n = EMBED_BATCH_FILES + 3  # more than one embedding batch
    for i in range(n - 1):
        make_video(root / f"v{i}.mp4", seconds=1.0, width=64, height=48, seed=i)
    shutil.copyfile(root / "v0.mp4", root / "copy.mp4")  # a second file of one content
    (root / "notes.mp4").write_text("not a video")
    decoded_at: dict[str, float] = {}

    def decode(paths: Sequence[str]) -> Iterator[tuple[str, SampledVideo | MediaError]]:
        for p in paths:
            try:
                result: SampledVideo | MediaError = media.sample(p)
            except MediaError as e:
                result = e
            decoded_at[p] = time.monotonic()
            yield p, result

    progress = Recorder()
    result = scan(ScanSettings(roots=(str(root),), workers=1), Embedder(device="cpu"), decode,
                  None, progress)
    assert [s for s, _ in progress.stages] == ["walking", "hashing", "fingerprinting", "matching"]
    totals = dict(progress.stages)
    assert totals["walking"] is None and totals["hashing"] == n + 1
    assert totals["fingerprinting"] == n  # distinct contents, the text file included
    assert len(result.files) == n  # the text file is an error, not a file
    for stage, steps in progress.steps.items():
        assert all(k == 1 for k, _ in steps), (stage, steps)
    assert len(progress.steps["walking"]) == len(progress.steps["hashing"]) == n + 1
    assert len(progress.steps["fingerprinting"]) == n
    assert len(progress.steps["matching"]) == totals["matching"]
    # The bar moved as each file was decoded, not after its batch was embedded.
    moved = [t for _, t in progress.steps["fingerprinting"]]
    assert moved[EMBED_BATCH_FILES // 2] < sorted(decoded_at.values())[EMBED_BATCH_FILES - 1]
