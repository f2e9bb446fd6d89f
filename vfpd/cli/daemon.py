"""`vfpd`: run the daemon in the foreground (what systemd runs), or check a config and exit.

Exit codes (docs/protocol.md): 0 stopped cleanly or config ok; 1 could not start or failed;
2 bad config; 3 another vfpd already runs with the same state folder.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
from pathlib import Path

import vfpd
from vfpd import config as config_mod
from vfpd.blas import limit_blas_threads
from vfpd.config import LOG_LEVELS, ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vfpd", description="Watch folders and report duplicate videos as they arrive.")
    p.add_argument("--config", type=Path, metavar="PATH",
                   help="config file (default: $CONFIGURATION_DIRECTORY/config.toml, "
                        "/etc/vfpd/config.toml for root, else the user config dir)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the config, print where things go (warning about watched folders "
                        "that do not exist), and exit (0 ok, 2 bad)")
    p.add_argument("--log-level", choices=LOG_LEVELS, help="override [log] level")
    p.add_argument("--version", action="version", version=f"vfpd {vfpd.__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    limit_blas_threads()
    args = build_parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as e:
        print(f"vfpd: bad config: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.check_config:
        where = cfg.source or f"{config_mod.default_config_path()} (absent: built-in defaults)"
        print(f"config ok: {where}")
        print(f"  watch:   {', '.join(map(str, cfg.watch.paths)) or '(nothing yet)'}")
        print(f"  state:   {cfg.storage.state_dir}")
        print(f"  socket:  {cfg.control.socket}")
        for path in cfg.watch.paths:
            if not path.is_dir():
                print(f"vfpd: warning: watched folder {path} "
                      f"{'is not a folder' if path.exists() else 'does not exist'}; it is "
                      "watched once it does", file=sys.stderr)
        return EXIT_OK
    from vfpd.service import logging as vlog
    from vfpd.service.daemon import Daemon

    vlog.setup(args.log_level or cfg.log.level)
    # `kill -USR1` writes every thread's stack to the log: how to see where a stuck daemon is.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    return Daemon(cfg, os.environ, log_level=args.log_level).run()


if __name__ == "__main__":
    sys.exit(main())
