"""`vfpctl undo JOURNAL`: reverse what `vfpctl scan --action ... --apply` did, where reversible.

Exit codes: 0 every change was reversed; 1 some could not be (deleted files, files changed since,
lines outside the journal's folders); 2 the journal is missing or not a vfpd journal; 4 refused:
the journal fails its seal (not written by this vfpd for this user, or altered), nothing done.
"""

from __future__ import annotations

import argparse
import json
import sys

from vfpd import journal, undo
from vfpd.cli.cmd_scan import EXIT_FILE_ERRORS, EXIT_OK, EXIT_USAGE
from vfpd.cli.text import shell_quoted

JOURNAL_HEADER_MAX = 64 * 1024
"""Bytes of a journal's first line read to recognise it; its header is well under 1 kB."""

EXIT_REFUSED = 4


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("undo", help="reverse the changes recorded in a scan journal",
                              description="Reverse the changes a `vfpctl scan --apply` recorded "
                                          "in its journal, newest first: trashed and moved files "
                                          "come back, links become copies again. Deletions "
                                          "cannot be reversed. Only a journal sealed by this "
                                          "user's vfpd is followed (exit 4 otherwise), and only "
                                          "inside the folders it scanned.")
    p.add_argument("journal", metavar="JOURNAL", help="the journal file the scan printed")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def _not_a_journal(path: str) -> bool:
    """Whether the file's first line is something other than a journal's header (a file that
    cannot be opened is left to undo to explain)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(JOURNAL_HEADER_MAX)
    except OSError:
        return False
    try:
        header = json.loads(first)
    except ValueError:
        return True
    return not (isinstance(header, dict) and header.get("journal") == journal.JOURNAL_FORMAT)


def run(args: argparse.Namespace) -> int:
    if _not_a_journal(args.journal):
        print(f"vfpctl undo: error: {shell_quoted(args.journal)} is not a vfpd action journal (the "
              "file `vfpctl scan --apply` names)", file=sys.stderr)
        return EXIT_USAGE
    try:
        results = undo.undo(args.journal, journal.load_key(journal.default_key_dir()))
    except journal.JournalRefused as e:
        print(f"vfpctl undo: refused: {e}; nothing was undone", file=sys.stderr)
        return EXIT_REFUSED
    except journal.JournalError as e:
        print(f"vfpctl undo: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps([{"seq": r.seq, "op": r.op, "path": r.path, "undone": r.undone,
                           "detail": r.detail} for r in results], indent=1))
    else:
        if not results:
            print("nothing to undo")
        for r in results:
            mark = "undone" if r.undone else "NOT undone"
            print(f"{mark}: {r.op} {shell_quoted(r.path)}: {r.detail}")
    return EXIT_OK if all(r.undone for r in results) else EXIT_FILE_ERRORS
