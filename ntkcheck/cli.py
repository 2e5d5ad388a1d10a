"""The ``ntkcheck`` command line: the version and where the latest report is.

Usage::

    ntkcheck                 # version, and the latest report under ./reports
    ntkcheck --reports DIR   # ... under DIR
    ntkcheck --version
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ntkcheck import __version__


def latest_report(reports: Path) -> Path | None:
    """The ``report.html`` of the latest run under ``reports``, or None if there is none."""
    latest = reports / "latest"
    if (latest / "RUN").is_file():  # pointer file where symlinks are unavailable
        latest = reports / (latest / "RUN").read_text(encoding="utf-8").strip()
    report = latest / "report.html"
    return report.resolve() if report.is_file() else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="ntkcheck",
        description="Check NTK theory against real networks. Run claims with "
                    "`pytest claims/ -n auto`; this command shows where the report is.",
    )
    parser.add_argument("--version", action="version", version=f"ntkcheck {__version__}")
    parser.add_argument("--reports", type=Path, default=Path("reports"),
                        help="folder of run reports (default: ./reports)")
    args = parser.parse_args(argv)
    print(f"ntkcheck {__version__}")
    report = latest_report(args.reports)
    if report is None:
        print(f"no report under {args.reports}/ yet: run `pytest claims/ -n auto` first")
        return 0
    meta_path = report.parent / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    print(f"latest report: {report}")
    if meta:
        print(f"  run {meta.get('run_id')} profile {meta.get('profile')} "
              f"finished {meta.get('finished')} ({meta.get('n_records')} records)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
