"""Metrics claims report, and the log-log rate fit that turns a width sweep into a verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats

__all__ = ["RateFit", "fit_rate", "fit_tail_rate", "rate_contradicted", "RATE_FRACTION",
           "TAIL_WIDTHS", "extrapolate_width", "fit_depth_law", "DepthLaw",
           "HANIN_NICA_EXPONENT", "relative_frobenius_error", "relative_change"]


def relative_frobenius_error(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """``||estimate - reference||_F / ||reference||_F`` as a Python float.

    Args:
        estimate: Any shape.
        reference: Same shape as ``estimate``; must not be all zeros.

    Raises:
        ValueError: On a shape mismatch or a zero reference.

    """
    if estimate.shape != reference.shape:
        raise ValueError(f"shape mismatch: {tuple(estimate.shape)} vs {tuple(reference.shape)}")
    ref = torch.linalg.norm(reference.double())
    if ref == 0:
        raise ValueError("the reference is all zeros; the relative error is undefined")
    return float(torch.linalg.norm(estimate.double() - reference.double()) / ref)


def relative_change(after: torch.Tensor, before: torch.Tensor) -> float:
    """``||after - before||_F / ||before||_F``, the relative change of a tensor (e.g. a kernel)."""
    return relative_frobenius_error(after, before)


class RateFit(NamedTuple):
    """Least-squares fit ``log(value) = intercept + slope * log(width)``.

    ``slope_low``/``slope_high`` bound the slope's two-sided confidence interval (Student t
    with ``n - 2`` degrees of freedom on the ordinary-least-squares standard error). Natural
    logarithms; ``n`` is the number of (width, value) points fitted.
    """

    slope: float
    intercept: float
    slope_low: float
    slope_high: float
    n: int

    def predict(self, width: float) -> float:
        """The fitted metric at ``width``."""
        return math.exp(self.intercept + self.slope * math.log(width))


_NAN_FIT = RateFit(math.nan, math.nan, math.nan, math.nan, 0)


def _ols(x: np.ndarray, y: np.ndarray, confidence: float) -> RateFit:
    """Ordinary least squares ``y = intercept + slope * x`` with a Student-t slope interval.

    The interval is ``slope +- t_{(1+confidence)/2, n-2} * stderr`` with the OLS standard
    error ``sqrt(SSR / (n - 2) / Sxx)`` (zero for points on a line, identical values
    included: scipy.stats.linregress gives NaN there); with ``n = 2`` points (no degrees of
    freedom) the interval is NaN. ``x`` needs two distinct values.
    """
    n = len(x)
    dx = x - x.mean()
    sxx = float(np.sum(dx**2))
    slope = float(np.sum(dx * (y - y.mean())) / sxx)
    intercept = float(y.mean() - slope * x.mean())
    if n < 3:
        return RateFit(slope, intercept, math.nan, math.nan, n)
    ssr = float(np.sum((y - intercept - slope * x) ** 2))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 2)) * math.sqrt(ssr / (n - 2) / sxx)
    return RateFit(slope, intercept, slope - half, slope + half, n)


def fit_rate(widths: Sequence[float], values: Sequence[float],
             confidence: float = 0.95, scale: str = "log") -> RateFit:
    """Fit the log-log slope of ``values`` against ``widths`` with a confidence interval.

    Every (width, value) pair is a point (pass all seeds, not their means, so the interval
    reflects seed spread). Needs at least 3 distinct widths and positive values; otherwise the
    returned fit is all NaN with ``n = 0`` (a rate cannot be fitted, which is not an error).

    With ``scale="semilog"`` the fit is ``value = intercept + slope * log(width)`` instead
    (values of any sign; the slope is the change of the metric per e-fold of width, and
    :meth:`RateFit.predict` does not apply): a trend test for metrics that are not power laws
    and can be zero or negative, such as forgetting.

    Args:
        widths: Positive widths, length P.
        values: Positive metric values, length P (any finite values for ``"semilog"``).
        confidence: Confidence level of the slope interval.
        scale: ``"log"`` (default) or ``"semilog"``.

    Raises:
        ValueError: On an unknown ``scale``.

    """
    if scale not in ("log", "semilog"):
        raise ValueError(f"unknown scale {scale!r}; choose 'log' or 'semilog'")
    w = np.asarray(widths, dtype=float)
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v) & (w > 0) & ((v > 0) if scale == "log" else True)
    w, v = w[ok], v[ok]
    if len(np.unique(w)) < 3:
        return _NAN_FIT
    return _ols(np.log(w), np.log(v) if scale == "log" else v, confidence)


#: How many of the widest widths :func:`fit_tail_rate` fits (the rate rule's "tail").
TAIL_WIDTHS = 2
#: The rate rule's margin: the tail must decay at least this fraction of the predicted rate.
RATE_FRACTION = 0.5


def fit_tail_rate(widths: Sequence[float], values: Sequence[float],
                  n_widest: int = TAIL_WIDTHS, confidence: float = 0.95) -> RateFit:
    """The log-log slope over the ``n_widest`` widest widths, with the seeds' spread.

    An ordinary-least-squares fit of ``log(value)`` on ``log(width)`` over every seed's point
    at the ``n_widest`` largest distinct widths (positive values only). With the default two
    widths the slope is the difference of the mean log-values divided by the log width ratio,
    and the residual variance is the pooled variance of the log-values between seeds of one
    width, so the Student-t interval (``n - 2`` degrees of freedom, ``n`` the number of
    points) is set by the seeds' spread alone: the local rate at the end of the sweep.

    Args:
        widths: Positive widths, length P (all seeds, not their means).
        values: Metric values aligned with ``widths``; non-positive or non-finite values are
            left out (they have no logarithm).
        n_widest: How many distinct widths, counted from the widest, to fit (at least 2).
        confidence: Confidence level of the slope interval.

    Returns:
        A :class:`RateFit`; all NaN (``n = 0``) with fewer than ``n_widest`` distinct widths;
        NaN interval bounds with only one point per width (no spread to judge by).

    Raises:
        ValueError: If ``n_widest < 2``.

    """
    if n_widest < 2:
        raise ValueError(f"n_widest must be at least 2 (a slope needs two widths), got {n_widest}")
    w = np.asarray(widths, dtype=float)
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v) & (v > 0) & (w > 0)
    w, v = w[ok], v[ok]
    distinct = np.unique(w)
    if len(distinct) < n_widest:
        return _NAN_FIT
    keep = w >= distinct[-n_widest]
    return _ols(np.log(w[keep]), np.log(v[keep]), confidence)


def rate_contradicted(tail: RateFit, rate: float | None,
                      fraction: float = RATE_FRACTION) -> bool | None:
    """Whether the tail's slope interval lies entirely on the flat side of ``fraction * rate``.

    The rate rule of :mod:`ntkcheck.verdict`: a metric the theory says shrinks like
    ``width**rate`` has stopped following it when, with 95% confidence (the tail fit's
    interval), it changes by less than ``fraction`` of the predicted exponent over the widest
    widths: for ``rate < 0`` when ``tail.slope_low > fraction * rate``, for ``rate > 0`` when
    ``tail.slope_high < fraction * rate``. A tail steeper than predicted does not contradict
    (the metric vanishes faster). Zero-spread tails (identical seeds: a deterministic metric)
    have a zero-width interval and are judged by their slope.

    Args:
        tail: The fit of :func:`fit_tail_rate`.
        rate: The predicted log-log slope, or None.
        fraction: The margin, in ``(0, 1]``.

    Returns:
        True or False; None when there is no predicted rate, the prediction is 0 (a plateau
        is then the prediction), or the tail has no slope or no interval (one seed a width).

    """
    if rate is None or rate == 0 or not math.isfinite(rate):
        return None
    if not (math.isfinite(tail.slope_low) and math.isfinite(tail.slope_high)):
        return None
    slack = 1e-9  # round-off of a zero-width interval
    if rate < 0:
        return bool(tail.slope_low > fraction * rate + slack)
    return bool(tail.slope_high < fraction * rate - slack)


def extrapolate_width(fit: RateFit, tolerance: float, direction: str = "below",
                      scale: str = "log") -> float:
    """The width at which the fitted line reaches ``tolerance``; NaN if it moves away from it.

    Solves ``intercept + slope * log(w) = log(tolerance)`` (``= tolerance`` for a
    ``scale="semilog"`` fit from :func:`fit_rate`, where the tolerance may be zero or
    negative). For ``direction="below"`` a negative slope is needed (the metric must decrease
    towards the tolerance), for ``"above"`` a positive one. A fit so flat that the width
    overflows a float (beyond ``e**709``) gives ``inf``.
    """
    semilog = scale == "semilog"
    if not math.isfinite(fit.slope) or (tolerance <= 0 and not semilog) or fit.slope == 0:
        return math.nan
    if (direction == "below") != (fit.slope < 0):
        return math.nan
    target = tolerance if semilog else math.log(tolerance)
    log_width = (target - fit.intercept) / fit.slope
    # A nearly flat fit reaches the tolerance only beyond any float width: report infinity.
    return math.inf if log_width > 709.0 else math.exp(log_width)


#: Hanin & Nica 2019's exponent of the width needed in depth: a fixed error needs width ~ depth.
HANIN_NICA_EXPONENT = 1.0


class DepthLaw(NamedTuple):
    """Least-squares fit ``log(width_needed) = intercept + exponent * log(depth)``.

    ``exponent_low``/``exponent_high`` bound the exponent's Student-t interval (``n - 2``
    degrees of freedom; NaN with two depths); ``n`` is the number of depths fitted.
    """

    exponent: float
    intercept: float
    exponent_low: float
    exponent_high: float
    n: int

    def predict(self, depth: float) -> float:
        """The fitted width needed at ``depth``."""
        return math.exp(self.intercept + self.exponent * math.log(depth))


def fit_depth_law(depths: Sequence[float], widths_needed: Sequence[float],
                  confidence: float = 0.95) -> DepthLaw:
    """Fit how the width a claim needs grows with depth, as a power law.

    One point per depth: ``widths_needed[i]`` is the width at which depth ``depths[i]``'s
    fitted rate law reaches the claim's tolerance (:func:`extrapolate_width`). Hanin & Nica
    2019 (arXiv:1909.05989, Thm 1 and Sec. 3) show for ReLU networks that
    ``E[Θ(x,x)^2] / E[Θ(x,x)]^2 ≃ exp(5 β)`` with ``β = depth / width``: the NTK's relative
    fluctuations are set by depth / width, so a fixed error needs ``width ∝ depth``, an
    exponent of :data:`HANIN_NICA_EXPONENT` (1).

    Args:
        depths: Positive depths (distinct), length D.
        widths_needed: Positive widths, aligned with ``depths``; non-finite or non-positive
            entries are left out.
        confidence: Confidence level of the exponent's interval.

    Returns:
        A :class:`DepthLaw`; all NaN (``n`` the points kept) with fewer than 2 depths.

    """
    d = np.asarray(depths, dtype=float)
    w = np.asarray(widths_needed, dtype=float)
    ok = np.isfinite(d) & np.isfinite(w) & (d > 0) & (w > 0)
    d, w = d[ok], w[ok]
    if len(np.unique(d)) < 2:
        return DepthLaw(math.nan, math.nan, math.nan, math.nan, int(len(d)))
    fit = _ols(np.log(d), np.log(w), confidence)
    return DepthLaw(fit.slope, fit.intercept, fit.slope_low, fit.slope_high, fit.n)
