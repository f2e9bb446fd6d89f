"""Run one benchmark by name: python -m bench speed|accuracy|index|control ..."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from vfpd.blas import limit_blas_threads


def main(argv: list[str]) -> int:
    limit_blas_threads()  # as vfpctl and vfpd run: the in-process stages measure the same code
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if not m.name.startswith("_"))
    if not argv or argv[0] not in names:
        print(f"usage: ./dev bench {{{'|'.join(names)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
