"""The ``ntkcheck`` command line.

Usage::

    ntkcheck                                  # version, and the latest report under ./reports
    ntkcheck --version
    ntkcheck list                             # stored runs
    ntkcheck watch [RUN] [--once]             # progress of a run that is still going
    ntkcheck report RUN [RUN ...] -o out.html [--save DIR]   # re-render, or merge runs
    ntkcheck compare A B [--fail-on verdict|slope=X|extrapolated=F] [--csv FILE]
    ntkcheck export RUN [RUN ...] --format csv|parquet -o DIR

A RUN is a run folder, a run's ``report.html``, a run id under the reports folder
(``--reports DIR``, default ``./reports``) or ``latest``; a folder of run folders (e.g. one
Slurm job's shards) stands for all the runs in it, merged. Exit status: 0 success; 1 when
``compare`` finds a regression; 2 for a usage error or a run that cannot be read (a damaged
file: the message names the file and the field); 6
(:data:`ntkcheck.runs.files.ENVIRONMENT_EXIT`) when a file cannot be written (disk full, the
folder gone).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ntkcheck import __version__

REPORTS = Path("reports")


def latest_report(reports: Path) -> Path | None:
    """The ``report.html`` of the latest run under ``reports``, or None if there is none."""
    latest = reports / "latest"
    if (latest / "RUN").is_file():  # pointer file where symlinks are unavailable
        latest = reports / (latest / "RUN").read_text(encoding="utf-8").strip()
    report = latest / "report.html"
    return report.resolve() if report.is_file() else None


def _show_latest(reports: Path) -> int:
    print(f"ntkcheck {__version__}")
    report = latest_report(reports)
    if report is None:
        print(f"no report under {reports}/ yet: run `pytest claims/ -n auto` first")
        return 0
    meta_path = report.parent / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    except (OSError, ValueError):
        meta = {}
    if not isinstance(meta, dict):  # a damaged meta.json: `ntkcheck list` says what is wrong
        meta = {}
    print(f"latest report: {report}")
    if meta:
        print(f"  run {meta.get('run_id')} profile {meta.get('profile')} "
              f"finished {meta.get('finished')} ({meta.get('n_records')} records)")
    return 0


def _load(args: argparse.Namespace, names: Sequence[str]):
    from ntkcheck.runs.store import load_run, merge_runs, resolve_runs

    runs = [load_run(p) for p in resolve_runs(names, args.reports)]
    return merge_runs(runs), runs


def _warn_merge(run, runs) -> None:
    meta = run.meta
    if len(runs) > 1:
        print(f"merged {len(runs)} runs: {len(run.records)} records"
              + (f" ({meta['duplicates_dropped']} duplicates dropped)"
                 if meta.get("duplicates_dropped") else ""))
    for why in meta.get("incomplete") or []:
        print(f"warning: incomplete run: {why}", file=sys.stderr)
    for note in meta.get("shard_notes") or []:
        print(f"note: {note}", file=sys.stderr)
    if meta.get("shards_missing"):
        print(f"warning: shard(s) {', '.join(meta['shards_missing'])} missing from the merge",
              file=sys.stderr)


def _cmd_report(args: argparse.Namespace) -> int:
    from ntkcheck.report import render_report
    from ntkcheck.runs.store import write_run

    if args.output is None and args.save is None:
        print("ntkcheck report: give -o OUT.html (the report) and/or --save DIR (a run folder)",
              file=sys.stderr)
        return 2
    run, runs = _load(args, args.runs)
    _warn_merge(run, runs)
    if args.save is not None:
        print(f"run folder: {write_run(run, args.save)}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        wv, av = run.verdicts()
        path = render_report(run.records, wv, av, run.claims, run.meta, args.output)
        print(f"report: {path} ({path.stat().st_size / 1024:.0f} KiB)")
    from ntkcheck.runs.outcomes import headline

    print(headline(run.claims))
    return 0


def _fmt(x: float, spec: str = "+.3f") -> str:
    return "-" if not math.isfinite(x) else format(x, spec)


def _width(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.0f}" if x < 1e6 else f"{x:.2g}"


def _cmd_compare(args: argparse.Namespace) -> int:
    from ntkcheck.runs.compare import compare_runs, parse_fail_on, sweep_differences

    try:
        fail_on = parse_fail_on(args.fail_on)
    except ValueError as exc:
        print(f"ntkcheck compare: {exc}", file=sys.stderr)
        return 2
    (a, _), (b, _) = _load(args, [args.a]), _load(args, [args.b])
    cmp = compare_runs(a, b)
    print(f"A: {a.run_id}   B: {b.run_id}")
    differ = sweep_differences(a, b)
    if differ:
        print(f"ntkcheck compare: warning: the runs' sweeps differ ({'; '.join(differ)}); a "
              "verdict at the widest width may compare different widths", file=sys.stderr)
    print("claims:")
    for r in cmp.claims.itertuples():
        print(f"  {r.claim_id:30} {r.status_a:>6} -> {r.status_b}"
              + ("" if r.change else "  (unchanged)"))
    if len(cmp.archs):
        print("per architecture (slope and extrapolated width, A -> B):")
        for r in cmp.archs.itertuples():
            print(f"  {r.claim_id:24} {r.arch_id:30} {r.verdict_a:>6} -> {r.verdict_b:<6} "
                  f"slope {_fmt(r.slope_a)} -> {_fmt(r.slope_b)} ({_fmt(r.slope_change)})  "
                  f"extrapolated {_width(r.extrapolated_a)} -> {_width(r.extrapolated_b)}"
                  + (f"  [{r.change}]" if r.change else ""))
    if args.csv is not None:
        cmp.archs.merge(cmp.claims, on="claim_id", how="outer").to_csv(args.csv, index=False)
        print(f"comparison table: {args.csv}")
    failures = cmp.failures(fail_on)
    if failures:
        print(f"FAIL: {len(failures)} regression(s) from A to B:")
        for line in failures:
            print(f"  {line}")
        return 1
    print("OK: no regression from A to B")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    import warnings

    from ntkcheck.runs.store import RunSkippedWarning, list_runs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RunSkippedWarning)
        table = list_runs(args.reports)
    for w in caught:
        if issubclass(w.category, RunSkippedWarning):
            print(f"ntkcheck list: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if table.empty:
        print(f"no runs under {args.reports}/ (run `pytest claims/ -n auto` first)")
        return 0
    shown = table.assign(run_id=[("* " if latest else "  ") + rid for rid, latest
                                 in zip(table["run_id"], table["latest"])])
    shown = shown.drop(columns="latest").rename(columns={"run_id": "  run_id"})
    with pd.option_context("display.width", 200, "display.max_colwidth", 40):
        print(shown.to_string(index=False))
    print(f"{len(table)} run(s) under {args.reports}/; * = latest")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ntkcheck.runs.export import check_format, export_tables

    check_format(args.format)  # before reading runs: a missing pyarrow is said at once
    run, runs = _load(args, args.runs)
    _warn_merge(run, runs)
    for path in export_tables(run, args.output, args.format):
        print(path)
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from ntkcheck.runs.progress import watch
    from ntkcheck.runs.store import RunError

    run = Path(args.run)
    if not run.is_dir():
        run = Path(args.reports) / args.run
    if not run.is_dir():
        raise RunError(f"{args.run!r} is not a run folder or a run id under {args.reports}")
    if not args.interval > 0:
        raise RunError(f"--interval must be a positive number of seconds, got {args.interval}")
    try:
        return watch(run.resolve(), interval=args.interval, once=args.once)
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands ``report``, ``compare``, ``list``, ``export``)."""
    parser = argparse.ArgumentParser(
        prog="ntkcheck",
        description="Check NTK theory against real networks. Run claims with "
                    "`pytest claims/ -n auto`; without a command this shows where the latest "
                    "report is.",
        epilog="RUN: a run folder, a report.html, a run id under --reports, 'latest', or a "
               "folder of run folders (all its runs, merged).",
    )
    parser.add_argument("--version", action="version", version=f"ntkcheck {__version__}")
    parser.add_argument("--reports", type=Path, default=REPORTS, metavar="DIR",
                        help="folder of run reports (default: ./reports)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--reports", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                        help="folder of run reports (default: ./reports)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("report", parents=[common],
                       help="re-render a run's report, or merge several runs into one",
                       description="Re-render one run, or merge several (shards, machines): "
                                   "records are concatenated, validated and de-duplicated on "
                                   "(claim_id, arch_id, width, seed); verdicts are recomputed.")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("-o", "--output", type=Path, help="the HTML report to write")
    p.add_argument("--save", type=Path, metavar="DIR",
                   help="also write the (merged) run as a run folder, for compare and export")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("compare", parents=[common],
                       help="changes in verdict, slope and extrapolated width from A to B",
                       description="Per claim and architecture, the change in verdict, fitted "
                                   "slope and extrapolated width from run A to run B. Exits 1 "
                                   "on a regression (see --fail-on), else 0.")
    p.add_argument("a", metavar="A", help="the run before (RUN)")
    p.add_argument("b", metavar="B", help="the run after (RUN)")
    p.add_argument("--fail-on", action="append", metavar="WHAT",
                   help="when to exit 1; repeatable: 'verdict' (the default: a claim that "
                        "holds in A fails in B), 'slope=X' (a fitted slope moved by more than "
                        "X), 'extrapolated=F' (an extrapolated width grew more than F-fold), "
                        "'none'. Given values replace the default.")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the comparison as CSV")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("list", parents=[common], help="stored runs",
                       description="Stored runs: date, profile, device, commit, number of "
                                   "records, claims passed and failed, and whether the run is "
                                   "complete (a crashed run is listed with what is missing; "
                                   "a damaged one is skipped with a warning).")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("watch", parents=[common],
                       help="print a running run's progress until it finishes",
                       description="Progress of a run that is still going (in another "
                                   "terminal, or on a cluster node writing to a shared "
                                   "folder): units measured of those expected, elapsed time "
                                   "and about how long is left, read from the run folder.")
    p.add_argument("run", metavar="RUN", nargs="?", default="latest",
                   help="a run folder, a run id under --reports, or 'latest' (the default)")
    p.add_argument("--interval", type=float, default=10.0, metavar="S",
                   help="seconds between checks (default 10)")
    p.add_argument("--once", action="store_true", help="print one line and exit")
    p.set_defaults(func=_cmd_watch)

    p = sub.add_parser("export", parents=[common],
                       help="write records and verdicts as CSV or Parquet",
                       description="Write records.<fmt>, width_verdicts.<fmt> and "
                                   "verdicts.<fmt>, validated by their pandera schemas. "
                                   "Several runs are merged first. Parquet needs pyarrow.")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR")
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    from ntkcheck.runs.store import RunError

    args = build_parser().parse_args(argv)
    if args.command is None:
        return _show_latest(args.reports)
    try:
        return args.func(args)
    except RunError as exc:
        print(f"ntkcheck {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ntkcheck compare A B | head`: the reader left, not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        return 0
    except OSError as exc:  # disk full, folder gone: not the run's fault, not a usage error
        from ntkcheck.runs.files import ENVIRONMENT_EXIT, describe_os_error

        print(f"ntkcheck {args.command}: {describe_os_error(exc, exc.filename or '')}",
              file=sys.stderr)
        return ENVIRONMENT_EXIT


if __name__ == "__main__":
    raise SystemExit(main())
