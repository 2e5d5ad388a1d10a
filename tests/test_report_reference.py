"""The report draws a claim's ``reference`` column (e.g. the infinite-width value) per series."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ntkcheck.report import PlotSeries, svg_loglog
from ntkcheck.report.plots import _draw_reference
from ntkcheck.report.sections import build_section

LABEL = "reference (e.g. infinite width)"
WIDTHS = np.repeat([8.0, 16.0, 32.0], 2)


def test_reference_line_is_the_mean_per_width():
    ax = Figure().add_subplot()
    s = PlotSeries("a", WIDTHS, 1 / WIDTHS, reference=[1.0, 3.0, 2.0, 2.0, np.nan, 5.0])
    assert _draw_reference(ax, s, "#1f77b4", log_y=True)
    np.testing.assert_allclose(ax.lines[-1].get_xydata(), [[8, 2], [16, 2], [32, 5]])


def test_reference_skipped_when_missing_or_not_drawable():
    ax = Figure().add_subplot()
    assert not _draw_reference(ax, PlotSeries("a", WIDTHS, WIDTHS), "k", log_y=True)
    nan = PlotSeries("a", WIDTHS, WIDTHS, reference=[np.nan] * 6)
    assert not _draw_reference(ax, nan, "k", log_y=True)
    negative = PlotSeries("a", WIDTHS, WIDTHS, reference=[-1.0] * 6)
    assert not _draw_reference(ax, negative, "k", log_y=True)  # nothing on a log axis
    assert _draw_reference(ax, negative, "k", log_y=False)
    assert not ax.lines[:-1]  # only the last call drew


def test_svg_legend_names_the_reference_only_when_drawn():
    with_ref = svg_loglog([PlotSeries("a", WIDTHS, 1 / WIDTHS, reference=[0.5] * 6)])
    without = svg_loglog([PlotSeries("a", WIDTHS, 1 / WIDTHS)])
    assert LABEL in with_ref and LABEL not in without


def _records(reference: bool) -> pd.DataFrame:
    rows = []
    for arch, ref in (("mlp-a", 1.0), ("mlp-b", 2.0)):
        for w in (64, 256, 1024):
            for seed in (0, 1):
                row = {"claim_id": "c", "arch_id": arch, "family": "mlp", "depth": 1,
                       "width": w, "seed": seed, "value": ref * (1 + 1 / w)}
                if reference:
                    row["reference"] = ref
                rows.append(row)
    return pd.DataFrame(rows)


def test_claim_section_plot_draws_the_reference_column():
    claim = {"id": "c", "statement": "s", "source": "src", "metric": "m", "tolerance": 0.5,
             "direction": "above"}
    verdicts = pd.DataFrame({"arch_id": ["mlp-a", "mlp-b"]})
    colors = {"mlp-a": "#1f77b4", "mlp-b": "#ff7f0e"}
    drawn = build_section("c", claim, _records(True), verdicts, colors)
    plain = build_section("c", claim, _records(False), verdicts, colors)
    assert LABEL in drawn.plot_svg and LABEL not in plain.plot_svg


CLAIM = '''
import pytest
from hypothesis import given, strategies as st
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="with-reference", statement="s", source="src", metric="m",
                   tolerance=10.0)
@given(spec=st.just(ArchSpec(depth=1)))
def test_claim(spec, ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure(spec, width=width, seed=seed, value=1.0 / width, reference=0.5)
'''


def test_report_html_shows_the_reference(pytester):
    pytester.makepyfile(test_reference_claim=CLAIM)
    result = pytester.runpytest("--ntk-profile", "smoke", "--ntk-widths", "8,16",
                                "--ntk-seeds", "1", "--ntk-device", "cpu")
    result.assert_outcomes(passed=1)
    html = (pytester.path / "reports" / "latest" / "report.html").read_text()
    assert LABEL in html
