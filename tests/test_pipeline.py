"""The pipeline in-process on a real catalog, FAISS index, model and decode workers: aliases,
hardlinks, verdicts, failures and retries, start-up reconcile, queries."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from media_factory import encode, make_video, read_frames, sample_clip
from vfpd.catalog import (
    PRIORITY_BACKLOG,
    PRIORITY_NEW,
    UNTAGGED_SAMPLING,
    Catalog,
    JobState,
    RetryPolicy,
    encode_frames,
    frames_sampling,
    sampling_tag,
)
from vfpd import media
from vfpd.chain import PoolDecoder
from vfpd.config import (
    Config,
    ControlConfig,
    DecodeConfig,
    IndexConfig,
    ModelConfig,
    NotifyConfig,
    StorageConfig,
    WatchConfig,
)
from vfpd.hashing import FileStat, hash_file, open_regular
from vfpd.matching import DEFAULT_THRESHOLD
from vfpd.media import SamplingSettings
from vfpd.picture import RULES_VERSION
from vfpd.presets import ACCURATE, FAST, Preset
from vfpd.service.intake import REASON_MODEL, Reconciled, reconcile
from vfpd.service.watcher import Filter
from vfpd.service.wiring import Parts, wire
from vfpd.workers import PoolSettings



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
                 max_attempts: int = 3, preset: Preset = ACCURATE,
                 index: IndexConfig = IndexConfig()) -> None:
        self.root = root
        self.catalog = Catalog(state / "catalog.db",
                               jobs=RetryPolicy(max_attempts=max_attempts, backoff_s=0.1))
        self.decoder = PoolDecoder(PoolSettings(workers=1, timeout=timeout, per_video_second=0,
                                                sampling=preset.sampling))
        # The daemon's own wiring (vfpd/service/wiring.py) with the log sink only.
        cfg = Config(StorageConfig(state, state), ControlConfig(state / "vfpd.sock"),
                     watch=WatchConfig(paths=(root,)), notify=NotifyConfig(desktop=False),
                     model=ModelConfig(batch_size=4, idle_unload_seconds=300,
                                       preset=preset.name),
                     decode=DecodeConfig(workers=1), index=index)
        wired = wire(cfg, self.catalog, Parts(embedder, self.decoder, self.decoder.close), {})
        self.library, self.pipeline, self.indexes = wired.library, wired.pipeline, wired.indexes
        self.index = self.library.index
        self.pipeline.start()

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

    def take(self) -> list[dict]:
        """Events not taken before (delivered: acknowledged)."""
        items = self.catalog.outbox_claim("log", 1000)
        for i in items:
            self.catalog.outbox_ack(i.id, "log")
        return [i.payload for i in items]

    def close(self) -> None:
        self.pipeline.stop()
        self.indexes.close()
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


def _rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    st = path.stat()
    with open(path, "r+b") as f:  # in place: same inode
        f.write(data[:st.st_size].ljust(st.st_size, b"\0"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("reason", ["rescan", "new"])
def test_a_file_rewritten_keeping_size_and_mtime_is_hashed_again(env: Env, clips,
                                                                 reason: str) -> None:
    """Issue 16 item 7: an explicit rescan, or a close-write (queued as "new"), reads the file
    again whatever its stat says; its old identity (an exact copy of a.mp4) is gone."""
    a = env.add(clips["orig"], "a.mp4")
    b = env.add(clips["orig"], "b.mp4")
    env.drain()
    old = hash_file(a)
    assert env.catalog.file_by_path(str(b)).hash == old
    before = b.stat()
    _rewrite_keeping_size_and_mtime(b, clips["other"].read_bytes() * 100)
    after = b.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino)
    env.catalog.enqueue(str(b), reason, PRIORITY_NEW)
    env.pipeline.wake()
    env.drain()
    assert env.catalog.file_by_path(str(b)).hash == hash_file(b) != old
    assert env.catalog.paths_for_hash(old) == [str(a)]


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
    with open_regular(clips["near"]) as f:
        results = env.pipeline.query(f, 5, lambda: False)
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
    failed = {Path(j.path).name: j for j in env.catalog.iter_jobs(JobState.FAILED)}
    assert set(failed) == {"notes.mp4", "cut.mp4"}
    assert failed["notes.mp4"].last_error.startswith("not-a-video:")
    assert failed["cut.mp4"].last_error.startswith("truncated:")
    assert env.catalog.job(str(env.root / "vanished.mp4")) is None


def test_a_cut_off_file_found_by_a_walk_moments_after_its_last_write_is_retried(env: Env,
                                                                                clips) -> None:
    """A download found at start (no close event yet) may decode as cut off between two of its
    writes: it is tried again later, quietly; the same cut-off file written long ago fails."""
    data = clips["orig"].read_bytes()
    fresh, old = env.root / "downloading.mp4", env.root / "old-cut.mp4"
    for p in (fresh, old):
        p.write_bytes(data[: len(data) // 2])
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    for p in (fresh, old):
        env.catalog.enqueue(str(p), "reconcile", PRIORITY_NEW)
    env.pipeline.wake()
    deadline = time.monotonic() + 120
    while (env.catalog.job(str(old)).state != JobState.FAILED
           or env.catalog.job(str(fresh)).attempts == 0):
        assert time.monotonic() < deadline, "the two files were not tried"
        time.sleep(0.05)
    assert env.catalog.job(str(old)).last_error.startswith("truncated:")
    retried = env.catalog.job(str(fresh))
    assert retried.state != JobState.FAILED and "still being written" in retried.last_error


def test_fifo_and_huge_sparse_file_fail_without_blocking(env: Env, clips) -> None:
    os.mkfifo(env.root / "fifo.mp4")  # no writer ever comes
    with open(env.root / "sparse.mp4", "wb"):
        pass
    os.truncate(env.root / "sparse.mp4", 15 * 10**12)  # `truncate -s 15T`: hours of holes
    env.queue(env.root / "fifo.mp4")
    env.queue(env.root / "sparse.mp4")
    good = env.add(clips["orig"], "a.mp4")
    env.drain()
    failed = {Path(j.path).name: j.last_error for j in env.catalog.iter_jobs(JobState.FAILED)}
    assert failed["fifo.mp4"].startswith("not-a-file: not a regular file (a FIFO)"), failed
    assert failed["sparse.mp4"].startswith("too-large:"), failed
    assert env.catalog.file_by_path(str(good)) is not None  # the queue went on past them


def test_decode_timeout_is_retried_then_failed(tmp_path: Path, embedder, clips) -> None:
    root = tmp_path / "root"
    root.mkdir()
    # A limit no decode can meet (opening a file alone takes longer): every try times out.
    e = Env(root, tmp_path, embedder, timeout=0.01, max_attempts=2)
    try:
        path = e.add(clips["orig"], "slow.mp4")
        # Each try kills the worker and starts a new one (a Python process: about a second, many
        # on a loaded machine); the deadline only has to catch a pipeline that stopped retrying.
        deadline = time.monotonic() + 120
        while (job := e.catalog.job(str(path))) is None or job.state != JobState.FAILED:
            assert time.monotonic() < deadline, (job, e.pipeline.busy, e.decoder)
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
    done = reconcile(cat, [env.root], flt)
    assert (done.queued, done.moved, done.removed) == (2, 1, 1)
    assert cat.file_by_path(str(env.root / "sub" / "moved.mp4")).hash == hash_file(clips["other"])
    jobs = {Path(j.path).name: j.priority for j in cat.iter_jobs()}
    assert jobs == {"keep.mp4": PRIORITY_BACKLOG, "new.mp4": PRIORITY_BACKLOG}
    # Unchanged files are not queued again; a new file goes before the back-log.
    assert reconcile(cat, [env.root], flt) == Reconciled(0, 0, 0)
    shutil.copyfile(clips["other"], env.root / "fresh.mp4")
    env.queue(env.root / "fresh.mp4", PRIORITY_NEW)
    assert [Path(j.path).name for j in cat.iter_jobs()][0] == "fresh.mp4"
    env.pipeline.resume()
    env.drain()
    assert cat.file_by_path(str(keep)).hash == hash_file(keep)


# -- a new model version: re-fingerprinting ------------------------------------------------------

def test_frames_are_tagged_with_their_sampling(tmp_path: Path) -> None:
    sampled = media.sample(sample_clip("carphone_pristine"), FAST.sampling)
    # Frames stored before the tag existed were all sampled with the defaults (accurate), under
    # the first picture rules.
    assert UNTAGGED_SAMPLING == {**sampling_tag(SamplingSettings()), "picture": 1}
    assert sampling_tag(SamplingSettings()) == sampling_tag(ACCURATE.sampling)
    assert frames_sampling(encode_frames(sampled)) == UNTAGGED_SAMPLING
    assert frames_sampling(encode_frames(sampled, FAST.sampling)) == sampling_tag(FAST.sampling)
    with Catalog(tmp_path / "c.db") as cat:
        cat.store_result("/v/a.mp4", FileStat(1, 1, ord("a"), 1), "a" * 64, frames=sampled,
                         sampling=ACCURATE.sampling)
        cat.store_result("/v/b.mp4", FileStat(1, 1, ord("b"), 1), "b" * 64, frames=sampled,
                         sampling=FAST.sampling)
        # Untagged (as before the tag existed): accurate frames of older picture rules.
        cat.store_result("/v/c.mp4", FileStat(1, 1, ord("c"), 1), "c" * 64, frames=sampled)
        assert cat.load_frames("a" * 64, ACCURATE.sampling) is not None
        assert cat.load_frames("a" * 64, FAST.sampling) is None
        assert cat.load_frames("b" * 64, ACCURATE.sampling) is None
        back = cat.load_frames("b" * 64, FAST.sampling)
        assert back is not None and (back.frames == sampled.frames).all()
        assert cat.load_frames("b" * 64) is not None  # no sampling asked: any
        assert cat.load_frames("c" * 64, ACCURATE.sampling) is None


def _retagged(data: bytes, change: Callable[[dict], None]) -> bytes:
    """Encoded frames whose sampling tag `change` edited, as an older vfpd wrote them."""
    with np.load(io.BytesIO(data)) as z:
        parts = {k: z[k] for k in z.files}
    tag = json.loads(parts["sampling"].tobytes())
    change(tag)
    parts["sampling"] = np.frombuffer(json.dumps(tag).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **parts)
    return buf.getvalue()


def test_a_tag_written_before_min_frames_reads_back_as_no_minimum() -> None:
    sampled = media.sample(sample_clip("carphone_pristine"), ACCURATE.sampling)
    old = encode_frames(sampled, ACCURATE.sampling)
    assert frames_sampling(_retagged(old, lambda t: t.pop("min_frames"))) == \
        sampling_tag(ACCURATE.sampling)
    assert frames_sampling(old) != sampling_tag(FAST.sampling)


def test_frames_of_older_picture_rules_are_not_taken_for_new_ones() -> None:
    """A tag written before the picture rules were named reads back as rules 1: frames whose
    coloured borders were not cropped must not stand in for today's."""
    sampled = media.sample(sample_clip("carphone_pristine"), ACCURATE.sampling)
    old = _retagged(encode_frames(sampled, ACCURATE.sampling), lambda t: t.pop("picture"))
    assert frames_sampling(old) == {**sampling_tag(ACCURATE.sampling), "picture": 1}
    assert frames_sampling(old) != sampling_tag(ACCURATE.sampling)
    assert sampling_tag(ACCURATE.sampling)["picture"] == RULES_VERSION > 1


