"""Per-claim sections: the claim's description, its fit table and its plots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ntkcheck.report import fmt
from ntkcheck.report.curves import curves_svg
from ntkcheck.report.findings import DepthMap, build_depth_maps, domain_of
from ntkcheck.report.plots import NeededPoint, PlotSeries, svg_loglog, svg_width_needed

#: Lines of a failure's text shown in the report.
LONGREPR_LINES = 15


@dataclass(frozen=True)
class TestRow:
    """One test of a claim (all fields preformatted)."""

    nodeid: str
    setting: str
    outcome: str
    duration: str
    n_records: int
    longrepr_head: str = ""
    longrepr_more: int = 0
    shrunk_spec: str = ""
    shrunk_label: str = ""


@dataclass(frozen=True)
class ArchFit:
    """One row of a claim's per-architecture table (all fields preformatted)."""

    arch_id: str
    color: str
    status: str
    widest_width: str
    holds_at_widest: str
    slope: str
    interval: str
    predicted_rate: str
    rate_consistent: str
    rate_status: str
    holds_from_width: str
    extrapolated_width: str
    message: str
    setting: str = "theory"


@dataclass(frozen=True)
class ClaimSection:
    """Everything the template shows for one claim."""

    id: str
    statement: str
    source: str
    metric: str
    units: str
    tolerance: str
    direction: str
    rate: str
    outcome: str
    nodeid: str
    duration: str
    n_records: int
    longrepr_head: str = ""
    longrepr_more: int = 0
    shrunk_spec: str = ""
    fits: list[ArchFit] = field(default_factory=list)
    plot_svg: str = ""
    plot_note: str = ""
    depth_plot_svg: str = ""
    depths: str = ""
    curves_svg: str = ""
    practical_outcome: str = ""
    has_theory: bool = True
    tests: list[TestRow] = field(default_factory=list)
    domain: str = ""
    depth_maps: list[DepthMap] = field(default_factory=list)
    needed_svg: str = ""


def _text(x: Any) -> str:
    return "" if fmt.is_missing(x) else str(x)


def _float(x: Any) -> float:
    try:
        return float("nan") if fmt.is_missing(x) else float(x)
    except (TypeError, ValueError):
        return float("nan")


def _direction(direction: Any, tolerance: Any) -> str:
    tol = fmt.sig(tolerance, 3)
    if direction == "below":
        return f"holds when value \u2264 {tol}"
    if direction == "above":
        return f"holds when value \u2265 {tol}"
    return _text(direction)


def _arch_fit(row: Mapping[str, Any], color: str, setting: str = "theory") -> ArchFit:
    consistent = row.get("rate_consistent")
    rate_status = "missing" if fmt.is_missing(consistent) else ("holds" if consistent else "fails")
    low, high = row.get("slope_low"), row.get("slope_high")
    interval = fmt.DASH
    if not (fmt.is_missing(low) or fmt.is_missing(high)):
        interval = f"[{fmt.sig(low, 3)}, {fmt.sig(high, 3)}]"
    from ntkcheck.report.grid import verdict_status

    extrapolated = row.get("extrapolated_width")
    holds = row.get("holds_at_widest")
    status = verdict_status(row)
    return ArchFit(
        arch_id=str(row.get("arch_id")),
        color=color,
        status=status,
        widest_width=fmt.width(row.get("widest_width")),
        holds_at_widest=("no: rate contradicts" if status == "contradicts"
                         else fmt.yesno(holds)),
        slope=fmt.sig(row.get("slope"), 3),
        interval=interval,
        predicted_rate=fmt.sig(row.get("predicted_rate"), 3),
        rate_consistent=fmt.yesno(consistent),
        rate_status=rate_status,
        holds_from_width=fmt.width(row.get("holds_from_width")),
        extrapolated_width=(
            fmt.DASH if fmt.is_missing(extrapolated) else "~" + fmt.width(extrapolated)
        ),
        message=_text(row.get("message")),
        setting=setting,
    )


def _longrepr(longrepr: str, outcome: str) -> tuple[str, int]:
    if not longrepr or outcome not in ("failed", "error", "interrupted"):
        return "", 0
    lines = longrepr.splitlines()
    return "\n".join(lines[:LONGREPR_LINES]), max(0, len(lines) - LONGREPR_LINES)


