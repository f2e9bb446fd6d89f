"""The control commands: argument checking and what each command does to a ServiceContext.

Each command is a plain function of (context, validated args, request); the server (control.py)
does the framing. Commands that read files accept only paths inside the watched roots, or an open
file descriptor passed by the client (SCM_RIGHTS) that was opened for reading: the kernel checked
the client's right to read it, and the daemon reads through that descriptor.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import math
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vfpd
from vfpd import hashing
from vfpd.catalog import Catalog, JobState, Kind
from vfpd.client import E_BAD_ARGS, E_BUSY, E_NOT_FOUND, E_OUTSIDE_ROOTS, E_UNREADABLE
from vfpd.grouping import Pair, group_components, reclaimable
from vfpd.service.context import ServiceContext

MAX_QUERY_K = 1000
"""A person reads ten neighbours, a script a few hundred; past that, read the index itself."""

DEFAULT_QUERY_K = 10

MAX_PATH_CHARS = 4096
"""PATH_MAX on Linux: no real path is longer."""


class CommandError(Exception):
    """A request the daemon will not carry out; `code` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Request:
    """What came with a request besides its arguments."""

    fd: int | None = None  # a descriptor passed with SCM_RIGHTS (query of a file by handle)
    should_stop: Callable[[], bool] = lambda: False  # the client left or the daemon stops


@dataclass(frozen=True)
class Param:
    """One argument: JSON type(s) it must have, whether it is required, its default, a check."""

    name: str
    types: tuple[type, ...]
    required: bool = False
    default: Any = None
    check: Callable[[Any], Any] | None = None  # returns the normalised value or raises ValueError


@dataclass(frozen=True)
class Command:
    name: str
    run: Callable[[ServiceContext, dict[str, Any], Request], Any]
    params: tuple[Param, ...] = ()
    streams: bool = False  # result is an iterator of items, sent as a stream
    summary: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               type(None): "null"}


