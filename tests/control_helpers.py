"""A small real ServiceContext over a real Catalog, and a library to fill it, for control tests.

Not a mock: real SQLite catalog in a temp dir, real files whose BLAKE3 hashes key the rows, real
numpy nearest-neighbour search over the stored vectors. Only the daemon's pipeline is absent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from vfpd import config as config_mod
from vfpd.catalog import Catalog, ContentInfo, JobState
from vfpd.fingerprint import FRAME_DIM, VECTOR_DIM, Fingerprint
from vfpd.hashing import FileStat, OpenFile, hash_and_stat, hash_open
from vfpd.service.context import RootState
from vfpd.service.throughput import Throughput

MODEL = "test-model-1"


class CatalogContext:
    """ServiceContext backed by a real Catalog; writes go straight to the catalog."""

    def __init__(self, config: config_mod.Config, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self.started_at = time.time()
        self._paused = False
        self.rescanned: list[Path | None] = []
        self.throughput = Throughput()

    def roots(self) -> list[RootState]:
        return [RootState(str(p), "polling" if p in self.config.watch.poll else "inotify",
                          "configured poll" if p in self.config.watch.poll else "local disk")
                for p in self.config.watch.paths]

    def queue_length(self) -> int:
        return self.catalog.counts().jobs_queued

    def drain_eta(self, queued: int) -> float | None:
        return self.throughput.eta(queued)

    def paused(self) -> bool:
        return self._paused

    def health(self) -> dict[str, object]:
        return {"state": "ok", "reason": None}

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def rescan(self, path: Path | None) -> int:
        self.rescanned.append(path)
        tops = [path] if path is not None else list(self.config.watch.paths)
        found = [(str(Path(d) / n), "rescan") for top in tops for d, _, names in os.walk(top)
                 for n in names if n.endswith(".mp4")]
        return self.catalog.enqueue_many(found)

    def retry(self, path: Path) -> bool:
        job = self.catalog.job(str(path))
        if job is None or job.state != JobState.FAILED:
            return False
        self.catalog.enqueue(str(path), "retry")
        return True

    def index_info(self) -> dict[str, object]:
        return {"type": "flat", "size": self.catalog.model_versions().get(MODEL, 0),
                "model_version": MODEL}

    def query(self, file: OpenFile, k: int, should_stop: Callable[[], bool]
              ) -> list[dict[str, object]]:
        content_hash, _ = hash_open(file, should_stop=should_stop)
        stored = self.catalog.fingerprint(content_hash, MODEL)
        if stored is None:
            raise ValueError("not fingerprinted (this test context cannot embed)")
        query = stored.fingerprint.vector
        best = sorted(((float(f.fingerprint.vector @ query), f.hash)
                       for f in self.catalog.iter_fingerprints(MODEL)), reverse=True)
        out = []
        for score, h in best[: k + 1]:
            if h == content_hash:
                continue
            out.append({"hash": h, "paths": self.catalog.paths_for_hash(h),
                        "score": round(float(score), 4)})
        return out[:k]

    def set_verdict(self, a: Path, b: Path, verdict: str) -> dict[str, object]:
        fa, fb = self.catalog.file_by_path(str(a)), self.catalog.file_by_path(str(b))
        for p, f in ((a, fa), (b, fb)):
            if f is None or f.hash is None:
                raise KeyError(str(p))
        stored = {"confirmed": "confirmed", "not-a-duplicate": "not_duplicate"}[verdict]
        if not self.catalog.set_verdict(fa.hash, fb.hash, stored):  # type: ignore[union-attr]
            self.catalog.add_duplicate(fa.hash, fb.hash, 1.0 if verdict == "confirmed" else 0.0,
                                       "near")  # type: ignore[union-attr]
            self.catalog.set_verdict(fa.hash, fb.hash, stored)  # type: ignore[union-attr]
        return {"a": str(a), "b": str(b), "verdict": verdict,
                "hashes": [fa.hash, fb.hash]}  # type: ignore[union-attr]

    def last_retrain(self) -> dict[str, object] | None:
        return None


def unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(VECTOR_DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def fingerprint(vector: np.ndarray, frames: int = 4) -> Fingerprint:
    feats = np.zeros((frames, FRAME_DIM), np.float32)
    feats[:, 0] = 1.0
    return Fingerprint(vector=vector, frame_features=feats,
                       timestamps=np.arange(frames, dtype=np.float64),
                       informative=np.ones(frames, bool), duration=float(frames),
                       model_version=MODEL)


@dataclass
class Library:
    root: Path
    catalog: Catalog
    context: CatalogContext
    files: list[Path]


def make_library(tmp: Path, n_files: int = 6, seed: int = 0) -> Library:
    """A watched root with small real files, all fingerprinted, plus known duplicate pairs:
    files 0~1 (near, 0.93), 1~2 (near, 0.9), 3~4 (partial, 0.8); file 5 copied to 5b (same hash)."""
    rng = np.random.default_rng(seed)
    root = tmp / "videos"
    root.mkdir()
    cfg = config_mod.parse({"watch": {"paths": [str(root)]},
                            "storage": {"state_dir": str(tmp / "state"),
                                        "cache_dir": str(tmp / "cache")},
                            "control": {"socket": str(tmp / "run" / "vfpd.sock")}},
                           None, env={"HOME": str(tmp)})
    catalog = Catalog(tmp / "state" / "catalog.db")
    files = []
    hashes = []
    base = unit_vector(rng)
    for i in range(n_files):
        p = root / f"clip{i}.mp4"
        p.write_bytes(rng.bytes(1000 * (i + 1)))
        files.append(p)
        h, st = hash_and_stat(p)
        hashes.append(h)
        vec = base if i < 3 else unit_vector(rng)
        if 0 < i < 3:
            vec = vec + 0.1 * unit_vector(rng)
            vec = (vec / np.linalg.norm(vec)).astype(np.float32)
        catalog.store_result(str(p), st, h, info=ContentInfo(size=st.size, duration=10.0 + i,
                                                             codec="h264", width=640, height=360),
                             fingerprint=fingerprint(vec))
    alias = root / "clip5b.mp4"
    alias.write_bytes(files[5].read_bytes())
    catalog.store_result(str(alias), FileStat.of(alias), hashes[5])
    catalog.add_duplicate(hashes[0], hashes[1], 0.93, "near")
    catalog.add_duplicate(hashes[1], hashes[2], 0.9, "near")
    catalog.add_duplicate(hashes[3], hashes[4], 0.8, "partial")
    return Library(root, catalog, CatalogContext(cfg, catalog), files + [alias])


@pytest.fixture
def lib(tmp_path: Path) -> Iterator[Library]:
    """A real catalog with a few files, fingerprints and duplicates, closed after the test."""
    library = make_library(tmp_path)
    yield library
    library.catalog.close()
