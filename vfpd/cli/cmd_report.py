"""`vfpctl report [--output DIR]`: the review page for the running daemon's duplicate groups.

The groups come from the control socket's `duplicates` stream (docs/protocol.md); what the stream
does not carry (date, codec, frame rate) and the thumbnails are read from the files themselves,
here, with the user's own rights: the page shows only what its reader could open anyway.

Exit codes: 0 the page was written; 1 written, but some files had no thumbnail or were gone;
2 bad usage; 3 the daemon is not running.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from vfpd.cli.cmd_scan import EXIT_FILE_ERRORS, EXIT_OK, EXIT_USAGE
from vfpd.grouping import Pair

DEFAULT_OUTPUT = "vfpd-report"


def register(subparsers: argparse._SubParsersAction) -> None:
    from vfpd.client import DEFAULT_REPLY_TIMEOUT_S

    p = subparsers.add_parser(
        "report", help="write a review page for the running daemon's duplicate groups",
        description="Write a review page (DIR/index.html and DIR/thumbs/) for the duplicate "
                    "groups the running daemon knows; open it in a browser, decide, export the "
                    "decisions and carry them out with `vfpctl apply`. See docs/report.md.")
    p.add_argument("--output", metavar="DIR", default=DEFAULT_OUTPUT,
                   help=f"the folder to write (default: ./{DEFAULT_OUTPUT})")
    p.add_argument("--keep", default="best", metavar="POLICY",
                   help="how the suggested copy is chosen (default: best)")
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1),
                   help="thumbnail processes (default: one per CPU)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH",
                       help="the daemon's control socket (default: from the config)")
    where.add_argument("--config", metavar="FILE", help="the daemon's config, to find its socket")
    p.add_argument("--timeout", type=float, default=DEFAULT_REPLY_TIMEOUT_S, metavar="S",
                   help=f"seconds to wait for the daemon (default {DEFAULT_REPLY_TIMEOUT_S:g})")
    p.set_defaults(func=run)


def groups_from_daemon(items: list[dict[str, Any]]) -> tuple[list[Any], list[str]]:
    """Review groups from `duplicates` items: each member paired with the group's first (largest)
    member by its best score and kind (the stream carries no segments). Files that are gone are
    left out, with why."""
    from vfpd.report import MemberFacts, ReviewGroup

    out, gone = [], []
    for item in items:
        members = []
        for m in item["members"]:
            try:
                st = os.stat(m["path"])
            except OSError as e:
                gone.append(f"{m['path']}: {e.strerror}")
                continue
            members.append((m, MemberFacts(m["path"], m.get("hash"), st.st_size, st.st_mtime,
                                           m.get("duration"), m.get("width"), m.get("height"))))
        if len(members) < 2:
            continue
        first = members[0][1].path
        pairs = tuple(Pair(first, f.path, float(m.get("score") or 1.0), str(m.get("kind")))
                      for m, f in members[1:])
        out.append(ReviewGroup("duplicate", tuple(f for _, f in members), pairs))
    return out, gone


def run(args: argparse.Namespace) -> int:
    from vfpd import planning
    from vfpd.cli.cmd_daemon import ask
    from vfpd.report import check_target, write_report

    if args.keep not in planning.KEEP_POLICIES:
        print(f"vfpctl report: error: --keep must be one of {', '.join(planning.KEEP_POLICIES)}",
              file=sys.stderr)
        return EXIT_USAGE
    if args.workers < 1:
        print("vfpctl report: error: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_target(Path(args.output))
    except OSError as e:
        print(f"vfpctl report: error: --output: {e}", file=sys.stderr)
        return EXIT_USAGE
    got, code = ask(args, "report", lambda c: (c.collect("duplicates"), c.call("status")))
    if got is None:
        return code
    items, status = got
    groups, gone = groups_from_daemon(items)
    roots = [r.get("path") for r in status.get("roots", []) if isinstance(r, dict)]
    try:
        stats = write_report(Path(args.output), groups, source="daemon", threshold=None,
                             roots=[r for r in roots if isinstance(r, str)],
                             keep_policy=args.keep, workers=args.workers)
    except OSError as e:
        print(f"vfpctl report: error: cannot write {args.output}: {e}", file=sys.stderr)
        return EXIT_USAGE
    for problem in [*gone, *stats.thumb_errors]:
        print(f"vfpctl report: warning: {problem}", file=sys.stderr)
    print(f"Review page: {stats.path} ({stats.cards} groups, {stats.thumbs} thumbnails); "
          "apply its decisions with `vfpctl apply FILE.json`")
    return EXIT_OK if not gone and not stats.thumb_errors else EXIT_FILE_ERRORS
