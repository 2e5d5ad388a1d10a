import math

import numpy as np
import pandas as pd
import pytest

from ntkcheck.claim import Claim
from ntkcheck.report.grid import build_grid
from ntkcheck.runs.writer import verdict_mark
from ntkcheck.verdict import (
    ARCH_COLUMNS,
    DEPTH_COLUMNS,
    WIDTH_COLUMNS,
    compute_verdicts,
    depth_laws,
    series_id,
)

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


# ----------------------------------------------------------------------------- the rate rule

WIDE = (64, 256, 1024, 4096)
RATED = Claim(id="c", statement="s", source="s", metric="m", tolerance=0.05, rate=-1.0)


def _noisy(law, sigma, rng, seeds=3, widths=WIDE, arch="a", depth=1):
    """Records of ``law(width)`` times log-normal seed noise of spread ``sigma``."""
    return [dict(claim_id="c", arch_id=arch, width=w, seed=s, depth=depth,
                 value=law(w) * math.exp(sigma * rng.standard_normal()))
            for w in widths for s in range(seeds)]


def _plateau(w):
    """Falls like width^-1 up to 1024, then stops: flat from 1024 to 4096, below 0.05."""
    return 20.0 / min(w, 1024)


def test_a_clean_power_law_at_the_predicted_rate_holds():
    rng = np.random.default_rng(0)
    recs = pd.DataFrame(_noisy(lambda w: 40.0 / w, 0.05, rng))
    (row,) = compute_verdicts(recs, {"c": RATED})[1].itertuples()
    assert row.verdict == "holds" and row.holds_at_widest
    assert row.rate_contradicted is False
    assert row.tail_low < -1.0 < row.tail_high  # the tail's interval covers the prediction
    assert math.isnan(row.extrapolated_width)  # it holds: nothing to extrapolate


def test_a_plateau_below_the_tolerance_does_not_hold():
    rng = np.random.default_rng(0)
    recs = pd.DataFrame(_noisy(_plateau, 0.05, rng))
    per_width, per_arch = compute_verdicts(recs, {"c": RATED})
    assert per_width["holds"].tolist() == [False, False, True, True]  # below 0.05 at 1024+
    (row,) = per_arch.itertuples()
    assert row.verdict == "rate-contradicts" and not row.holds_at_widest
    assert row.rate_contradicted is True and row.tail_high < 0.1 and row.tail_low > -0.5
    assert math.isnan(row.holds_from_width) and math.isnan(row.extrapolated_width)
    assert row.message.startswith(
        "rate contradicts the theory: within the tolerance, but the slope from width 1,024 to "
        "4,096 is ")
    assert "flatter than 0.5 x the predicted -1.00: the metric has stopped" in row.message
    assert "; tolerance holds from width 1,024; fitted slope" in row.message
    assert verdict_mark(row.holds_at_widest, row.message, row.verdict) == "RATE-CONTRADICTS"
    grid = build_grid(recs, per_width, per_arch, ["c"], list(WIDE), {"a": "#000"}, {})
    assert grid.rows[0].verdict_status == "contradicts"
    # The plateau without a predicted rate, or with a predicted 0, holds.
    for claim in (Claim(**{**RATED.to_dict(), "rate": None}),
                  Claim(**{**RATED.to_dict(), "rate": 0.0})):
        (row,) = compute_verdicts(recs, {"c": claim})[1].itertuples()
        assert row.verdict == "holds"


def test_noise_within_the_seeds_spread_does_not_flip_the_verdict():
    """Seed noise of 10% (log-normal) on a power law at the predicted rate: the rate rule
    must not call it a plateau (it tests at 95%, one side, against half the rate), while the
    same noise on a plateau is still caught."""
    rng = np.random.default_rng(12345)
    law_verdicts = [compute_verdicts(pd.DataFrame(_noisy(lambda w: 40.0 / w, 0.1, rng)),
                                     {"c": RATED})[1].iloc[0].verdict for _ in range(200)]
    plateau_verdicts = [compute_verdicts(pd.DataFrame(_noisy(_plateau, 0.1, rng)),
                                         {"c": RATED})[1].iloc[0].verdict for _ in range(200)]
    assert law_verdicts.count("holds") >= 196  # 2.5% one-sided tests against -1/2: ~0 flips
    assert plateau_verdicts.count("rate-contradicts") >= 190
    # Shifting each width's seeds by up to one standard deviation of the seeds keeps the verdict.
    base = _noisy(lambda w: 40.0 / w, 0.1, np.random.default_rng(3))
    sd = pd.DataFrame(base).groupby("width")["value"].std()
    for sign in (+1, -1):
        shifted = [dict(r, value=r["value"] + sign * (-1) ** i * sd[r["width"]])
                   for i, r in enumerate(base)]
        assert compute_verdicts(pd.DataFrame(shifted), {"c": RATED})[1].iloc[0].verdict \
            == "holds"


