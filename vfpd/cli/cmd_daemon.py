"""`vfpctl status|duplicates|query|rescan|pause|resume|failures|retry|ignore|confirm`: ask the
running daemon over its control socket (docs/protocol.md) and print a table, or JSON with --json.

Exit codes: 0 done; 1 the daemon refused or failed the request (the message says why);
2 bad usage or config; 3 the daemon is not running.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from vfpd import config as config_mod
from vfpd import hashing, planning
from vfpd.cli import acting
from vfpd.cli.text import human_size, shell_quoted
from vfpd.client import (
    DEFAULT_REPLY_TIMEOUT_S,
    Client,
    ControlError,
    DaemonNotRunning,
    Stream,
    resolve_client_path,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

SOCKET_ENV = "VFPD_SOCKET"


# -- finding the daemon -------------------------------------------------------------------------

def socket_path(args: argparse.Namespace, env: dict[str, str] | None = None) -> Path:
    """--socket, else $VFPD_SOCKET, else the [control] socket of the daemon's config (--config or
    the default one). Without an explicit choice, a user whose own daemon is not there but the
    system service's socket exists talks to the system service."""
    env = dict(os.environ) if env is None else env
    if args.socket:
        return Path(args.socket)
    if env.get(SOCKET_ENV):
        return Path(env[SOCKET_ENV])
    config = config_mod.load(Path(args.config) if args.config else None, env)
    path = config.control.socket
    system = config_mod.SYSTEM_RUNTIME_DIR / config_mod.SOCKET_NAME
    if args.config is None and not path.exists() and system.exists():
        return system
    return path


def not_running_hint(path: Path) -> str:
    if str(path).startswith(str(config_mod.SYSTEM_RUNTIME_DIR)):
        return "start it with: sudo systemctl start vfpd"
    return "start it with: systemctl --user start vfpd (or run: vfpd --config FILE)"


T = TypeVar("T")


def ask(args: argparse.Namespace, name: str, talk: Callable[[Client], T]) -> tuple[T | None, int]:
    """`talk` to the daemon (args' socket): (what it returned, EXIT_OK), or (None, the exit code)
    with the reason printed as every vfpctl command says it."""
    try:
        path = socket_path(args)
        with Client(path, timeout=args.timeout) as client:
            return talk(client), EXIT_OK
    except config_mod.ConfigError as exc:
        print(f"vfpctl: {exc}", file=sys.stderr)
        return None, EXIT_USAGE
    except DaemonNotRunning as exc:
        print(f"vfpctl: vfpd is not running (nothing answers at {exc.socket_path}); "
              f"{not_running_hint(exc.socket_path)}", file=sys.stderr)
        return None, EXIT_NOT_RUNNING
    except ControlError as exc:
        print(f"vfpctl: {name}: {exc.message} [{exc.code}]", file=sys.stderr)
        return None, EXIT_REFUSED


def run(args: argparse.Namespace, cmd: str, request: dict[str, Any],
        show: Callable[[Any, argparse.Namespace, TextIO], None],
        fds: list[int] | None = None) -> int:
    # File names need not be UTF-8: print their bytes as they are (the JSON form escapes them).
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    out = sys.stdout

    def talk(client: Client) -> None:
        result = client.call(cmd, request, fds=fds)
        if args.json:
            _print_json(result, out)
        else:
            show(result.items if isinstance(result, Stream) else result, args, out)

    return ask(args, cmd, talk)[1]


def _print_json(result: Any, out: TextIO) -> None:
    if isinstance(result, Stream):
        # A JSON array written item by item: valid JSON, never the whole list in memory.
        out.write("[")
        for i, item in enumerate(result.items):
            out.write(",\n" if i else "\n")
            out.write(json.dumps(item))
        out.write("\n]\n")
    else:
        out.write(json.dumps(result, indent=2) + "\n")


# -- formatting ---------------------------------------------------------------------------------

