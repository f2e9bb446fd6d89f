"""Acting on duplicate groups from the command line: the options, their checks, the dry run and
the sealed journal, one path for `vfpctl scan --action` and `vfpctl duplicates --action`."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from vfpd import actions, journal, planning
from vfpd.cli.text import shell_quoted


def add_arguments(p: argparse.ArgumentParser, keep_default: str = "oldest") -> None:
    p.add_argument("--action", default="report", metavar="ACTION",
                   help="what to do with the copies: report (default), trash, delete, hardlink, "
                        "symlink or move:DIR. A dry run unless --apply")
    p.add_argument("--keep", choices=planning.KEEP_POLICIES, default=None,
                   help=f"which file of a group is kept (default: {keep_default}; best: "
                        "resolution, then bit rate, frame rate, duration, size)")
    p.add_argument("--reference", action="append", default=[], metavar="DIR",
                   help="a folder whose files are never acted on (kept in preference); "
                        "may be given several times")
    p.add_argument("--apply", action="store_true", help="really carry out --action")
    p.add_argument("--journal", metavar="FILE",
                   help="journal of the changes for `vfpctl undo` (default: in the user state "
                        "dir)")


def check(args: argparse.Namespace) -> str | None:
    """The action options' problem, or None; sets args.action_spec and, with --apply, the
    journal's key (args.journal_key)."""
    try:
        args.action_spec = planning.parse_action(args.action)
    except ValueError as e:
        return str(e)
    for ref in args.reference:
        if not os.path.isdir(ref):
            return f"--reference {ref}: no such folder"
    args.reference = [os.path.abspath(r) for r in args.reference]
    if args.apply and args.action_spec.op == planning.Op.REPORT:
        return ("--apply needs an --action to carry out (trash, delete, hardlink, symlink or "
                "move:DIR)")
    if args.apply:
        try:
            args.journal_key = journal.load_key(journal.default_key_dir())
        except (journal.JournalError, OSError) as e:
            return f"cannot seal the journal: {e}"
    return None


def print_plan(steps: Sequence[planning.Step]) -> None:
    """The dry run, group by group: the copy kept first, marked, then what would happen to the
    others."""
    kept: list[str] = []
    for s in steps:
        if s.keep not in kept:
            kept.append(s.keep)
    for keep in kept:
        print(f"  {'keep':<12} {shell_quoted(keep)}")
        for s in steps:
            if s.keep == keep:
                what = f"{'skip':<12} {shell_quoted(s.path)}: {s.skip}" if s.skip else \
                    f"{'would ' + s.op:<12} {shell_quoted(s.path)}"
                print(f"  {what}")


def default_journal(prefix: str) -> Path:
    import platformdirs

    stamp = time.strftime("%Y%m%dT%H%M%S")
    return Path(platformdirs.user_state_dir("vfpd")) / "journals" / f"{prefix}-{stamp}.jsonl"


def act(args: argparse.Namespace, facts: Sequence[planning.FileFacts],
        groups: Sequence[Sequence[planning.FileFacts]], direct: Collection[frozenset[str]],
        roots: Sequence[str], journal_prefix: str) -> tuple[dict[str, object] | None, bool]:
    """Plan (and with --apply carry out) args' action on the groups; returns (the report for the
    JSON output, whether every planned step went well). `direct`: the path pairs verified as
    duplicates of each other at the threshold in use (a member is only removed for its keeper
    when the two are such a pair); `roots`: the folders the journal may touch when undone."""
    spec = args.action_spec
    if spec.op == planning.Op.REPORT:
        return None, True
    keep = args.keep or "oldest"
    steps = planning.plan(groups, spec, keep, direct, args.reference)
    report: dict[str, object] = {"action": args.action, "keep": keep, "applied": args.apply,
                                 "journal": None, "reference": args.reference}
    reasons = []
    for g in groups:
        refs = [f for f in g if planning.in_reference(f.path, args.reference)]
        keeper = planning.choose_keeper(refs or g, keep)
        reasons.append({"keep": keeper.path, "reason": ("in a reference folder; " if refs else "")
                        + planning.keep_reason(refs or g, keeper, keep)})
    report["kept"] = reasons
    if not args.json:
        print(f"\nKept per group (--keep {keep}):")
        for r in reasons:
            print(f"  {shell_quoted(str(r['keep']))}: {r['reason']}")
    if not args.apply:
        report["steps"] = [{"op": s.op, "path": s.path, "keep": s.keep, "done": False,
                            "detail": s.skip or "dry run"} for s in steps]
        if not args.json:
            print(f"\nDry run of --action {args.action} --keep {keep} "
                  "(nothing changed; add --apply to do it):")
            print_plan(steps)
        return report, True
    path = Path(args.journal) if args.journal else default_journal(journal_prefix)
    sealed = actions.open_journal(path, args.journal_key, spec, roots)
    try:
        outcomes = actions.apply(steps, facts, spec, sealed)
    finally:
        sealed.close()
    report["journal"] = str(path)
    report["steps"] = [{"op": o.step.op, "path": o.step.path, "keep": o.step.keep,
                        "done": o.done, "detail": o.detail} for o in outcomes]
    failed = [o for o in outcomes if not o.done and not o.step.skip]
    if not args.json:
        print(f"\n--action {args.action} --keep {keep}:")
        for o in outcomes:
            mark = "done" if o.done else "NOT done"
            print(f"  {mark}: {o.step.op} {shell_quoted(o.step.path)}: {o.detail}")
        print(f"Journal: {shell_quoted(path)}\nUndo with: vfpctl undo {shell_quoted(path)}")
    return report, not failed
