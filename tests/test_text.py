"""vfpd.cli.text: paths quoted as `ls --quoting-style=shell-escape` does (non-UTF-8 bytes as
\\xNN), words a shell gives back byte for byte; sizes in one SI style."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from vfpd.cli.text import human_size, shell_quoted

NAMES = [b"plain-file_1.mp4", b"a b.mp4", b"it's.mp4", b"it's $x.mp4", b"x$y.mp4",
         "\u00e9t\u00e9.mp4".encode(), b"new\nline.mp4", b"bad\xff.mp4", b"semi;colon.mp4",
         b"ex!cl.mp4", b'dq"x.mp4', b"~home.mp4", b"a=b.mp4", b"#hash.mp4", b"tab\tx.mp4",
         b"(1) [copy] {x} *?.mkv", b"\xc3\x28 and \xe9.avi"]


def test_names_are_quoted_as_ls_quotes_them(tmp_path: Path) -> None:
    for name in NAMES:
        (tmp_path / os.fsdecode(name)).touch()
    listed = subprocess.run(["ls", "-1", "--quoting-style=shell-escape", str(tmp_path)],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    # ls writes a non-UTF-8 byte in octal (\377), vfpd in hex (\xff); the rest is the same.
    from_ls = sorted(re.sub(r"\\([0-7]{3})", lambda m: f"\\x{int(m[1], 8):02x}", line)
                     for line in listed)
    assert sorted(shell_quoted(os.fsdecode(n)) for n in NAMES) == from_ls


def test_examples() -> None:
    assert shell_quoted("/srv/videos/a.mp4") == "/srv/videos/a.mp4"
    assert shell_quoted("/srv/my videos/a.mp4") == "'/srv/my videos/a.mp4'"
    assert shell_quoted(os.fsdecode(b"/v/bad\xff.mp4")) == "'/v/bad'$'\\xff''.mp4'"
    assert shell_quoted(b"/v/bad\xff.mp4") == "'/v/bad'$'\\xff''.mp4'"
    assert shell_quoted("") == "''"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b),
                min_size=1, max_size=40))
def test_a_shell_gives_every_name_back_byte_for_byte(names: list[bytes]) -> None:
    words = " ".join(shell_quoted(os.fsdecode(n)) for n in names)
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {words}"], capture_output=True,
                         check=True).stdout
    assert out.split(b"\0")[:-1] == names


def test_sizes_in_one_si_style() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 1500, 999_949, 2_500_000, 3.2e9, 4e12, 5e18,
                                    None)] == \
        ["0 B", "999 B", "1.0 kB", "1.5 kB", "999.9 kB", "2.5 MB", "3.2 GB", "4.0 TB",
         "5000.0 PB", "?"]


# -- every text printer uses them ------------------------------------------------------------------

ODD = os.fsdecode(b"/srv/my videos/bad\xff (1).mp4")
QUOTED = "'/srv/my videos/bad'$'\\xff'' (1).mp4'"


def test_daemon_printers_quote_paths_and_share_the_size_style() -> None:
    import argparse
    import io

    from vfpd.cli import cmd_daemon

    args = argparse.Namespace()
    out = io.StringIO()
    cmd_daemon.show_duplicates([{"kind": "near", "waste": 2_500_000, "min_score": 0.9, "members": [
        {"path": ODD, "size": 2_500_000, "duration": 10, "width": 640, "height": 360,
         "score": None, "kind": None},
        {"path": "/srv/a.mp4", "size": 3_000_000, "duration": 10, "width": 640, "height": 360,
         "score": 0.9, "kind": "near"}]}], args, out)
    cmd_daemon.show_query({"file": ODD, "matches": [{"paths": [ODD, "/srv/a.mp4"], "score": 0.91,
                                                     "kind": "near"}]}, args, out)
    cmd_daemon.show_failures([{"attempts": 3, "path": ODD, "reason": "truncated: cut off"}],
                             args, out)
    text = out.getvalue()
    assert text.count(QUOTED) == 4, text
    assert f"{QUOTED} (+1 more)" in text
    assert "2.5 MB" in text and "KB" not in text


def test_dry_run_marks_the_copy_kept_and_quotes_paths(capsys) -> None:
    from vfpd.cli.acting import print_plan
    from vfpd.planning import Step

    print_plan([Step("trash", ODD, "/srv/a.mp4"), Step("trash", "/srv/b.mp4", "/srv/a.mp4"),
                Step("trash", "/srv/x y.mp4", "/srv/z.mp4", skip="changed since the scan")])
    assert capsys.readouterr().out.splitlines() == [
        "  keep         /srv/a.mp4",
        f"  would trash  {QUOTED}",
        "  would trash  /srv/b.mp4",
        "  keep         /srv/z.mp4",
        "  skip         '/srv/x y.mp4': changed since the scan",
    ]
