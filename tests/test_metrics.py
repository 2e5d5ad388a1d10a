import math

import numpy as np
import pytest
import torch

from ntkcheck.metrics import extrapolate_width, fit_rate, relative_frobenius_error


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
