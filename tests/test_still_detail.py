"""Still pictures judged by their detail (vfpd.detail, issue 12): title cards of one template with
other words are different videos, re-encoded, scaled, mirrored and blurred copies of one are the
same; and the still pictures are kept with the fingerprint, also for one stored before."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import tempfile
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from harness.daemon import Daemon, NotifyListener, WebhookServer, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from media_factory import encode, make_video

from bench import dataset
from vfpd import media
from vfpd.catalog import Catalog
from vfpd.chain import with_stills
from vfpd.detail import Stills, agreement, still_pictures
from vfpd.hashing import FileStat
from vfpd.matching import DEFAULT_THRESHOLD, MatchSettings, frame_center, verify
from vfpd.picture import FRAME_SIZE
from vfpd.presets import FAST
from vfpd.samples import sample_clip, sample_photo

TITLES = ("Chapter One|The harbour at dawn", "Chapter Two|Nets and knots",
          "Chapter Three|Salt and tide")
COPIES = ("reencode", "scale_down", "flip", "blur")
FOUND = ("reencode", "scale_down", "flip")
"""The copies verification finds (a blurred card on a flat background has too little structure left
for any frame of it to count: picture.informative_mask)."""
SETTINGS = MatchSettings()

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or not dataset.FONT.exists(),
                                  reason="title cards are drawn by ffmpeg with DejaVu Sans")


@pytest.fixture(scope="module")
def card_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three title cards of one template (the benchmark's generator) and copies of each."""
    if shutil.which("ffmpeg") is None or not dataset.FONT.exists():
        pytest.skip("title cards are drawn by ffmpeg with DejaVu Sans")
    originals = tuple(dataset.Original(f"t{k}", (dataset.Shot("title", "title1",
                                                              dataset.TITLE_SECONDS, text=t),),
                                       10, True, COPIES, scene="tpl")
                      for k, t in enumerate(TITLES))
    ds = dataset.build(dataset.Spec(320, 180, originals, copy_threads=1),
                       tmp_path_factory.mktemp("cards"), workers=1, log=lambda _: None)
    return {it.name: ds.path(it) for it in ds.items}


@pytest.fixture(scope="module")
def cards(card_files: dict[str, Path]) -> dict[str, media.SampledVideo]:
    return {name: media.sample(path) for name, path in card_files.items()}


def _picture(v: media.SampledVideo) -> np.ndarray:
    stills = still_pictures(v.frames, v.informative)
    assert len(stills.pictures) == 1 and np.all(stills.of == 0), "a title card is one still"
    return stills.pictures[0]


@needs_ffmpeg
def test_other_words_on_one_template_disagree_and_copies_agree(cards) -> None:
    words = [_picture(cards[f"t{k}"]) for k in range(len(TITLES))]
    for i in range(len(words)):
        for j in range(i + 1, len(words)):
            value = agreement(words[i], words[j])
            assert value is not None and value < SETTINGS.detail_agree_floor, (i, j, value)
        for kind in COPIES:
            value = agreement(words[i], _picture(cards[f"t{i}.{kind}"]))
            # A blur takes the finest strokes, which other words differ in too: a blurred copy
            # agrees less, but above the floor (it loses a little score, not all of it).
            least = SETTINGS.detail_agree_floor if kind == "blur" else SETTINGS.detail_agree_ceil
            assert value is not None and value >= least, (i, kind, value)


@pytest.fixture(scope="module")
def embedder():
    from vfpd.model.embed import Embedder

    return Embedder(device="cpu")


@needs_ffmpeg
def test_verify_tells_title_cards_apart_by_their_detail(cards, embedder) -> None:
    fps = {name: embedder.embed(v) for name, v in cards.items()}
    # The background of a library with other footage in it, as a scan or the daemon has (a
    # library of nothing but these cards would have their template as its background).
    others = [embedder.embed(media.sample(sample_clip(n)))
              for n in ("bikes", "bigbuckbunny", "carphone_pristine")]
    center = frame_center([*fps.values(), *others])
    # The features alone cannot tell the first two apart (one word differs): the rule is what does.
    blind = replace(SETTINGS, still_detail=False)
    assert verify(fps["t0"], fps["t1"], blind, center=center).score >= DEFAULT_THRESHOLD
    for i in range(len(TITLES)):
        for j in range(i + 1, len(TITLES)):
            assert verify(fps[f"t{i}"], fps[f"t{j}"], SETTINGS, center=center).score \
                < DEFAULT_THRESHOLD, (i, j)
        for kind in FOUND:
            m = verify(fps[f"t{i}"], fps[f"t{i}.{kind}"], SETTINGS, center=center)
            assert m.score >= DEFAULT_THRESHOLD, (i, kind, m)


