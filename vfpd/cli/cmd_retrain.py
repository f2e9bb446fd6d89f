"""`vfpctl retrain [--wait|--cancel|--status]` and `vfpctl model list|use`: retraining and model
versions of the running daemon, over its control socket."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from vfpd.cli.cmd_daemon import (
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    _print_json,
    human_time,
    not_running_hint,
    run,
    socket_path,
)
from vfpd.client import DEFAULT_REPLY_TIMEOUT_S, Client, ControlError, DaemonNotRunning
from vfpd.config import ConfigError

POLL_SECONDS = 0.5
"""How often --wait asks the daemon how far it got: a bar that moves, a socket left quiet."""


def _scores_line(scores: Any) -> str:
    if not isinstance(scores, dict) or "candidate" not in scores:
        return ""
    parts = []
    for name in ("library", "suite"):
        c, k = scores.get("current", {}).get(name), scores["candidate"].get(name)
        if c and k:
            parts.append(f"{name} AP {c['ap']:.3f} -> {k['ap']:.3f}, recall@P99 "
                         f"{c['recall_at_p99']:.3f} -> {k['recall_at_p99']:.3f}, false positives "
                         f"{c['false_positives']} -> {k['false_positives']}")
    return "; ".join(parts)


def phase_line(cur: dict[str, Any]) -> str:
    """One line for the run in progress: its phase and its numbers."""
    phase = cur.get("phase", "?")
    if phase == "training":
        loss = cur.get("loss")
        return (f"training: epoch {cur.get('epoch', 0)}, step {cur.get('step', 0)}"
                + (f", loss {loss:.4f}" if isinstance(loss, float) else ""))
    if phase == "re-embedding":
        return f"re-embedding stored fingerprints: {cur.get('done', 0)}/{cur.get('total') or '?'}"
    if phase == "gate":
        return "gate: scoring the candidate against the running model"
    return phase


def show_retrain(st: dict[str, Any], args: argparse.Namespace, out: TextIO) -> None:
    cur = st.get("current")
    if cur:
        out.write(f"{'running:':<14}{cur.get('kind', 'retrain')} ({cur.get('trigger')}) since "
                  f"{human_time(cur.get('started_at'))}: {phase_line(cur)}\n")
    else:
        out.write(f"{'running:':<14}no\n")
    last = st.get("last")
    if last:
        out.write(f"{'last:':<14}{last.get('outcome')} at {human_time(last.get('finished_at'))}"
                  f" ({last.get('trigger')}): {last.get('reason')}\n")
        line = _scores_line(last.get("scores"))
        if line:
            out.write(f"{'gate:':<14}{line}\n")
    else:
        out.write(f"{'last:':<14}never\n")
    if st.get("model_version"):
        out.write(f"{'model:':<14}{st['model_version']}\n")


def show_models(result: dict[str, Any], args: argparse.Namespace, out: TextIO) -> None:
    out.write(f"{'VERSION':<14}{'STATUS':<12}{'LIBRARY AP':>11}{'SUITE AP':>10}  REASON\n")
    for v in result.get("versions", []):
        sc = (v.get("scores") or {}).get("candidate") or {}
        lib = sc.get("library", {}).get("ap")
        suite = sc.get("suite", {}).get("ap")
        out.write(f"{v['version']:<14}{v['status']:<12}"
                  f"{(f'{lib:.3f}' if lib is not None else '-'):>11}"
                  f"{(f'{suite:.3f}' if suite is not None else '-'):>10}  {v.get('reason') or ''}\n")


def _wait(args: argparse.Namespace, start: bool) -> int:
    """Start (or join) a run and follow it with a progress bar until it ends."""
    from tqdm import tqdm

    try:
        path = socket_path(args)
    except ConfigError as exc:
        print(f"vfpctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with Client(path, timeout=args.timeout) as client:
            st = client.call("retrain", {"action": "start" if start else "status"})
            started = (st.get("current") or {}).get("started_at")
            bar = tqdm(total=None, unit="step", file=sys.stderr, disable=args.json,
                       dynamic_ncols=True)
            while st.get("current"):
                cur = st["current"]
                if cur.get("phase") == "re-embedding" and cur.get("total"):
                    bar.total, bar.unit = cur["total"], "video"
                    bar.n = cur.get("done", 0)
                else:
                    bar.n = cur.get("step", 0) or 0
                bar.set_description(phase_line(cur).split(":")[0])
                bar.set_postfix_str(phase_line(cur).partition(": ")[2])
                bar.refresh()
                time.sleep(POLL_SECONDS)
                st = client.call("retrain", {"action": "status"})
            bar.close()
    except DaemonNotRunning as exc:
        print(f"vfpctl: vfpd is not running (nothing answers at {exc.socket_path}); "
              f"{not_running_hint(exc.socket_path)}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except ControlError as exc:
        print(f"vfpctl: retrain: {exc.message} [{exc.code}]", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        _print_json(st, sys.stdout)
    else:
        show_retrain(st, args, sys.stdout)
    last = st.get("last") or {}
    ok = last.get("started_at") == started or started is None
    return EXIT_OK if ok and last.get("outcome") not in ("failed",) else EXIT_REFUSED


def _retrain(args: argparse.Namespace) -> int:
    if args.cancel:
        return run(args, "retrain", {"action": "cancel"}, show_retrain)
    if args.status:
        return run(args, "retrain", {"action": "status"}, show_retrain)
    if args.wait:
        return _wait(args, start=True)
    return run(args, "retrain", {"action": "start"}, show_retrain)


def _model_list(args: argparse.Namespace) -> int:
    return run(args, "models", {}, show_models)


def _model_use(args: argparse.Namespace) -> int:
    code = run(args, "model_use", {"version": args.version.lower()}, show_retrain)
    if code != EXIT_OK or not args.wait:
        return code
    return _wait(args, start=False)


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="the daemon's control socket")
    where.add_argument("--config", metavar="FILE", help="the daemon's config file")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument("--timeout", type=float, default=DEFAULT_REPLY_TIMEOUT_S, metavar="S",
                        help=f"seconds to wait for each answer (default {DEFAULT_REPLY_TIMEOUT_S:g})")

    text = ("adapt the model to this library now: train from the running weights on the stored "
            "frames, promote the result only if it passes the gate")
    p = subparsers.add_parser("retrain", parents=[common], help=text, description=text)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--wait", action="store_true",
                      help="follow the run with a progress bar until it ends")
    what.add_argument("--cancel", action="store_true", help="stop the run in progress")
    what.add_argument("--status", action="store_true",
                      help="the run in progress (phase, epoch, loss, re-embedding) and the last "
                           "result with its gate scores")
    p.set_defaults(func=_retrain)

    text = "model versions: list them with their gate scores, or serve another one"
    p = subparsers.add_parser("model", help=text, description=text)
    sub = p.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    q = sub.add_parser("list", parents=[common], help="versions, their status and gate scores")
    q.set_defaults(func=_model_list)
    q = sub.add_parser("use", parents=[common],
                       help="serve VERSION (e.g. roll back): the library is re-embedded from "
                            "stored frames in the background, then swapped in")
    q.add_argument("version", metavar="VERSION")
    q.add_argument("--wait", action="store_true", help="follow the re-embedding until it ends")
    q.set_defaults(func=_model_use)
