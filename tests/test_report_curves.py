"""The report's training-curve panels (ntkcheck.report.curves) from synthetic records."""

from __future__ import annotations

import pandas as pd

from ntkcheck.optim.optimizers import Curve, CurvePoint
from ntkcheck.report.curves import curve_columns, curves_svg, parse_curve


def _curve(opt: str, scale: float) -> str:
    pts = [CurvePoint(k, k / 10, 0.01 * k, scale / (k + 1), scale / (k + 1), 0.5)
           for k in range(5)]
    return Curve(optimizer=opt, lr=0.1, batch_size=8, loss="cross_entropy",
                 points=pts).to_json()


def test_curves_drawn_per_width_and_optimizer():
    rows = [dict(width=w, seed=s, value=1.0, curve_adam=_curve("adam", 2.0),
                 curve_kfac=_curve("kfac", 1.0), curve_sgd=_curve("sgd", 3.0))
            for w in (8, 16, 32) for s in (0, 1)]
    records = pd.DataFrame(rows)
    assert curve_columns(records) == ["curve_adam", "curve_kfac", "curve_sgd"]
    svg = curves_svg(records)
    assert svg.startswith("<svg") and svg.count("width 8") >= 2 and "width 32" in svg
    assert "kfac" in svg and "seconds of training" in svg
    assert parse_curve(rows[0]["curve_adam"])[1] == (0.1, 0.01, 1.0)


def test_no_curves_no_plot():
    assert curves_svg(pd.DataFrame([dict(width=8, seed=0, value=1.0)])) == ""
    assert curves_svg(pd.DataFrame([dict(width=8, curve_adam=None)])) == ""
    assert parse_curve("not json") is None
