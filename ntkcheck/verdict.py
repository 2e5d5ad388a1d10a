"""Verdicts: where a claim holds, from its records.

Per (claim, architecture, width): the claim holds when the mean of the metric over seeds is
within the tolerance (:meth:`ntkcheck.claim.Claim.holds`). Per (claim, architecture): the
smallest width from which it holds at every wider swept width, the log-log slope of the metric
in width with its 95% interval (:func:`ntkcheck.metrics.fit_rate`, fitted on every seed's
value), whether the predicted rate lies in that interval, and the width at which the fitted
line reaches the tolerance (``width_needed``; ``extrapolated_width`` when the claim fails at
the widest width and the fit says it would hold further out). A claim test's pytest outcome
is its verdict at the widest width swept, for every architecture. A claim with a ``trend``
(:class:`ntkcheck.claim.Claim`) holds at the widest width only when, in addition, the fitted
slope's interval lies below (``"decreasing"``) or above (``"increasing"``) zero; with
``scale="semilog"`` the fit is of the value, not its logarithm, against ``log(width)``.

**The rate rule.** A claim that predicts a rate (``rate`` not None or 0, ``scale="log"``)
predicts that the metric keeps shrinking like ``width**rate``; a metric that has levelled off
below the tolerance is not the theory's prediction holding, only a loose tolerance. The tail
slope (:func:`ntkcheck.metrics.fit_tail_rate`: the log-log slope over the two widest widths,
every seed a point, with a Student-t 95% interval from the seeds' spread) is compared with
:data:`ntkcheck.metrics.RATE_FRACTION` (one half) of the predicted rate: when the whole
interval lies on the flat side of it (:func:`ntkcheck.metrics.rate_contradicted`), the verdict
is ``"rate-contradicts"``: below the tolerance, but the rate contradicts the theory, and the
claim does not hold (``holds_at_widest`` is False). A tail steeper than predicted, or one that
the seeds' spread cannot tell from the prediction, does not contradict.

**Depth.** Every verdict row carries its architecture's ``depth`` (from the records). An
architecture id without its ``-d<depth>`` part is a *series* (e.g. ``mlp-relu-ntk-b``);
:func:`depth_laws` fits, per claim and series, ``log(width_needed)`` against ``log(depth)``
and compares the exponent with Hanin & Nica 2019's 1 (:func:`ntkcheck.metrics.fit_depth_law`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import pandas as pd

from ntkcheck.claim import Claim
from ntkcheck.metrics import (
    HANIN_NICA_EXPONENT,
    RATE_FRACTION,
    extrapolate_width,
    fit_depth_law,
    fit_rate,
    fit_tail_rate,
    rate_contradicted,
)
from ntkcheck.status import measured_only

__all__ = ["width_verdicts", "arch_verdicts", "compute_verdicts", "depth_laws", "series_id",
           "VERDICTS", "WIDTH_COLUMNS", "ARCH_COLUMNS", "DEPTH_COLUMNS"]

#: Values of the ``verdict`` column of :func:`arch_verdicts`.
VERDICTS = ("holds", "fails", "rate-contradicts", "incomplete")
WIDTH_COLUMNS = ["claim_id", "arch_id", "depth", "width", "mean", "std", "n", "holds"]
ARCH_COLUMNS = ["claim_id", "arch_id", "widest_width", "holds_at_widest", "holds_from_width",
                "slope", "slope_low", "slope_high", "intercept", "predicted_rate",
                "rate_consistent", "extrapolated_width", "depth", "verdict", "tail_slope",
                "tail_low", "tail_high", "rate_contradicted", "width_needed", "message"]
DEPTH_COLUMNS = ["claim_id", "series", "depths", "n_depths", "exponent", "exponent_low",
                 "exponent_high", "intercept", "reference_exponent", "consistent", "message"]

_DEPTH_PART = re.compile(r"-d\d+(?=-|$)")


def series_id(arch_id: str) -> str:
    """The architecture id without its depth part: ``mlp-d2-relu-ntk-b`` -> ``mlp-relu-ntk-b``.

    Architectures of one series differ only in depth (:attr:`ntkcheck.arch.ArchSpec.arch_id`);
    an id without a ``-d<digits>`` part is its own series.
    """
    return _DEPTH_PART.sub("", str(arch_id), count=1)


def _depths(records: pd.DataFrame) -> dict[tuple[str, str], float]:
    """The depth of each (claim, architecture) of ``records`` (NaN without a depth column)."""
    if "depth" not in records.columns or not len(records):
        return {}
    depth = pd.to_numeric(records["depth"], errors="coerce")
    frame = records[["claim_id", "arch_id"]].astype(str).assign(_d=depth)
    return {k: float(g.dropna().iloc[0]) if g.notna().any() else math.nan
            for k, g in frame.groupby(["claim_id", "arch_id"], sort=False)["_d"]}


def width_verdicts(records: pd.DataFrame, claims: Mapping[str, Claim]) -> pd.DataFrame:
    """Mean, standard deviation and verdict per (claim, architecture, width).

    Args:
        records: Records table with at least claim_id, arch_id, width, value (and ``depth``,
            optional); rows that were not measured (:mod:`ntkcheck.status`) are ignored.
        claims: Claim metadata by id; records of unknown claims raise KeyError.

    Returns:
        A DataFrame with :data:`WIDTH_COLUMNS`; ``std`` is NaN for a single seed, ``depth``
        NaN when the records carry none.

    """
    records = measured_only(records)
    if records.empty:
        return pd.DataFrame(columns=WIDTH_COLUMNS)
    g = records.groupby(["claim_id", "arch_id", "width"], sort=True)["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["holds"] = [claims[c].holds(m) for c, m in zip(out["claim_id"], out["mean"])]
    depths = _depths(records)
    out["depth"] = [depths.get((str(c), str(a)), math.nan)
                    for c, a in zip(out["claim_id"], out["arch_id"])]
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


def _rate_message(claim: Claim, tail, tail_widths: tuple[int, int]) -> str:
    """The head of a ``rate-contradicts`` verdict's message."""
    lo, hi = tail_widths
    return (f"rate contradicts the theory: within the tolerance, but the slope from width "
            f"{lo:,} to {hi:,} is {tail.slope:+.2f} [{tail.slope_low:+.2f}, "
            f"{tail.slope_high:+.2f}] (95%, over seeds), flatter than {RATE_FRACTION:g} x the "
            f"predicted {claim.rate:+.2f}: the metric has stopped shrinking at that rate")


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
        records: Records table (every seed's value is a point of the rate fits).
        per_width: Output of :func:`width_verdicts` for the same records.
        claims: Claim metadata by id.

    Returns:
        A DataFrame with :data:`ARCH_COLUMNS`. ``verdict`` is one of :data:`VERDICTS`;
        ``holds_at_widest`` is True exactly for ``"holds"``. ``holds_from_width`` is NaN when
        the claim does not hold at the widest width; ``rate_consistent`` is None without a
        predicted rate or without a fit. ``tail_slope``/``tail_low``/``tail_high`` are the
        rate rule's tail fit (NaN without two widths), ``rate_contradicted`` its result (None
        where the rule does not apply: no predicted rate, a predicted rate of 0, a semilog
        scale, one seed a width). ``width_needed`` is where the fitted law reaches the
        tolerance (NaN when the fit moves away from it, or when that width lies below the
        narrowest width swept: the sweep cannot tell); ``extrapolated_width`` is the same,
        kept only when the claim fails the tolerance at the widest width.

    """
    records = measured_only(records)
    depths = _depths(records)
    rows = []
    for (cid, aid), wv in per_width.groupby(["claim_id", "arch_id"], sort=True):
        claim = claims[cid]
        wv = wv.sort_values("width")
        widths = [int(w) for w in wv["width"]]
        holds = [bool(h) for h in wv["holds"]]
        rec = records[(records["claim_id"] == cid) & (records["arch_id"] == aid)]
        fit = fit_rate(rec["width"].tolist(), rec["value"].tolist(), scale=claim.scale)
        needed = extrapolate_width(fit, claim.tolerance, claim.direction, scale=claim.scale)
        if math.isfinite(needed) and needed < widths[0]:
            needed = math.nan  # the sweep holds already at its narrowest: no information
        extrap = needed if not holds[-1] else math.nan
        trend_ok = _trend_ok(claim, fit)
        consistent: object = None
        if claim.rate is not None and math.isfinite(fit.slope):
            slack = 1e-9  # round-off of a zero-width interval (noise-free power law)
            consistent = bool(fit.slope_low - slack <= claim.rate <= fit.slope_high + slack)
        tail = fit_tail_rate(rec["width"].tolist(), rec["value"].tolist())
        contradicted = (rate_contradicted(tail, claim.rate) if claim.scale == "log"
                        else None)
        holds_from = _holds_from(widths, holds)
        # A sweep stopped part-way (Ctrl-C, a crash, a timeout) leaves the widest width with
        # fewer seeds than the others: too little to judge the claim there.
        counts = [int(n) for n in wv["n"]]
        incomplete = counts[-1] < max(counts)
        if incomplete:
            verdict = "incomplete"
        elif trend_ok is False or not holds[-1]:
            verdict = "fails"  # a claimed trend that the sweep does not show fails the claim
        elif contradicted:
            verdict = "rate-contradicts"
        else:
            verdict = "holds"
        if verdict != "holds":
            holds_from = None
        message = _message(claim, widths, holds, fit, extrap, consistent, trend_ok)
        if verdict == "rate-contradicts":
            message = (_rate_message(claim, tail, (widths[-2], widths[-1]))
                       + "; tolerance " + message)
        if incomplete:
            message = (f"incomplete: the widest width {widths[-1]:,} has {counts[-1]} of "
                       f"{max(counts)} seeds, not judged; " + message)
        rows.append({
            "claim_id": cid, "arch_id": aid, "widest_width": widths[-1],
            "holds_at_widest": verdict == "holds",
            "holds_from_width": float(holds_from) if holds_from is not None else math.nan,
            "slope": fit.slope, "slope_low": fit.slope_low, "slope_high": fit.slope_high,
            "intercept": fit.intercept,
            "predicted_rate": claim.rate if claim.rate is not None else math.nan,
            "rate_consistent": consistent, "extrapolated_width": extrap,
            "depth": depths.get((str(cid), str(aid)), math.nan), "verdict": verdict,
            "tail_slope": tail.slope, "tail_low": tail.slope_low, "tail_high": tail.slope_high,
            "rate_contradicted": contradicted, "width_needed": needed,
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


def _depth_list(depths: list[float]) -> str:
    return ", ".join(f"{d:g}" for d in depths)


def depth_laws(arch_verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per (claim, series): how the width the claim needs grows with depth.

    A series is the architectures of one claim that differ only in depth
    (:func:`series_id`). Each depth contributes its ``width_needed`` (the width at which its
    fitted rate law reaches the tolerance, from :func:`arch_verdicts`), and
    :func:`ntkcheck.metrics.fit_depth_law` fits ``log(width_needed)`` against
    ``log(depth)`` by least squares, with a Student-t 95% interval on the exponent
    (``n_depths - 2`` degrees of freedom), compared with Hanin & Nica 2019's exponent 1
    (:data:`ntkcheck.metrics.HANIN_NICA_EXPONENT`). Depths whose claim holds already below
    the narrowest width swept (``width_needed`` NaN) are left out and named in the message.

    Args:
        arch_verdicts: Output of :func:`arch_verdicts` (needs ``depth`` and
            ``width_needed``).

    Returns:
        A DataFrame with :data:`DEPTH_COLUMNS`, one row per series measured at two or more
        depths: ``depths`` the depths with a width needed (comma-separated), ``exponent`` and
        its interval (NaN with fewer than 2 such depths; the interval NaN with 2),
        ``consistent`` whether 1 lies in the interval (None without one), ``message`` in
        words.

    """
    rows = []
    if not len(arch_verdicts) or "depth" not in arch_verdicts.columns:
        return pd.DataFrame(columns=DEPTH_COLUMNS)
    if "verdict" not in arch_verdicts.columns:  # a table written before the column existed
        arch_verdicts = arch_verdicts.assign(verdict=arch_verdicts["holds_at_widest"].map(
            lambda h: "holds" if bool(h) else "fails"))
    av = arch_verdicts.assign(
        _series=arch_verdicts["arch_id"].astype(str).map(series_id),
        _depth=pd.to_numeric(arch_verdicts["depth"], errors="coerce"),
        _needed=pd.to_numeric(arch_verdicts["width_needed"], errors="coerce"))
    av = av[av["_depth"].notna()]
    for (cid, series), g in av.groupby(["claim_id", "_series"], sort=True):
        g = g.sort_values("_depth")
        all_depths = [float(d) for d in g["_depth"].unique()]
        if len(all_depths) < 2:
            continue
        known = g[g["_needed"].notna() & (g["_needed"] > 0)]
        depths = [float(d) for d in known["_depth"]]
        law = fit_depth_law(depths, known["_needed"].tolist())
        left = g[~(g["_needed"].notna() & (g["_needed"] > 0))]
        below = [float(d) for d in left.loc[left["verdict"].isin(
            ["holds", "rate-contradicts"]), "_depth"]]
        never = [float(d) for d in left["_depth"] if float(d) not in below]
        consistent: object = None
        if math.isfinite(law.exponent_low) and math.isfinite(law.exponent_high):
            slack = 1e-9  # round-off of a zero-width interval (noise-free widths needed)
            consistent = bool(law.exponent_low - slack <= HANIN_NICA_EXPONENT
                              <= law.exponent_high + slack)
        if math.isfinite(law.exponent):
            text = f"width needed ~ depth^{law.exponent:.2f}"
            if consistent is None:
                text += " (two depths: no interval)"
            else:
                text += (f" [{law.exponent_low:.2f}, {law.exponent_high:.2f}] "
                         f"({'consistent' if consistent else 'inconsistent'} with Hanin & "
                         f"Nica 2019's depth^{HANIN_NICA_EXPONENT:g})")
            text += f" over depths {_depth_list(depths)}"
        else:
            text = (f"no depth law: the width needed is known at "
                    f"{len(depths)} of {len(all_depths)} depths")
        if below:
            text += (f"; left out: depth{'s' if len(below) > 1 else ''} {_depth_list(below)} "
                     "(within the tolerance from the narrowest width swept)")
        if never:
            text += (f"; left out: depth{'s' if len(never) > 1 else ''} {_depth_list(never)} "
                     "(the fit never reaches the tolerance, or no fit)")
        rows.append({
            "claim_id": cid, "series": series, "depths": _depth_list(depths),
            "n_depths": len(depths), "exponent": law.exponent,
            "exponent_low": law.exponent_low, "exponent_high": law.exponent_high,
            "intercept": law.intercept, "reference_exponent": HANIN_NICA_EXPONENT,
            "consistent": consistent, "message": text,
        })
    return pd.DataFrame(rows, columns=DEPTH_COLUMNS)
