"""`vfpctl`: one sub-command per module in vfpd.cli; this file only dispatches."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module has register(subparsers) which adds its sub-command(s) and sets `func`
# (args -> exit code). Add a module here when it exists.
COMMAND_MODULES: tuple[str, ...] = ("cmd_scan", "cmd_undo", "cmd_daemon", "cmd_train", "cmd_fingerprint")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vfpctl", description="Find duplicate videos.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"vfpd.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
