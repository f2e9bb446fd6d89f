"""The pipeline in-process on a real catalog, FAISS index, model and decode workers: aliases,
hardlinks, verdicts, failures and retries, start-up reconcile, queries."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from media_factory import encode, make_video, read_frames, sample_clip
from vfpd.catalog import JOB_FAILED, PRIORITY_BACKLOG, PRIORITY_NEW, Catalog, RetryPolicy
from vfpd.config import WatchConfig
from vfpd.hashing import FileStat, hash_file
from vfpd.index import VectorIndex
from vfpd.matching import DEFAULT_THRESHOLD
from vfpd.service.daemon import PoolDecoder
from vfpd.service.pipeline import Pipeline, PipelineSettings, reconcile
from vfpd.service.watcher import Filter
from vfpd.workers import PoolSettings

SINKS = ["log"]


@pytest.fixture(scope="module")
def embedder():
    from vfpd.model.embed import Embedder

    return Embedder(device="cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    orig = d / "orig.mp4"
    shutil.copyfile(sample_clip("carphone_pristine"), orig)
    frames = [f for _, f in read_frames(orig)]
    return {
        "orig": orig,
        "near": encode(d / "near.mp4", frames, fps=25, options={"crf": "30"}),
        "near2": encode(d / "near2.mkv", frames, fps=30, codec="mpeg4"),
        "other": make_video(d / "other.mp4", seconds=3, width=176, height=144, seed=21),
        # A few unrelated videos: the matcher removes a library's common "background" frame
        # feature, which a library of one or two videos cannot tell apart from the footage.
        "bg": [sample_clip("bikes"), sample_clip("bigbuckbunny")] + [
            make_video(d / f"bg{i}.mp4", seconds=4, width=160, height=120, seed=30 + i)
            for i in range(3)],
    }


class Env:
    def __init__(self, root: Path, state: Path, embedder, timeout: float = 60.0,
                 max_attempts: int = 3) -> None:
        self.root = root
        self.catalog = Catalog(state / "catalog.db",
                               jobs=RetryPolicy(max_attempts=max_attempts, backoff_s=0.1))
        self.index = VectorIndex(embedder.model_version)
        self.decoder = PoolDecoder(PoolSettings(workers=1, timeout=timeout, per_video_second=0))
        self.events = 0
        self.pipeline = Pipeline(
            self.catalog, self.index, state / "index.faiss", embedder, self.decoder,
            PipelineSettings(batch_size=4, threshold=DEFAULT_THRESHOLD, candidates=50,
                             idle_unload_seconds=300), lambda: SINKS, self._event)
        self.pipeline.start()

    def _event(self) -> None:
        self.events += 1

    def background(self, clips: dict) -> None:
        for i, src in enumerate(clips["bg"]):
            self.add(src, f"bg{i}{src.suffix}")
        self.drain()

    def add(self, src: Path, name: str) -> Path:
        dest = self.root / name
        shutil.copyfile(src, dest)
        self.queue(dest)
        return dest

    def queue(self, path: Path, priority: int = PRIORITY_NEW) -> None:
        self.catalog.enqueue(str(path), "new", priority)
        self.pipeline.wake()

    def drain(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.catalog.counts().jobs_queued or self.pipeline.busy:
            assert time.monotonic() < deadline, "queue did not drain"
            time.sleep(0.05)

    def outbox(self) -> list[dict]:
        return [i.payload for i in self.catalog.outbox_claim("log", 1000)]

    def close(self) -> None:
        self.pipeline.stop()
        self.decoder.close()
        self.catalog.close()


@pytest.fixture
def env(tmp_path: Path, embedder) -> Iterator[Env]:
    root = tmp_path / "root"
    root.mkdir()
    e = Env(root, tmp_path, embedder)
    yield e
    e.close()


def test_exact_copy_announced_hardlink_not(env: Env, clips) -> None:
    a = env.add(clips["orig"], "a.mp4")
    env.drain()
    assert env.catalog.fingerprint(hash_file(a), env.pipeline.embedder.model_version)
    os.link(a, env.root / "a-link.mp4")
    env.queue(env.root / "a-link.mp4")
    env.drain()
    assert env.outbox() == []  # a hardlink is the same file
    env.add(clips["orig"], "b.mp4")
    env.drain()
    (event,) = env.outbox()
    assert event["kind"] == "exact" and event["new"]["path"] == str(env.root / "b.mp4")
    assert sorted(e["path"] for e in event["existing"]) == sorted([str(a), str(env.root / "a-link.mp4")])
    assert len(env.index) == 1  # one content, one fingerprint


def test_near_copy_found_and_verdict_keeps_a_pair_silent(env: Env, clips) -> None:
    cat = env.catalog
    env.background(clips)
    env.add(clips["orig"], "a.mp4")
    env.drain()
    # The near copy's content was seen before (no fingerprint of this model) and the user said
    # the two are not duplicates: when it is fingerprinted, the pair stays silent.
    near_hash = hash_file(clips["near"])
    dest = env.root / "near.mp4"
    shutil.copyfile(clips["near"], dest)
    cat.store_result(str(dest), FileStat.of(dest), near_hash)
    cat.add_duplicate(hash_file(clips["orig"]), near_hash, 0.9, "near")
    cat.set_verdict(hash_file(clips["orig"]), near_hash, "not_duplicate")
    env.queue(dest)
    env.drain()
    assert cat.fingerprint(near_hash, env.pipeline.embedder.model_version) is not None
    orig_hash = hash_file(clips["orig"])
    assert not [e for e in env.outbox() if {e["new"]["hash"], e["existing"][0]["hash"]}
                == {orig_hash, near_hash}]
    assert cat.duplicate(orig_hash, near_hash).verdict == "not_duplicate"
    # Without a verdict the same footage is reported.
    env.add(clips["near2"], "near2.mkv")
    env.drain()
    events = [i.payload for i in cat.outbox_claim("log", 1000)]
    assert any(e["kind"] in ("near", "partial") and str(env.root / "a.mp4") in
               [x["path"] for x in e["existing"]] for e in events), events


def test_query_finds_the_original(env: Env, clips) -> None:
    env.background(clips)
    env.add(clips["orig"], "a.mp4")
    env.add(clips["other"], "other.mp4")
    env.drain()
    results = env.pipeline.query(clips["near"], 5)
    assert results[0]["path"] == str(env.root / "a.mp4")
    assert results[0]["duplicate"] and results[0]["score"] >= DEFAULT_THRESHOLD


def test_bad_files_fail_once_with_their_reason(env: Env, clips) -> None:
    text = env.root / "notes.mp4"
    text.write_text("not a video")
    data = clips["orig"].read_bytes()
    cut = env.root / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    env.queue(text)
    env.queue(cut)
    env.queue(env.root / "vanished.mp4")  # deleted before it was processed: just dropped
    env.drain()
    failed = {Path(j.path).name: j for j in env.catalog.iter_jobs(JOB_FAILED)}
    assert set(failed) == {"notes.mp4", "cut.mp4"}
    assert failed["notes.mp4"].last_error.startswith("not-a-video:")
    assert failed["cut.mp4"].last_error.startswith("truncated:")
    assert env.catalog.job(str(env.root / "vanished.mp4")) is None


def test_decode_timeout_is_retried_then_failed(tmp_path: Path, embedder, clips) -> None:
    root = tmp_path / "root"
    root.mkdir()
    # A limit no decode can meet (opening a file alone takes longer): every try times out.
    e = Env(root, tmp_path, embedder, timeout=0.01, max_attempts=2)
    try:
        path = e.add(clips["orig"], "slow.mp4")
        deadline = time.monotonic() + 60
        while (job := e.catalog.job(str(path))) is None or job.state != JOB_FAILED:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert job.attempts == 2 and job.last_error.startswith("timeout:")
    finally:
        e.close()


def test_reconcile_after_downtime(env: Env, clips, tmp_path: Path) -> None:
    cat = env.catalog
    keep = env.add(clips["orig"], "keep.mp4")
    moved = env.add(clips["other"], "moved.mp4")
    gone = env.add(clips["near"], "gone.mp4")
    env.drain()
    (env.root / "sub").mkdir()
    os.rename(moved, env.root / "sub" / "moved.mp4")
    gone.unlink()
    shutil.copyfile(clips["orig"], env.root / "new.mp4")
    with open(keep, "ab") as f:  # changed in place: must be looked at again
        f.write(b"\0")
    flt = Filter.of(WatchConfig(paths=(env.root,)))
    env.pipeline.pause()
    queued, n_moved, removed = reconcile(cat, [env.root], flt)
    assert (queued, n_moved, removed) == (2, 1, 1)
    assert cat.file_by_path(str(env.root / "sub" / "moved.mp4")).hash == hash_file(clips["other"])
    jobs = {Path(j.path).name: j.priority for j in cat.iter_jobs()}
    assert jobs == {"keep.mp4": PRIORITY_BACKLOG, "new.mp4": PRIORITY_BACKLOG}
    # Unchanged files are not queued again; a new file goes before the back-log.
    assert reconcile(cat, [env.root], flt) == (0, 0, 0)
    shutil.copyfile(clips["other"], env.root / "fresh.mp4")
    env.queue(env.root / "fresh.mp4", PRIORITY_NEW)
    assert [Path(j.path).name for j in cat.iter_jobs()][0] == "fresh.mp4"
    env.pipeline.resume()
    env.drain()
    assert cat.file_by_path(str(keep)).hash == hash_file(keep)
