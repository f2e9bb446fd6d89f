"""`./dev bench scale` runs end to end on a small size: both backends find the exact neighbours
of clustered vectors, and each row says what it measured."""

from __future__ import annotations

import pytest

pytest.importorskip("pymilvus", reason="the scale benchmark runs Milvus Lite: pip install "
                    "'vfpd[scale]'")
pytest.importorskip("milvus_lite", reason="the scale benchmark runs Milvus Lite: pip install "
                    "'vfpd[scale]'")

from bench import scale  # noqa: E402


def test_the_scale_benchmark_compares_both_backends(capsys: pytest.CaptureFixture[str]) -> None:
    assert scale.main(["--sizes", "3000", "--queries", "20", "--data", "clustered"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| 3,000 ")]
    assert [r[2].strip() for r in rows] == ["vfpd flat", "milvus lite (flat)"]
    for r in rows:
        assert float(r[6]) == 1.0  # recall@10 of an exact search
        assert float(r[3].replace(",", "")) > 0 and float(r[4]) > 0
