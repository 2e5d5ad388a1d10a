"""Metrics claims report, and the log-log rate fit that turns a width sweep into a verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats

__all__ = ["RateFit", "fit_rate", "extrapolate_width", "relative_frobenius_error",
           "relative_change"]


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
    res = stats.linregress(np.log(w), np.log(v) if scale == "log" else v)
    half = stats.t.ppf(0.5 + confidence / 2, len(w) - 2) * res.stderr
    return RateFit(float(res.slope), float(res.intercept), float(res.slope - half),
                   float(res.slope + half), len(w))


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