def test_reconcile_queues_files_without_a_current_fingerprint(env: Env, clips) -> None:
    cat = env.catalog
    a = env.add(clips["orig"], "a.mp4")
    b = env.add(clips["other"], "b.mp4")
    env.add(clips["orig"], "a-copy.mp4")  # same content as a: one fingerprint
    bad = env.root / "bad.mp4"
    bad.write_text("not a video")
    env.queue(bad)
    env.drain()
    flt = Filter.of(WatchConfig(paths=(env.root,)))
    mv = env.pipeline.embedder.model_version
    env.pipeline.pause()
    assert reconcile(cat, [env.root], flt, model_version=mv) == Reconciled(0, 0, 0, 0)
    assert cat.count_unfingerprinted(mv) == 0
    assert cat.count_unfingerprinted("another-model") == 2
    (env.root / "sub").mkdir()
    os.rename(b, env.root / "sub" / "b.mp4")  # moved while the daemon was down
    done = reconcile(cat, [env.root], flt, model_version="another-model")
    # Every live file of a content without a fingerprint of the version, the failed one not.
    assert done == Reconciled(3, 1, 0, 3)
    jobs = {Path(j.path).name: (j.priority, j.reason) for j in cat.iter_jobs()}
    assert jobs == {n: (PRIORITY_BACKLOG, REASON_MODEL) for n in ("a.mp4", "a-copy.mp4", "b.mp4")}
    assert cat.job(str(env.root / "sub" / "b.mp4")) is not None
    # Already queued: not counted twice; a new file goes before the back-log.
    assert reconcile(cat, [env.root], flt, model_version="another-model").queued == 0
    env.queue(env.root / "a.mp4", PRIORITY_NEW)
    assert [Path(j.path).name for j in cat.iter_jobs()][0] == "a.mp4"
    assert str(a) in {j.path for j in cat.iter_jobs()}


