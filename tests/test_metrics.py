import math

import numpy as np
import pytest
import torch

from ntkcheck.metrics import (
    HANIN_NICA_EXPONENT,
    RateFit,
    extrapolate_width,
    fit_depth_law,
    fit_rate,
    fit_tail_rate,
    rate_contradicted,
    relative_frobenius_error,
)


def test_fit_rate_recovers_an_exact_power_law():
    widths = [16, 64, 256, 1024]
    fit = fit_rate(widths, [3.0 * w ** -0.5 for w in widths])
    assert fit.slope == pytest.approx(-0.5, abs=1e-12)
    assert math.exp(fit.intercept) == pytest.approx(3.0, rel=1e-12)
    assert fit.slope_low == pytest.approx(-0.5, abs=1e-9) == fit.slope_high
    assert fit.predict(4096) == pytest.approx(3.0 / 64, rel=1e-12)


def test_fit_rate_interval_matches_scipy_t_interval_by_hand():
    rng = np.random.default_rng(0)
    w = np.repeat([16.0, 64.0, 256.0, 1024.0], 3)
    v = 2.0 * w ** -0.4 * np.exp(0.1 * rng.standard_normal(len(w)))
    fit = fit_rate(w, v)
    # Ordinary least squares by hand: slope = cov(x, y)/var(x), se from the residuals.
    x, y = np.log(w), np.log(v)
    slope = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
    resid = y - (y.mean() + slope * (x - x.mean()))
    se = math.sqrt(np.sum(resid ** 2) / (len(x) - 2) / np.sum((x - x.mean()) ** 2))
    t975 = 2.2281388519649385  # Student t quantile, 10 degrees of freedom (tables)
    assert fit.slope == pytest.approx(slope, rel=1e-12)
    assert fit.slope_high - fit.slope == pytest.approx(t975 * se, rel=1e-9)


def test_fit_rate_needs_three_widths_and_positive_values():
    assert math.isnan(fit_rate([16, 64], [0.1, 0.05]).slope)
    assert math.isnan(fit_rate([16, 64, 256], [0.1, 0.0, -1.0]).slope)


def test_extrapolate_width():
    fit = fit_rate([16, 64, 256], [2 * w ** -0.5 for w in (16, 64, 256)])
    assert extrapolate_width(fit, 0.05) == pytest.approx(1600.0, rel=1e-9)
    assert math.isnan(extrapolate_width(fit, 0.05, direction="above"))
    rising = fit_rate([16, 64, 256], [w ** 0.5 for w in (16, 64, 256)])
    assert math.isnan(extrapolate_width(rising, 0.05))


def test_relative_frobenius_error():
    a = torch.eye(3, dtype=torch.float64)
    assert relative_frobenius_error(2 * a, a) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        relative_frobenius_error(a, torch.eye(2))
    with pytest.raises(ValueError, match="all zeros"):
        relative_frobenius_error(a, torch.zeros(3, 3))


def test_extrapolate_width_of_a_nearly_flat_fit_is_infinite():
    from ntkcheck.metrics import RateFit

    flat = RateFit(slope=-1e-6, intercept=0.0, slope_low=-1e-5, slope_high=1e-5, n=12)
    assert extrapolate_width(flat, 0.1) == math.inf


def test_semilog_fit_recovers_a_logarithmic_trend_of_any_sign():
    widths = [64, 256, 1024, 4096]
    values = [0.3 - 0.05 * math.log(w) for w in widths]  # crosses zero near w = 403
    fit = fit_rate(widths, values, scale="semilog")
    assert fit.n == 4 and fit.slope == pytest.approx(-0.05, abs=1e-12)
    assert fit.intercept == pytest.approx(0.3, abs=1e-12)
    assert fit.slope_low == pytest.approx(fit.slope_high, abs=1e-9)
    assert math.isnan(fit_rate(widths, values).slope)  # log-log: two positive values only
    w0 = math.exp(0.3 / 0.05)  # where the trend reaches a tolerance of 0
    assert extrapolate_width(fit, 0.0, scale="semilog") == pytest.approx(w0, rel=1e-9)
    assert math.isnan(extrapolate_width(fit, 0.0, direction="above", scale="semilog"))
    with pytest.raises(ValueError, match="scale"):
        fit_rate(widths, values, scale="loglog")