def _test_rows(claim: Mapping[str, Any], records: pd.DataFrame) -> list[TestRow]:
    """The claim's tests (:func:`ntkcheck.runs.outcomes.claim_tests`), theory ones first."""
    from ntkcheck.runs.outcomes import THEORY, claim_tests, shrunk_label

    counts = (records["nodeid"].astype(str).value_counts().to_dict()
              if len(records) and "nodeid" in records.columns else {})
    rows = []
    tests = claim_tests(claim)
    for t in sorted(tests, key=lambda t: t["setting"] != THEORY):
        outcome = _text(t.get("outcome")) or "unknown"
        head, more = _longrepr(_text(t.get("longrepr")), outcome)
        duration = t.get("duration_s")
        spec = _text(t.get("shrunk_spec"))
        rows.append(TestRow(
            nodeid=_text(t.get("nodeid")), setting=t["setting"], outcome=outcome,
            duration="" if fmt.is_missing(duration) else f"{fmt.sig(duration, 3)} s",
            n_records=int(counts.get(_text(t.get("nodeid")), 0)) if len(tests) > 1
            else len(records),
            longrepr_head=head, longrepr_more=more, shrunk_spec=spec,
            shrunk_label=shrunk_label(t.get("shrunk_kind")) if spec else ""))
    return rows


def _plot(
    claim_id: str,
    claim: Mapping[str, Any],
    records: pd.DataFrame,
    fits: Mapping[str, Mapping[str, Any]],
    colors: Mapping[str, str],
) -> tuple[str, str]:
    """Return ``(svg, note)`` for a claim's records (``("", "")`` without records)."""
    if not len(records):
        return "", ""
    series = []
    values = pd.to_numeric(records["value"], errors="coerce")
    w = pd.to_numeric(records["width"], errors="coerce")
    arch = records["arch_id"].astype(str)
    # A claim may record the metric's reference value (e.g. its infinite-width limit).
    reference = (pd.to_numeric(records["reference"], errors="coerce")
                 if "reference" in records.columns else None)
    for a in sorted(arch.unique()):
        mask = (arch == a).to_numpy()
        fit = fits.get(a, {})
        series.append(
            PlotSeries(
                label=a,
                widths=w[mask].to_numpy(dtype=float),
                values=values[mask].to_numpy(dtype=float),
                color=colors.get(a),
                slope=_float(fit.get("slope")),
                slope_low=_float(fit.get("slope_low")),
                slope_high=_float(fit.get("slope_high")),
                intercept=_float(fit.get("intercept")),
                reference=None if reference is None else reference[mask].to_numpy(dtype=float),
            )
        )
    finite = values[values.notna()]
    note = ""
    nonpositive = int((finite <= 0).sum())
    if nonpositive and (finite > 0).any():
        note = (
            f"{nonpositive} value(s) \u2264 0 are not drawn on the log axis "
            "(the means include them)."
        )
    elif nonpositive:
        note = "No value is positive: linear value axis, no fitted or predicted line."
    units = _text(claim.get("units"))
    metric = _text(claim.get("metric")) or "value"
    svg = svg_loglog(
        series,
        tolerance=_float(claim.get("tolerance")),
        predicted_rate=_float(claim.get("rate")),
        ylabel=f"{metric} [{units}]" if units else metric,
        salt=f"ntk-{claim_id}",
    )
    return svg, note


def _depth_plot(
    claim_id: str, claim: Mapping[str, Any], records: pd.DataFrame, colors: Mapping[str, str]
) -> tuple[str, str]:
    """Return ``(svg, depths)``: the metric against depth / width, when depth varies.

    Hanin & Nica (2019) show that at finite width the NTK's fluctuations are governed by the
    ratio depth / width rather than by width alone, so a claim swept over several depths is
    also plotted against that ratio. ``("", "")`` when the records have fewer than two depths.
    """
    if not len(records):
        return "", ""
    depth = pd.to_numeric(records["depth"], errors="coerce")
    width = pd.to_numeric(records["width"], errors="coerce")
    values = pd.to_numeric(records["value"], errors="coerce")
    ok = (depth > 0) & (width > 0)
    distinct = sorted({int(d) for d in depth[ok]})
    if len(distinct) < 2:
        return "", ""
    ratio = depth / width
    arch = records["arch_id"].astype(str)
    series = []
    for a in sorted(arch[ok].unique()):
        mask = ((arch == a) & ok).to_numpy()
        series.append(
            PlotSeries(
                label=a,
                widths=ratio[mask].to_numpy(dtype=float),
                values=values[mask].to_numpy(dtype=float),
                color=colors.get(a),
            )
        )
    units = _text(claim.get("units"))
    metric = _text(claim.get("metric")) or "value"
    svg = svg_loglog(
        series,
        tolerance=_float(claim.get("tolerance")),
        xlabel="depth / width",
        ylabel=f"{metric} [{units}]" if units else metric,
        salt=f"ntk-depth-{claim_id}",
        xtick_format=lambda x: fmt.sig(x, 2),
    )
    return svg, ", ".join(str(d) for d in distinct)


