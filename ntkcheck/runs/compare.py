"""Compare two runs: what changed in each claim's verdict, fitted slope and extrapolated width.

Made for CI of a user's model code: run the claims before and after a change, then
``ntkcheck compare BEFORE AFTER`` exits 1 when a claim that held before fails after (or on the
thresholds of :class:`FailOn`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ntkcheck.runs.store import Run, claim_status

__all__ = ["FailOn", "Comparison", "compare_runs", "parse_fail_on", "sweep_differences",
           "ARCH_COMPARE_COLUMNS", "CLAIM_COMPARE_COLUMNS"]

#: Columns of :attr:`Comparison.archs`.
ARCH_COMPARE_COLUMNS = [
    "claim_id", "arch_id", "verdict_a", "verdict_b", "change", "slope_a", "slope_b",
    "slope_change", "extrapolated_a", "extrapolated_b", "extrapolated_ratio", "message_b",
]
#: Columns of :attr:`Comparison.claims`.
CLAIM_COMPARE_COLUMNS = ["claim_id", "status_a", "status_b", "change"]


@dataclass(frozen=True)
class FailOn:
    """When ``ntkcheck compare`` exits 1.

    Attributes:
        verdict: A claim that holds in A does not hold in B (fails, or errors).
        slope: A (claim, architecture) fitted slope moved by more than this (absolute), or None.
        extrapolated: A (claim, architecture) width needed grew by more than this factor
            (B / A), or None: the width at which the fitted rate law reaches the tolerance
            (``width_needed`` of :func:`ntkcheck.verdict.arch_verdicts`, interpolated inside
            the sweep, extrapolated beyond it).

    """

    verdict: bool = True
    slope: float | None = None
    extrapolated: float | None = None


def parse_fail_on(items: list[str] | None) -> FailOn:
    """Parse ``--fail-on`` values: ``verdict``, ``slope=X``, ``extrapolated=F``, ``none``.

    No items means ``verdict``; given items replace that default (so ``slope=0.2`` alone
    does not fail on verdicts; give ``verdict`` too for both).

    Raises:
        ValueError: An unknown item or a threshold that is not a positive number.

    """
    if not items:
        return FailOn()
    verdict, slope, extrapolated = False, None, None
    for item in items:
        for part in str(item).split(","):
            name, _, value = part.strip().partition("=")
            if name == "verdict" and not value:
                verdict = True
            elif name == "none" and not value:
                continue
            elif name in ("slope", "extrapolated"):
                try:
                    x = float(value)
                except ValueError:
                    raise ValueError(f"--fail-on {part}: {name} needs a number, e.g. "
                                     f"{name}={'0.2' if name == 'slope' else '10'}") from None
                if not (math.isfinite(x) and x > 0):
                    raise ValueError(f"--fail-on {part}: the threshold must be positive")
                if name == "slope":
                    slope = x
                else:
                    extrapolated = x
            else:
                raise ValueError(f"--fail-on {part!r}: use verdict, slope=X, extrapolated=F "
                                 "or none")
    return FailOn(verdict=verdict, slope=slope, extrapolated=extrapolated)


@dataclass(frozen=True)
class Comparison:
    """The changes from run A to run B.

    Attributes:
        claims: One row per claim (:data:`CLAIM_COMPARE_COLUMNS`); status is ``holds``,
            ``fails``, ``error`` or ``absent``.
        archs: One row per (claim, architecture) in either run (:data:`ARCH_COMPARE_COLUMNS`);
            verdicts are ``holds``, ``fails`` or ``absent``.

    """

    claims: pd.DataFrame
    archs: pd.DataFrame

    def failures(self, fail_on: FailOn) -> list[str]:
        """One line per change that ``fail_on`` counts as a failure (empty: none)."""
        out = []
        if fail_on.verdict:
            for r in self.claims.itertuples():
                if r.status_a == "holds" and r.status_b in ("fails", "error"):
                    out.append(f"claim {r.claim_id!r} held in A but {r.status_b} in B")
        for r in self.archs.itertuples():
            if (fail_on.slope is not None and math.isfinite(r.slope_change)
                    and abs(r.slope_change) > fail_on.slope):
                out.append(f"claim {r.claim_id!r}, {r.arch_id}: fitted slope moved by "
                           f"{r.slope_change:+.3g} ({r.slope_a:.3g} -> {r.slope_b:.3g}), "
                           f"more than {fail_on.slope:g}")
            if (fail_on.extrapolated is not None and math.isfinite(r.extrapolated_ratio)
                    and r.extrapolated_ratio > fail_on.extrapolated):
                out.append(f"claim {r.claim_id!r}, {r.arch_id}: width needed grew "
                           f"{r.extrapolated_ratio:.3g}x ({r.extrapolated_a:.3g} -> "
                           f"{r.extrapolated_b:.3g}), more than {fail_on.extrapolated:g}x")
        return out


def sweep_differences(a: Run, b: Run) -> list[str]:
    """How the two runs' sweeps differ (profile, data size, widths, seeds); empty if alike.

    Comparing such runs is allowed (a ``quick`` run against a ``paper`` run is a question
    users ask), but a verdict "at the widest width" then means different widths, so
    ``ntkcheck compare`` prints these lines as a warning.
    """
    out = []
    for key, what in (("profile", "profile"), ("n_inputs", "inputs"), ("widths", "widths"),
                      ("seeds", "seeds")):
        va, vb = a.meta.get(key), b.meta.get(key)
        if va is not None and vb is not None and va != vb:
            out.append(f"{what} differ: A {va}, B {vb}")
    return out


def _change(a: str, b: str) -> str:
    if a == b:
        return ""
    if a == "absent":
        return "new"
    if b == "absent":
        return "gone"
    return f"{a} -> {b}"


def _num(x: object) -> float:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return v


def compare_runs(a: Run, b: Run) -> Comparison:
    """Compare run ``a`` (before) with run ``b`` (after).

    Returns:
        The per-claim and per-(claim, architecture) changes. ``slope_change`` is B - A and
        ``extrapolated_ratio`` B / A (NaN where either side lacks the number).

    """
    _, av_a = a.verdicts()
    _, av_b = b.verdicts()
    claim_ids = list(dict.fromkeys([*a.claims, *b.claims, *av_a["claim_id"], *av_b["claim_id"]]))
    claims = pd.DataFrame(
        [{"claim_id": c, "status_a": claim_status(a, c), "status_b": claim_status(b, c)}
         for c in claim_ids], columns=CLAIM_COMPARE_COLUMNS[:3])
    claims["change"] = [_change(x, y) for x, y in zip(claims["status_a"], claims["status_b"])]

    key = ["claim_id", "arch_id"]
    cols = key + ["holds_at_widest", "slope", "width_needed", "message"]
    merged = pd.merge(av_a[cols], av_b[cols], on=key, how="outer", suffixes=("_a", "_b"),
                      indicator=True, sort=True)
    rows = []
    for r in merged.to_dict("records"):
        va = ("absent" if r["_merge"] == "right_only"
              else "holds" if bool(r["holds_at_widest_a"]) else "fails")
        vb = ("absent" if r["_merge"] == "left_only"
              else "holds" if bool(r["holds_at_widest_b"]) else "fails")
        sa, sb = _num(r["slope_a"]), _num(r["slope_b"])
        ea, eb = _num(r["width_needed_a"]), _num(r["width_needed_b"])
        ratio = eb / ea if math.isfinite(ea) and math.isfinite(eb) and ea > 0 else math.nan
        message = r["message_b"] if isinstance(r["message_b"], str) else ""
        rows.append({"claim_id": r["claim_id"], "arch_id": r["arch_id"], "verdict_a": va,
                     "verdict_b": vb, "change": _change(va, vb), "slope_a": sa, "slope_b": sb,
                     "slope_change": sb - sa, "extrapolated_a": ea, "extrapolated_b": eb,
                     "extrapolated_ratio": ratio, "message_b": message})
    archs = pd.DataFrame(rows, columns=ARCH_COMPARE_COLUMNS)
    order = {c: i for i, c in enumerate(claim_ids)}
    archs = archs.sort_values(["claim_id", "arch_id"], key=lambda s: s.map(order)
                              if s.name == "claim_id" else s, kind="stable")
    return Comparison(claims=claims, archs=archs.reset_index(drop=True))