def test_tail_rate_is_the_two_widest_widths_pooled_two_sample_slope():
    """The tail slope equals the difference of the mean log-values over the log width ratio,
    and its interval is the pooled two-sample t-interval (the seeds' spread), by hand."""
    rng = np.random.default_rng(1)
    w = np.repeat([64.0, 256.0, 1024.0, 4096.0], 3)
    v = 0.5 * w ** -0.5 * np.exp(0.1 * rng.standard_normal(len(w)))
    tail = fit_tail_rate(w, v)
    a, b = np.log(v[w == 1024.0]), np.log(v[w == 4096.0])
    dx = math.log(4.0)
    slope = (b.mean() - a.mean()) / dx
    pooled = (np.sum((a - a.mean()) ** 2) + np.sum((b - b.mean()) ** 2)) / (len(a) + len(b) - 2)
    se = math.sqrt(pooled * (1 / len(a) + 1 / len(b))) / dx
    t975 = 2.7764451051977987  # Student t quantile, 4 degrees of freedom (tables)
    assert tail.n == 6 and tail.slope == pytest.approx(slope, rel=1e-12)
    assert tail.slope_high - tail.slope == pytest.approx(t975 * se, rel=1e-9)
    assert tail.slope - tail.slope_low == pytest.approx(t975 * se, rel=1e-9)


def test_tail_rate_needs_two_widths_and_a_spread_for_its_interval():
    assert math.isnan(fit_tail_rate([64, 64], [0.1, 0.2]).slope)
    one_seed = fit_tail_rate([64, 256, 1024], [0.4, 0.2, 0.1])
    assert one_seed.slope == pytest.approx(-0.5) and math.isnan(one_seed.slope_low)
    assert rate_contradicted(one_seed, -0.5) is None  # no spread to judge by
    with pytest.raises(ValueError, match="at least 2"):
        fit_tail_rate([64, 256], [0.1, 0.1], n_widest=1)


def test_rate_contradicted_on_the_flat_side_of_half_the_prediction_only():
    def tail(lo, hi):
        return RateFit((lo + hi) / 2, 0.0, lo, hi, 6)
    assert rate_contradicted(tail(-0.1, 0.1), -1.0)          # a plateau
    assert rate_contradicted(tail(-0.24, -0.1), -0.5)        # flatter than -0.25 throughout
    assert not rate_contradicted(tail(-0.3, -0.1), -0.5)     # reaches -0.25: cannot tell
    assert not rate_contradicted(tail(-2.5, -1.5), -1.0)     # steeper than predicted
    assert rate_contradicted(tail(0.0, 0.2), 1.0) and not rate_contradicted(tail(0.4, 1.2), 1.0)
    assert rate_contradicted(tail(-0.1, 0.1), 0.0) is None   # a plateau is the prediction
    assert rate_contradicted(tail(-0.1, 0.1), None) is None
    exact = RateFit(-0.5, 0.0, -0.5, -0.5, 6)                # zero spread, exactly at the rate
    assert not rate_contradicted(exact, -0.5)


def test_depth_law_of_hanin_nica_scaling_has_exponent_one():
    """error = sqrt(5 depth / width) (Hanin & Nica's relative fluctuation for small
    depth/width) reaches a tolerance eps at width 5 depth / eps^2: exponent 1."""
    depths = [1, 2, 4, 8]
    needed = [5 * d / 0.1 ** 2 for d in depths]
    law = fit_depth_law(depths, needed)
    assert law.exponent == pytest.approx(HANIN_NICA_EXPONENT, abs=1e-12)
    assert law.predict(16) == pytest.approx(5 * 16 / 0.01, rel=1e-9)
    two = fit_depth_law([1, 2], [100.0, 400.0])
    assert two.exponent == pytest.approx(2.0) and math.isnan(two.exponent_low)
    assert math.isnan(fit_depth_law([1, 2], [100.0, math.nan]).exponent)
