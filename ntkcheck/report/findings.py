"""Where the theory holds: depth x width maps, per-claim summaries and per-domain findings.

Everything here is computed from a run's verdict tables (:mod:`ntkcheck.verdict`): no
conclusion is written in advance. A claim belongs to a *domain* (the claim marker's
``domain`` key, else :data:`DOMAIN_OF`, else ``"other"``); the report writes one paragraph
per domain from templated sentences filled with the run's verdicts, widths and fits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ntkcheck.report import fmt
from ntkcheck.report.grid import verdict_status

__all__ = ["DOMAIN_OF", "DOMAIN_TITLES", "PRACTICAL_WIDTHS", "domain_of", "MapCell", "MapRow",
           "DepthMap", "SettingSummary", "ClaimSummary", "Finding", "build_depth_maps",
           "summarize", "build_findings"]

#: The domain of each of ntkcheck's own claims (a claim marker's ``domain`` key wins).
DOMAIN_OF = {
    **dict.fromkeys(("ntk-at-init", "nngp-at-init", "nngp-gaussian", "lazy-weights",
                     "lazy-kernel", "linearized-dynamics", "kernel-regression",
                     "feature-learning", "feature-learning-mup"), "kernel-regime"),
    **dict.fromkeys(("gd-rate", "gd-stable-lr", "jacobian-full-rank", "jacobian-stable",
                     "ngd-rate", "ngd-beats-gd", "ngd-conditioning", "second-order-speedup"),
                    "optimization"),
    **dict.fromkeys(("lla-equals-ntkgp", "uncertainty-calibrated",
                     "bandit-theory-exploration"), "uncertainty"),
    **dict.fromkeys(("forgetting-decreases-with-width-short",
                     "forgetting-decreases-with-width-converged", "forgetting-ntk-overlap",
                     "forgetting-bounded"), "continual"),
}
#: Headings of the domains (Wenger, Dangel & Kristiadi 2023, arXiv:2310.00137, Sec. 3).
DOMAIN_TITLES = {
    "kernel-regime": "Kernel regime: the NTK at initialization and lazy training",
    "optimization": "Optimization (seed paper Sec. 3.1): conditioning and second-order methods",
    "uncertainty": "Uncertainty (Sec. 3.2): linearized Laplace, the NTK-GP and exploration",
    "continual": "Continual learning (Sec. 3.3): forgetting and width",
    "other": "Other claims",
}
#: Hidden widths people commonly train (units of a dense layer / channels), for comparison
#: with the width a claim needs.
PRACTICAL_WIDTHS = (512, 4096)

#: Failing claims a finding describes in detail (the others are named).
MAX_DETAILED = 3
_RANK = {"holds": 0, "incomplete": 1, "rate-contradicts": 2, "fails": 3}
_STATUS_VERDICT = {"holds": "holds", "fails": "fails", "contradicts": "rate-contradicts",
                   "missing": "incomplete"}
_MARK = {"holds": "\u2713", "fails": "\u2717", "contradicts": "rate", "missing": "\u00b7"}


def domain_of(claim_id: str, claim: Mapping[str, Any] | None = None) -> str:
    """A claim's domain: its ``domain`` key, else :data:`DOMAIN_OF`, else ``"other"``."""
    given = (claim or {}).get("domain")
    if isinstance(given, str) and given:
        return given
    return DOMAIN_OF.get(str(claim_id), "other")


def _verdict(row: Mapping[str, Any]) -> str:
    """One of :data:`ntkcheck.verdict.VERDICTS` for a (normalised) arch verdict row."""
    return _STATUS_VERDICT[verdict_status(row)]


def _num(x: Any) -> float:
    try:
        return math.nan if fmt.is_missing(x) else float(x)
    except (TypeError, ValueError):
        return math.nan


def _series(arch_id: str) -> str:
    from ntkcheck.verdict import series_id

    return series_id(arch_id)


# ----------------------------------------------------------------------------- depth maps


@dataclass(frozen=True)
class MapCell:
    """One (depth, width) cell: ``status`` holds / fails / contradicts / missing."""

    status: str
    text: str
    title: str


