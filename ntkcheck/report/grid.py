"""The overview grid: one row per (claim, architecture), one column per width."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ntkcheck.report import fmt
from ntkcheck.report.frames import ordered_unique


@dataclass(frozen=True)
class GridCell:
    """One (claim, architecture, width) cell.

    Attributes:
        status: ``holds``, ``fails``, ``contradicts`` (within the tolerance, but the
            architecture's rate contradicts the theory: :mod:`ntkcheck.verdict`) or
            ``missing`` (the CSS class).
        text: The mean value with 3 significant digits ("" when not measured).
        title: Tooltip text.

    """

    status: str
    text: str
    title: str


@dataclass(frozen=True)
class GridRow:
    """One (claim, architecture) row of the grid (``setting`` from its records)."""

    claim_id: str
    arch_id: str
    color: str
    cells: list[GridCell]
    verdict: str
    verdict_status: str
    setting: str = "theory"  # "practical" rows are tagged (ntkcheck.runs.outcomes)


@dataclass(frozen=True)
class Grid:
    """The overview grid."""

    widths: list[int]
    rows: list[GridRow]


def _status(holds: Any) -> str:
    if fmt.is_missing(holds):
        return "missing"
    return "holds" if bool(holds) else "fails"


#: CSS class of each verdict of :data:`ntkcheck.verdict.VERDICTS`.
VERDICT_STATUS = {"holds": "holds", "fails": "fails", "rate-contradicts": "contradicts",
                  "incomplete": "missing"}


def verdict_status(row: Mapping[str, Any]) -> str:
    """The CSS class of a (claim, architecture) verdict row.

    From its ``verdict`` column; rows of older tables without one: ``missing`` for an
    incomplete widest width, else from ``holds_at_widest``.
    """
    verdict = row.get("verdict")
    if not fmt.is_missing(verdict) and str(verdict) in VERDICT_STATUS:
        return VERDICT_STATUS[str(verdict)]
    message = row.get("message")
    if not fmt.is_missing(message) and str(message).startswith("incomplete:"):
        return "missing"  # not judged
    return _status(row.get("holds_at_widest"))


def _cell(verdict: Mapping[str, Any] | None, rec_values: pd.Series | None,
          not_measured: str = "", why: str = "", contradicts: bool = False) -> GridCell:
    why = why or not_measured
    if verdict is None and not_measured:
        return GridCell("missing", not_measured, why)
    if verdict is not None:
        n = verdict.get("n")
        title = f"mean {fmt.sig(verdict.get('mean'), 4)}"
        if not fmt.is_missing(verdict.get("std")):
            title += f" \u00b1 {fmt.sig(verdict.get('std'), 2)} (std)"
        if not fmt.is_missing(n):
            title += f", {int(n)} seed{'s' if int(n) != 1 else ''}"
        status = _status(verdict.get("holds"))
        if status == "holds" and contradicts:
            status = "contradicts"
        title += {"holds": ": holds", "fails": ": fails", "missing": ": not judged",
                  "contradicts": ": within the tolerance, but the rate contradicts the "
                                 "theory"}[status]
        if not_measured:
            title += f"; other seeds {why}"
        return GridCell(status, fmt.sig(verdict.get("mean"), 3), title)
    if rec_values is not None and len(rec_values):
        mean = pd.to_numeric(rec_values, errors="coerce").mean()
        return GridCell("missing", fmt.sig(mean, 3), "measured but not judged")
    return GridCell("missing", "", "not measured")


def _not_measured(records: pd.DataFrame
                  ) -> tuple[dict[tuple[str, str, int], str], dict[tuple[str, str, int], str]]:
    """Texts of the cells with unmeasured units: their labels and their reasons.

    Returns:
        Per (claim, architecture, width): ``"not measured: <label>"`` (the cell's text), and
        the same with the records' ``reason`` values (its tooltip).
    """
    if not len(records) or "status" not in records.columns:
        return {}, {}
    from ntkcheck.status import label, measured_mask

    rec = records[~measured_mask(records)]
    w = pd.to_numeric(rec["width"], errors="coerce")
    rec = rec[w.notna()]
    reasons = (rec["reason"] if "reason" in rec.columns
               else pd.Series(None, index=rec.index, dtype=object))
    out: dict[tuple[str, str, int], str] = {}
    why: dict[tuple[str, str, int], dict[str, list[str]]] = {}
    for c, a, width, status, reason in zip(
            rec["claim_id"].astype(str), rec["arch_id"].astype(str),
            w[w.notna()].astype(int), rec["status"].astype(str), reasons):
        text = label(status)
        key = (c, a, int(width))
        if text not in out.get(key, ""):
            out[key] = f"{out[key]}, {text}" if key in out else text
        found = why.setdefault(key, {}).setdefault(text, [])
        if not fmt.is_missing(reason) and str(reason) and str(reason) not in found:
            found.append(str(reason))
    titles = {key: "; ".join(f"{text} ({'; '.join(rs)})" if rs else text
                             for text, rs in by_label.items())
              for key, by_label in why.items()}
    return out, titles


def build_grid(
    records: pd.DataFrame,
    width_verdicts: pd.DataFrame,
    arch_verdicts: pd.DataFrame,
    claim_ids: list[str],
    widths: list[int],
    colors: Mapping[str, str],
    outcomes: Mapping[str, str],
) -> Grid:
    """Build the overview grid.

    Rows are every (claim, architecture) pair seen in any of the frames,
    claims in ``claim_ids`` order and architectures sorted. A claim with no
    measurements at all gets one row with architecture ``"\u2014"`` and every
    cell ``missing``.

    Args:
        records: Normalised records.
        width_verdicts: Normalised per-width verdicts.
        arch_verdicts: Normalised per-architecture verdicts.
        claim_ids: Claims in display order.
        widths: The grid's columns.
        colors: Architecture id -> colour.
        outcomes: Claim id -> pytest outcome (for claims without measurements).

    Returns:
        The grid.

    """
    wv: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in width_verdicts.to_dict("records"):
        if fmt.is_missing(row["width"]):
            continue
        wv.setdefault((str(row["claim_id"]), str(row["arch_id"]), int(row["width"])), row)
    av: dict[tuple[str, str], dict[str, Any]] = {}
    for row in arch_verdicts.to_dict("records"):
        av.setdefault((str(row["claim_id"]), str(row["arch_id"])), row)
    rec_groups: dict[tuple[str, str, int], pd.Series] = {}
    if len(records):
        w = pd.to_numeric(records["width"], errors="coerce")
        rec = records[w.notna()]
        keys = [rec["claim_id"].astype(str), rec["arch_id"].astype(str), w[w.notna()].astype(int)]
        for key, group in rec.groupby(keys, sort=False)["value"]:
            rec_groups[key] = group
    not_measured, why = _not_measured(records)
    from ntkcheck.runs.outcomes import arch_settings

    settings = arch_settings(records)

    pairs = ordered_unique(
        [(c, a) for c, a, _ in wv] + list(av) + [(c, a) for c, a, _ in rec_groups]
    )
    rows: list[GridRow] = []
    for claim in claim_ids:
        archs = sorted(a for c, a in pairs if c == claim)
        if not archs:
            outcome = outcomes.get(claim, "")
            cells = [GridCell("missing", "", "not measured") for _ in widths]
            verdict = "no measurements" + (f" (test {outcome})" if outcome else "")
            rows.append(GridRow(claim, fmt.DASH, "", cells, verdict, "missing"))
            continue
        for arch in archs:
            verdict_row = av.get((claim, arch))
            if verdict_row is None:
                verdict, status = "not judged", "missing"
            else:
                message = verdict_row.get("message")
                verdict = "" if fmt.is_missing(message) else str(message)
                status = verdict_status(verdict_row)
            cells = [
                _cell(wv.get((claim, arch, w)), rec_groups.get((claim, arch, w)),
                      not_measured.get((claim, arch, w), ""), why.get((claim, arch, w), ""),
                      contradicts=status == "contradicts")
                for w in widths
            ]
            rows.append(GridRow(claim, arch, colors.get(arch, ""), cells, verdict, status,
                                settings.get((claim, arch), "theory")))
    return Grid(widths=widths, rows=rows)