class CountingDecoder(PoolDecoder):
    """The real decode pool, counting the files it is asked to decode."""

    def __init__(self, settings: PoolSettings) -> None:
        super().__init__(settings)
        self.paths: list[str] = []

    def __call__(self, paths):
        self.paths += list(paths)
        return super().__call__(paths)


def restart(env: Env, tmp_path: Path, embedder, preset: Preset = ACCURATE,
            before: Callable[[Env], None] | None = None) -> Env:
    """The same state and folder under another model version (or preset), reconciled like the
    daemon's start-up; `before` runs after the reconcile, before the pipeline takes jobs."""
    env.close()
    new = Env(env.root, tmp_path, embedder, preset=preset)
    new.pipeline.pause()
    new.decoder.close()
    new.decoder = new.pipeline.decoder = CountingDecoder(  # type: ignore[assignment]
        PoolSettings(workers=1, timeout=60, per_video_second=0, sampling=preset.sampling))
    reconcile(new.catalog, [new.root], Filter.of(WatchConfig(paths=(new.root,))),
              model_version=embedder.model_version)
    if before is not None:
        before(new)
    new.pipeline.resume()
    return new


@pytest.fixture
def library(tmp_path: Path, embedder, clips) -> Iterator[Env]:
    """A library fingerprinted by the shipped model, with one near duplicate pair announced."""
    root = tmp_path / "root"
    root.mkdir()
    e = Env(root, tmp_path, embedder)
    e.background(clips)
    e.add(clips["orig"], "a.mp4")
    e.drain()
    e.add(clips["near"], "near.mp4")
    e.drain()
    assert [ev["new"]["path"] for ev in e.take()] == [str(root / "near.mp4")]
    yield e


