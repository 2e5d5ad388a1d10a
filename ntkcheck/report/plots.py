"""Log-log plots of a metric against width, rendered as small inline SVG.

Matplotlib is used through its object-oriented API only: a bare
:class:`~matplotlib.figure.Figure` attached to the SVG canvas. pyplot is never
imported, so the global backend and figure registry are left alone and there is
no figure to close; rc settings are applied inside :func:`matplotlib.rc_context`.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ntkcheck.report.fmt import sig

#: Colours assigned to architectures, in order (matplotlib's tab10).
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip

#: Upper bound on per-seed points drawn in one plot (keeps the SVG small).
MAX_POINTS = 400

_RC = {
    "svg.fonttype": "none",
    "svg.image_inline": True,
    "font.size": 8,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "axes.titlesize": 9,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

_STRIP = (
    re.compile(r"<\?xml[^>]*\?>\s*"),
    re.compile(r"<!DOCTYPE[^>]*>\s*"),
    re.compile(r"<metadata>.*?</metadata>\s*", re.S),
    re.compile(r"<!--.*?-->", re.S),
)
_BETWEEN_TAGS = re.compile(r">\s+<")
# Matplotlib names every group (``figure_1``, ``xtick_3``...). Nothing refers to those
# names, and they would repeat across the plots of one page, so they are dropped; the
# ids of the definitions that are referred to (markers, clip paths) are salted instead.
_GROUP_ID = re.compile(r'<g id="[^"]*"')
# Path data (``d="M 96.493835 -82.924128 L ..."``) comes with six decimals of a point;
# a tenth of a point (1/720 inch) is below what a screen shows, and keeps the report small.
_PATH_DATA = re.compile(r'(\sd=")([^"]*)(")')
_DECIMAL = re.compile(r"-?\d+\.\d+")


def _round_path(match: re.Match) -> str:
    data = _DECIMAL.sub(lambda m: f"{float(m.group()):.1f}", match.group(2))
    return match.group(1) + " ".join(data.split()) + match.group(3)


@dataclass(frozen=True)
class PlotSeries:
    """One architecture's measurements of a metric.

    Attributes:
        label: Legend label (the architecture id).
        widths: Width of each measurement (one entry per seed and width).
        values: Metric value of each measurement, aligned with ``widths``.
        color: Line colour; None picks from :data:`PALETTE` by position.
        slope: Fitted log-log slope (NaN when there is no fit).
        slope_low: Lower end of the slope's 95% interval.
        slope_high: Upper end of the slope's 95% interval.
        intercept: Fitted intercept of ``ln(value) = intercept + slope * ln(width)``
            (natural logarithms, as :func:`ntkcheck.metrics.fit_rate` fits).
        reference: Optional reference value of each measurement (e.g. the metric's
            infinite-width value, the ``reference`` column of a claim's records), aligned with
            ``widths``; NaN where there is none. Drawn per width as the mean over seeds.

    """

    label: str
    widths: Sequence[float]
    values: Sequence[float]
    color: str | None = None
    slope: float = math.nan
    slope_low: float = math.nan
    slope_high: float = math.nan
    intercept: float = math.nan
    reference: Sequence[float] | None = None


def palette(keys: Sequence[str]) -> dict[str, str]:
    """Assign a colour to each key, cycling through :data:`PALETTE`.

    Args:
        keys: Keys in the order they should take colours.

    Returns:
        Mapping key -> hex colour.

    """
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float, np.number)) and math.isfinite(x)


def _subsample(n: int, keep: int) -> np.ndarray:
    """Indices of an evenly spaced subsample of ``keep`` out of ``n`` items."""
    if n <= keep:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, keep).round().astype(int))


def _plain(text: str) -> str:
    """Escape ``$`` so matplotlib does not read the label as mathtext."""
    return text.replace("$", r"\$")


def _tidy_svg(text: str) -> str:
    for pattern in _STRIP:
        text = pattern.sub("", text)
    text = _GROUP_ID.sub("<g", text)
    text = _PATH_DATA.sub(_round_path, text)
    return _BETWEEN_TAGS.sub("><", text).strip()


def _draw_series(ax, s: PlotSeries, color: str, log_y: bool, rate, point_idx) -> bool:
    """Draw one series; return whether a predicted-slope line was drawn."""
    w = np.asarray(s.widths, dtype=float)
    v = np.asarray(s.values, dtype=float)
    ok = np.isfinite(w) & np.isfinite(v) & (w > 0)
    w, v = w[ok], v[ok]
    if w.size == 0:
        return False
    shown = v > 0 if log_y else np.ones(v.size, dtype=bool)
    idx = np.flatnonzero(shown)[point_idx(int(shown.sum()))]
    ax.plot(w[idx], v[idx], ls="none", marker="o", ms=2.2, alpha=0.45, color=color, mec="none")
    # Mean and spread over every seed; a log axis shows them where they are positive.
    uw = np.unique(w)
    groups = [v[w == x] for x in uw]
    mean = np.array([g.mean() for g in groups])
    lo = np.array([g.min() for g in groups])
    hi = np.array([g.max() for g in groups])
    if any(g.size > 1 for g in groups):
        band = lo > 0 if log_y else np.ones(uw.size, dtype=bool)
        ax.fill_between(uw, lo, hi, where=band, color=color, alpha=0.13, lw=0)
    line = np.where(mean > 0, mean, np.nan) if log_y else mean
    ax.plot(uw, line, "-o", ms=3.5, lw=1.4, color=color, label=_plain(s.label))
    if log_y and uw.size >= 2 and _finite(s.slope) and _finite(s.intercept):
        x = np.array([uw[0], uw[-1]])
        label = f"fit slope {sig(s.slope, 3)}"
        if _finite(s.slope_low) and _finite(s.slope_high):
            label += f" [{sig(s.slope_low, 3)}, {sig(s.slope_high, 3)}]"
        y = np.exp(s.intercept + s.slope * np.log(x))
        ax.plot(x, y, ls="--", lw=1.1, color=color, label=label)
        if _finite(s.slope_low) and _finite(s.slope_high):
            # The slope's 95% interval as a band pivoting where the fit is pinned: at the mean
            # log width of the fitted points, through the fitted line.
            xs = np.geomspace(uw[0], uw[-1], 16)
            centre = float(np.log(w[v > 0]).mean())
            y0 = s.intercept + s.slope * centre
            lo = y0 + s.slope_low * (np.log(xs) - centre)
            hi = y0 + s.slope_high * (np.log(xs) - centre)
            ax.fill_between(xs, np.exp(np.minimum(lo, hi)), np.exp(np.maximum(lo, hi)),
                            color=color, alpha=0.1, lw=0)
    if log_y and uw.size >= 2 and _finite(rate) and mean[0] > 0:
        x = np.array([uw[0], uw[-1]])
        ax.plot(x, mean[0] * (x / uw[0]) ** rate, ls=":", lw=1.3, color=color, alpha=0.9)
        return True
    return False


def _draw_reference(ax, s: PlotSeries, color: str, log_y: bool) -> bool:
    """Draw a series' reference (mean per width) as a wide translucent line; return if drawn."""
    if s.reference is None:
        return False
    w = np.asarray(s.widths, dtype=float)
    r = np.asarray(s.reference, dtype=float)
    ok = np.isfinite(w) & np.isfinite(r) & (w > 0) & ((r > 0) if log_y else True)
    if not ok.any():
        return False
    uw = np.unique(w[ok])
    mean = np.array([r[ok & (w == x)].mean() for x in uw])
    if uw.size == 1:  # one width: a short horizontal segment around it
        uw, mean = np.array([uw[0] / 1.5, uw[0] * 1.5]), np.repeat(mean, 2)
    ax.plot(uw, mean, ls="-", lw=4.0, color=color, alpha=0.25, solid_capstyle="butt")
    return True


def svg_loglog(
    series: Sequence[PlotSeries],
    *,
    tolerance: float | None = None,
    predicted_rate: float | None = None,
    xlabel: str = "width",
    ylabel: str = "value",
    title: str = "",
    salt: str = "ntkcheck",
    max_points: int = MAX_POINTS,
    xtick_format: Callable[[float], str] | None = None,
) -> str:
    """Plot a metric against width on log-log axes and return inline SVG.

    Per series: the per-seed values as small points, the mean per width as a
    line with markers over a band spanning the seeds' min..max, the fitted
    power law as a dashed line (slope and interval in the legend) and the
    predicted slope as a dotted line anchored at the first width's mean, and the fitted slope's
    95% interval as a faint band around the fitted line; a series' ``reference`` (e.g. the
    infinite-width value) is a wide translucent line of its colour. The
    tolerance is a horizontal line. On the log y axis, nonpositive values,
    means and bands are not drawn (the means still include every value);
    when no value is positive the y axis is linear and no fit or predicted
    line is drawn.

    Args:
        series: One :class:`PlotSeries` per architecture.
        tolerance: Value drawn as a horizontal line (skipped if None/NaN, or
            nonpositive on a log axis).
        predicted_rate: The slope theory predicts (None or NaN for none).
        xlabel: X axis label.
        ylabel: Y axis label.
        title: Plot title.
        salt: Salt for the SVG element ids; give each plot in a page its own
            so ids stay unique when several SVGs are inlined.
        max_points: Most per-seed points drawn over all series.
        xtick_format: Formats the x tick labels when they are the data's x values (at most
            12 distinct); default ``f"{x:g}"``.

    Returns:
        The ``<svg>...</svg>`` element, without XML prologue or metadata.

    """
    all_v = np.concatenate([np.asarray(s.values, dtype=float).ravel() for s in series] or [[]])
    all_w = np.concatenate([np.asarray(s.widths, dtype=float).ravel() for s in series] or [[]])
    log_y = bool(np.any(np.isfinite(all_v) & (all_v > 0)))
    per_series = max(1, max_points // max(1, len(series)))

    with mpl.rc_context({**_RC, "svg.hashsalt": salt}):
        fig = Figure(figsize=(6.8, 3.4))
        FigureCanvasSVG(fig)
        ax = fig.add_subplot()
        ax.set_xscale("log", base=2)
        ax.set_yscale("log" if log_y else "linear")
        drew_rate = drew_reference = False
        for i, s in enumerate(series):
            color = s.color or PALETTE[i % len(PALETTE)]
            drew_rate |= _draw_series(
                ax, s, color, log_y, predicted_rate, lambda n: _subsample(n, per_series)
            )
            drew_reference |= _draw_reference(ax, s, color, log_y)
        handles, labels = ax.get_legend_handles_labels()
        if drew_rate:
            handles.append(Line2D([], [], ls=":", lw=1.3, color="0.25"))
            labels.append(f"predicted slope {sig(predicted_rate, 3)}")
        if drew_reference:
            handles.append(Line2D([], [], ls="-", lw=4.0, color="0.25", alpha=0.25))
            labels.append("reference (e.g. infinite width)")
        if _finite(tolerance) and (tolerance > 0 or not log_y):
            handles.append(ax.axhline(tolerance, color="0.35", lw=1.0, ls="-."))
            labels.append(f"tolerance {sig(tolerance, 3)}")
        widths = np.unique(all_w[np.isfinite(all_w) & (all_w > 0)])
        if 0 < widths.size <= 12:
            ax.xaxis.set_major_locator(FixedLocator(widths))
            tick = xtick_format or (lambda x: f"{x:g}")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: tick(x)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(_plain(xlabel))
        ax.set_ylabel(textwrap.fill(_plain(ylabel), 45))
        if title:
            ax.set_title(_plain(title))
        ax.grid(True, which="major", lw=0.4, alpha=0.4)
        if handles:
            ax.legend(
                handles,
                labels,
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                frameon=False,
                borderaxespad=0.0,
            )
        buf = io.BytesIO()
        fig.savefig(
            buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None}
        )
    return _tidy_svg(buf.getvalue().decode("utf-8"))


@dataclass(frozen=True)
class NeededPoint:
    """The width one architecture (one depth of a series) needs for a claim.

    Attributes:
        series: The series (architecture id without depth), the legend label.
        depth: The architecture's depth.
        width: The width at which its fitted rate law reaches the tolerance; for ``kind``
            ``"below"``, the narrowest width swept (the claim holds already there).
        kind: ``"interpolated"`` (inside the sweep), ``"extrapolated"`` (beyond it) or
            ``"below"``.
        color: Marker colour.

    """

    series: str
    depth: float
    width: float
    kind: str
    color: str


def svg_width_needed(
    points: Sequence[NeededPoint],
    laws: Sequence[tuple[str, float, float, str]] = (),
    *,
    practical: tuple[float, float] = (512, 4096),
    swept: tuple[float, float] | None = None,
    reference_exponent: float = 1.0,
    salt: str = "ntkcheck-needed",
) -> str:
    """Plot the width a claim needs against depth, next to the widths people train.

    Log-log axes: depth (base 2) against width. A shaded band marks ``practical`` (the widths
    people commonly train), a lighter one ``swept``; each point is one depth of a series:
    filled where the fit reaches the tolerance inside the sweep, hollow where that is an
    extrapolation, a down triangle at the narrowest width where the claim holds already
    there. ``laws`` (``(series, exponent, intercept, colour)``, natural logarithms as
    :func:`ntkcheck.metrics.fit_depth_law` fits) are drawn as lines, and Hanin & Nica 2019's
    ``width ∝ depth**reference_exponent`` as a dotted grey line through the first law's (or
    point set's) geometric centre.

    Returns:
        The ``<svg>...</svg>`` element.

    """
    with mpl.rc_context({**_RC, "svg.hashsalt": salt}):
        fig = Figure(figsize=(6.8, 3.0))
        FigureCanvasSVG(fig)
        ax = fig.add_subplot()
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        handles: list = []
        labels: list[str] = []
        lo, hi = practical
        handles.append(ax.axhspan(lo, hi, color="#7b68c8", alpha=0.14, lw=0))
        labels.append(f"widths people train ({lo:,.0f}\u2013{hi:,.0f})")
        if swept is not None:
            handles.append(ax.axhspan(swept[0], swept[1], color="0.5", alpha=0.08, lw=0))
            labels.append(f"widths swept ({swept[0]:,.0f}\u2013{swept[1]:,.0f})")
        seen: set[str] = set()
        for p in points:
            if not (_finite(p.depth) and _finite(p.width) and p.depth > 0 and p.width > 0):
                continue
            style = {"interpolated": dict(marker="o", mfc=p.color),
                     "extrapolated": dict(marker="o", mfc="white"),
                     "below": dict(marker="v", mfc=p.color)}[p.kind]
            (h,) = ax.plot([p.depth], [p.width], ls="none", ms=5.5, mec=p.color, mew=1.2,
                           **style)
            if p.series not in seen:
                seen.add(p.series)
                handles.append(h)
                labels.append(_plain(p.series))
        kinds = {p.kind for p in points}
        for kind, style, text in (
                ("interpolated", dict(marker="o", mfc="0.4"), "reaches the tolerance in the sweep"),
                ("extrapolated", dict(marker="o", mfc="white"), "extrapolated beyond the sweep"),
                ("below", dict(marker="v", mfc="0.4"), "holds from the narrowest width")):
            if kind in kinds:
                handles.append(Line2D([], [], ls="none", ms=5.5, mec="0.4", mew=1.2, **style))
                labels.append(text)
        depths = np.array([p.depth for p in points if _finite(p.depth) and p.depth > 0])
        drew_law = False
        for series, exponent, intercept, color in laws:
            mine = np.array([p.depth for p in points if p.series == series and p.kind != "below"
                             and _finite(p.width)])
            if not (_finite(exponent) and _finite(intercept)) or mine.size < 2:
                continue
            xs = np.geomspace(mine.min(), mine.max(), 8)
            (h,) = ax.plot(xs, np.exp(intercept + exponent * np.log(xs)), color=color, lw=1.2)
            handles.append(h)
            labels.append(f"fit: width \u221d depth^{sig(exponent, 2)} ({_plain(series)})")
            if not drew_law:
                centre = float(np.log(mine).mean())
                y0 = intercept + exponent * centre
                ref = np.exp(y0 + reference_exponent * (np.log(xs) - centre))
                (h,) = ax.plot(xs, ref, color="0.3", lw=1.2, ls=":")
                handles.append(h)
                labels.append(f"Hanin & Nica 2019: width \u221d depth^{reference_exponent:g}")
                drew_law = True
        if depths.size:
            ticks = np.unique(depths)
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
            if ticks.size == 1:
                ax.set_xlim(ticks[0] / 1.6, ticks[0] * 1.6)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("depth")
        ax.set_ylabel("width needed for the tolerance")
        ax.grid(True, which="major", lw=0.4, alpha=0.4)
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False, borderaxespad=0.0)
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", bbox_inches="tight",
                    metadata={"Date": None, "Creator": None})
    return _tidy_svg(buf.getvalue().decode("utf-8"))