def test_the_rate_rule_needs_a_spread_and_a_log_scale():
    one_seed = pd.DataFrame(_noisy(_plateau, 0.05, np.random.default_rng(0), seeds=1))
    (row,) = compute_verdicts(one_seed, {"c": RATED})[1].itertuples()
    assert row.rate_contradicted is None and row.verdict == "holds"
    deterministic = pd.DataFrame(_noisy(_plateau, 0.0, np.random.default_rng(0)))
    (row,) = compute_verdicts(deterministic, {"c": RATED})[1].itertuples()
    assert row.verdict == "rate-contradicts"  # zero spread: the slope itself, exactly 0


def test_a_claim_that_holds_everywhere_has_no_extrapolated_or_needed_width():
    """Issue 19 saw an extrapolated width of 5.0e-188 printed for a claim that held: a nearly
    flat fit crosses the tolerance far below the sweep. Neither column may carry it."""
    recs = pd.DataFrame(_records({64: [0.010, 0.011], 256: [0.0100, 0.0104],
                                  1024: [0.0099, 0.0101]}))
    unrated = Claim(**{**CLAIM.to_dict(), "rate": None})  # (with a rate: a plateau)
    (row,) = compute_verdicts(recs, {"c": unrated})[1].itertuples()
    assert row.holds_at_widest
    assert math.isnan(row.extrapolated_width) and math.isnan(row.width_needed)
    assert "extrapolated" not in row.message


def test_width_needed_is_the_fitted_crossing_inside_or_beyond_the_sweep():
    recs = pd.DataFrame(_records({16: [0.5], 64: [0.25], 256: [0.125], 1024: [0.0625]}))
    (row,) = compute_verdicts(recs, {"c": CLAIM})[1].itertuples()  # 2/sqrt(w) = 0.1 at 400
    assert row.width_needed == pytest.approx(400.0) and math.isnan(row.extrapolated_width)
    tight = Claim(**{**CLAIM.to_dict(), "tolerance": 0.05})  # at 1600: beyond the sweep
    (row,) = compute_verdicts(recs, {"c": tight})[1].itertuples()
    assert row.width_needed == pytest.approx(1600.0) == row.extrapolated_width


# ----------------------------------------------------------------------------- depth


def test_verdicts_carry_depth_and_the_depth_law_recovers_the_exponent():
    """error = sqrt(5 depth / width) (Hanin & Nica's scaling) needs width 5 depth / eps^2:
    exponent 1 (consistent); error = depth / sqrt(width) needs depth^2: exponent 2."""
    rng = np.random.default_rng(0)
    claim = Claim(id="c", statement="s", source="s", metric="m", tolerance=0.1, rate=-0.5)
    recs = []
    for d in (1, 2, 4, 8):
        recs += _noisy(lambda w, d=d: math.sqrt(5 * d / w), 0.1, rng, arch=f"mlp-d{d}-relu",
                       depth=d)
        recs += _noisy(lambda w, d=d: d / math.sqrt(w), 0.1, rng, arch=f"mlp-d{d}-erf",
                       depth=d)
    per_width, per_arch = compute_verdicts(pd.DataFrame(recs), {"c": claim})
    assert sorted(per_width["depth"].unique()) == [1, 2, 4, 8]
    row = per_arch.set_index("arch_id").loc["mlp-d4-relu"]
    assert row.depth == 4 and row.width_needed == pytest.approx(2000, rel=0.1)
    laws = depth_laws(per_arch).set_index("series")
    assert list(laws.columns) == DEPTH_COLUMNS[:1] + DEPTH_COLUMNS[2:]
    relu, erf = laws.loc["mlp-relu"], laws.loc["mlp-erf"]
    assert relu.exponent == pytest.approx(1.0, abs=0.15)  # 10% seed noise
    assert relu.depths == "1, 2, 4, 8" and relu.n_depths == 4
    assert erf.exponent == pytest.approx(2.0, abs=0.15) and not bool(erf.consistent)
    exact = [dict(r, value=math.sqrt(5 * r["depth"] / r["width"])) for r in recs
             if "relu" in r["arch_id"]]
    (law,) = depth_laws(compute_verdicts(pd.DataFrame(exact), {"c": claim})[1]).itertuples()
    assert law.exponent == pytest.approx(1.0, abs=1e-9) and law.consistent
    assert "consistent with Hanin & Nica 2019's depth^1" in law.message
    # Depth 1 of the relu series holds below the narrowest width: left out, and said.
    easy = [r for r in recs if r["arch_id"] != "mlp-d1-relu"] + _noisy(
        lambda w: 0.001 * w ** -0.5, 0.02, rng, arch="mlp-d1-relu", depth=1)
    laws = depth_laws(compute_verdicts(pd.DataFrame(easy), {"c": claim})[1]).set_index(
        "series")
    assert laws.loc["mlp-relu"].depths == "2, 4, 8"
    assert "left out: depth 1 (within the tolerance from the narrowest width swept)" in \
        laws.loc["mlp-relu"].message
    assert series_id("cnn-d12-relu-ntk-b-gap") == "cnn-relu-ntk-b-gap"
    assert series_id("mine") == "mine"
    assert depth_laws(per_arch[per_arch["depth"] == 1]).empty  # one depth: no law
