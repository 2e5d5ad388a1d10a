"""Verdicts: where a claim holds, from its records.

Per (claim, architecture, width): the claim holds when the mean of the metric over seeds is
within the tolerance (:meth:`ntkcheck.claim.Claim.holds`). Per (claim, architecture): the
smallest width from which it holds at every wider swept width, the log-log slope of the metric
in width with its 95% interval (:func:`ntkcheck.metrics.fit_rate`, fitted on every seed's
value), whether the predicted rate lies in that interval, and the width at which the fitted
line reaches the tolerance (extrapolated when beyond the sweep). A claim test's pytest outcome
is its verdict at the widest width swept, for every architecture. A claim with a ``trend``
(:class:`ntkcheck.claim.Claim`) holds at the widest width only when, in addition, the fitted
slope's interval lies below (``"decreasing"``) or above (``"increasing"``) zero; with
``scale="semilog"`` the fit is of the value, not its logarithm, against ``log(width)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from ntkcheck.claim import Claim
from ntkcheck.metrics import extrapolate_width, fit_rate
from ntkcheck.status import measured_only

__all__ = ["width_verdicts", "arch_verdicts", "compute_verdicts", "WIDTH_COLUMNS",
           "ARCH_COLUMNS"]

WIDTH_COLUMNS = ["claim_id", "arch_id", "width", "mean", "std", "n", "holds"]
ARCH_COLUMNS = ["claim_id", "arch_id", "widest_width", "holds_at_widest", "holds_from_width",
                "slope", "slope_low", "slope_high", "intercept", "predicted_rate",
                "rate_consistent", "extrapolated_width", "message"]


def width_verdicts(records: pd.DataFrame, claims: Mapping[str, Claim]) -> pd.DataFrame:
    """Mean, standard deviation and verdict per (claim, architecture, width).

    Args:
        records: Records table with at least claim_id, arch_id, width, value; rows that
            were not measured (:mod:`ntkcheck.status`) are ignored.
        claims: Claim metadata by id; records of unknown claims raise KeyError.

    Returns:
        A DataFrame with :data:`WIDTH_COLUMNS`; ``std`` is NaN for a single seed.

    """
    records = measured_only(records)
    if records.empty:
        return pd.DataFrame(columns=WIDTH_COLUMNS)
    g = records.groupby(["claim_id", "arch_id", "width"], sort=True)["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["holds"] = [claims[c].holds(m) for c, m in zip(out["claim_id"], out["mean"])]
    return out[WIDTH_COLUMNS]


def _fmt_width(w: float) -> str:
    return f"{w:.2g}" if w >= 1e5 else f"{w:,.0f}"


def _trend_ok(claim: Claim, fit) -> bool | None:
    """Whether the fitted slope's interval lies on the side ``claim.trend`` asks for."""
    if claim.trend is None:
        return None
    if not (math.isfinite(fit.slope_low) and math.isfinite(fit.slope_high)):
        return False
    return fit.slope_high < 0 if claim.trend == "decreasing" else fit.slope_low > 0


def _message(claim: Claim, widths: list[int], holds: list[bool], fit, extrap: float,
             consistent: object, trend_ok: bool | None = None) -> str:
    widest = widths[-1]
    holds_from = _holds_from(widths, holds)
    if all(holds):
        head = "holds at every width swept"
    elif holds_from is not None:
        head = f"holds from width {holds_from:,}"
    elif not any(holds):
        head = f"fails at every width up to {widest:,}"
    else:
        head = f"fails at width {widest:,}"
    parts = [head]
    if not math.isfinite(fit.slope):  # fewer than 3 widths (or values a log fit cannot take)
        if claim.trend is None:
            n = len(widths)
            need = ("3 widths" if n < 3 or claim.scale != "log"
                    else "3 widths with positive values")
            parts.append(f"{n} width{'s' if n != 1 else ''} measured: no slope fitted "
                         f"(needs {need})")
    elif not holds[-1]:
        if math.isfinite(extrap):
            parts.append(f"extrapolated to hold at ~{_fmt_width(extrap)}")
        else:
            parts.append("the fitted trend moves away from the tolerance")
    f = ".2f" if claim.scale == "log" else ".3g"
    if math.isfinite(fit.slope):
        rate = f"fitted slope {fit.slope:+{f}}"
        if math.isfinite(fit.slope_low) and math.isfinite(fit.slope_high):
            rate += f" [{fit.slope_low:+{f}}, {fit.slope_high:+{f}}]"
        else:  # e.g. identical values at every width: no spread, no interval
            rate += " (no interval)"
        if claim.scale == "semilog":
            rate += " per e-fold of width"
        if claim.rate is not None:
            rate += f" vs predicted {claim.rate:+.2f}"
            rate += " (consistent)" if consistent else " (inconsistent)"
        parts.append(rate)
    if claim.trend is not None:
        side = "below" if claim.trend == "decreasing" else "above"
        if trend_ok:
            parts.append(f"{claim.trend}: the slope's interval lies {side} 0")
        else:
            why = ("no slope fitted (needs 3 widths)" if not math.isfinite(fit.slope)
                   else f"the slope's interval does not lie {side} 0")
            parts.insert(0, f"fails the trend test, not shown {claim.trend}: {why}")
            parts[1] = "tolerance " + parts[1]
    return "; ".join(parts)


