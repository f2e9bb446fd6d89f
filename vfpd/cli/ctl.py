"""`vfpctl`: one sub-command per module in vfpd.cli; this file only dispatches."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import vfpd
from vfpd.blas import limit_blas_threads

# Each module has register(subparsers) which adds its sub-command(s) and sets `func`
# (args -> exit code). Add a module here when it exists.
COMMAND_MODULES: tuple[str, ...] = ("cmd_scan", "cmd_undo", "cmd_daemon", "cmd_train", "cmd_fingerprint",
                                     "cmd_apply", "cmd_report", "cmd_retrain")

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
    "retrain": "cmd_retrain",
    "model": "cmd_retrain",
    **{name: "cmd_daemon" for name in ("status", "duplicates", "query", "rescan", "pause",
                                       "resume", "failures", "retry", "ignore", "confirm")},
}


# Options people write before the command (`vfpctl --config X status`): they are moved behind it,
# so the command's own parser checks them, as if written there. Those that take a value:
LEADING_WITH_VALUE = ("--config", "--socket", "--timeout")
LEADING_FLAGS = ("--json",)

EXIT_OK = 0
EXIT_INTERRUPTED = 130


def command_first(argv: list[str]) -> list[str]:
    """`argv` with the options written before the command moved to just after it. Anything else
    before the command (-h, --version, a typo) is left where it is, for argparse to answer."""
    i = 0
    while i < len(argv):
        name = argv[i].split("=", 1)[0]
        if name in LEADING_WITH_VALUE:
            i += 1 if "=" in argv[i] else 2
        elif name in LEADING_FLAGS:
            i += 1
        else:
            break
    if i == 0 or i >= len(argv) or argv[i].startswith("-"):
        return argv
    return [argv[i], *argv[:i], *argv[i + 1:]]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with only `command`'s module loaded when it is known, else every module."""
    parser = argparse.ArgumentParser(
        prog="vfpctl", description="Find duplicate videos.",
        epilog="Options such as --config, --socket, --timeout and --json may be written before "
               "the command too: vfpctl --config FILE status.")
    parser.add_argument("--version", action="version", version=f"vfpctl {vfpd.__version__}")
    # Listed here so that a command left out after them gets "required: COMMAND"; with a
    # command they are handed to it (command_first).
    for name in LEADING_WITH_VALUE:
        parser.add_argument(name, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    for name in LEADING_FLAGS:
        parser.add_argument(name, action="store_true", default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    owner = COMMAND_OWNERS.get(command or "")
    for name in (owner,) if owner else COMMAND_MODULES:
        importlib.import_module(f"vfpd.cli.{name}").register(sub)
    return parser


def _quiet_stdout() -> None:
    """Send the rest of stdout nowhere: the reader (`| head`) has gone."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    limit_blas_threads()
    argv = command_first(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # inside the try: a closed pipe is found here, not at exit
        return code
    except BrokenPipeError:
        # Output piped into `head`: stop quietly, like other Unix tools.
        _quiet_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
