"""One chain, one answer: a folder of real clips and their transformed copies gives the same pairs,
with the same scores and kinds, through `vfpctl scan` and through the running daemon watching it
(vfpd/chain.py and vfpd/library.py are shared; only the producer and the consumer differ)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from harness.daemon import Daemon, NotifyListener, WebhookServer, wait_until
from media_factory import encode
from scan_media import crop, load, make_copy, pan_frames, rate, resize

from bench import dataset
from vfpd.matching import DEFAULT_THRESHOLD

Pairs = dict[frozenset[str], tuple[float, str]]

THRESHOLD = 0.4
"""Below the default, so that the 80 % centre crop of bikes (about 0.67 with the shipped weights: crops
are the model's known weak spot, issue 12) is a pair in both answers with a wide margin; the shared
intro scores 0.30, the black leaders nothing. (A 75 % crop scores 0.45 here, and the encoder does
not give the same bytes every run: too near this threshold to assert.)"""

CROP_KEEP = 0.8
"""The share of each side the cropped copy keeps: the centre crop issue 12 names."""


def _with_leader(frames: list[np.ndarray], seconds: float, fps: float) -> list[np.ndarray]:
    h, w = frames[0].shape[:2]
    return [np.zeros((h, w, 3), np.uint8)] * int(seconds * fps) + frames


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copies of every hard kind the issue names, and look-alikes that are not copies."""
    d = tmp_path_factory.mktemp("one-chain")
    (d / "sub").mkdir()
    bikes = load("bikes")
    encode(d / "bikes.mp4", (img for _, img in bikes), fps=rate(bikes))
    for kind in ("flip", "trim"):
        make_copy(bikes, kind, d / f"bikes-{kind}.mp4")
    encode(d / "bikes-crop.mp4", (crop(img, CROP_KEEP) for _, img in bikes), fps=rate(bikes))
    # A clip inside a longer video: the bunny between two camera pans.
    bunny = load("bigbuckbunny")
    fps = rate(bunny)
    clip = [resize(img, 192, 144) for _, img in bunny]
    encode(d / "sub" / "bunny.mp4", clip, fps=fps)
    encode(d / "long.mp4", pan_frames("horse", 5.0, fps) + clip
           + pan_frames("motorcycle_left", 5.0, fps), fps=fps)
    # Two different videos behind one 3 s intro, and two behind 4 s black leaders.
    intro = pan_frames("coffee", seconds=3.0)
    for name, photo in (("astronaut", "astronaut"), ("chelsea", "chelsea")):
        encode(d / f"intro-{name}.mp4", intro + pan_frames(photo), fps=25)
    for name, photo in (("rocket", "rocket"), ("coins", "coins")):
        encode(d / f"leader-{name}.mp4", _with_leader(pan_frames(photo), 4.0, 25), fps=25)
    shutil.copyfile(d / "bikes-flip.mp4", d / "sub" / "bikes-flip-exact.mp4")
    _title_cards(d / "cards", tmp_path_factory.mktemp("cards"))
    return d


def _title_cards(into: Path, work: Path) -> None:
    """Two title cards of one template with other words, and a re-encoded copy of the first (the
    still-picture rule, issue 12), where ffmpeg and the font are there to draw them."""
    if shutil.which("ffmpeg") is None or not dataset.FONT.exists():
        return
    originals = tuple(dataset.Original(f"t{k}", (dataset.Shot("title", "title1",
                                                              dataset.TITLE_SECONDS, text=t),),
                                       10, True, ("reencode",) if k == 0 else (), scene="tpl")
                      for k, t in enumerate(("Chapter One|The harbour", "Chapter Two|The nets")))
    ds = dataset.build(dataset.Spec(320, 180, originals, copy_threads=1), work, workers=1,
                       log=lambda _: None)
    into.mkdir()
    for it in ds.items:
        path = ds.path(it)
        shutil.copyfile(path, into / (it.name.replace(".reencode", "-copy") + path.suffix))


def _scan(folder: Path, tmp: Path) -> Pairs:
    proc = subprocess.run([sys.executable, "-m", "vfpd.cli.ctl", "scan", str(folder), "--json",
                           "--no-cache", "--workers", "2", "--threshold", str(THRESHOLD)],
                          capture_output=True, timeout=600, env={**os.environ,
                                                                 "XDG_CACHE_HOME": str(tmp)})
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    doc = json.loads(proc.stdout)
    return {frozenset((os.path.relpath(p["a"], folder), os.path.relpath(p["b"], folder))):
            (p["score"], p["kind"]) for p in doc["pairs"]}


@pytest.fixture(scope="module")
def daemon_pairs(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pairs]:
    home = Path(tempfile.mkdtemp(prefix="vfpd-1c-", dir="/tmp"))
    hook, notify = WebhookServer(), NotifyListener(str(home / "notify.sock"))
    d = Daemon(home, [folder], hook, notify, extra=f"[detect]\nthreshold = {THRESHOLD}")
    try:
        d.start()
        files = sum(1 for _, _, names in os.walk(folder) for _ in names)
        with d.catalog() as cat:
            wait_until(lambda: cat.counts().files == files and cat.counts().jobs_queued == 0,
                       300, lambda: f"the back-log drained; log:\n{d.stacks()}")
            pairs: Pairs = {}
            by_hash: dict[str, list[str]] = {}
            for rec in cat.iter_files(str(folder)):
                by_hash.setdefault(rec.hash, []).append(os.path.relpath(rec.path, folder))
            for paths in by_hash.values():
                for i, a in enumerate(paths):
                    for b in paths[i + 1:]:
                        pairs[frozenset((a, b))] = (1.0, "exact")
            for dup in cat.duplicates():
                for a in by_hash.get(dup.hash_a, []):
                    for b in by_hash.get(dup.hash_b, []):
                        pairs[frozenset((a, b))] = (dup.score, dup.kind)
        yield pairs
    finally:
        d.close()


def test_scan_and_daemon_give_the_same_pairs(folder: Path, daemon_pairs: Pairs,
                                             tmp_path: Path) -> None:
    scanned = _scan(folder, tmp_path)
    assert set(scanned) == set(daemon_pairs)
    for pair, (score, kind) in scanned.items():
        assert daemon_pairs[pair][1] == kind, pair
        assert daemon_pairs[pair][0] == pytest.approx(score, abs=1e-4), pair  # JSON: 4 digits
    # And the answer is the right one: every copy is found, no look-alike is.
    found = set(scanned)
    for copy in ("bikes-crop.mp4", "bikes-flip.mp4", "sub/bikes-flip-exact.mp4"):
        assert frozenset(("bikes.mp4", copy)) in found, copy
    # The trim of this fast footage, sampled on a grid half a step from the original's, is the
    # motion rule's weak spot (0.38 in this folder, issue 12): both answers agree on it (above).
    assert scanned[frozenset(("bikes-flip.mp4", "sub/bikes-flip-exact.mp4"))] == (1.0, "exact")
    assert scanned[frozenset(("long.mp4", "sub/bunny.mp4"))][1] == "partial"
    assert frozenset(("intro-astronaut.mp4", "intro-chelsea.mp4")) not in found
    assert frozenset(("leader-rocket.mp4", "leader-coins.mp4")) not in found
    families = {"bikes", "long", "sub/bunny", "intro-astronaut", "intro-chelsea", "leader-rocket",
                "leader-coins", "t0", "t1"}

    def family(name: str) -> str:
        if name in ("long.mp4", "sub/bunny.mp4"):
            return "bunny"
        base = os.path.basename(name).removesuffix(".mp4")
        return next(f for f in sorted(families, key=len, reverse=True) if base.startswith(f))

    # Title cards of one template with other words: their detail tells them apart (at this low
    # threshold a pair of them stays, at half its picture score, but never at the default), not
    # a card and its copy.
    cards = {pair for pair in found if {family(n) for n in pair} == {"t0", "t1"}}
    assert all(scanned[pair][0] < DEFAULT_THRESHOLD for pair in cards), cards
    if (folder / "cards").exists():
        (copy,) = [p for p in os.listdir(folder / "cards") if p.startswith("t0-copy")]
        assert scanned[frozenset(("cards/t0.mp4", f"cards/{copy}"))][0] >= DEFAULT_THRESHOLD
    assert all(len({family(n) for n in pair}) == 1 for pair in found - cards), found