def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def human_time(ts: float | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def table(rows: Iterable[list[str]], headers: list[str], out: TextIO,
          right: frozenset[int] = frozenset()) -> None:
    rows = [headers, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    for row in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        out.write("  ".join(cells).rstrip() + "\n")


def _frames_line(frames: Any) -> str:
    if not isinstance(frames, dict):
        return ""
    if frames.get("type") == "building":
        return "; frame index being rebuilt"
    return f"; frame index {frames.get('type', '?')}, {frames.get('frames', '?')} frames"


def _refingerprint_line(missing: Any) -> str:
    return f" (re-fingerprinting: {missing} content(s) left)" if isinstance(missing, int) and missing else ""


def _eta_line(st: dict[str, Any]) -> str:
    eta = st.get("queue_eta_s")
    if not st.get("queue") or not isinstance(eta, (int, float)):
        return ""
    return f", about {human_duration(max(eta, 1.0))} to go at the recent pace"


def _retrain_line(retrain: Any) -> str:
    """The last retrain's outcome and when, and the one running now (vfpctl retrain --status)."""
    if not isinstance(retrain, dict):
        return "never"
    parts = []
    if retrain.get("outcome"):
        parts.append(f"{retrain['outcome']} at {human_time(retrain.get('finished_at'))}"
                     + (f" ({retrain['trigger']})" if retrain.get("trigger") else ""))
    running = retrain.get("running")
    if isinstance(running, dict):
        parts.append(f"running now: {running.get('kind', 'retrain')}, {running.get('phase')}")
    if retrain.get("next_run"):
        parts.append(f"next run at {human_time(retrain['next_run'])}")
    return "; ".join(parts) or "never"


def show_status(st: dict[str, Any], args: argparse.Namespace, out: TextIO) -> None:
    index = st.get("index") or {}
    retrain = st.get("last_retrain")
    health = st.get("health") or {}
    lines = [
        ("vfpd", f"{st['version']} (pid {st.get('pid', '?')}), up "
                 f"{human_duration(st['uptime_s'])}{', PAUSED' if st.get('paused') else ''}"),
        ("health", "ok" if health.get("state", "ok") == "ok"
         else f"DEGRADED: {health.get('reason')}"),
        ("queue", f"{st['queue']} file(s) waiting" + _eta_line(st)),
        ("files", f"{st['files']} files, {st['hashes']} distinct contents, "
                  f"{st['fingerprints']} fingerprints"),
        ("duplicates", f"{st.get('duplicates', '?')} pair(s)"),
        ("index", f"{index.get('type', '?')}, {index.get('size', '?')} vectors"
                  + _frames_line(index.get("frames"))),
        ("model", str(st.get("model_version") or "not loaded yet")
                  + _refingerprint_line(index.get("missing_fingerprints"))),
        ("last retrain", _retrain_line(retrain)),
        ("failed files", f"{st['failed']}" + (" (see: vfpctl failures)" if st["failed"] else "")),
        ("notify backlog", f"{st['notify_backlog']} pending"),
    ]
    for key, value in lines:
        out.write(f"{key + ':':<16}{value}\n")
    roots = st.get("roots") or []
    out.write(f"{'roots:':<16}{'none configured' if not roots else ''}\n")
    for r in roots:
        out.write(f"  {shell_quoted(r['path'])}  [{r['mode']}: {r['reason']}]\n")


def show_duplicates(groups: Iterable[dict[str, Any]], args: argparse.Namespace,
                    out: TextIO) -> None:
    n = 0
    total = 0
    for n, g in enumerate(groups, 1):
        total += g.get("waste") or 0
        out.write(f"Group {n}: {g['kind']}, {len(g['members'])} files, "
                  f"{human_size(g.get('waste'))} reclaimable, lowest score "
                  f"{g.get('min_score', 0):.2f}\n")
        rows = [[human_size(m.get("size")), human_duration(m.get("duration")),
                 f"{m['width']}x{m['height']}" if m.get("width") else "?",
                 f"{m['score']:.2f}" if m.get("score") is not None else "-",
                 m.get("kind") or "",
                 shell_quoted(m["path"]) if m.get("path") else "(no path)"] for m in g["members"]]
        table(rows, ["SIZE", "LENGTH", "RESOLUTION", "SCORE", "KIND", "PATH"], out,
              right=frozenset({0, 1, 3}))
        out.write("\n")
    if n == 0:
        out.write("No duplicates found (yet).\n")
    else:
        out.write(f"{n} group(s), {human_size(total)} reclaimable by keeping the largest file of "
                  "each.\n")


def show_query(result: dict[str, Any], args: argparse.Namespace, out: TextIO) -> None:
    matches = result.get("matches") or []
    out.write(f"Nearest to {shell_quoted(str(result.get('file')))}:\n")
    if not matches:
        out.write("  nothing in the library yet\n")
        return
    rows = []
    for m in matches:
        paths = m.get("paths") or ([m["path"]] if m.get("path") else [])
        score = m.get("score")
        rows.append([f"{score:.3f}" if isinstance(score, (int, float)) else "?",
                     str(m.get("kind") or ""),
                     "yes" if m.get("duplicate", True) else "no (below the threshold)",
                     (shell_quoted(paths[0]) if paths else str(m.get("hash", "?"))[:16])
                     + (f" (+{len(paths) - 1} more)" if len(paths) > 1 else "")])
    table(rows, ["SCORE", "KIND", "DUPLICATE", "PATH"], out, right=frozenset({0}))


def show_failures(items: Iterable[dict[str, Any]], args: argparse.Namespace,
                  out: TextIO) -> None:
    rows = [[str(f.get("attempts", "?")), shell_quoted(f.get("path", "?")),
             (f.get("reason") or "")[:120]]
            for f in items]
    if not rows:
        out.write("No failed files.\n")
        return
    table(rows, ["TRIES", "PATH", "REASON"], out, right=frozenset({0}))
    out.write(f"{len(rows)} failed file(s); `vfpctl retry PATH` queues one again.\n")


def _message(text: Callable[[dict[str, Any]], str]) -> Callable[[Any, argparse.Namespace, TextIO],
                                                                  None]:
    def show(result: Any, args: argparse.Namespace, out: TextIO) -> None:
        out.write(text(result) + "\n")
    return show


# -- sub-commands -------------------------------------------------------------------------------

def _status(args: argparse.Namespace) -> int:
    return run(args, "status", {}, show_status)


def _duplicates(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {}
    if args.since is not None:
        request["since"] = args.since
    if args.kind is not None:
        request["kind"] = args.kind
    if args.min_score is not None:
        request["min_score"] = args.min_score
    if args.path is not None:
        request["path"] = resolve_client_path(args.path)
    problem = acting.check(args)
    if problem:
        print(f"vfpctl duplicates: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.action_spec.op == planning.Op.REPORT:
        return run(args, "duplicates", request, show_duplicates)
    return _act_on_duplicates(args, request)


def _act_on_duplicates(args: argparse.Namespace, request: dict[str, Any]) -> int:
    """`duplicates --action`: the daemon's groups, acted on here with the user's rights and the
    safety of `scan --action` (direct matches only, content proven at the moment of acting, a
    sealed journal for `vfpctl undo`)."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    got, code = ask(args, "duplicates", lambda c: (
        [str(r["path"]) for r in c.call("status")["roots"]],
        list(c.call("duplicates", request).items)))
    if got is None:
        return code
    roots, groups = got
    if not args.json:
        show_duplicates(groups, args, sys.stdout)
    facts, fact_groups, direct, gone = daemon_groups_as_facts(groups, args.keep or "oldest")
    for p in gone:
        print(f"vfpctl duplicates: {shell_quoted(p)} is gone since the daemon saw it: left out",
              file=sys.stderr)
    report, ok = acting.act(args, facts, fact_groups, direct, roots, "duplicates")
    if args.json:
        sys.stdout.write(json.dumps({"groups": groups, "actions": report}, indent=1) + "\n")
    return EXIT_OK if ok else EXIT_REFUSED


def daemon_groups_as_facts(groups: Sequence[dict[str, Any]], keep: str
                           ) -> tuple[list[planning.FileFacts], list[list[planning.FileFacts]],
                                      set[frozenset[str]], list[str]]:
    """The daemon's groups as the action planner's facts: (every file, the groups, the path pairs
    matched directly, paths that are gone). Each path is stat'ed here; its content hash is the
    daemon's, which the action proves again through the file before touching it."""
    facts: list[planning.FileFacts] = []
    fact_groups: list[list[planning.FileFacts]] = []
    direct: set[frozenset[str]] = set()
    gone: list[str] = []
    rates: dict[str, float | None] = {}
    if keep == "best":
        from vfpd.thumbs import frame_rates

        rates = frame_rates({m["path"] for g in groups for m in g["members"]})
    for g in groups:
        members: list[planning.FileFacts] = []
        paths_of: dict[str, list[str]] = {}
        for m in g["members"]:
            try:
                st = os.stat(m["path"], follow_symlinks=False)
            except OSError:
                gone.append(m["path"])
                continue
            duration = m.get("duration")
            members.append(planning.FileFacts(
                m["path"], st.st_size, st.st_mtime_ns, m.get("width"), m.get("height"),
                m["hash"], st.st_dev, st.st_ino, duration=duration,
                bit_rate=int(st.st_size * 8 / duration) if duration else None,
                fps=rates.get(m["path"])))
            paths_of.setdefault(m["hash"], []).append(m["path"])
        for same in paths_of.values():  # byte-identical copies match each other
            direct |= {frozenset((a, b)) for i, a in enumerate(same) for b in same[i + 1:]}
        for pair in g.get("pairs", []):
            direct |= {frozenset((a, b)) for a in paths_of.get(pair["a"], [])
                       for b in paths_of.get(pair["b"], [])}
        if len(members) > 1:
            fact_groups.append(members)
            facts += members
    return facts, fact_groups, direct, gone


def _query(args: argparse.Namespace) -> int:
    # The file is opened here, with the user's rights, and handed over as a descriptor: the
    # daemon reads any file the user can, inside the watched folders or not, and no other.
    # Opened once without waiting: a FIFO named like a video is refused, not waited on.
    path = resolve_client_path(args.file)
    try:
        opened = hashing.open_regular(path, follow_symlinks=True)
    except hashing.NotRegularFile as exc:
        print(f"vfpctl: query: {args.file} is not a file: {exc.reason}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"vfpctl: query: cannot open {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_REFUSED
    with opened:
        return run(args, "query", {"name": path, "k": args.k}, show_query, fds=[opened.fd])


def _rescan(args: argparse.Namespace) -> int:
    request = {"path": resolve_client_path(args.path)} if args.path else {}
    return run(args, "rescan", request, _message(
        lambda r: f"queued {r['queued']} file(s) for a rescan of "
                  f"{shell_quoted(r['path']) if r['path'] else 'every root'}"))


def _pause(args: argparse.Namespace) -> int:
    return run(args, "pause", {}, _message(
        lambda r: "paused: no new files are fingerprinted until `vfpctl resume`"))


def _resume(args: argparse.Namespace) -> int:
    return run(args, "resume", {}, _message(lambda r: "resumed"))


def _failures(args: argparse.Namespace) -> int:
    return run(args, "failures", {}, show_failures)


def _retry(args: argparse.Namespace) -> int:
    return run(args, "retry", {"path": resolve_client_path(args.path)},
               _message(lambda r: f"queued {shell_quoted(r['path'])} again"))


def _verdict(cmd: str, words: str) -> Callable[[argparse.Namespace], int]:
    def go(args: argparse.Namespace) -> int:
        return run(args, cmd, {"a": resolve_client_path(args.a), "b": resolve_client_path(args.b)},
                   _message(lambda r: f"recorded: {shell_quoted(r.get('a', args.a))} and "
                                      f"{shell_quoted(r.get('b', args.b))} "
                                      f"{words} (kept by content, survives renames)"))
    return go


def _score(value: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= score <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return score


def _positive(value: str) -> int:
    try:
        k = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return k


def _since(value: str) -> float:
    """Seconds since the epoch from an age (30m, 2h, 7d, 1w), a number, or an ISO date/time in
    local time; converted here so the daemon's time zone does not matter."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    now = dt.datetime.now().timestamp()
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return now - float(value[:-1]) * units[value[-1]]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"use an age (30m, 2h, 7d, 1w), a date (2026-01-31) or a date and time "
            f"(2026-01-31T08:00), got {value!r}") from None
    return (when if when.tzinfo else when.astimezone()).timestamp()


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH",
                       help=f"the daemon's control socket (default: from the config; or "
                            f"${SOCKET_ENV})")
    where.add_argument("--config", metavar="FILE",
                       help="the daemon's config file, to find its socket")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument("--timeout", type=float, default=DEFAULT_REPLY_TIMEOUT_S, metavar="S",
                        help="seconds to wait for the answer "
                             f"(default {DEFAULT_REPLY_TIMEOUT_S:g})")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str
            ) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    add("status", _status, "what the running daemon is doing: queue, index, model, failures")
    p = add("duplicates", _duplicates, "duplicate groups found so far, largest waste first")
    p.add_argument("--since", type=_since, metavar="TIME",
                   help="only pairs found since TIME: an age (2h, 7d), a date or date-time")
    p.add_argument("--kind", choices=("exact", "near", "partial"),
                   help="only this kind: exact (same bytes), near (same footage), partial "
                        "(a clip of a longer video)")
    p.add_argument("--min-score", type=_score, metavar="S", help="only pairs scoring at least S")
    p.add_argument("--path", metavar="PREFIX", help="only groups with a file inside this folder")
    acting.add_arguments(p)
    p = add("query", _query, "the videos in the library nearest to a file (any file you can read)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-k", type=_positive, default=10, help="how many neighbours (default 10)")
    p = add("rescan", _rescan, "look through a watched folder (or all) for changes now")
    p.add_argument("path", nargs="?", metavar="PATH")
    add("pause", _pause, "stop fingerprinting new files (watching goes on, jobs wait)")
    add("resume", _resume, "fingerprint again after pause")
    add("failures", _failures, "files that could not be read, with the reason")
    p = add("retry", _retry, "queue a failed file again")
    p.add_argument("path", metavar="PATH")
    for name, words, help_text in (
            ("ignore", "marked as NOT duplicates", "mark two files as not duplicates"),
            ("confirm", "confirmed as duplicates", "confirm two files are duplicates")):
        p = add(name, _verdict(name, words), help_text + " (used by detection and retraining)")
        p.add_argument("a", metavar="A")
        p.add_argument("b", metavar="B")