def test_new_weights_reembed_stored_frames_without_decoding(library: Env, tmp_path: Path,
                                                            clips) -> None:
    from vfpd.model.embed import Embedder

    old_mv = library.pipeline.embedder.model_version
    pairs = list(library.catalog.duplicates())
    # Another model version from the same sampling (a suffix stands in for new weights here;
    # the daemon test uses a real second weights file).
    # A byte-identical copy arrives before the back-log starts: it goes first, and its content
    # has no fingerprint of the new model yet (so it is not a plain alias).
    env = restart(library, tmp_path, Embedder(device="cpu", version_suffix="+retrained"),
                  before=lambda e: e.add(clips["orig"], "a-copy.mp4"))
    try:
        cat, mv = env.catalog, env.pipeline.embedder.model_version
        assert mv != old_mv
        env.drain()
        assert env.decoder.paths == []  # nothing decoded again
        assert (env.pipeline.reembedded, env.pipeline.decoded) == (7, 0)
        assert cat.count_unfingerprinted(mv) == 0 and len(env.index) == 7
        (exact,) = env.take()
        assert exact["kind"] == "exact" and exact["new"]["path"] == str(env.root / "a-copy.mp4")
        assert [x["path"] for x in exact["existing"]] == [str(env.root / "a.mp4")]
        # The pair found under the old model is found again, but not announced again.
        assert [(d.hash_a, d.hash_b) for d in cat.duplicates()] == [
            (d.hash_a, d.hash_b) for d in pairs]
        # A new copy is compared with the re-fingerprinted library.
        env.add(clips["near2"], "near2.mkv")
        env.drain()
        assert env.decoder.paths == [str(env.root / "near2.mkv")]
        events = env.take()  # one per content it duplicates
        assert {e["new"]["path"] for e in events} == {str(env.root / "near2.mkv")}
        assert str(env.root / "a.mp4") in {x["path"] for e in events for x in e["existing"]}
    finally:
        env.close()


