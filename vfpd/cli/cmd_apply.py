"""`vfpctl apply DECISIONS.json [--apply]`: carry out what was decided on the review page, with the
safety of `scan --action`: a dry run unless --apply, every named file's content hash read again and
compared with the page's, never the last copy, a journal that `vfpctl undo` reverses.

Exit codes: 0 everything decided was done (or would be, in a dry run); 1 some of it was skipped
or failed (each says why); 2 bad usage or not a decisions file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from vfpd import actions, decisions, hashing, journal, planning
from vfpd.cli.cmd_scan import EXIT_FILE_ERRORS, EXIT_OK, EXIT_USAGE
from vfpd.cli.text import shell_quoted

APPLY_ACTION = planning.ActionSpec(planning.MIXED)
"""The journal header's action: the steps themselves say trash or hardlink, one by one."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "apply", help="carry out the decisions exported from a review page",
        description="Carry out the keep / trash / hard-link decisions and the not-a-duplicate "
                    "verdicts exported from a review page (vfpctl scan --report, vfpctl report). "
                    "A dry run unless --apply. See docs/report.md.")
    p.add_argument("decisions", metavar="DECISIONS.json", help="the file the page exported")
    p.add_argument("--apply", action="store_true", help="really do it")
    p.add_argument("--journal", metavar="FILE",
                   help="journal of the changes for `vfpctl undo` (default: in the user state dir)")
    p.add_argument("--reference", action="append", default=[], metavar="DIR",
                   help="a folder whose files are never acted on; may be given several times")
    p.add_argument("--cache", metavar="DIR",
                   help="the scan cache that records not-a-duplicate verdicts when no daemon "
                        "runs (default: vfpctl scan's)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH",
                       help="the daemon's control socket, for verdicts (default: from the config)")
    where.add_argument("--config", metavar="FILE", help="the daemon's config, to find its socket")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=run)


def current_state(paths: set[str]) -> dict[str, decisions.Now]:
    """Each named file's facts with its content hash read now (the check before acting)."""
    out = {}
    for path in sorted(paths):
        try:
            digest, st = hashing.hash_and_stat(path)
        except FileNotFoundError:
            out[path] = decisions.Now(None, "no longer exists")
            continue
        except OSError as e:
            out[path] = decisions.Now(None, f"cannot be read: {e.strerror or e}")
            continue
        out[path] = decisions.Now(planning.FileFacts(path, st.size, st.mtime_ns,
                                                    content_hash=digest, device=st.device,
                                                    inode=st.inode))
    return out


def _default_journal() -> Path:
    import platformdirs

    stamp = time.strftime("%Y%m%dT%H%M%S")
    return Path(platformdirs.user_state_dir("vfpd")) / "journals" / f"apply-{stamp}.jsonl"


def record_verdicts(args: argparse.Namespace, verdicts: list[decisions.NotDuplicate]
                    ) -> list[dict[str, object]]:
    """Not-a-duplicate verdicts to the running daemon (`ignore`), else to the scan cache."""
    from vfpd.client import Client, ControlError, DaemonNotRunning
    from vfpd.config import ConfigError

    out: list[dict[str, object]] = []
    pending = list(verdicts)
    try:
        from vfpd.cli.cmd_daemon import socket_path

        with Client(socket_path(args)) as client:
            for v in verdicts:
                try:
                    client.call("ignore", {"a": v.a, "b": v.b})
                    out.append({"a": v.a, "b": v.b, "recorded": "daemon"})
                    pending.remove(v)
                except DaemonNotRunning:
                    raise
                except ControlError as e:
                    # Not the daemon's file (outside its roots, not in its catalog): the scan
                    # cache still learns it below.
                    out.append({"a": v.a, "b": v.b, "recorded": None, "daemon": e.message})
    except (DaemonNotRunning, OSError):
        pass
    except ConfigError as e:  # a broken daemon config must not stop the cache from learning
        print(f"vfpctl apply: warning: daemon not asked: {e}", file=sys.stderr)
    if not pending:
        return out
    from vfpd.catalog import Catalog, Kind, Verdict
    from vfpd.scan import default_cache_dir

    cache = Path(args.cache) if args.cache else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with Catalog(cache / "catalog.sqlite") as catalog:
        for v in pending:
            out = [r for r in out if (r["a"], r["b"]) != (v.a, v.b)]
            if catalog.content(v.hash_a) is None or catalog.content(v.hash_b) is None:
                out.append({"a": v.a, "b": v.b, "recorded": None,
                            "cache": f"{cache} has not seen these files: scan with this --cache"})
                continue
            kind = v.kind if v.kind in tuple(Kind) else Kind.NEAR
            catalog.add_duplicate(v.hash_a, v.hash_b, v.score, kind)
            catalog.set_verdict(v.hash_a, v.hash_b, Verdict.NOT_DUPLICATE)
            out.append({"a": v.a, "b": v.b, "recorded": "cache", "cache": str(cache)})
    return out