@dataclass(frozen=True)
class MapRow:
    """One depth of a series: its cells, verdict and width needed (preformatted)."""

    depth: str
    arch_id: str
    cells: list[MapCell]
    status: str
    verdict: str
    width_needed: str


@dataclass(frozen=True)
class DepthMap:
    """A series (architectures differing only in depth) of one claim, as a depth x width map."""

    series: str
    setting: str
    widths: list[int]
    rows: list[MapRow]
    law: str = ""


def _needed_text(row: Mapping[str, Any]) -> str:
    needed = _num(row.get("width_needed"))
    if not math.isfinite(needed):
        if verdict_status(row) in ("holds", "contradicts"):
            return "below the sweep"
        return "never (fit moves away)" if math.isfinite(_num(row.get("slope"))) else fmt.DASH
    widest = _num(row.get("widest_width"))
    text = "~" + fmt.width(needed)
    return text + (" (extrapolated)" if math.isfinite(widest) and needed > widest else "")


def build_depth_maps(claim_id: str, records: pd.DataFrame, width_verdicts: pd.DataFrame,
                     arch_verdicts: pd.DataFrame,
                     laws: pd.DataFrame | None = None) -> list[DepthMap]:
    """The depth x width maps of one claim: one per series, theory series first.

    A cell holds when the mean over seeds is within the tolerance and the architecture's
    verdict is not ``rate-contradicts`` (then it reads *rate*: within the tolerance, but the
    rate contradicts the theory); *not measured* cells say why (out of memory, above the
    width cap, timed out) or that the width was not swept for that depth.

    Args:
        claim_id: The claim.
        records: Its records (normalised; ``setting`` and ``status`` columns optional).
        width_verdicts: Its per-width verdicts (normalised, with ``depth``).
        arch_verdicts: Its per-architecture verdicts (normalised, with ``depth``).
        laws: Its rows of :func:`ntkcheck.verdict.depth_laws` (for the maps' captions).

    Returns:
        The maps; columns are the widths swept for the claim (any depth).

    """
    from ntkcheck.report.frames import widths as all_widths
    from ntkcheck.report.grid import _not_measured
    from ntkcheck.runs.outcomes import arch_settings

    if not len(arch_verdicts):
        return []
    widths = all_widths(records, width_verdicts)
    settings = arch_settings(records)
    missing, why = _not_measured(records)
    per_width = {(str(r["arch_id"]), int(r["width"])): r
                 for r in width_verdicts.to_dict("records") if not fmt.is_missing(r["width"])}
    law_text = ({str(r["series"]): str(r["message"]) for r in laws.to_dict("records")}
                if laws is not None and len(laws) else {})
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in arch_verdicts.to_dict("records"):
        groups.setdefault(_series(str(row["arch_id"])), []).append(row)
    maps = []
    for series, rows in groups.items():
        rows.sort(key=lambda r: (_num(r.get("depth")) if math.isfinite(_num(r.get("depth")))
                                 else math.inf, str(r["arch_id"])))
        setting = settings.get((claim_id, str(rows[0]["arch_id"])), "theory")
        out_rows = []
        for r in rows:
            arch = str(r["arch_id"])
            status = verdict_status(r)
            cells = []
            for w in widths:
                wv = per_width.get((arch, w))
                nm = missing.get((claim_id, arch, w), "")
                if wv is None:
                    text = nm or "not swept at this depth"
                    cells.append(MapCell("missing", _MARK["missing"],
                                         why.get((claim_id, arch, w), "") or text))
                    continue
                cs = "holds" if bool(wv["holds"]) else "fails"
                if cs == "holds" and status == "contradicts":
                    cs = "contradicts"
                title = f"width {w}: mean {fmt.sig(wv['mean'], 3)}"
                if not fmt.is_missing(wv.get("std")):
                    title += f" \u00b1 {fmt.sig(wv['std'], 2)}"
                title += {"holds": ", holds", "fails": ", fails",
                          "contradicts": ", within the tolerance but the rate contradicts "
                                         "the theory"}[cs]
                cells.append(MapCell(cs, _MARK[cs], title))
            depth = _num(r.get("depth"))
            out_rows.append(MapRow(
                depth=fmt.sig(depth, 3) if math.isfinite(depth) else fmt.DASH,
                arch_id=arch, cells=cells, status=status, verdict=_verdict(r),
                width_needed=_needed_text(r)))
        maps.append(DepthMap(series=series, setting=setting, widths=widths, rows=out_rows,
                             law=law_text.get(series, "")))
    maps.sort(key=lambda m: (m.setting != "theory", m.series))
    return maps