def test_another_preset_decodes_again(library: Env, tmp_path: Path, clips) -> None:
    from vfpd.model.embed import Embedder

    env = restart(library, tmp_path, Embedder(device="cpu", version_suffix=FAST.version_suffix),
                  FAST)
    try:
        cat = env.catalog
        env.drain()
        # Stored frames were sampled the accurate way: every content is decoded again, its
        # frames replaced by keyframe samples (which a later re-embed may use).
        assert len(env.decoder.paths) == 7 and env.pipeline.reembedded == 0
        a = hash_file(env.root / "a.mp4")
        assert cat.load_frames(a, FAST.sampling) is not None
        assert cat.load_frames(a, ACCURATE.sampling) is None
        # The known pair is not announced again. (Other pairs may be: these 4 s clips have one
        # keyframe, so the fast preset samples them on the grid as the accurate one does, and
        # judges them at its lower threshold: two of the procedural background clips pass it.)
        announced = {frozenset((ev["new"]["path"], x["path"])) for ev in env.take()
                     for x in ev["existing"]}
        assert frozenset((str(env.root / "a.mp4"), str(env.root / "near.mp4"))) not in announced
    finally:
        env.close()


def test_a_catalog_locked_by_another_process_degrades_then_work_resumes(env: Env, clips) -> None:
    """Another process holds the catalog's write lock past the busy timeout (issue 16 item 4):
    the processing thread lives on, says why it is stuck, and takes the file once the lock is
    gone; nothing is dropped."""
    import subprocess
    import sys

    env.pipeline.pause()
    dest = env.root / "a.mp4"
    shutil.copyfile(clips["orig"], dest)
    env.queue(dest)
    locker = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(300)",
         str(env.catalog.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        env.pipeline.resume()
        deadline = time.monotonic() + 120
        while env.pipeline.problem is None:
            assert time.monotonic() < deadline, "the pipeline never said it was stuck"
            time.sleep(0.2)
        assert "locked" in env.pipeline.problem and env.pipeline.alive
    finally:
        locker.kill()
        locker.wait()
    env.drain()
    deadline = time.monotonic() + 120
    while env.catalog.file_by_path(str(dest)) is None or env.pipeline.problem is not None:
        assert time.monotonic() < deadline, f"work did not resume: {env.pipeline.problem}"
        time.sleep(0.2)
    assert env.pipeline.alive


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MB tmpfs (root only; skipped where mounting is not allowed)."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> None:
    """Take every free block of path's disk. Unbuffered: a buffered file would try to flush
    what did not fit when it is closed, and raise there."""
    with open(path, "wb", buffering=0) as f:
        chunk = b"\0" * (1 << 16)
        while True:
            try:
                if f.write(chunk) < len(chunk):
                    chunk = chunk[:max(1, len(chunk) // 2)]
            except OSError:
                if len(chunk) == 1:
                    return
                chunk = chunk[:len(chunk) // 2]


def test_a_full_disk_degrades_then_work_resumes_when_space_returns(small_disk: Path, embedder,
                                                                    clips) -> None:
    """The state folder's disk fills up (issue 16 item 4): the thread lives on and says so, and
    once space comes back the queued file is done by itself, nothing dropped."""
    root = small_disk.parent / "root"
    root.mkdir()
    env = Env(root, small_disk, embedder)
    try:
        env.background({"bg": clips["bg"][:2]})
        env.pipeline.pause()
        filler = small_disk / "filler"
        _fill(filler)
        dest = root / "a.mp4"
        shutil.copyfile(clips["orig"], dest)
        try:
            env.queue(dest)
        except Exception:  # the queue itself may not fit: make room for the job alone
            filler.write_bytes(b"")
            env.queue(dest)
            _fill(filler)
        env.pipeline.resume()
        deadline = time.monotonic() + 120
        while env.pipeline.problem is None:
            assert time.monotonic() < deadline, "the pipeline never said the disk is full"
            time.sleep(0.2)
        assert "full" in env.pipeline.problem and env.pipeline.alive
        filler.unlink()
        deadline = time.monotonic() + 180
        while env.catalog.file_by_path(str(dest)) is None or env.pipeline.problem is not None:
            assert time.monotonic() < deadline, f"work did not resume: {env.pipeline.problem}"
            time.sleep(0.2)
    finally:
        env.close()
