"""`vfpctl report` from a daemon's catalog over the real control socket, and `vfpctl apply`
sending its not-a-duplicate verdicts to that daemon."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_helpers import CatalogContext, fingerprint, unit_vector
from media_factory import sample_clip
from scan_media import load, make_copy

from vfpd import config as config_mod
from vfpd.catalog import Catalog, ContentInfo
from vfpd.cli import ctl
from vfpd.hashing import hash_and_stat
from vfpd.service.control import ControlServer



@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Path, Catalog]]:
    """A watched root with an original, its exact copy and a re-encode, in a catalog with their
    pairs, answered on a real control socket."""
    import numpy as np

    root = tmp_path / "videos"
    root.mkdir()
    shutil.copyfile(sample_clip("bikes"), root / "bikes.mp4")
    shutil.copyfile(sample_clip("bikes"), root / "bikes copy.mp4")
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
        catalog.store_result(str(p), st, h, info=ContentInfo(
            size=st.size, duration=10.0, codec="h264", width=640 if "small" not in p.name else 320,
            height=272 if "small" not in p.name else 136), fingerprint=fingerprint(unit_vector(rng)))
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
    assert set(names) == {"bikes.mp4", "bikes copy.mp4", "bikes-small.mp4"}
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
    decisions.write_text(json.dumps({"format": "vfpd-decisions", "version": 1, "groups": [{
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
