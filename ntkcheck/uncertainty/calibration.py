"""Calibration metrics of predictive distributions: NLL, ECE and interval coverage.

Conventions: classification predictives are class probabilities ``(N, C)`` (rows sum to 1)
with integer labels ``(N,)``; regression predictives are Gaussian, a mean ``(N,)`` and a
variance ``(N,)`` of the *observation* (function variance plus noise variance) per target
``(N,)``. Every metric is returned as a Python float; logarithms are natural (nats).

* :func:`expected_calibration_error`: the top-label ECE with ``n_bins`` equal-width bins on
  ``[0, 1]`` (Naeini, Cooper & Hauskrecht 2015; Guo et al. 2017, "On calibration of modern
  neural networks", eq. 3).
* :func:`classification_nll` and :func:`gaussian_nll`: mean negative log-likelihood of the
  held-out targets under the predictive.
* :func:`interval_coverage` and :func:`coverage_error`: the fraction of targets inside the
  central Gaussian interval of a nominal level, and the largest deviation from nominal over
  several levels (the quantile-calibration check of Kuleshov, Fenner & Ermon 2018, "Accurate
  uncertainties for deep learning using calibrated regression", at a few levels).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from scipy import stats

__all__ = ["DEFAULT_LEVELS", "classification_nll", "coverage_error", "expected_calibration_error",
           "gaussian_nll", "interval_coverage"]

#: Nominal levels of the central intervals checked by :func:`coverage_error`.
DEFAULT_LEVELS = (0.5, 0.8, 0.9, 0.95)


def _classification_inputs(probs: torch.Tensor, labels: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.as_tensor(probs).detach().to(torch.float64).cpu()
    labels = torch.as_tensor(labels).detach().cpu()
    if probs.dim() != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ValueError(f"probs must be (N >= 1, C >= 2), got {tuple(probs.shape)}")
    if labels.shape != (probs.shape[0],) or labels.dtype.is_floating_point:
        raise ValueError(f"labels must be integers of shape ({probs.shape[0]},), got "
                         f"{tuple(labels.shape)} {labels.dtype}")
    if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()):
        raise ValueError("probs must be finite and non-negative")
    if not torch.allclose(probs.sum(1), torch.ones(len(probs), dtype=torch.float64),
                          atol=1e-6):
        raise ValueError("each row of probs must sum to 1 (pass probabilities, not logits)")
    if bool((labels < 0).any()) or bool((labels >= probs.shape[1]).any()):
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}")
    return probs, labels.long()


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor,
                               n_bins: int = 10) -> float:
    """Top-label expected calibration error with equal-width confidence bins.

    ``ECE = sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|`` (Guo et al. 2017, eq. 3), where the
    confidence of an input is its largest class probability, bin ``b`` (1-based) holds the
    inputs with confidence in ``((b - 1) / n_bins, b / n_bins]`` (edges are the float64
    values nearest to ``b / n_bins``; the first bin also holds confidence 0), ``acc`` is the
    fraction of inputs in the bin whose arg-max class is the label, ``conf`` their mean
    confidence. Empty bins contribute 0. Ties in the arg-max go to
    the lowest class index.

    Args:
        probs: ``(N, C)`` class probabilities, rows summing to 1 (``C >= 2``).
        labels: ``(N,)`` integer labels in ``0..C-1``.
        n_bins: Number of equal-width bins on ``[0, 1]`` (``>= 1``).

    Returns:
        The ECE in ``[0, 1]``.

    Raises:
        ValueError: On bad shapes, probabilities that are not a distribution, labels out of
            range, or ``n_bins < 1``.

    """
    if not (isinstance(n_bins, int) and n_bins >= 1):
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    probs, labels = _classification_inputs(probs, labels)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).to(torch.float64)
    # 0-based bin b holds conf in (e_b, e_{b+1}] with edges e_b = b / M (correctly rounded, so
    # a probability written as 0.7 falls in (0.6, 0.7]); conf = 0 goes to the first bin
    edges = torch.arange(1, n_bins, dtype=torch.float64) / n_bins
    idx = torch.bucketize(conf, edges, right=False)
    ece = 0.0
    n = len(conf)
    for b in range(n_bins):
        mask = idx == b
        count = int(mask.sum())
        if count:
            ece += count / n * abs(float(correct[mask].mean()) - float(conf[mask].mean()))
    return ece


def classification_nll(probs: torch.Tensor, labels: torch.Tensor, *,
                       logits: bool = False) -> float:
    """Mean negative log-likelihood ``-1/N sum_i log p_i[y_i]`` in nats.

    With ``logits=True`` the first argument holds logits (or log-probabilities) ``z`` and
    ``log p = log_softmax(z)`` is used: exact where the probability underflows (logits
    ``(0, 800, 0)`` with label 0 give 800, while ``softmax`` rounds ``p[0]`` to 0 and
    ``-log 0 = inf``).

    Args:
        probs: ``(N, C)`` class probabilities, rows summing to 1; or finite logits with
            ``logits=True``.
        labels: ``(N,)`` integer labels.
        logits: Whether ``probs`` holds logits / log-probabilities.

    Returns:
        The mean NLL (``inf`` when a label has probability exactly 0).

    Raises:
        ValueError: As :func:`expected_calibration_error`; for logits, on a bad shape,
            non-finite logits or labels out of range.

    Warns:
        RuntimeWarning: When probabilities are given and a label's probability is 0 (an
            underflow, most likely): pass the logits with ``logits=True``.

    """
    if logits:
        z = torch.as_tensor(probs).detach().to(torch.float64).cpu()
        lab = torch.as_tensor(labels).detach().cpu()
        if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] < 2:
            raise ValueError(f"logits must be (N >= 1, C >= 2), got {tuple(z.shape)}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("logits must be finite")
        if (lab.shape != (z.shape[0],) or lab.dtype.is_floating_point
                or bool((lab < 0).any()) or bool((lab >= z.shape[1]).any())):
            raise ValueError(f"labels must be integers in 0..{z.shape[1] - 1} of shape "
                             f"({z.shape[0]},)")
        logp = torch.log_softmax(z, dim=1)[torch.arange(len(lab)), lab.long()]
        return float(-logp.mean())
    probs, labels = _classification_inputs(probs, labels)
    p = probs[torch.arange(len(labels)), labels]
    if bool((p == 0).any()):
        warnings.warn(
            f"{int((p == 0).sum())} label(s) have probability 0, so the NLL is inf; if the "
            "probabilities come from a softmax they underflowed: pass the logits (or "
            "log-probabilities) with logits=True",
            RuntimeWarning, stacklevel=2)
    return float(-torch.log(p).mean())


def _gaussian_inputs(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    arrays = [torch.as_tensor(a).detach().to(torch.float64).cpu().reshape(-1)
              for a in (mean, var, y)]
    mean, var, y = arrays
    if not len(mean) or not (len(mean) == len(var) == len(y)):
        raise ValueError(f"mean, var and y need the same non-zero number of entries, got "
                         f"{len(mean)}, {len(var)}, {len(y)}")
    if not all(bool(torch.isfinite(a).all()) for a in arrays):
        raise ValueError("mean, var and y must be finite")
    if bool((var <= 0).any()):
        raise ValueError("predictive variances must be positive")
    return mean, var, y


def gaussian_nll(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor) -> float:
    """Mean Gaussian negative log-likelihood of the targets under ``N(mean, var)``.

    ``1/N sum_i [log(2 pi v_i) + (y_i - m_i)^2 / v_i] / 2`` in nats.

    Args:
        mean: ``(N,)`` (or ``(N, 1)``) predictive means.
        var: ``(N,)`` predictive variances of the observations (> 0).
        y: ``(N,)`` targets.

    Returns:
        The mean NLL in nats.

    Raises:
        ValueError: On mismatched sizes, non-finite entries or non-positive variances.

    """
    mean, var, y = _gaussian_inputs(mean, var, y)
    return float(0.5 * (torch.log(2 * math.pi * var) + (y - mean) ** 2 / var).mean())


def interval_coverage(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor,
                      level: float) -> float:
    """Fraction of targets inside the central ``level`` interval of ``N(mean, var)``.

    The interval is ``mean +- z sqrt(var)`` with ``z = Phi^-1((1 + level) / 2)``.

    Args:
        mean: ``(N,)`` predictive means.
        var: ``(N,)`` predictive variances of the observations (> 0).
        y: ``(N,)`` targets.
        level: Nominal coverage in ``(0, 1)``.

    Returns:
        The empirical coverage in ``[0, 1]``.

    Raises:
        ValueError: On a level outside ``(0, 1)`` or bad inputs (as :func:`gaussian_nll`).

    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    mean, var, y = _gaussian_inputs(mean, var, y)
    z = float(stats.norm.ppf(0.5 + level / 2))
    return float(((y - mean).abs() <= z * var.sqrt()).to(torch.float64).mean())


def coverage_error(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor,
                   levels: Sequence[float] = DEFAULT_LEVELS) -> float:
    """Largest ``|coverage(level) - level|`` over ``levels`` (:func:`interval_coverage`).

    Args:
        mean: ``(N,)`` predictive means.
        var: ``(N,)`` predictive variances of the observations (> 0).
        y: ``(N,)`` targets.
        levels: Nominal levels in ``(0, 1)`` (default :data:`DEFAULT_LEVELS`).

    Returns:
        The largest absolute deviation from nominal, in ``[0, 1]``.

    Raises:
        ValueError: On an empty ``levels`` or as :func:`interval_coverage`.

    """
    levels = tuple(levels)
    if not levels:
        raise ValueError("levels must name at least one nominal level")
    return max(abs(interval_coverage(mean, var, y, lv) - lv) for lv in levels)