def run(args: argparse.Namespace) -> int:
    for ref in args.reference:
        if not os.path.isdir(ref):
            print(f"vfpctl apply: error: --reference {ref}: no such folder", file=sys.stderr)
            return EXIT_USAGE
    reference = [os.path.abspath(r) for r in args.reference]
    try:
        decided = decisions.load(args.decisions)
    except decisions.DecisionsError as e:
        print(f"vfpctl apply: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    key = b""
    if args.apply:
        try:
            key = journal.load_key(journal.default_key_dir())
        except (journal.JournalError, OSError) as e:
            print(f"vfpctl apply: error: cannot seal the journal: {e}", file=sys.stderr)
            return EXIT_USAGE
    now = current_state(decided.named())
    steps = decisions.plan(decided, now, reference)
    verdicts = decisions.verdicts(decided)
    doc: dict[str, object] = {"applied": args.apply, "journal": None, "verdicts": None}
    if not args.apply:
        doc["steps"] = [{"op": s.op, "path": s.path, "keep": s.keep, "done": False,
                         "detail": s.skip or "dry run"} for s in steps]
        doc["verdicts"] = [{"a": v.a, "b": v.b, "recorded": None} for v in verdicts]
        if not args.json:
            print("Dry run (nothing changed; add --apply to do it):")
            for s in steps:
                print(f"  skip {shell_quoted(s.path)}: {s.skip}" if s.skip else
                      f"  would {s.op} {shell_quoted(s.path)}  (keeping {shell_quoted(s.keep)})")
            for v in verdicts:
                print(f"  would record: {shell_quoted(v.a)} and {shell_quoted(v.b)} are not duplicates")
        ok = not any(s.skip for s in steps)
    else:
        path = Path(args.journal) if args.journal else _default_journal()
        facts = [n.facts for n in now.values() if n.facts is not None]
        outcomes = []
        if steps:
            # Sealed like scan's journals, over the report's folders: act() refuses anything
            # outside them once links are resolved, and undo follows only this user's seal.
            sealed = actions.open_journal(path, key, APPLY_ACTION, decided.roots)
            try:
                outcomes = actions.apply(steps, facts, APPLY_ACTION, sealed)
            finally:
                sealed.close()
        doc["journal"] = str(path) if steps else None
        doc["steps"] = [{"op": o.step.op, "path": o.step.path, "keep": o.step.keep,
                         "done": o.done, "detail": o.detail} for o in outcomes]
        doc["verdicts"] = record_verdicts(args, verdicts) if verdicts else []
        if not args.json:
            for o in outcomes:
                mark = "done" if o.done else "NOT done"
                print(f"{mark}: {o.step.op} {shell_quoted(o.step.path)}: {o.detail}")
            for r in doc["verdicts"]:  # type: ignore[union-attr]
                where = f"recorded in the {r['recorded']}" if r["recorded"] else \
                    f"NOT recorded: {r.get('cache') or r.get('daemon')}"
                print(f"not a duplicate: {shell_quoted(str(r['a']))} / {shell_quoted(str(r['b']))} ({where})")
            if steps:
                print(f"Journal: {path}\nUndo with: vfpctl undo {path}")
        ok = all(o.done for o in outcomes) and all(
            r["recorded"] for r in doc["verdicts"])  # type: ignore[union-attr]
    if args.json:
        print(json.dumps(doc, indent=1, ensure_ascii=True))
    return EXIT_OK if ok else EXIT_FILE_ERRORS
