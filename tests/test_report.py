"""The review page end to end: a real scan of real copies, the page opened in headless Chromium,
decisions made by clicking, exported, applied with `vfpctl apply` and undone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import CHROMIUM, Browser
from media_factory import sample_clip
from scan_media import load, make_copy, procedural, segment

from vfpd import hashing
from vfpd.catalog import Catalog
from vfpd.report import MAYBE_BAND

pytestmark = pytest.mark.slow

CLIP = (2.0, 7.0)
"""The contained clip: seconds 2-7 of the 10 s original (the issue's "5 s trim at 2 s")."""
TRIM_FROM = 3.0
"""The trimmed copy: the original from 3 s to its end (on the 1 s sampling grid)."""
THRESHOLD = 0.6
"""Below the default: the crop of this fast footage scores 0.46-0.49 against the originals with
the shipped model, in the maybe band below this threshold (0.45-0.60): the issue's near miss."""

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        env[name] = str(home / name.lower())
    env["VFPD_SOCKET"] = str(home / "no-daemon.sock")
    return env


def vfpctl(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vfpd.cli.ctl", *argv], env=_env(home),
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original, an exact, a re-encoded, a flipped and a cropped copy, a trim, a clip from
    the middle, and an unrelated video."""
    d = tmp_path_factory.mktemp("originals")
    shutil.copyfile(sample_clip("bikes"), d / "bikes.mp4")
    shutil.copyfile(sample_clip("bikes"), d / "bikes-exact.mp4")
    frames = load("bikes")
    for t in ("reencode", "flip", "crop"):
        make_copy(frames, t, d / f"bikes-{t}.mp4")
    segment(frames, TRIM_FROM, 99.0, d / "bikes-trim.mp4")
    segment(frames, *CLIP, d / "bikes-clip.mp4")
    procedural(d / "other.mp4", seed=3)
    return d


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XDG dirs (trash, journals) and a scan cache shared by the module's scans."""
    return tmp_path_factory.mktemp("home")


def scan_with_report(home: Path, folder: Path, report: Path) -> dict:
    r = vfpctl(home, "scan", str(folder), "--cache", str(home / "cache"), "--report",
               str(report), "--workers", "2", "--json", "--threshold", str(THRESHOLD))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def scanned(originals: Path, home: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[dict, Path]:
    report = tmp_path_factory.mktemp("report")
    return scan_with_report(home, originals, report), report


def _pair(doc: dict, a: str, b: str) -> dict:
    for p in doc["pairs"]:
        if {os.path.basename(p["a"]), os.path.basename(p["b"])} == {a, b}:
            return p
    raise AssertionError(f"no pair {a} / {b}")


def _sides(p: dict, original: str) -> tuple[tuple[float, float], tuple[float, float]]:
    s = max(p["segments"], key=lambda s: s["a_end"] - s["a_start"])
    if os.path.basename(p["a"]) == original:
        return (s["a_start"], s["a_end"]), (s["b_start"], s["b_end"])
    return (s["b_start"], s["b_end"]), (s["a_start"], s["a_end"])


def test_a_contained_clip_maps_to_its_place_within_a_second(scanned: tuple[dict, Path]) -> None:
    doc, _ = scanned
    p = _pair(doc, "bikes.mp4", "bikes-clip.mp4")
    assert p["kind"] == "partial"
    (o0, o1), (c0, c1) = _sides(p, "bikes.mp4")
    assert (o0, o1) == pytest.approx(CLIP, abs=1.0)
    assert (c0, c1) == pytest.approx((0.0, CLIP[1] - CLIP[0]), abs=1.0)


def _cards(report: Path) -> list[dict]:
    text = (report / "index.html").read_text()
    start = text.index('id="vfpd-data" type="application/json">') + len(
        'id="vfpd-data" type="application/json">')
    return json.loads(text[start:text.index("</script>", start)])["groups"]


def test_a_trim_maps_to_its_place_within_a_second(scanned: tuple[dict, Path]) -> None:
    # Where the trim matches must be right, in whichever card it is.
    _, report = scanned
    pairs = [(c, p) for c in _cards(report) for p in c["pairs"]
             if "bikes-trim.mp4" in {os.path.basename(c["members"][p["a"]]["path"]),
                                     os.path.basename(c["members"][p["b"]]["path"])}]
    assert pairs, "the trim is in no card"
    card, p = max(pairs, key=lambda cp: cp[1]["score"])
    trim_is_a = os.path.basename(card["members"][p["a"]]["path"]) == "bikes-trim.mp4"
    s = max(p["segments"], key=lambda s: s["a_end"] - s["a_start"])
    (t0, t1), (o0, o1) = ((s["a_start"], s["a_end"]), (s["b_start"], s["b_end"])) if trim_is_a \
        else ((s["b_start"], s["b_end"]), (s["a_start"], s["a_end"]))
    assert o0 - t0 == pytest.approx(TRIM_FROM, abs=1.0)
    assert o1 - t1 == pytest.approx(TRIM_FROM, abs=1.0)


def test_cards_name_the_copies_against_the_original(scanned: tuple[dict, Path]) -> None:
    doc, report = scanned
    cards = _cards(report)
    groups = [c for c in cards if c["tier"] == "duplicate"]
    assert len(groups) == len(doc["groups"])
    main = next(c for c in groups if any(m["path"].endswith("/bikes-clip.mp4")
                                         for m in c["members"]))
    by_name = {os.path.basename(m["path"]): m for m in main["members"]}
    assert {"bikes.mp4", "bikes-exact.mp4", "bikes-reencode.mp4", "bikes-flip.mp4",
            "bikes-clip.mp4"} <= set(by_name)
    anchor = main["members"][0]
    assert anchor["duration"] == pytest.approx(10.0, abs=0.1)
    note = by_name["bikes-clip.mp4"]["note"]
    # "A 00:02-00:07 = B 00:00-00:05"
    left, right = note.split(" = ")
    assert left.startswith(anchor["name"] + " ") and right.startswith(
        by_name["bikes-clip.mp4"]["name"] + " ")
    a_from = int(left.split()[1].split("-")[0].split(":")[1])
    assert abs(a_from - CLIP[0]) <= 1
    # The clip's strip shows only the moments it has; the others are "not in this copy".
    assert any(t is None for t in by_name["bikes-clip.mp4"]["thumbs"])
    assert "resolution" in main["differ"] and main["best"]["resolution"]
    keep = main["members"][main["keep"]["index"]]
    assert keep["width"] == 640 and "resolution" in main["keep"]["reason"] or \
        "tied" in main["keep"]["reason"]
    maybe = [c for c in cards if c["tier"] == "maybe"]
    names = {os.path.basename(m["path"]) for c in maybe for m in c["members"]}
    assert "bikes-crop.mp4" in names
    assert all(THRESHOLD - MAYBE_BAND <= c["score"] < THRESHOLD for c in maybe)
    assert "other.mp4" not in {os.path.basename(m["path"]) for c in cards for m in c["members"]}


@needs_chromium
def test_page_in_chromium_shows_every_group_and_thumbnail(scanned: tuple[dict, Path],
                                                          tmp_path: Path) -> None:
    doc, report = scanned
    browser = Browser(tmp_path / "profile", 1280, 8000)
    try:
        browser.open((report / "index.html").as_uri())
        assert browser.js("document.querySelectorAll('article.card').length") == len(doc["groups"])
        browser.js("""new Promise(done => {
            const imgs = [...document.querySelectorAll('img')];
            imgs.forEach(i => i.loading = 'eager');
            const check = () => imgs.every(i => i.complete) ? done() : setTimeout(check, 50);
            check(); })""")
        widths = browser.js("[...document.querySelectorAll('img')].map(i => i.naturalWidth)")
        assert widths and all(w > 0 for w in widths), widths
        browser.screenshot(tmp_path / "duplicates.png")
        browser.js("document.getElementById('tab-maybe').click()")
        assert browser.js("document.querySelectorAll('article.card[data-tier=maybe]').length") > 0
        browser.screenshot(tmp_path / "maybe.png")
        assert (tmp_path / "duplicates.png").stat().st_size > 10_000
        # A phone: one column, nothing wider than the screen.
        browser.call("Emulation.setDeviceMetricsOverride", width=390, height=844,
                     deviceScaleFactor=2, mobile=True)
        browser.js("document.getElementById('tab-duplicate').click()")
        assert browser.js("document.documentElement.scrollWidth") <= 390
        browser.screenshot(tmp_path / "phone.png")
        assert browser.errors() == []
    finally:
        browser.close()


def _contents(folder: Path) -> dict[str, str]:
    return {p.name: hashing.hash_file(p) for p in sorted(folder.iterdir())}


@needs_chromium
def test_decisions_clicked_on_the_page_are_applied_and_undone(originals: Path, home: Path,
                                                              tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    shutil.copytree(originals, folder)
    report = tmp_path / "report"
    doc = scan_with_report(home, folder, report)
    before = _contents(folder)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser = Browser(tmp_path / "profile")
    try:
        browser.open((report / "index.html").as_uri())
        browser.call("Browser.setDownloadBehavior", behavior="allow",
                     downloadPath=str(downloads))
        # A native <select> pops up outside the page: its value is set as a keyboard would.
        browser.js("document.getElementById('rule').value = 'trash'")
        browser.click("#apply-rule")
        # Then one exception by hand: the clip is kept out of the rule (undecided).
        clip = browser.js("""[...document.querySelectorAll('section.member')]
            .findIndex(s => s.querySelector('.path').textContent.includes('bikes-clip.mp4'))""")
        assert clip >= 0
        browser.click(f"section.member[data-member='{clip}'] input[value='']")
        assert browser.js(f"document.querySelector(\"section.member[data-member='{clip}']\")"
                          ".className") == "member "
        browser.click("#tab-maybe")
        crop_card = browser.js("""[...document.querySelectorAll('article.card')]
            .find(c => c.textContent.includes('bikes-crop.mp4')).id""")
        browser.click(f"#{crop_card} .pairs input[type=checkbox]")
        browser.click("#export")
        exported = downloads / "vfpd-decisions.json"
        deadline = time.monotonic() + 30
        while not exported.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert browser.errors() == []
    finally:
        browser.close()
    decided = json.loads(exported.read_text())
    assert decided["format"] == "vfpd-decisions" and decided["version"] == 1
    group = next(g for g in decided["groups"] if g["tier"] == "duplicate")
    choices = {os.path.basename(m["path"]): m["decision"] for m in group["members"]}
    assert list(choices.values()).count("keep") == 1 and choices["bikes-clip.mp4"] == "undecided"
    assert list(choices.values()).count("trash") == len(choices) - 2
    assert all(m["hash"] == before[os.path.basename(m["path"])] for m in group["members"])
    maybe = [g for g in decided["groups"] if g["tier"] == "maybe"]
    assert len(maybe) == 1 and all(m["decision"] == "undecided" for m in maybe[0]["members"])
    verdict = maybe[0]["not_duplicate"][0]

    dry = vfpctl(home, "apply", str(exported))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would trash") == len(doc["groups"][0]) - 2
    assert _contents(folder) == before

    journal = tmp_path / "journal.jsonl"
    done = vfpctl(home, "apply", str(exported), "--apply", "--journal", str(journal), "--json",
                  "--cache", str(home / "cache"))
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    trashed = {os.path.basename(s["path"]) for s in outcome["steps"] if s["done"]}
    assert len(trashed) == len(group["members"]) - 2 and "bikes-clip.mp4" not in trashed
    assert set(_contents(folder)) == set(before) - trashed
    assert outcome["verdicts"][0]["recorded"] == "cache"
    with Catalog(home / "cache" / "catalog.sqlite") as catalog:
        assert catalog.duplicate(verdict["hash_a"], verdict["hash_b"]).verdict == "not_duplicate"

    undone = vfpctl(home, "undo", str(journal))
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert _contents(folder) == before

    # The pair judged not a duplicate never comes back as a maybe card.
    scan_with_report(home, folder, tmp_path / "again")
    names = [{os.path.basename(m["path"]) for m in c["members"]}
             for c in _cards(tmp_path / "again") if c["tier"] == "maybe"]
    judged = {os.path.basename(verdict["a"]), os.path.basename(verdict["b"])}
    assert judged not in names


def test_scan_keep_best_and_reference_say_which_copy_stays_and_why(originals: Path, home: Path,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    shutil.copytree(originals, folder)
    (folder / "ref").mkdir()
    os.rename(folder / "bikes-reencode.mp4", folder / "ref" / "bikes-reencode.mp4")
    common = ["scan", str(folder), "--cache", str(home / "cache"), "--workers", "2",
              "--action", "trash", "--keep", "best"]
    best = vfpctl(home, *common)
    assert best.returncode == 0, best.stderr
    kept = best.stdout.split("Kept per group (--keep best):")[1].splitlines()[1]
    # bikes.mp4 and bikes-exact.mp4 are the same bytes at the highest quality.
    assert "/bikes-exact.mp4: best quality, tied with 1 other copy" in kept
    ref = vfpctl(home, *common, "--reference", str(folder / "ref"))
    assert ref.returncode == 0, ref.stderr
    kept = ref.stdout.split("Kept per group (--keep best):")[1].splitlines()[1]
    assert "/ref/bikes-reencode.mp4: in a reference folder" in kept
    assert re.search(r"would trash +" + re.escape(str(folder / "bikes.mp4")), ref.stdout)
    assert "ref/bikes-reencode.mp4  (keeping" not in ref.stdout