def _needed_plot(claim_id: str, width_verdicts: pd.DataFrame, arch_verdicts: pd.DataFrame,
                 laws: pd.DataFrame | None, colors: Mapping[str, str]) -> str:
    """The width-needed-against-depth plot of a claim ("" when no depth has a width needed)."""
    from ntkcheck.report.findings import PRACTICAL_WIDTHS
    from ntkcheck.verdict import series_id

    if not len(arch_verdicts):
        return ""
    swept = pd.to_numeric(width_verdicts["width"], errors="coerce").dropna()
    points, series_color = [], {}
    for row in arch_verdicts.to_dict("records"):
        depth, needed = _float(row.get("depth")), _float(row.get("width_needed"))
        series = series_id(str(row["arch_id"]))
        color = series_color.setdefault(series, colors.get(str(row["arch_id"]), "#1f77b4"))
        widest = _float(row.get("widest_width"))
        if needed == needed:  # finite: where the fit reaches the tolerance
            kind = "extrapolated" if needed > widest else "interpolated"
        elif row.get("verdict") in ("holds", "rate-contradicts") and len(swept):
            mine = pd.to_numeric(width_verdicts.loc[width_verdicts["arch_id"].astype(str)
                                                    == str(row["arch_id"]), "width"],
                                 errors="coerce").dropna()
            needed, kind = float(mine.min() if len(mine) else swept.min()), "below"
        else:
            continue
        points.append(NeededPoint(series, depth, needed, kind, color))
    if not points:
        return ""
    fitted = []
    for law in ([] if laws is None else laws.to_dict("records")):
        fitted.append((str(law["series"]), _float(law["exponent"]), _float(law["intercept"]),
                       series_color.get(str(law["series"]), "#1f77b4")))
    return svg_width_needed(points, fitted, practical=PRACTICAL_WIDTHS,
                            swept=(float(swept.min()), float(swept.max())) if len(swept)
                            else None, salt=f"ntk-needed-{claim_id}")


def build_section(
    claim_id: str,
    claim: Mapping[str, Any] | None,
    records: pd.DataFrame,
    arch_verdicts: pd.DataFrame,
    colors: Mapping[str, str],
    width_verdicts: pd.DataFrame | None = None,
    laws: pd.DataFrame | None = None,
) -> ClaimSection:
    """Build one claim's section.

    Args:
        claim_id: The claim.
        claim: Its description from the plugin (None if the plugin gave none).
        records: This claim's records (normalised).
        arch_verdicts: This claim's per-architecture verdicts (normalised).
        colors: Architecture id -> colour.
        width_verdicts: This claim's per-width verdicts (normalised), for the depth x width
            maps and the width-needed plot (none without them).
        laws: This claim's rows of :func:`ntkcheck.verdict.depth_laws`.

    Returns:
        The section's content.

    """
    from ntkcheck.runs.outcomes import arch_settings, summarize_claim

    claim = summarize_claim(dict(claim or {}))
    settings = arch_settings(records)
    fits_by_arch: dict[str, dict[str, Any]] = {}
    for row in arch_verdicts.to_dict("records"):
        fits_by_arch.setdefault(str(row["arch_id"]), row)
    fits = [_arch_fit(fits_by_arch[a], colors.get(a, ""),
                      settings.get((claim_id, a), "theory")) for a in sorted(fits_by_arch)]
    outcome = _text(claim.get("outcome"))
    head, more = _longrepr(_text(claim.get("longrepr")), outcome)
    tests = _test_rows(claim, records)
    svg, note = _plot(claim_id, claim, records, fits_by_arch, colors)
    depth_svg, depths = _depth_plot(claim_id, claim, records, colors)
    maps, needed_svg = [], ""
    if width_verdicts is not None:
        maps = build_depth_maps(claim_id, records, width_verdicts, arch_verdicts, laws)
        needed_svg = _needed_plot(claim_id, width_verdicts, arch_verdicts, laws, colors)
    duration = claim.get("duration_s")
    return ClaimSection(
        id=claim_id,
        statement=_text(claim.get("statement")),
        source=_text(claim.get("source")),
        metric=_text(claim.get("metric")),
        units=_text(claim.get("units")),
        tolerance=fmt.sig(claim.get("tolerance"), 4),
        direction=_direction(claim.get("direction"), claim.get("tolerance")),
        rate=fmt.sig(claim.get("rate"), 3),
        outcome=outcome or "unknown",
        nodeid=_text(claim.get("nodeid")),
        duration="" if fmt.is_missing(duration) else f"{fmt.sig(duration, 3)} s",
        n_records=len(records),
        longrepr_head=head,
        longrepr_more=more,
        shrunk_spec=_text(claim.get("shrunk_spec")),
        practical_outcome=_text(claim.get("practical_outcome")),
        has_theory=bool(claim.get("has_theory", True)),
        tests=tests,
        fits=fits,
        plot_svg=svg,
        plot_note=note,
        depth_plot_svg=depth_svg,
        depths=depths,
        curves_svg=curves_svg(records),
        domain=domain_of(claim_id, claim),
        depth_maps=maps,
        needed_svg=needed_svg,
    )