# ----------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class SettingSummary:
    """A claim's verdicts in one setting (theory or practical), over its architectures.

    Attributes:
        verdict: The worst architecture's verdict (fails > rate-contradicts > incomplete >
            holds).
        n_archs: Architectures judged; ``counts`` how many have each verdict.
        widest: The widest width swept (over architectures).
        depths: The depths measured, ascending.
        worst: The verdict row of the architecture that decides ``verdict`` (for fails: the
            one needing the largest width).
        needed: The largest width needed over the architectures that fail (NaN if none
            has one).
        holds_from: The largest holds-from width over architectures that hold (NaN if none).
        worst_mean: ``worst``'s mean over seeds at its widest width (NaN if unknown).

    """

    verdict: str
    n_archs: int
    counts: dict[str, int]
    widest: float
    depths: list[float]
    worst: dict[str, Any]
    needed: float
    holds_from: float
    worst_mean: float = math.nan


@dataclass(frozen=True)
class ClaimSummary:
    """One claim's row of the "where the theory holds" table."""

    claim_id: str
    domain: str
    tolerance: float
    direction: str
    rate: float
    theory: SettingSummary | None
    practical: SettingSummary | None
    laws: list[dict[str, Any]] = field(default_factory=list)


def _summarize_setting(rows: list[dict[str, Any]],
                       means: Mapping[tuple[str, str, int], float]) -> SettingSummary | None:
    if not rows:
        return None
    verdicts = [_verdict(r) for r in rows]
    worst_v = max(verdicts, key=lambda v: _RANK[v])
    candidates = [r for r, v in zip(rows, verdicts) if v == worst_v]
    worst = max(candidates, key=lambda r: (_num(r.get("width_needed"))
                                           if math.isfinite(_num(r.get("width_needed")))
                                           else -1.0))
    failing = [_num(r.get("width_needed")) for r, v in zip(rows, verdicts) if v == "fails"]
    failing = [x for x in failing if math.isfinite(x)]
    holding = [_num(r.get("holds_from_width")) for r, v in zip(rows, verdicts) if v == "holds"]
    holding = [x for x in holding if math.isfinite(x)]
    depths = sorted({_num(r.get("depth")) for r in rows
                     if math.isfinite(_num(r.get("depth")))})
    widest = max((_num(r.get("widest_width")) for r in rows), default=math.nan)
    w = _num(worst.get("widest_width"))
    worst_mean = (means.get((str(worst["claim_id"]), str(worst["arch_id"]), int(w)), math.nan)
                  if math.isfinite(w) else math.nan)
    return SettingSummary(
        verdict=worst_v, n_archs=len(rows),
        counts={v: verdicts.count(v) for v in _RANK if verdicts.count(v)},
        widest=widest, depths=depths, worst=worst,
        needed=max(failing) if failing else math.nan,
        holds_from=max(holding) if holding else math.nan, worst_mean=worst_mean)


