"""Self-contained HTML report of an ntkcheck run."""

from ntkcheck.report.html import build_html, render_report
from ntkcheck.report.plots import PlotSeries, svg_loglog

__all__ = ["PlotSeries", "build_html", "render_report", "svg_loglog"]