def _holds_from(widths: list[int], holds: list[bool]) -> int | None:
    start = None
    for w, h in zip(reversed(widths), reversed(holds)):
        if not h:
            break
        start = w
    return start


def arch_verdicts(records: pd.DataFrame, per_width: pd.DataFrame,
                  claims: Mapping[str, Claim]) -> pd.DataFrame:
    """Verdict per (claim, architecture): holds-from width, fitted rate, extrapolation.

    Args:
        records: Records table (every seed's value is a point of the rate fit).
        per_width: Output of :func:`width_verdicts` for the same records.
        claims: Claim metadata by id.

    Returns:
        A DataFrame with :data:`ARCH_COLUMNS`. ``holds_from_width`` is NaN when the claim does
        not hold at the widest width; ``rate_consistent`` is None without a predicted rate or
        without a fit.

    """
    records = measured_only(records)
    rows = []
    for (cid, aid), wv in per_width.groupby(["claim_id", "arch_id"], sort=True):
        claim = claims[cid]
        wv = wv.sort_values("width")
        widths = [int(w) for w in wv["width"]]
        holds = [bool(h) for h in wv["holds"]]
        rec = records[(records["claim_id"] == cid) & (records["arch_id"] == aid)]
        fit = fit_rate(rec["width"].tolist(), rec["value"].tolist(), scale=claim.scale)
        extrap = extrapolate_width(fit, claim.tolerance, claim.direction, scale=claim.scale)
        trend_ok = _trend_ok(claim, fit)
        consistent: object = None
        if claim.rate is not None and math.isfinite(fit.slope):
            slack = 1e-9  # round-off of a zero-width interval (noise-free power law)
            consistent = bool(fit.slope_low - slack <= claim.rate <= fit.slope_high + slack)
        holds_from = _holds_from(widths, holds)
        if trend_ok is False:  # a claimed trend that the sweep does not show fails the claim
            holds_from = None
        # A sweep stopped part-way (Ctrl-C, a crash, a timeout) leaves the widest width with
        # fewer seeds than the others: too little to judge the claim there.
        counts = [int(n) for n in wv["n"]]
        incomplete = counts[-1] < max(counts)
        if incomplete:
            holds_from = None
        message = _message(claim, widths, holds, fit, extrap, consistent, trend_ok)
        if incomplete:
            message = (f"incomplete: the widest width {widths[-1]:,} has {counts[-1]} of "
                       f"{max(counts)} seeds, not judged; " + message)
        rows.append({
            "claim_id": cid, "arch_id": aid, "widest_width": widths[-1],
            "holds_at_widest": holds[-1] and trend_ok is not False and not incomplete,
            "holds_from_width": float(holds_from) if holds_from is not None else math.nan,
            "slope": fit.slope, "slope_low": fit.slope_low, "slope_high": fit.slope_high,
            "intercept": fit.intercept,
            "predicted_rate": claim.rate if claim.rate is not None else math.nan,
            "rate_consistent": consistent, "extrapolated_width": extrap,
            "message": message,
        })
    return pd.DataFrame(rows, columns=ARCH_COLUMNS)


def compute_verdicts(records: pd.DataFrame, claims: Mapping[str, Claim]
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both verdict tables: ``(width_verdicts, arch_verdicts)``."""
    per_width = width_verdicts(records, claims)
    if per_width.empty:
        return per_width, pd.DataFrame(columns=ARCH_COLUMNS)
    return per_width, arch_verdicts(records, per_width, claims)