def summarize(claims: Mapping[str, Mapping[str, Any]], records: pd.DataFrame,
              width_verdicts: pd.DataFrame, arch_verdicts: pd.DataFrame, laws: pd.DataFrame,
              claim_ids: Sequence[str]) -> list[ClaimSummary]:
    """One :class:`ClaimSummary` per claim of ``claim_ids`` (None settings: not measured).

    Args:
        claims: Claim id -> metadata (``tolerance``, ``direction``, ``rate``, ``domain``).
        records: The run's records (normalised; for each architecture's setting).
        width_verdicts: Per-width verdicts (normalised).
        arch_verdicts: Per-architecture verdicts (normalised).
        laws: :func:`ntkcheck.verdict.depth_laws` of ``arch_verdicts``.
        claim_ids: The claims, in display order.

    """
    from ntkcheck.runs.outcomes import arch_settings

    means = {(str(r["claim_id"]), str(r["arch_id"]), int(r["width"])): _num(r["mean"])
             for r in width_verdicts.to_dict("records") if not fmt.is_missing(r["width"])}

    settings = arch_settings(records)
    by_claim: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in arch_verdicts.to_dict("records"):
        cid = str(row["claim_id"])
        setting = settings.get((cid, str(row["arch_id"])), "theory")
        by_claim.setdefault(cid, {}).setdefault(setting, []).append(row)
    law_rows = laws.to_dict("records") if len(laws) else []
    out = []
    for cid in claim_ids:
        c = claims.get(cid) or {}
        rows = by_claim.get(cid, {})
        out.append(ClaimSummary(
            claim_id=cid, domain=domain_of(cid, c), tolerance=_num(c.get("tolerance")),
            direction=str(c.get("direction") or "below"), rate=_num(c.get("rate")),
            theory=_summarize_setting(rows.get("theory", []), means),
            practical=_summarize_setting(rows.get("practical", []), means),
            laws=[r for r in law_rows if str(r["claim_id"]) == cid]))
    return out


# ----------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One domain's paragraph and the claims it covers."""

    domain: str
    title: str
    paragraph: str
    claim_ids: list[str]


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _w(w: float) -> str:
    """A width with thousands separators (``4,096``), 2 significant digits from a million."""
    if not math.isfinite(w):
        return fmt.width(w)
    return f"{round(w):,}" if w < 1e6 else fmt.sig(w, 2)


def needed_vs_practice(needed: float) -> str:
    """Words placing a width needed against :data:`PRACTICAL_WIDTHS`."""
    lo, hi = PRACTICAL_WIDTHS
    if not math.isfinite(needed):
        return ""
    if needed <= lo:
        return f"below the {lo:,}\u2013{hi:,} units people train"
    if needed <= hi:
        return f"within the {lo:,}\u2013{hi:,} units people train"
    return f"{needed / hi:,.0f}x the {hi:,} units of a wide practical layer"


def _fails_sentence(s: ClaimSummary, summary: SettingSummary) -> str:
    r = summary.worst
    n_fail = summary.counts.get("fails", 0)
    text = f"{s.claim_id} fails"
    if summary.n_archs > 1:
        text += f" on {n_fail} of {summary.n_archs} architectures"
    mean_at = summary.worst_mean
    widest = _num(r.get("widest_width"))
    if math.isfinite(mean_at) and math.isfinite(widest):
        rel = "\u2264" if s.direction == "below" else "\u2265"
        text += (f" (at width {_w(widest)}, {r['arch_id']} measures "
                 f"{fmt.sig(mean_at, 3)}, needs {rel} {fmt.sig(s.tolerance, 3)}")
        needed = _num(r.get("width_needed"))
        if math.isfinite(needed):
            text += (f"; its fit reaches the tolerance at ~{_w(needed)}, "
                     f"{needed_vs_practice(needed)}")
        text += ")"
    return text


def _contradicts_sentence(s: ClaimSummary, summary: SettingSummary) -> str:
    r = summary.worst
    return (f"{s.claim_id} stays within its tolerance but stops following the predicted rate "
            f"(slope {fmt.sig(r.get('tail_slope'), 2)} over the widest widths against "
            f"{fmt.sig(s.rate, 2)}, on {r['arch_id']})")


