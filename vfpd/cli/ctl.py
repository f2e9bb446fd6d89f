"""`vfpctl`: one sub-command per module in vfpd.cli; this file only dispatches."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module has register(subparsers) which adds its sub-command(s) and sets `func`
# (args -> exit code). Add a module here when it exists.
COMMAND_MODULES: tuple[str, ...] = ("cmd_scan", "cmd_undo", "cmd_daemon", "cmd_train", "cmd_fingerprint",
                                     "cmd_apply", "cmd_report")

# Which module serves a sub-command, so that `vfpctl status` imports only the socket client and
# not torch, FAISS and PyAV (about a second of start-up on a small machine). A command missing
# here still works: the parser then loads every module.
COMMAND_OWNERS: dict[str, str] = {
    "scan": "cmd_scan",
    "undo": "cmd_undo",
    "train": "cmd_train",
    "fingerprint": "cmd_fingerprint",
    "apply": "cmd_apply",
    "report": "cmd_report",
    **{name: "cmd_daemon" for name in ("status", "duplicates", "query", "rescan", "pause",
                                       "resume", "failures", "retry", "ignore", "confirm")},
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with only `command`'s module loaded when it is known, else every module."""
    parser = argparse.ArgumentParser(prog="vfpctl", description="Find duplicate videos.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    owner = COMMAND_OWNERS.get(command or "")
    for name in (owner,) if owner else COMMAND_MODULES:
        importlib.import_module(f"vfpd.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