@needs_ffmpeg
def test_the_fast_preset_tells_title_cards_apart_too(card_files, embedder) -> None:
    """Keyframes only, and a threshold of its own (0.57): a card of other words, or a copy of
    one, never reaches it; a card's re-encode does."""
    fps = {name: embedder.embed(media.sample(path, FAST.sampling))
           for name, path in card_files.items()}
    others = [embedder.embed(media.sample(sample_clip(n), FAST.sampling))
              for n in ("bikes", "bigbuckbunny", "carphone_pristine")]
    center = frame_center([*fps.values(), *others])
    for a, b in itertools.combinations(sorted(fps), 2):
        score = verify(fps[a], fps[b], FAST.match, center=center).score
        if a.split(".")[0] != b.split(".")[0]:
            assert score < FAST.threshold, (a, b, score)
    for i in range(len(TITLES)):
        m = verify(fps[f"t{i}"], fps[f"t{i}.reencode"], FAST.match, center=center)
        assert m.score >= FAST.threshold, (i, m)


def test_a_still_stretch_keeps_one_picture_and_motion_none() -> None:
    rng = np.random.default_rng(1)
    still = rng.integers(0, 255, (FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    moving = rng.integers(0, 255, (3, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    noisy = np.clip(still.astype(int) + rng.integers(-2, 3, still.shape), 0, 255).astype(np.uint8)
    frames = np.stack([moving[0], still, noisy, still, moving[1], moving[2]])
    stills = still_pictures(frames, np.ones(6, bool))
    assert stills.of.tolist() == [-1, 0, 0, 0, -1, -1]
    assert len(stills.pictures) == 1
    # An uninformative frame (black, faded) breaks a stretch and is never one.
    stills = still_pictures(frames, np.array([True, True, False, True, True, True]))
    assert stills.of.tolist() == [-1, -1, -1, -1, -1, -1]
    # A video with one informative frame is a still picture; one with none has none.
    assert still_pictures(frames[:1], np.ones(1, bool)).of.tolist() == [0]
    assert still_pictures(frames[:1], np.zeros(1, bool)).of.tolist() == [-1]
    assert len(still_pictures(frames[:0], np.zeros(0, bool)).pictures) == 0


def test_real_moving_footage_has_almost_no_still_stretch() -> None:
    v = media.sample(sample_clip("bikes"))
    stills = still_pictures(v.frames, v.informative)
    assert np.mean(stills.of >= 0) < 0.2


def _photo_luma(name: str) -> np.ndarray:
    with av.open(str(sample_photo(name))) as c:
        frame = next(c.decode(video=0))
    return frame.reformat(width=FRAME_SIZE, height=FRAME_SIZE, format="gray").to_ndarray()


def test_a_picture_agrees_with_itself_and_a_quarter_turn_cannot_be_judged() -> None:
    photo = _photo_luma("astronaut")
    assert agreement(photo, photo) == pytest.approx(1.0, abs=1e-4)
    # Registration searches mirror, scale and shift, not rotation: no verdict, so no penalty.
    assert agreement(photo, np.ascontiguousarray(np.rot90(photo))) is None
    # A different photograph registers nowhere either.
    assert agreement(photo, _photo_luma("coffee")) is None


@given(frames=st.integers(0, 40), pictures=st.integers(0, 4), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_stills_survive_their_stored_form(frames: int, pictures: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pics = rng.integers(0, 256, (pictures, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
    of = rng.integers(-1, pictures, frames).astype(np.int16)
    back = Stills.decode(Stills(pics, of).encode(), frames)
    np.testing.assert_array_equal(back.pictures, pics)
    np.testing.assert_array_equal(back.of, of)


def test_stills_refuse_a_frame_map_pointing_nowhere() -> None:
    with pytest.raises(ValueError):
        Stills(np.zeros((1, FRAME_SIZE, FRAME_SIZE), np.uint8), np.array([0, 1], np.int16))
    with pytest.raises(ValueError):
        Stills(np.zeros((1, 8, 8), np.uint8), np.array([0], np.int16))


def test_a_fingerprint_stored_before_stills_gets_them_from_its_frames(tmp_path: Path,
                                                                     embedder) -> None:
    v = media.sample(sample_clip("carphone_pristine"))
    fp = embedder.embed(v)
    assert fp.stills is not None
    stat = FileStat(size=1, mtime_ns=1, device=1, inode=1)
    with Catalog(tmp_path / "c.db") as cat:
        cat.store_result("/v/old.mp4", stat, "a" * 64, fingerprint=replace(fp, stills=None),
                         frames=v)
        stored = cat.fingerprint("a" * 64, fp.model_version)
        assert stored.fingerprint.stills is None
        assert cat.ids_without_stills(fp.model_version) == [stored.id]
        # A catalog that cannot be written (read-only here; full or locked alike): the stills
        # serve this read and are not stored.
        with Catalog(tmp_path / "c.db", readonly=True) as ro:
            served = with_stills(ro, ro.fingerprint("a" * 64, fp.model_version))
            np.testing.assert_array_equal(served.stills.of, fp.stills.of)
        assert cat.ids_without_stills(fp.model_version) == [stored.id]
        kept = with_stills(cat, stored)
        np.testing.assert_array_equal(kept.stills.of, fp.stills.of)
        np.testing.assert_array_equal(kept.stills.pictures, fp.stills.pictures)
        again = cat.fingerprint("a" * 64, fp.model_version).fingerprint
        np.testing.assert_array_equal(again.stills.of, fp.stills.of)
        assert cat.ids_without_stills(fp.model_version) == []
        # A damaged blob (cut short, or a frame map pointing past the pictures) reads as none,
        # and the stored frames make it again.
        for damaged in (fp.stills.encode()[:-100], np.full(len(fp.timestamps), 7, "<i2").tobytes()):
            with sqlite3.connect(tmp_path / "c.db") as conn:
                conn.execute("UPDATE fingerprints SET stills = ?", (damaged,))
            bad = cat.fingerprint("a" * 64, fp.model_version)
            assert bad.fingerprint.stills is None
            np.testing.assert_array_equal(with_stills(cat, bad).stills.of, fp.stills.of)
            assert cat.fingerprint("a" * 64, fp.model_version).fingerprint.stills is not None
        # Frames of other moments cannot stand in: the fingerprint gets no still picture (compared
        # by its features, as before), and that is stored, so nothing looks for them again.
        shifted = replace(fp, stills=None, timestamps=fp.timestamps + 0.5)
        cat.store_result("/v/other.mp4", stat, "b" * 64, fingerprint=shifted, frames=v)
        other = cat.fingerprint("b" * 64, fp.model_version)
        none = with_stills(cat, other).stills
        assert len(none.pictures) == 0 and np.all(none.of == -1)
        again = cat.fingerprint("b" * 64, fp.model_version).fingerprint.stills
        assert len(again.pictures) == 0 and np.all(again.of == -1)
        assert cat.ids_without_stills(fp.model_version) == []


def test_the_daemon_gives_fingerprints_stored_before_stills_their_stills(tmp_path: Path) -> None:
    """A catalog an older vfpd filled (no still pictures): at start the daemon adds them from the
    stored frames while it serves."""
    library = tmp_path / "library"
    library.mkdir()
    photo = _photo_luma("astronaut")
    still = np.repeat(photo[:, :, None], 3, axis=2)
    encode(library / "still.mp4", [still] * 50, fps=25)
    make_video(library / "moving.mp4", seconds=3.0, seed=4)
    home = Path(tempfile.mkdtemp(prefix="vfpd-st-", dir="/tmp"))
    d = Daemon(home, [library], WebhookServer(), NotifyListener(str(home / "notify.sock")))
    try:
        d.start()
        with d.catalog() as cat:
            wait_until(lambda: cat.counts().files == 2 and cat.counts().jobs_queued == 0, 120,
                       lambda: f"the back-log drained; log:\n{d.stacks()}")
        d.stop()
        with sqlite3.connect(d.state / "catalog.db") as conn:
            kept = dict(conn.execute("SELECT id, stills FROM fingerprints"))
            assert len(kept) == 2 and all(v is not None for v in kept.values())
            conn.execute("UPDATE fingerprints SET stills = NULL")
        d.start()
        d.wait_log("still pictures added to 2 stored fingerprint(s)")
        with sqlite3.connect(d.state / "catalog.db") as conn:
            assert dict(conn.execute("SELECT id, stills FROM fingerprints")) == kept
    finally:
        d.close()