def validate_args(command: Command, raw: Any) -> dict[str, Any]:
    """Check a request's `args` against the command's parameters; CommandError(bad-args) if not."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CommandError(E_BAD_ARGS, "args must be a JSON object")
    known = {p.name for p in command.params}
    unknown = sorted(set(raw) - known)
    if unknown:
        names = ", ".join(sorted(known)) or "none"
        raise CommandError(E_BAD_ARGS, f"{command.name}: unknown argument {unknown[0][:80]!r} "
                                       f"(takes: {names})")
    args: dict[str, Any] = {}
    for p in command.params:
        if p.name not in raw or raw[p.name] is None:
            if p.required:
                raise CommandError(E_BAD_ARGS, f"{command.name}: argument {p.name!r} is required")
            args[p.name] = p.default
            continue
        value = raw[p.name]
        # bool is an int in Python but not in the protocol; an int is fine where a float is asked.
        ok = any(isinstance(value, t) and not (isinstance(value, bool) and t is not bool)
                 for t in p.types)
        if not ok:
            wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in p.types)
            raise CommandError(E_BAD_ARGS, f"{command.name}: argument {p.name!r} must be {wanted}, "
                                           f"got {type(value).__name__}")
        if p.check is not None:
            try:
                value = p.check(value)
            except ValueError as exc:
                raise CommandError(E_BAD_ARGS,
                                   f"{command.name}: argument {p.name!r}: {exc}") from None
        args[p.name] = value
    return args


# -- argument checks ------------------------------------------------------------------------------

def _absolute_path(value: str) -> str:
    if not value or len(value) > MAX_PATH_CHARS or "\0" in value:
        raise ValueError("must be a non-empty path without NUL bytes, at most 4096 characters")
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800") other than the \udc80-\udcff escapes of undecodable bytes
        # names no file: no byte string decodes to it.
        raise ValueError("is not a file name (it holds a lone UTF-16 surrogate that no bytes "
                         "decode to)") from None
    if not os.path.isabs(value):
        raise ValueError(f"must be an absolute path (the daemon has no working directory of "
                         f"yours), got {value[:200]!r}")
    return value


def _score(value: float) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"must be between 0 and 1, got {value!r}")
    return float(value)


def _k(value: int) -> int:
    if not 1 <= value <= MAX_QUERY_K:
        raise ValueError(f"must be between 1 and {MAX_QUERY_K}, got {value}")
    return value


def _kind(value: str) -> str:
    if value not in tuple(Kind):
        raise ValueError(f"must be one of {', '.join(Kind)}, got {value[:40]!r}")
    return value


def parse_time(value: str | int | float) -> float:
    """Seconds since the epoch from a number or an ISO 8601 date/time (local time when no zone)."""
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be a time after 1970, got {value!r}")
        return float(value)
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"must be seconds since the epoch or an ISO date such as 2026-01-31 or "
                         f"2026-01-31T08:00, got {value[:40]!r}") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.timestamp()


# -- paths and roots ------------------------------------------------------------------------------

def watched_roots(context: ServiceContext) -> list[Path]:
    return [Path(os.path.realpath(p)) for p in context.config.watch.paths]


def resolve(raw: str, code: str) -> Path:
    """`raw` with `..` and symbolic links resolved; CommandError(`code`) when a link on the way
    cannot be read (realpath raises for /proc/1/cwd and the like: a client's error, not ours)."""
    try:
        return Path(os.path.realpath(raw))
    except OSError as exc:
        raise CommandError(code, f"cannot resolve {raw[:200]!r}: {exc.strerror or exc}") from None


def inside_roots(context: ServiceContext, raw: str) -> Path:
    """The resolved path, when it lies inside a watched root; CommandError(outside-roots) if not.

    Resolving first means `..` and symlinks cannot lead out of a root; a path that cannot be
    resolved cannot be shown to be inside one.
    """
    resolved = resolve(raw, E_OUTSIDE_ROOTS)
    roots = watched_roots(context)
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        shown = ", ".join(str(r) for r in roots) or "none configured"
        raise CommandError(E_OUTSIDE_ROOTS, f"{resolved} is not inside a watched folder "
                                            f"(watched: {shown})")
    return resolved


def open_descriptor(fd: int, name: str) -> hashing.OpenFile:
    """The client's file, to be read through (a duplicate of) its own descriptor.

    Only a descriptor opened for reading is taken. One opened with O_PATH (or write-only) proves
    nothing about the client's right to read the file: reading it with the daemon's rights would
    make the daemon a confused deputy, telling a caller about a file it may not read.
    """
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        st = os.fstat(fd)
    except OSError as exc:
        raise CommandError(E_UNREADABLE, f"the passed descriptor is not usable: {exc}") from None
    if flags & os.O_PATH or (flags & os.O_ACCMODE) not in (os.O_RDONLY, os.O_RDWR):
        raise CommandError(E_UNREADABLE, "the passed descriptor is not open for reading (opened "
                                         "with O_PATH or write-only); pass one opened to read")
    if not stat.S_ISREG(st.st_mode):
        raise CommandError(E_BAD_ARGS, "the passed descriptor is not a regular file")
    return hashing.OpenFile(os.dup(fd), st, name)


def open_inside_roots(context: ServiceContext, raw: str) -> hashing.OpenFile:
    """A file inside the watched roots, opened once (a FIFO or symlink swapped in after the roots
    check is refused, never opened by name again)."""
    target = inside_roots(context, raw)
    try:
        return hashing.open_regular(target)
    except FileNotFoundError:
        raise CommandError(E_NOT_FOUND, f"{target} does not exist") from None
    except hashing.NotRegularFile as exc:
        raise CommandError(E_NOT_FOUND, f"{target} is not a file: {exc.reason}") from None
    except OSError as exc:
        raise CommandError(E_UNREADABLE, f"cannot open {target}: {exc.strerror or exc}") from None


# -- duplicate groups -----------------------------------------------------------------------------

def duplicate_groups(catalog: Catalog, *, since: float | None = None, kind: str | None = None,
                     min_score: float | None = None, path_prefix: str | None = None
                     ) -> Iterator[dict[str, Any]]:
    """Groups of duplicate files, largest waste first, one dict per group, built lazily.

    Only the pair list and one (size, path count) per content are held in memory while grouping;
    members' paths, durations and resolutions are read GROUP_BATCH groups at a time as they are
    sent. A content stored at several paths is an exact duplicate of itself even without a pair.
    Waste is what deleting all but the largest copy would free.
    """
    pairs = [Pair(d.hash_a, d.hash_b, d.score, d.kind) for d in catalog.duplicates(
        since=since, kind=kind, min_score=min_score, path_prefix=path_prefix)]
    groups = [list(g) for g in group_components(pairs, catalog.rejected_pairs())]
    best: dict[tuple[str, str], Pair] = {}
    for p in pairs:
        best[(p.a, p.b)] = p
    del pairs
    grouped = {h for g in groups for h in g}
    if kind in (None, "exact") and (min_score is None or min_score <= 1.0):
        groups += [[h] for h in catalog.aliased_contents(since, path_prefix) if h not in grouped]
    del grouped
    stats = catalog.sizes_and_path_counts(sorted({h for g in groups for h in g}))

    def waste(group: list[str]) -> int:
        sizes: list[int] = []
        for h in group:
            size, files = stats.get(h, (0, 1))
            sizes += [size] * max(files, 1)
        return reclaimable(sizes)

    ranked = sorted(((waste(g), g) for g in groups), key=lambda wg: (-wg[0], wg[1]))
    del groups, stats
    for i in range(0, len(ranked), GROUP_BATCH):
        batch = ranked[i:i + GROUP_BATCH]
        contents, paths = _members(catalog, [h for _, g in batch for h in g])
        for group_waste, group in batch:
            item = _group_item(group, best, contents, paths)
            if item is not None:
                item["waste"] = group_waste
                yield item


GROUP_BATCH = 256
"""Groups whose members are read with one query: few round trips, bounded memory."""


def _members(catalog: Catalog, hashes: list[str]
             ) -> tuple[dict[str, tuple[Any, ...]], dict[str, list[str]]]:
    """(size, duration, width, height, first_seen) and sorted paths of each content."""
    contents = {h: (c.size, c.duration, c.width, c.height, c.first_seen)
                for h, c in catalog.contents(hashes).items()}
    return contents, catalog.paths_for_hashes(hashes)


def _group_item(group: list[str], best: dict[tuple[str, str], Pair],
                contents: dict[str, tuple[Any, ...]], all_paths: dict[str, list[str]]
                ) -> dict[str, Any] | None:
    members: list[dict[str, Any]] = []
    kinds: set[str] = set()
    scores: list[float] = []
    first_seen: float | None = None
    for h in group:
        size, duration, width, height, seen = contents.get(h, (None,) * 5)
        paths = all_paths.get(h, [])
        links = [p for other in group if other != h
                 for p in [best.get((h, other) if h < other else (other, h))] if p is not None]
        score = max((p.score for p in links), default=1.0)
        kind = max(links, key=lambda p: p.score).kind if links else "exact"
        kinds.update(p.kind for p in links)
        scores += [p.score for p in links]
        if len(paths) > 1:
            kinds.add("exact")
            scores.append(1.0)
        for path in paths:
            members.append({"path": path, "hash": h, "size": size, "duration": duration,
                            "width": width, "height": height, "score": score, "kind": kind})
        if seen is not None:
            first_seen = max(first_seen or 0.0, seen)
    if len(members) < 2:
        return None  # files deleted since: nothing left to show as a group
    members.sort(key=lambda m: (-(m["size"] or 0), m["path"]))
    # The verified pairs inside the group, by content: who was matched with whom, so that an
    # action removes a member only for a keeper it was itself matched with (never through a chain).
    ordered = sorted(group)
    links_json = [{"a": p.a, "b": p.b, "score": p.score, "kind": p.kind}
                  for i, a in enumerate(ordered) for b in ordered[i + 1:]
                  for p in [best.get((a, b)) or best.get((b, a))] if p is not None]
    return {
        "kind": next(k for k in ("partial", "near", "exact") if k in kinds) if kinds else "exact",
        "min_score": min(scores, default=1.0),
        "first_seen": first_seen,
        "members": members,
        "pairs": links_json,
    }


# -- commands -------------------------------------------------------------------------------------

def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def cmd_status(context: ServiceContext, args: dict[str, Any], request: Request) -> dict[str, Any]:
    counts = context.catalog.counts()
    index = dict(context.index_info())
    return {
        "version": vfpd.__version__,
        "pid": os.getpid(),
        "started_at": context.started_at,
        "uptime_s": round(max(0.0, time.time() - context.started_at), 3),
        "paused": context.paused(),
        "health": context.health(),
        "roots": [{"path": r.path, "mode": r.mode, "reason": r.reason} for r in context.roots()],
        # The catalog's queued jobs include those in flight (a job leaves the queue only with
        # its result), so this is the queue length without asking the daemon a second time.
        "queue": counts.jobs_queued,
        "queue_eta_s": _rounded(context.drain_eta(counts.jobs_queued)),
        "files": counts.files,
        "hashes": counts.contents,
        "fingerprints": counts.fingerprints,
        "duplicates": counts.duplicates,
        "failed": counts.jobs_failed,
        "notify_backlog": counts.outbox_pending,
        "index": index,
        "model_version": index.get("model_version"),
        "last_retrain": context.last_retrain(),
    }




def cmd_duplicates(context: ServiceContext, args: dict[str, Any], request: Request
                   ) -> Iterator[dict[str, Any]]:
    prefix = args["path"]
    if prefix is not None:
        prefix = str(resolve(prefix, E_BAD_ARGS))
    return duplicate_groups(context.catalog, since=args["since"], kind=args["kind"],
                            min_score=args["min_score"], path_prefix=prefix)


def cmd_query(context: ServiceContext, args: dict[str, Any], request: Request) -> dict[str, Any]:
    if request.fd is not None:
        if args["path"] is not None:
            raise CommandError(E_BAD_ARGS, "query: give a path or pass a descriptor, not both")
        opened = open_descriptor(request.fd, args["name"] or "(passed file)")
    elif args["path"] is not None:
        opened = open_inside_roots(context, args["path"])
    else:
        raise CommandError(E_BAD_ARGS, "query: give a path inside a watched folder, or pass the "
                                       "open file with SCM_RIGHTS (vfpctl does)")
    with opened:
        try:
            matches = context.query(opened, args["k"], request.should_stop)
        except (OSError, ValueError) as exc:
            raise CommandError(E_UNREADABLE, f"cannot fingerprint {opened.path}: {exc}") from None
    shown = opened.path
    own = _own_path(request.fd) if request.fd is not None else shown
    matches = [m for m in (_without_path(m, own) for m in matches) if m is not None]
    return {"file": shown, "k": args["k"], "matches": matches}


def _own_path(fd: int) -> str | None:
    """Where the passed file lives as the daemon sees it (the magic link's target)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _without_path(match: Any, own: str | None) -> Any:
    """A queried file that is itself in the library is not its own neighbour."""
    if own is None or not isinstance(match, dict) or not isinstance(match.get("paths"), list):
        return match
    paths = [p for p in match["paths"] if p != own]
    if not paths:
        return None
    if len(paths) == len(match["paths"]):
        return match
    return {**match, "paths": paths, **({"path": paths[0]} if "path" in match else {})}


def cmd_rescan(context: ServiceContext, args: dict[str, Any], request: Request) -> dict[str, Any]:
    path = inside_roots(context, args["path"]) if args["path"] is not None else None
    return {"path": str(path) if path else None, "queued": context.rescan(path)}


def cmd_pause(context: ServiceContext, args: dict[str, Any], request: Request) -> dict[str, Any]:
    context.pause()
    return {"paused": context.paused()}


def cmd_resume(context: ServiceContext, args: dict[str, Any], request: Request) -> dict[str, Any]:
    context.resume()
    return {"paused": context.paused()}


def cmd_failures(context: ServiceContext, args: dict[str, Any], request: Request
                 ) -> Iterator[dict[str, Any]]:
    return ({"path": j.path, "reason": j.last_error, "attempts": j.attempts, "job": j.reason}
            for j in context.catalog.iter_jobs(JobState.FAILED))


def cmd_retry(context: ServiceContext, args: dict[str, Any], request: Request) -> dict[str, Any]:
    path = inside_roots(context, args["path"])
    if not context.retry(path):
        raise CommandError(E_NOT_FOUND, f"{path} is not a failed file (see vfpctl failures)")
    return {"path": str(path), "queued": True}


def _verdict(verdict: str) -> Callable[[ServiceContext, dict[str, Any], Request], Any]:
    def run(context: ServiceContext, args: dict[str, Any], request: Request) -> dict[str, Any]:
        a = inside_roots(context, args["a"])
        b = inside_roots(context, args["b"])
        if a == b:
            raise CommandError(E_BAD_ARGS, "a verdict needs two different files")
        try:
            return context.set_verdict(a, b, verdict)
        except KeyError as exc:
            raise CommandError(E_NOT_FOUND, f"not in the catalog: {exc.args[0]}") from None
        except ValueError as exc:
            raise CommandError(E_BAD_ARGS, str(exc)) from None
    return run


def _retrainer(context: ServiceContext) -> Any:
    r = getattr(context, "retrainer", None)
    if r is None:
        raise CommandError(E_NOT_FOUND, "this daemon does not retrain")
    return r


def cmd_retrain(context: ServiceContext, args: dict[str, Any], request: Request
                ) -> dict[str, Any]:
    from vfpd.service.retrainer import Busy

    r = _retrainer(context)
    action = args["action"]
    if action == "start":
        try:
            r.start("manual")
        except Busy as exc:
            raise CommandError(E_BUSY, str(exc)) from None
    elif action == "cancel" and not r.cancel():
        raise CommandError(E_NOT_FOUND, "no retrain is running")
    return {**r.status(), "model_version": context.index_info().get("model_version")}


def cmd_models(context: ServiceContext, args: dict[str, Any], request: Request
               ) -> dict[str, Any]:
    r = _retrainer(context)
    return {"model_version": context.index_info().get("model_version"),
            "versions": r.models.listing()}


def cmd_model_use(context: ServiceContext, args: dict[str, Any], request: Request
                  ) -> dict[str, Any]:
    from vfpd.service.retrainer import Busy

    r = _retrainer(context)
    try:
        r.use(args["version"])
    except KeyError:
        raise CommandError(E_NOT_FOUND, f"no single model version starts with "
                                        f"{args['version']!r} (see vfpctl model list)") from None
    except Busy as exc:
        raise CommandError(E_BUSY, str(exc)) from None
    return r.status()


def _action(value: str) -> str:
    if value not in ("start", "cancel", "status"):
        raise ValueError(f"must be start, cancel or status, got {value[:40]!r}")
    return value


def _version(value: str) -> str:
    if not (4 <= len(value) <= 64 and all(c in "0123456789abcdef" for c in value)):
        raise ValueError("must be 4 to 64 hex digits (a version from vfpctl model list)")
    return value


def _path(name: str, required: bool = False) -> Param:
    return Param(name, (str,), required=required, check=_absolute_path)


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("status", cmd_status, summary="what the daemon is doing and knows"),
    Command("duplicates", cmd_duplicates, streams=True, params=(
        Param("since", (str, int, float), check=parse_time),
        Param("kind", (str,), check=_kind),
        Param("min_score", (int, float), check=_score),
        _path("path"),
    ), summary="duplicate groups, largest waste first"),
    Command("query", cmd_query, params=(
        _path("path"),
        Param("name", (str,), check=lambda v: v[:MAX_PATH_CHARS]),
        Param("k", (int,), default=DEFAULT_QUERY_K, check=_k),
    ), summary="nearest videos to a file"),
    Command("rescan", cmd_rescan, params=(_path("path"),), summary="reconcile a folder or all"),
    Command("pause", cmd_pause, summary="stop taking new jobs"),
    Command("resume", cmd_resume, summary="take jobs again"),
    Command("failures", cmd_failures, streams=True, summary="files that could not be read"),
    Command("retry", cmd_retry, params=(_path("path", True),), summary="queue a failed file"),
    Command("ignore", _verdict("not-a-duplicate"), params=(_path("a", True), _path("b", True)),
            summary="mark a pair as not a duplicate"),
    Command("confirm", _verdict("confirmed"), params=(_path("a", True), _path("b", True)),
            summary="mark a pair as a duplicate"),
    Command("retrain", cmd_retrain, params=(Param("action", (str,), default="start",
                                                  check=_action),),
            summary="start, cancel or show retraining"),
    Command("models", cmd_models, summary="model versions with their gate scores"),
    Command("model_use", cmd_model_use, params=(Param("version", (str,), required=True,
                                                      check=_version),),
            summary="serve another model version (re-embedded in the background)"),
)}
