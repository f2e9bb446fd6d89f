"""The review-page benchmark runs end to end on a small page (the numbers are in the README)."""

from __future__ import annotations

import pytest

from browser import CHROMIUM


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_bench_report_builds_and_times_a_small_page(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import report

    assert report.main(["--groups", "40", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "40 cards" in out and "first screen (20 cards drawn" in out
