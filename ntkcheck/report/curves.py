"""Optimizer training curves for the report: loss against epochs and against seconds.

A record may carry one training run per optimizer as a string field ``curve_<optimizer>``
holding :meth:`ntkcheck.optim.optimizers.Curve.to_json` (e.g. ``second-order-speedup``'s
records). :func:`curves_svg` draws, for one claim, a grid of panels: one row per width, two
columns (held-out loss against epochs and against wall-clock seconds of training), log scale
on the loss axis (and on seconds), one colour per optimizer, one line per seed. Matplotlib is
used through its object-oriented API only, as in :mod:`ntkcheck.report.plots`.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import matplotlib as mpl
import pandas as pd
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from ntkcheck.report.plots import _RC, PALETTE, _tidy_svg

__all__ = ["CURVE_PREFIX", "curve_columns", "curves_svg", "parse_curve"]

#: Record fields holding a curve start with this prefix; the rest is the optimizer's name.
CURVE_PREFIX = "curve_"


def curve_columns(records: pd.DataFrame) -> list[str]:
    """The ``curve_*`` columns of ``records`` that hold at least one string."""
    return [c for c in records.columns if str(c).startswith(CURVE_PREFIX)
            and records[c].map(lambda v: isinstance(v, str)).any()]


def parse_curve(text: Any) -> list[tuple[float, float, float]] | None:
    """``[(epoch, seconds, test_loss), ...]`` from a ``curve_*`` value, None if unreadable."""
    if not isinstance(text, str):
        return None
    try:
        points = json.loads(text)["points"]
        return [(float(p[1]), float(p[2]), float(p[4])) for p in points]
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def curves_svg(records: pd.DataFrame, *, max_widths: int = 6) -> str:
    """Inline SVG of the claim's training curves, or ``""`` when its records carry none.

    Args:
        records: One claim's records (any columns; ``width``, ``seed`` and ``curve_*`` used).
        max_widths: Widths drawn at most (the narrowest, the widest and evenly between).

    Returns:
        An ``<svg>`` string (no XML prologue), or ``""``.

    """
    cols = curve_columns(records) if len(records) else []
    if not cols or "width" not in records.columns:
        return ""
    widths = sorted({int(w) for w in records["width"].dropna()})
    if len(widths) > max_widths:
        step = (len(widths) - 1) / (max_widths - 1)
        widths = sorted({widths[round(i * step)] for i in range(max_widths)})
    colors = {c[len(CURVE_PREFIX):]: PALETTE[i % len(PALETTE)] for i, c in enumerate(cols)}
    with mpl.rc_context(_RC):
        return _draw(records, cols, widths, colors)


def _draw(records: pd.DataFrame, cols: list[str], widths: list[int],
          colors: dict[str, str]) -> str:
    fig = Figure(figsize=(7.0, 2.0 * len(widths)))
    FigureCanvasSVG(fig)
    axes = fig.subplots(len(widths), 2, squeeze=False)
    drawn = False
    for row, width in enumerate(widths):
        sub = records[records["width"] == width]
        for col in cols:
            name = col[len(CURVE_PREFIX):]
            for k, value in enumerate(sub[col]):
                pts = parse_curve(value)
                if not pts:
                    continue
                pts = [p for p in pts if math.isfinite(p[2]) and p[2] > 0]
                if not pts:
                    continue
                label = name if k == 0 else None
                axes[row][0].plot([p[0] for p in pts], [p[2] for p in pts],
                                  color=colors[name], lw=0.9, alpha=0.8, label=label)
                secs = [(max(p[1], 1e-3), p[2]) for p in pts]
                axes[row][1].plot([s for s, _ in secs], [v for _, v in secs],
                                  color=colors[name], lw=0.9, alpha=0.8)
                drawn = True
        for j, xlabel in enumerate(("epochs", "seconds of training")):
            ax = axes[row][j]
            ax.set_yscale("log")
            if j == 1:
                ax.set_xscale("log")
            ax.set_xlabel(xlabel, fontsize=7)
            ax.set_ylabel("held-out loss", fontsize=7)
            ax.set_title(f"width {width}", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.grid(True, lw=0.3, alpha=0.4)
        if row == 0:
            axes[row][0].legend(fontsize=6, frameon=False)
    if not drawn:
        return ""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return _tidy_svg(buf.getvalue().decode("utf-8"))
