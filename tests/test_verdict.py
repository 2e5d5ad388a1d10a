import math

import pandas as pd

from ntkcheck.claim import Claim
from ntkcheck.report.grid import build_grid
from ntkcheck.runs.writer import verdict_mark
from ntkcheck.verdict import ARCH_COLUMNS, WIDTH_COLUMNS, compute_verdicts

CLAIM = Claim(id="c", statement="s", source="s", metric="m", tolerance=0.1, rate=-0.5)


def _records(values_by_width, arch="a"):
    return [dict(claim_id="c", arch_id=arch, width=w, seed=s, value=v)
            for w, vals in values_by_width.items() for s, v in enumerate(vals)]


def test_verdicts_holds_from_and_extrapolation():
    recs = _records({16: [0.5, 0.5], 64: [0.25, 0.25], 256: [0.125, 0.125],
                     1024: [0.0625, 0.0625]})
    recs += _records({16: [0.5], 64: [0.5], 256: [0.5], 1024: [0.5]}, arch="b")
    per_width, per_arch = compute_verdicts(pd.DataFrame(recs), {"c": CLAIM})
    assert list(per_width.columns) == WIDTH_COLUMNS and list(per_arch.columns) == ARCH_COLUMNS
    a = per_arch.set_index("arch_id").loc["a"]
    assert a.holds_at_widest and a.holds_from_width == 1024
    assert math.isclose(a.slope, -0.5) and bool(a.rate_consistent)
    assert "holds from width 1,024" in a.message
    b = per_arch.set_index("arch_id").loc["b"]
    assert not b.holds_at_widest and math.isnan(b.holds_from_width)
    assert math.isnan(b.extrapolated_width)
    assert b.message.startswith("fails at every width up to 1,024; the fitted trend moves away")
    assert not bool(b.rate_consistent)


def test_holds_from_requires_every_wider_width():
    # holds at 64, fails at 256, holds at 1024: holds from 1024, not 64
    recs = _records({16: [0.5], 64: [0.05], 256: [0.2], 1024: [0.01]})
    _, per_arch = compute_verdicts(pd.DataFrame(recs), {"c": CLAIM})
    assert per_arch.iloc[0].holds_from_width == 1024


def test_empty_records_give_empty_tables():
    per_width, per_arch = compute_verdicts(pd.DataFrame(), {"c": CLAIM})
    assert per_width.empty and per_arch.empty


def test_trend_claims_need_the_slope_interval_on_their_side():
    trend = Claim(id="c", statement="s", source="s", metric="m", tolerance=1.0,
                  scale="semilog", trend="decreasing")
    falling = _records({64: [0.30, 0.32], 256: [0.21, 0.20], 1024: [0.09, 0.11],
                        4096: [-0.01, 0.01]})
    flat = _records({64: [0.1, 0.3], 256: [0.3, 0.1], 1024: [0.1, 0.3], 4096: [0.3, 0.1]},
                    arch="b")
    _, per_arch = compute_verdicts(pd.DataFrame(falling + flat), {"c": trend})
    a, b = per_arch.set_index("arch_id").loc["a"], per_arch.set_index("arch_id").loc["b"]
    assert a.holds_at_widest and a.slope_high < 0 and a.holds_from_width == 64
    assert "decreasing: the slope's interval lies below 0" in a.message
    assert "per e-fold of width" in a.message
    assert not b.holds_at_widest and math.isnan(b.holds_from_width)
    assert b.message.startswith("fails the trend test, not shown decreasing")
    assert "tolerance holds at every width swept" in b.message
    rising = Claim(**{**trend.to_dict(), "trend": "increasing"})
    _, per_arch = compute_verdicts(pd.DataFrame(falling), {"c": rising})
    assert not per_arch.iloc[0].holds_at_widest
    two = _records({64: [0.3], 256: [0.1]})  # no fit with two widths: the trend is not shown
    _, per_arch = compute_verdicts(pd.DataFrame(two), {"c": trend})
    assert not per_arch.iloc[0].holds_at_widest
    assert "no slope fitted" in per_arch.iloc[0].message


def test_claims_without_a_trend_keep_their_verdicts():
    recs = pd.DataFrame(_records({16: [0.5], 64: [0.25], 256: [0.125], 1024: [0.0625]}))
    plain = compute_verdicts(recs, {"c": CLAIM})[1]
    logged = compute_verdicts(recs, {"c": Claim(**{**CLAIM.to_dict(), "scale": "log"})})[1]
    pd.testing.assert_frame_equal(plain, logged)
    assert plain.iloc[0].message == ("holds from width 1,024; fitted slope -0.50 [-0.50, -0.50] "
                                     "vs predicted -0.50 (consistent)")


def test_a_partly_measured_widest_width_is_not_judged():
    # Ctrl-C after one of three seeds at the widest width: not "holds", but "incomplete".
    recs = _records({16: [0.5, 0.5, 0.5], 64: [0.05, 0.05, 0.05], 256: [0.01]})
    _, per_arch = compute_verdicts(pd.DataFrame(recs), {"c": CLAIM})
    row = per_arch.iloc[0]
    assert not row.holds_at_widest and math.isnan(row.holds_from_width)
    assert row.message.startswith("incomplete: the widest width 256 has 1 of 3 seeds")
    # ... and the terminal and the grid say "not judged", not "fails"
    assert verdict_mark(bool(row.holds_at_widest), row.message) == "INCOMPLETE"
    assert verdict_mark(False, "fails at every width up to 256") == "FAILS"
    per_width, per_arch = compute_verdicts(pd.DataFrame(recs), {"c": CLAIM})
    grid = build_grid(pd.DataFrame(recs), per_width, per_arch, ["c"], [16, 64, 256],
                      {"a": "#000"}, {})
    assert grid.rows[0].verdict_status == "missing"


def test_fewer_than_three_widths_say_no_slope_was_fitted_not_that_the_trend_moves_away():
    """Two widths moving towards the tolerance, failing at the widest: no fit, and the message
    must not claim a trend; one width that holds says how little was measured."""
    two = pd.DataFrame(_records({64: [358.0], 256: [149.0]}))
    (row,) = compute_verdicts(two, {"c": CLAIM})[1].itertuples()
    assert not row.holds_at_widest and math.isnan(row.slope)
    assert row.message == ("fails at every width up to 256; 2 widths measured: no slope "
                           "fitted (needs 3 widths)")
    one = pd.DataFrame(_records({128: [0.01, 0.02]}))
    (row,) = compute_verdicts(one, {"c": CLAIM})[1].itertuples()
    assert row.holds_at_widest
    assert row.message == ("holds at every width swept; 1 width measured: no slope fitted "
                           "(needs 3 widths)")
    zeros = pd.DataFrame(_records({16: [0.0], 64: [0.0], 256: [0.0]}))
    (row,) = compute_verdicts(zeros, {"c": CLAIM})[1].itertuples()
    assert "3 widths measured: no slope fitted (needs 3 widths with positive values)" \
        in row.message
