"""`vfpctl scan DIR...`: find every copy of the same footage in folders, optionally act on it.

Exit codes (docs/scan.md): 0 the scan ran and every file was read (and every planned action
done); 1 it ran but some files could not be used or some actions failed (see "errors");
2 bad usage; 3 the scan could not run at all (model, cache or output problem).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from vfpd import planning
from vfpd.cli import acting
from vfpd.cli.text import human_size, shell_quoted
from vfpd.files import DEFAULT_EXCLUDE, VIDEO_EXTENSIONS, FileRules
from vfpd.grouping import Pair
from vfpd.matching import PARTIAL
from vfpd.presets import ACCURATE, FAST, PRESETS, decoding_for
from vfpd.report import (
    MAYBE_BAND,
    MemberFacts,
    check_target,
    review_groups,
    write_report,
)
from vfpd.scan import (
    CLUSTER_METHODS,
    ScanResult,
    ScanSettings,
    default_cache_dir,
    scan,
)
from vfpd.thumbs import frame_rates

EXIT_OK = 0
EXIT_FILE_ERRORS = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
JSON_FORMAT_VERSION = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "scan", help="find duplicate videos in folders (no daemon needed)",
        description="Find every copy of the same footage in the given folders: byte-identical, "
                    "re-encoded, resized, cropped, trimmed, or a clip cut from a longer video.")
    p.add_argument("roots", nargs="+", metavar="DIR", help="folders (or files) to scan")
    p.add_argument("--threshold", type=float, default=None,
                   help="report pairs scoring at least this, 0..1 "
                        f"(default {ACCURATE.threshold}, with --fast {FAST.threshold}: the share "
                        "of the overlapping footage that must match)")
    p.add_argument("--fast", action="store_true",
                   help=f"trade recall for speed: decode {FAST.summary}. On the accuracy "
                        "benchmark: 7-10x less decoding of files with keyframes 10 s apart, "
                        "recall 0.83 instead of 0.99 at precision 0.99; threshold "
                        f"{FAST.threshold}. Fingerprints are cached apart from the default ones "
                        "(docs/scan.md)")
    p.add_argument("--output", metavar="FILE", help="also write the JSON result to FILE")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of text")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the model runs (default: CUDA when present)")
    p.add_argument("--extensions", nargs="+", metavar="EXT", default=list(VIDEO_EXTENSIONS),
                   help="file name endings to scan (default: common video containers, the "
                        "daemon's list)")
    p.add_argument("--exclude", nargs="+", metavar="GLOB", default=list(DEFAULT_EXCLUDE),
                   help="skip paths matching these globs, as the daemon's [watch] exclude "
                        "(default: hidden files and folders; recycle bins and snapshots are "
                        "always skipped, symbolic links never followed)")
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1),
                   help="decoding processes (default: one per CPU)")
    p.add_argument("--cluster", choices=CLUSTER_METHODS, default="components",
                   help="grouping: guarded connected components (default) or DBSCAN "
                        "(needs the 'cluster' extra: scikit-learn)")
    acting.add_arguments(p, "oldest for --action, best for the --report suggestions")
    p.add_argument("--report", metavar="DIR",
                   help="also write a review page (DIR/index.html with thumbnails) whose "
                        "decisions `vfpctl apply` carries out (docs/report.md)")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache", metavar="DIR",
                       help=f"where hashes and fingerprints are kept (default {default_cache_dir()})")
    cache.add_argument("--no-cache", action="store_true", help="do not read or write a cache")
    p.set_defaults(func=run)


def _usage_error(message: str) -> int:
    print(f"vfpctl scan: error: {message}", file=sys.stderr)
    return EXIT_USAGE


class _Bars:
    """tqdm progress bars on stderr, one per stage (vfpd.scan.Progress), moving file by file;
    silent when stderr is not a terminal."""

    def __init__(self) -> None:
        self._bars: list[object] = []

    def __call__(self, stage: str, total: int | None) -> Callable[[int], None]:
        from tqdm import tqdm

        for bar in self._bars:  # the stage before is over
            bar.close()  # type: ignore[attr-defined]
        bar = tqdm(total=total, desc=stage, unit="file",
                   file=sys.stderr, disable=None, leave=False)
        self._bars.append(bar)
        return bar.update

    def close(self) -> None:
        for bar in self._bars:
            bar.close()  # type: ignore[attr-defined]


def _validate(args: argparse.Namespace) -> str | None:
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        return f"--threshold must be between 0 and 1, not {args.threshold}"
    if args.workers < 1:
        return "--workers must be at least 1"
    for root in args.roots:
        if not os.path.exists(root):
            return f"{root}: no such file or folder"
    problem = acting.check(args)
    if problem:
        return problem
    if args.report:
        if os.path.exists(args.report) and not os.path.isdir(args.report):
            return f"--report {args.report}: exists and is not a folder"
        try:
            check_target(Path(args.report))
        except OSError as e:
            return f"--report: {e}"
    if args.output:
        parent = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(parent):
            return f"--output: the folder {parent} does not exist"
    if args.cluster == "dbscan":
        try:
            import sklearn.cluster  # noqa: F401
        except ImportError:
            return "--cluster dbscan needs scikit-learn: pip install 'vfpd[cluster]'"
    return None


def result_json(result: ScanResult, action_report: dict[str, object] | None) -> dict[str, object]:
    files = {f.path: f for f in result.files}
    return {
        "format": JSON_FORMAT_VERSION,
        "threshold": result.settings.threshold,
        "default_threshold": PRESETS[result.settings.preset].threshold,
        "preset": result.settings.preset,
        "model_version": result.model_version,
        "roots": [os.path.abspath(r) for r in result.settings.roots],
        "groups": result.groups,
        "pairs": [{"a": p.a, "b": p.b, "score": p.score, "kind": p.kind,
                   "segments": [s.to_json() for s in p.segments]} for p in result.pairs],
        "errors": [{"path": e.path, "reason": e.reason, "kind": e.kind} for e in result.errors],
        "files": [{"path": f.path, "size": f.stat.size, "duration": f.duration,
                   "width": f.width, "height": f.height, "codec": f.codec, "hash": f.hash,
                   "hardlinks": f.aliases} for f in sorted(files.values(), key=lambda f: f.path)],
        "summary": {
            "files": len(result.files), "errors": len(result.errors),
            "groups": len(result.groups),
            "duplicate_files": sum(len(g) - 1 for g in result.groups),
            "reclaimable_bytes": sum(_waste(g, result) for g in result.groups),
            "fingerprinted": result.fingerprinted, "from_cache": result.cached,
            "seconds": round(result.seconds, 3),
        },
        "actions": action_report,
    }


def _waste(group: Sequence[str], result: ScanResult) -> int:
    sizes = {f.path: f.stat.size for f in result.files}
    s = [sizes[p] for p in group]
    return sum(s) - max(s)


def print_text(result: ScanResult) -> None:
    files = {f.path: f for f in result.files}
    best: dict[tuple[str, str], Pair] = {}
    for p in result.pairs:
        best.setdefault((p.a, p.b), p)
        best.setdefault((p.b, p.a), p)
    total = sum(_waste(g, result) for g in result.groups)
    print(f"{len(result.groups)} group(s) of duplicates, {human_size(total)} reclaimable, among "
          f"{len(result.files)} file(s) scanned in {result.seconds:.1f} s"
          + (f"; {len(result.errors)} file(s) could not be used" if result.errors else "") + ".")
    for n, g in enumerate(result.groups, 1):
        print(f"\nGroup {n}: {len(g)} files, {human_size(_waste(g, result))} reclaimable")
        ordered = sorted(g, key=lambda p: -files[p].stat.size)
        for i, path in enumerate(ordered):
            f = files[path]
            res = f"{f.width}x{f.height}" if f.width else "?"
            dur = f"{f.duration:.1f} s" if f.duration is not None else "?"
            line = (f"  {res:>10} {dur:>9} {human_size(f.stat.size):>9}  "
                    f"{shell_quoted(path)}")
            links = [best[(path, o)] for o in ordered[:i] if (path, o) in best]
            if links:
                p = max(links, key=lambda p: p.score)
                line += f"   [{p.score:.2f} {p.kind}"
                if p.kind == PARTIAL and p.segments:
                    s = p.segments[0]
                    mine, other = ((s.a_start, s.a_end), p.b) if p.a == path else \
                        ((s.b_start, s.b_end), p.a)
                    theirs = (s.b_start, s.b_end) if p.a == path else (s.a_start, s.a_end)
                    line += (f": {mine[0]:.1f}-{mine[1]:.1f} s here = {theirs[0]:.1f}-"
                             f"{theirs[1]:.1f} s of {shell_quoted(os.path.basename(other))}")
                line += "]"
            print(line)
    if result.errors:
        print("\nCould not use:")
        for e in result.errors:
            print(f"  {shell_quoted(e.path)}: {e.reason}")


def _write_report(args: argparse.Namespace, result: ScanResult,
                  maybe: list[Pair]) -> bool:
    facts = {f.path: MemberFacts(f.path, f.hash, f.stat.size, f.stat.mtime_ns / 1e9, f.duration,
                                 f.width, f.height, f.codec) for f in result.files}
    cards = review_groups(result.groups, result.pairs, maybe, facts)
    try:
        stats = write_report(args.report, cards, source="scan",
                             threshold=result.settings.threshold,
                             roots=[os.path.abspath(r) for r in result.settings.roots],
                             keep_policy=args.keep or "best", workers=args.workers)
    except OSError as e:
        print(f"vfpctl scan: error: cannot write the report to {args.report}: {e}",
              file=sys.stderr)
        return False
    for problem in stats.thumb_errors:
        print(f"vfpctl scan: warning: thumbnails: {problem}", file=sys.stderr)
    if not args.json:
        print(f"\nReview page: {stats.path} ({stats.cards} cards, {stats.thumbs} thumbnails, "
              f"{human_size(stats.bytes)}); apply its decisions with `vfpctl apply FILE.json`")
    return True


def _facts(result: ScanResult, keep: str) -> list[planning.FileFacts]:
    """What the plan needs of each file; for --keep best also the frame rate of grouped files."""
    fps = frame_rates({p for g in result.groups for p in g}) if keep == "best" else {}
    return [planning.FileFacts(f.path, f.stat.size, f.stat.mtime_ns, f.width, f.height, f.hash,
                              f.stat.device, f.stat.inode, duration=f.duration,
                              bit_rate=int(f.stat.size * 8 / f.duration) if f.duration else None,
                              fps=fps.get(f.path))
            for f in result.files]


def _act(args: argparse.Namespace, result: ScanResult) -> tuple[dict[str, object] | None, bool]:
    """Plan (and with --apply carry out) the action; returns (report, all went well)."""
    if args.action_spec.op == planning.Op.REPORT:
        return None, True
    facts = _facts(result, args.keep or "oldest")
    by_path = {f.path: f for f in facts}
    groups = [[by_path[p] for p in g] for g in result.groups]
    # Only pairs verified at the threshold in use count: a group joined through a chain never
    # removes a member for a keeper it was not itself matched with.
    direct = {frozenset((p.a, p.b)) for p in result.pairs if p.score >= result.settings.threshold}
    return acting.act(args, facts, groups, direct, result.settings.roots, "scan")


def run(args: argparse.Namespace) -> int:
    problem = _validate(args)
    if problem:
        return _usage_error(problem)
    preset = FAST if args.fast else ACCURATE
    threshold = preset.threshold if args.threshold is None else args.threshold
    settings = ScanSettings(roots=tuple(args.roots),
                            rules=FileRules.of(args.extensions, args.exclude),
                            threshold=threshold, cluster=args.cluster, workers=args.workers,
                            match=preset.match, sampling=preset.sampling, preset=preset.name)
    catalog = None
    if not args.no_cache:
        from vfpd.catalog import Catalog, CatalogError

        cache = Path(args.cache) if args.cache else default_cache_dir()
        try:
            catalog = Catalog(cache / "catalog.sqlite")
        except (CatalogError, OSError) as e:
            print(f"vfpctl scan: warning: cache not usable, scanning without it: {e}",
                  file=sys.stderr)
    bars = _Bars()
    from vfpd.chain import pool_decoder
    from vfpd.model.embed import Embedder
    from vfpd.model.version import WeightsError

    decoder = None
    try:
        embedder = Embedder(device=args.device, version_suffix=preset.version_suffix)
        settings = replace(settings, sampling=decoding_for(settings.sampling, embedder.device.type))
        decoder = pool_decoder(args.workers, settings.sampling)
        # With --report the scan also keeps the pairs just below the threshold, shown as "maybe".
        if args.report:
            settings = replace(settings, maybe_band=MAYBE_BAND)
        result = scan(settings, embedder, decoder, catalog, bars)
    except (RuntimeError, OSError, ValueError, WeightsError) as e:
        print(f"vfpctl scan: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if decoder is not None:
            decoder.close()
        bars.close()
        if catalog is not None:
            catalog.close()
    if not args.json:
        print_text(result)
    report, actions_ok = _act(args, result)
    if args.report and not _write_report(args, result, result.maybe):
        return EXIT_FAILED
    doc = result_json(result, report)
    text = json.dumps(doc, indent=1, ensure_ascii=True)
    if args.json:
        print(text)
    if args.output:
        from vfpd.atomic import write_text

        try:
            write_text(args.output, text + "\n")
        except OSError as e:
            print(f"vfpctl scan: error: cannot write {args.output}: {e.strerror}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK if not result.errors and actions_ok else EXIT_FILE_ERRORS
