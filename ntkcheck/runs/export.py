"""Export a run's records and verdict tables as CSV or Parquet, validated by pandera schemas."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ntkcheck.claim import arch_verdict_schema, record_schema, width_verdict_schema
from ntkcheck.runs.store import Run, RunError

__all__ = ["FORMATS", "ExportError", "check_format", "export_tables", "run_tables"]

FORMATS = ("csv", "parquet")
PARQUET_HINT = ("parquet export needs pyarrow, which is not installed: pip install pyarrow "
                "(or pip install 'ntkcheck[parquet]'), or use --format csv")


class ExportError(RunError):
    """An export that cannot be written (unknown format, missing pyarrow, invalid table)."""


def check_format(fmt: str) -> None:
    """Check that ``fmt`` can be written.

    Raises:
        ExportError: An unknown format, or parquet without pyarrow (saying how to install it).

    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError(PARQUET_HINT) from None


def run_tables(run: Run) -> dict[str, pd.DataFrame]:
    """The run's tables, validated and coerced by their pandera schemas.

    Returns:
        ``{"records": ..., "width_verdicts": ..., "verdicts": ...}``.

    Raises:
        ExportError: A table fails its schema (the message is pandera's).

    """
    claim_ids = sorted(run.claims)
    wv, av = run.verdicts()
    records = run.records
    if len(records):
        records = records[records["claim_id"].astype(str).isin(run.judged_claims())]
    checks = {
        "records": (records, record_schema(claim_ids)),
        "width_verdicts": (wv, width_verdict_schema(claim_ids)),
        "verdicts": (av, arch_verdict_schema(claim_ids)),
    }
    out = {}
    for name, (table, schema) in checks.items():
        try:
            out[name] = schema.validate(table.reset_index(drop=True))
        except Exception as exc:  # pandera's SchemaError(s)
            raise ExportError(f"{name} fail their schema: {exc}") from None
    return out


def export_tables(run: Run, out_dir: str | Path, fmt: str = "csv") -> list[Path]:
    """Write ``records``, ``width_verdicts`` and ``verdicts`` as ``<name>.<fmt>`` in ``out_dir``.

    Args:
        run: The run (or a merge of runs).
        out_dir: Folder to write to (created if missing).
        fmt: ``csv`` or ``parquet`` (needs pyarrow).

    Returns:
        The files written.

    Raises:
        ExportError: Unknown format, pyarrow missing for parquet, or a table failing its schema.

    """
    check_format(fmt)
    tables = run_tables(run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in tables.items():
        path = out / f"{name}.{fmt}"
        if fmt == "csv":
            table.to_csv(path, index=False)
        else:
            table.to_parquet(path, index=False, engine="pyarrow")
        written.append(path)
    return written