def _setting_sentences(items: list[ClaimSummary], setting: str) -> list[str]:
    pick = [(s, getattr(s, setting)) for s in items if getattr(s, setting) is not None]
    if not pick:
        return []
    holds = [s for s, x in pick if x.verdict == "holds"]
    fails = [(s, x) for s, x in pick if x.verdict == "fails"]
    contra = [(s, x) for s, x in pick if x.verdict == "rate-contradicts"]
    incomplete = [s for s, x in pick if x.verdict == "incomplete"]
    widest = max(x.widest for _, x in pick)
    where = "In the theory setting" if setting == "theory" else "In the practical settings"
    head = f"{where}, {len(holds)} of {len(pick)} claim{'s' if len(pick) != 1 else ''}"
    if holds:
        parts = []
        for s in holds:
            x = s.theory if setting == "theory" else s.practical
            hf = f" from width {_w(x.holds_from)}" if math.isfinite(x.holds_from) else ""
            parts.append(f"{s.claim_id}{hf}")
        head += (f" hold{'s' if len(holds) == 1 else ''} up to the widest width swept "
                 f"({_w(widest)}): {_join(parts)}")
    else:
        head += f" hold at the widest width swept ({_w(widest)})"
    sentences = [head + "."]
    if fails:  # the worst (largest width needed) in detail, the others by name
        fails.sort(key=lambda sx: -(sx[1].needed if math.isfinite(sx[1].needed) else -1.0))
        sentences.append(_join([_fails_sentence(s, x) for s, x in fails[:MAX_DETAILED]]) + ".")
        rest = [s.claim_id for s, _ in fails[MAX_DETAILED:]]
        if rest:
            sentences.append(f"{_join(rest)} fail{'s' if len(rest) == 1 else ''} too.")
    if contra:
        sentences.append(_join([_contradicts_sentence(s, x) for s, x in contra]) + ".")
    if incomplete:
        sentences.append(f"{_join([s.claim_id for s in incomplete])}: the widest width was "
                         "not fully measured, not judged.")
    return sentences


def _depth_sentences(items: list[ClaimSummary]) -> list[str]:
    """Sentences for the depth laws fitted over three or more depths (sections show all)."""
    out = []
    for s in items:
        for law in s.laws:
            exponent = _num(law.get("exponent"))
            if not math.isfinite(exponent) or int(law.get("n_depths") or 0) < 3:
                continue
            text = (f"Over depths {law['depths']}, {s.claim_id} ({law['series']}) needs a "
                    f"width growing like depth^{fmt.sig(exponent, 2)}")
            lo, hi = _num(law.get("exponent_low")), _num(law.get("exponent_high"))
            if math.isfinite(lo) and math.isfinite(hi):
                agree = "consistent" if bool(law.get("consistent")) else "inconsistent"
                text += (f" [{fmt.sig(lo, 2)}, {fmt.sig(hi, 2)}], {agree} with Hanin & "
                         "Nica's depth^1")
            else:
                text += " (two depths, no interval; Hanin & Nica: depth^1)"
            out.append(text + ".")
    return out


def build_findings(summaries: Sequence[ClaimSummary]) -> list[Finding]:
    """One :class:`Finding` per domain with claims, in :data:`DOMAIN_TITLES` order.

    Each paragraph is assembled from templated sentences: how many claims hold in the
    theory setting (and from which width), which fail and where their fit says they would
    hold against :data:`PRACTICAL_WIDTHS`, which stay within the tolerance while their rate
    contradicts the theory, the same for the practical settings, and the fitted depth laws.
    """
    order = list(DOMAIN_TITLES)
    domains = sorted({s.domain for s in summaries},
                     key=lambda d: (order.index(d) if d in order else len(order), d))
    out = []
    for d in domains:
        items = [s for s in summaries if s.domain == d]
        measured = [s for s in items if s.theory is not None or s.practical is not None]
        unmeasured = [s.claim_id for s in items if s not in measured]
        sentences = _setting_sentences(measured, "theory")
        sentences += _setting_sentences(measured, "practical")
        sentences += _depth_sentences(measured)
        if unmeasured:
            sentences.append(f"Not measured in this run: {_join(unmeasured)}.")
        out.append(Finding(domain=d, title=DOMAIN_TITLES.get(d, d),
                           paragraph=" ".join(sentences),
                           claim_ids=[s.claim_id for s in items]))
    return out
