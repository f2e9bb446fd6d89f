"""`vfpctl report` from a daemon's catalog over the real control socket, and `vfpctl apply`
sending its not-a-duplicate verdicts to that daemon."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import CHROMIUM, Browser
from control_helpers import CatalogContext, fingerprint, unit_vector
from media_factory import sample_clip
from scan_media import load, make_copy

from vfpd import config as config_mod
from vfpd.catalog import Catalog, ContentInfo
from vfpd.cli import ctl
from vfpd.hashing import hash_and_stat
from vfpd.service.control import ControlServer

HOSTILE = "bikes <!--<script>alert(1)</script x> <img src=x onerror=alert(2)>.mp4".replace("/", "")
"""A file name made to break out of the page's data or markup (a name holds no slash)."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Path, Catalog]]:
    """A watched root with an original, its exact copy and a re-encode, in a catalog with their
    pairs, answered on a real control socket."""
    import numpy as np

    root = tmp_path / "videos"
    root.mkdir()
    shutil.copyfile(sample_clip("bikes"), root / "bikes.mp4")
    shutil.copyfile(sample_clip("bikes"), root / HOSTILE)
    make_copy(load("bikes"), "reencode", root / "bikes-small.mp4")
    cfg = config_mod.parse({"watch": {"paths": [str(root)]},
                            "storage": {"state_dir": str(tmp_path / "state"),
                                        "cache_dir": str(tmp_path / "cache")},
                            "control": {"socket": str(tmp_path / "run" / "vfpd.sock")}},
                           None, env={"HOME": str(tmp_path)})
    catalog = Catalog(tmp_path / "state" / "catalog.db")
    rng = np.random.default_rng(0)
    hashes = {}
    for p in sorted(root.iterdir()):
        h, st = hash_and_stat(p)
        hashes[p.name] = h
        width, height = (320, 136) if "small" in p.name else (640, 272)
        catalog.store_result(str(p), st, h, info=ContentInfo(
            size=st.size, duration=10.0, codec="h264", width=width, height=height),
            fingerprint=fingerprint(unit_vector(rng)))
    catalog.add_duplicate(hashes["bikes.mp4"], hashes["bikes-small.mp4"], 0.99, "near")
    with ControlServer(tmp_path / "run" / "vfpd.sock", CatalogContext(cfg, catalog)) as srv:
        yield srv.socket_path, root, catalog
    catalog.close()


def _cards(report: Path) -> list[dict]:
    text = (report / "index.html").read_text()
    marker = 'id="vfpd-data" type="application/json">'
    start = text.index(marker) + len(marker)
    return json.loads(text[start:text.index("</script>", start)])["groups"]


def test_report_from_the_daemon_then_a_verdict_back_to_it(
        served: tuple[Path, Path, Catalog], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sock, root, catalog = served
    report = tmp_path / "report"
    assert ctl.main(["report", "--socket", str(sock), "--output", str(report),
                     "--workers", "1"]) == 0, capsys.readouterr().err
    assert "Review page:" in capsys.readouterr().out
    [card] = _cards(report)
    names = {Path(m["path"]).name: m for m in card["members"]}
    assert set(names) == {"bikes.mp4", HOSTILE, "bikes-small.mp4"}
    assert all((report / th["src"]).stat().st_size > 0
               for m in card["members"] for th in m["thumbs"])
    assert names["bikes-small.mp4"]["fps"] == pytest.approx(25.0, abs=0.1)
    kept = card["members"][card["keep"]["index"]]
    assert kept["width"] == 640 and "tied with 1 other copy" in card["keep"]["reason"]

    small = names["bikes-small.mp4"]
    # The stream names each member's best score, not its partner: the card pairs every member
    # with the group's first (largest) file, whose content is the original's.
    pair = next(p for p in card["pairs"] if small["path"] in (card["members"][p["a"]]["path"],
                                                             card["members"][p["b"]]["path"]))
    assert pair["kind"] == "near" and pair["score"] == pytest.approx(0.99)
    a, b = card["members"][pair["a"]], card["members"][pair["b"]]
    decisions = tmp_path / "decisions.json"
    decisions.write_text(json.dumps({"format": "vfpd-decisions", "version": 1,
                                     "roots": [str(root)], "groups": [{
        "id": card["id"], "tier": "duplicate",
        "members": [{"path": m["path"], "hash": m["hash"], "size": m["size"],
                     "decision": "undecided"} for m in card["members"]],
        "not_duplicate": [{"a": a["path"], "hash_a": a["hash"], "b": b["path"],
                           "hash_b": b["hash"], "score": pair["score"], "kind": pair["kind"]}]}]}))
    assert ctl.main(["apply", str(decisions), "--apply", "--socket", str(sock), "--json",
                     "--cache", str(tmp_path / "unused-cache")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdicts"] == [{"a": a["path"], "b": b["path"], "recorded": "daemon"}]
    assert catalog.duplicate(a["hash"], b["hash"]).verdict == "not_duplicate"
    assert not (tmp_path / "unused-cache").exists()


def test_report_without_a_daemon_says_so(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = ctl.main(["report", "--socket", str(tmp_path / "none.sock"), "--output",
                     str(tmp_path / "r")])
    assert code == 3 and "not running" in capsys.readouterr().err


def test_report_refuses_a_folder_holding_other_files(served: tuple[Path, Path, Catalog],
                                                     tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    sock, _, _ = served
    home = tmp_path / "home"
    home.mkdir()
    (home / "thumbs").mkdir()
    precious = home / "thumbs" / "holiday.webp"
    precious.write_bytes(b"mine")
    code = ctl.main(["report", "--socket", str(sock), "--output", str(home)])
    assert code == 2 and "holds no vfpd report" in capsys.readouterr().err
    assert precious.read_bytes() == b"mine"
    # A folder with an earlier report is written again: its old thumbnails replaced.
    report = tmp_path / "report"
    assert ctl.main(["report", "--socket", str(sock), "--output", str(report),
                     "--workers", "1"]) == 0
    stale = report / "thumbs" / "stale.webp"
    stale.write_bytes(b"old")
    assert ctl.main(["report", "--socket", str(sock), "--output", str(report),
                     "--workers", "1"]) == 0
    assert not stale.exists() and len(list((report / "thumbs").iterdir())) == 12


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_a_hostile_file_name_is_shown_as_text(served: tuple[Path, Path, Catalog],
                                              tmp_path: Path) -> None:
    sock, root, _ = served
    report = tmp_path / "report"
    assert ctl.main(["report", "--socket", str(sock), "--output", str(report),
                     "--workers", "1"]) == 0
    browser = Browser(tmp_path / "profile")
    try:
        browser.open((report / "index.html").as_uri())
        paths = browser.js("[...document.querySelectorAll('.path')].map(e => e.textContent)")
        assert any(str(root / HOSTILE) in p for p in paths)
        assert browser.js("document.querySelectorAll('script').length") == 2
        assert browser.js("document.querySelectorAll('img[src=x]').length") == 0
        assert browser.errors() == []
    finally:
        browser.close()
