"""`vfpctl apply`'s safety on real files: hashes re-read, never the last copy, reference folders,
contradictions, damaged decision files; and the --keep best order with its reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vfpd import decisions, hashing, planning
from vfpd.cli import ctl
from vfpd.cli.cmd_apply import current_state


def _files(tmp_path: Path, **contents: bytes) -> dict[str, Path]:
    out = {}
    for name, data in contents.items():
        p = tmp_path / f"{name}.mp4"
        p.write_bytes(data)
        out[name] = p
    return out


def _doc(*groups: list[tuple[Path, str]], not_duplicate: list[dict] | None = None) -> dict:
    roots = sorted({str(p.parent) for g in groups for p, _ in g})
    return {"format": "vfpd-decisions", "version": 1, "roots": roots, "groups": [
        {"id": f"g{n}", "tier": "duplicate",
         "members": [{"path": str(p), "hash": hashing.hash_file(p), "size": p.stat().st_size,
                      "decision": d} for p, d in g],
         "not_duplicate": not_duplicate or []}
        for n, g in enumerate(groups, 1)]}


def _plan(doc: dict, reference: tuple[str, ...] = ()) -> dict[str, str | None]:
    decided = decisions.parse(doc)
    steps = decisions.plan(decided, current_state(decided.named()), reference)
    return {os.path.basename(s.path): s.skip for s in steps}


def test_trash_and_hardlink_are_planned_against_an_unchanged_kept_copy(tmp_path: Path) -> None:
    f = _files(tmp_path, a=b"same" * 100, b=b"same" * 100, c=b"other" * 100)
    plan = _plan(_doc([(f["a"], "keep"), (f["b"], "hardlink"), (f["c"], "trash")]))
    assert plan == {"b.mp4": None, "c.mp4": None}


def test_no_kept_copy_means_nothing_is_touched(tmp_path: Path) -> None:
    f = _files(tmp_path, a=b"x" * 100, b=b"y" * 100)
    plan = _plan(_doc([(f["a"], "trash"), (f["b"], "trash")]))
    assert all("never the last copy" in (why or "") for why in plan.values()) and len(plan) == 2


def test_a_file_changed_since_the_report_is_skipped_and_cannot_be_the_kept_copy(
        tmp_path: Path) -> None:
    f = _files(tmp_path, a=b"x" * 100, b=b"y" * 100, c=b"z" * 100, d=b"w" * 100)
    doc = _doc([(f["a"], "keep"), (f["b"], "trash")], [(f["c"], "trash"), (f["d"], "keep")])
    f["b"].write_bytes(b"changed" * 10)
    f["d"].write_bytes(b"changed too" * 10)
    plan = _plan(doc)
    assert "content changed" in plan["b.mp4"]
    assert "never the last copy" in plan["c.mp4"]
    # The kept copy vanished after the page was made: its copies stay.
    doc = _doc([(f["a"], "keep"), (f["c"], "trash")])
    f["a"].unlink()
    assert "never the last copy" in _plan(doc)["c.mp4"]
    decided = decisions.parse(doc)
    assert current_state(decided.named())[str(f["a"])].problem == "no longer exists"


def test_reference_folders_and_contradictions_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    f = _files(tmp_path, a=b"x" * 100, b=b"y" * 100, c=b"z" * 100)
    kept = tmp_path / "ref" / "kept.mp4"
    kept.write_bytes(b"w" * 100)
    plan = _plan(_doc([(f["a"], "keep"), (kept, "trash")]), (str(tmp_path / "ref"),))
    assert "reference folder" in plan["kept.mp4"]
    # b is trashed in one card and kept in another: neither card's decision about it happens.
    plan = _plan(_doc([(f["a"], "keep"), (f["b"], "trash")], [(f["b"], "keep"), (f["c"], "trash")]))
    assert "decided differently" in plan["b.mp4"]
    assert "never the last copy" in plan["c.mp4"]


@pytest.mark.parametrize("doc, message", [
    ({"format": "something-else", "version": 1, "groups": []}, "not a vfpd decisions file"),
    ({"format": "vfpd-decisions", "version": 2, "groups": []}, "version 2 is not supported"),
    ({"format": "vfpd-decisions", "version": 1, "groups": []}, "missing 'roots'"),
    ({"format": "vfpd-decisions", "version": 1, "roots": ["relative"], "groups": []},
     "absolute paths"),
    ({"format": "vfpd-decisions", "version": 1, "roots": ["/"], "groups": [{"members": [
        {"path": "/x", "hash": "h", "size": 1, "decision": "shred"}]}]}, "is not one of"),
    ({"format": "vfpd-decisions", "version": 1, "roots": ["/"], "groups": [{"members": [
        {"path": "/x", "size": 1, "decision": "keep"}]}]}, "missing 'hash'"),
    ({"format": "vfpd-decisions", "version": 1, "roots": ["/"], "groups": [{"members": [
        {"path": "/x", "hash": "h", "size": True, "decision": "keep"}]}]}, "wrong type"),
])
def test_damaged_decision_files_are_refused(doc: dict, message: str) -> None:
    with pytest.raises(decisions.DecisionsError, match=message):
        decisions.parse(doc)


def test_apply_cli_dry_run_apply_undo_and_refusals(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("VFPD_SOCKET", str(tmp_path / "none.sock"))
    f = _files(tmp_path, a=b"same" * 1000, b=b"same" * 1000, c=b"other" * 1000)
    before = {p: p.read_bytes() for p in f.values()}
    path = tmp_path / "decisions.json"
    path.write_text(json.dumps(_doc([(f["a"], "keep"), (f["b"], "hardlink"), (f["c"], "trash")])))
    assert ctl.main(["apply", str(path)]) == 0
    out = capsys.readouterr().out
    assert "would hardlink" in out and "would trash" in out
    assert {p: p.read_bytes() for p in f.values()} == before and f["c"].exists()
    journal = tmp_path / "j.jsonl"
    assert ctl.main(["apply", str(path), "--apply", "--journal", str(journal)]) == 0
    assert not f["c"].exists() and os.path.samefile(f["a"], f["b"])
    assert ctl.main(["undo", str(journal)]) == 0
    assert {p: p.read_bytes() for p in f.values()} == before
    assert not os.path.samefile(f["a"], f["b"])
    # Applying again after undo: the same checks, the same result (nothing stale in the plan).
    f["a"].write_bytes(b"edited")
    assert ctl.main(["apply", str(path), "--apply", "--journal", str(tmp_path / "j2")]) == 1
    assert f["c"].exists() and f["b"].read_bytes() == before[f["b"]]
    capsys.readouterr()
    path.write_text("{not json")
    assert ctl.main(["apply", str(path)]) == 2
    assert "not JSON" in capsys.readouterr().err


def test_keep_best_follows_the_quality_order_and_says_why() -> None:
    def f(name: str, w: int, h: int, rate: int, fps: float, dur: float, size: int
          ) -> planning.FileFacts:
        return planning.FileFacts(name, size, 0, w, h, None, duration=dur, bit_rate=rate, fps=fps)

    hd = f("/hd.mp4", 1920, 1080, 2_000_000, 25, 10, 100)
    hd_rich = f("/hd-rich.mp4", 1920, 1080, 4_000_000, 25, 10, 50)
    sd = f("/sd.mp4", 640, 360, 9_000_000, 60, 20, 900)
    assert planning.choose_keeper([sd, hd], "best") is hd
    assert planning.keep_reason([sd, hd], hd, "best") == "highest resolution"
    keeper = planning.choose_keeper([sd, hd, hd_rich], "best")
    assert keeper is hd_rich
    assert planning.keep_reason([sd, hd, hd_rich], keeper, "best") == \
        "same resolution; highest bit rate"
    smooth = f("/smooth.mp4", 1920, 1080, 4_000_000, 50, 10, 50)
    assert planning.keep_reason([hd_rich, smooth], smooth, "best") == \
        "same resolution, bit rate; highest frame rate"
    twin = f("/a-twin.mp4", 1920, 1080, 4_000_000, 25, 10, 50)
    assert planning.choose_keeper([hd_rich, twin], "best") is twin
    assert "tied with 1 other copy" in planning.keep_reason([hd_rich, twin], twin, "best")


def test_plan_never_touches_reference_files_and_keeps_one_of_them() -> None:
    ref = planning.FileFacts("/lib/ref/a.mp4", 10, 1, 320, 240, "h")
    big = planning.FileFacts("/lib/new/b.mp4", 99, 2, 1920, 1080, "h")
    direct = {frozenset((ref.path, big.path))}
    steps = planning.plan([[ref, big]], planning.ActionSpec(planning.Op.TRASH), "best", direct,
                         ["/lib/ref"])
    assert [(s.path, s.keep, s.skip) for s in steps] == [("/lib/new/b.mp4", "/lib/ref/a.mp4", None)]
    # Without the reference folder the best copy is kept and the reference one would go.
    steps = planning.plan([[ref, big]], planning.ActionSpec(planning.Op.TRASH), "best", direct)
    assert [(s.path, s.skip) for s in steps] == [("/lib/ref/a.mp4", None)]
    assert not planning.in_reference("/lib/reference/x.mp4", ["/lib/ref"])


def test_names_that_are_not_utf8_survive_the_decisions_file(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    latin1 = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.mp4")  # "\udce9": the page's escape
    Path(latin1).write_bytes(b"x" * 500)
    kept = tmp_path / "kept.mp4"
    kept.write_bytes(b"x" * 500)
    path = tmp_path / "decisions.json"
    # ensure_ascii writes the lone surrogate as \udce9, as the page's JSON.stringify does.
    path.write_text(json.dumps(_doc([(kept, "keep"), (Path(latin1), "hardlink")])))
    assert "\\udce9" in path.read_text()
    journal = tmp_path / "j.jsonl"
    assert ctl.main(["apply", str(path), "--apply", "--journal", str(journal)]) == 0
    assert os.path.samefile(os.fsencode(latin1), kept)
    assert ctl.main(["undo", str(journal)]) == 0
    assert not os.path.samefile(os.fsencode(latin1), kept)
    assert "caf" in capsys.readouterr().out
