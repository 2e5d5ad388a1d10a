"""At initialization a wide network's outputs are a Gaussian process with the NNGP kernel.

Lee et al. 2018 ("Deep neural networks as Gaussian processes", Sec. 2) and Matthews et al.
2018 (Thm 4): as the widths grow, the outputs of a randomly initialized MLP on any finite set
of inputs converge in distribution to a centred Gaussian with covariance the NNGP kernel
``K`` (:func:`ntkcheck.kernels.analytic_kernels`).

Estimator. Given the last hidden layer, the output of a network is *exactly* Gaussian with
covariance ``K_hat = (sigma_w^2 / n) phi phi^T + sigma_b^2`` (the read-out weights are
Gaussian; :func:`ntkcheck.kernel_regime.features.readout_covariance`), so the law of the outputs is
the
mixture of ``N(0, K_hat)`` over the hidden layers' randomness. Each (width, seed) unit draws
an ensemble of ``ENSEMBLE`` independent networks (seeds derived from the unit's seed) and
integrates the read-out out exactly instead of sampling it (Rao-Blackwellization), which removes
the sampling noise of the read-out and leaves the fluctuation of ``K_hat``, O(width^-1/2),
that the central limit theorem removes as the width grows (slope -1/2).

* ``nngp-at-init``: ``||mean_s K_hat_s - K||_F / ||K||_F`` on digits inputs.
* ``nngp-gaussian``: the excess kurtosis of the output at each input, averaged over inputs.
  Given the hidden layers the output is ``N(0, K_hat(x, x))``, so its law is a scale mixture of
  centred Gaussians: symmetric (third cumulant 0), with excess kurtosis
  ``kappa(x) = E f^4 / (E f^2)^2 - 3 = 3 Var[K_hat(x, x)] / E[K_hat(x, x)]^2`` (the fourth
  cumulant over the variance squared: the leading term of the law's distance from a Gaussian,
  Edgeworth's expansion), exactly, with the read-out integrated out. It is estimated with the
  unbiased sample variance of ``K_hat(x, x)`` over the ``ENSEMBLE`` networks divided by their
  squared sample mean, so its expectation does not depend on the ensemble size (up to the
  ratio's relative bias ``O(1 / (width * ENSEMBLE))``; the KS distance of the 8-network mixture
  used before measured the ensemble's own spread, ``O((width * ENSEMBLE)^-1/2)``). For a
  depth-1 MLP ``K_hat = (sigma_w^2 / n) sum_i phi(h_i)^2 + sigma_b^2`` is a mean of ``n`` i.i.d.
  terms, so ``kappa = 3 sigma_w^4 Var[phi(h)^2] / (n K^2)``: rate -1 (for deeper MLPs the
  fourth cumulant is ``O(depth / width)``, Hanin & Nica 2020, "Products of many large random
  matrices and gradients in deep neural networks", Thm 1; Yaida 2020, "Non-Gaussian processes
  and neural networks at finite widths", eq. 2.19). The tolerance is the excess kurtosis at
  which Edgeworth's first correction to the CDF, ``kappa / 24 * He_3(u) phi(u)``, reaches a
  Kolmogorov-Smirnov distance of 0.02 (``KS_TOLERANCE``): ``24 * 0.02 / max_u |He_3(u) phi(u)|``.
  (The variance itself, ``E K_hat`` against the NNGP kernel, is ``nngp-at-init``'s.)

Depth (``test_nngp_*_depth``): the pinned ReLU MLP at every depth of ``Profile.depths``
(1, 2, 4 in ``quick``), each depth its own architecture id. Building the ensemble costs
O(depth width^2) per network, so depths >= 2 stop at ``Profile.depth_width_cap`` (1024 in
``quick``; ``paper`` builds every width).
"""

import math

import numpy as np
import pytest
from hypothesis import assume, example, given

from ntkcheck import (
    DEPTH_CAP_REASON,
    ArchSpec,
    analytic_kernels,
    init_seeds,
    readout_covariance,
    strategies,
)

#: Networks per (width, seed) unit.
ENSEMBLE = 8
#: Inputs the outputs are observed on.
N_INPUTS = 16
#: The Kolmogorov-Smirnov distance that ``nngp-gaussian``'s tolerance corresponds to.
KS_TOLERANCE = 0.02
#: ``max_u |He_3(u) phi(u)| = max_u |u^3 - 3u| exp(-u^2 / 2) / sqrt(2 pi)``, attained at
#: ``u^2 = 3 - sqrt(6)`` (the derivative ``-(u^4 - 6u^2 + 3) phi(u)`` vanishes there).
_U2 = 3 - math.sqrt(6)
HE3_PHI_MAX = abs(_U2**1.5 - 3 * _U2**0.5) * math.exp(-_U2 / 2) / math.sqrt(2 * math.pi)
#: Excess kurtosis whose first Edgeworth correction to the CDF is ``KS_TOLERANCE``.
KURTOSIS_TOLERANCE = 24 * KS_TOLERANCE / HE3_PHI_MAX

#: Depth-1 MLPs are drawn; a depth-2 erf MLP and a depth-1 CNN (3x3 convolutions, global
#: average pooling) are pinned; the ReLU MLP is swept over the profile's depths.
MLPS = strategies.mlps(min_depth=1, max_depth=1, parametrizations=("ntk", "standard"))
#: The architecture swept over ``Profile.depths``.
DEPTH_SPEC = ArchSpec(activation="relu")


def _units(spec, sweep, measure, digits, reference=None, build_width=None):
    """Per unit: (width, seed, K, (ENSEMBLE, M, M) read-out covariances of the ensemble).

    ``K`` is the NNGP kernel of ``reference`` (``spec`` by default; another architecture is a
    negative control). The networks have width ``build_width`` (the swept one by default).
    """
    x = digits.x[:N_INPUTS]
    reference = reference or spec
    for width, seed in sweep:
        k = analytic_kernels(reference.with_width(width), x).nngp.cpu().numpy()  # width-free
        init = measure.seed(spec, width=width, seed=seed)
        covs = []
        for s in init_seeds(init, ENSEMBLE):
            net = spec.with_width(build_width or width).build(
                seed=s, input_shape=digits.input_shape, device=x.device)
            covs.append(readout_covariance(net, x, spec).cpu().numpy())
        yield width, seed, k, np.stack(covs)


def excess_kurtosis(covs: np.ndarray) -> float:
    """Mean over inputs of ``3 Var_s[K_hat_s(x, x)] / mean_s[K_hat_s(x, x)]^2``.

    The excess kurtosis of the output law (module docstring), estimated from ``S`` networks'
    read-out covariances ``covs`` ``(S, M, M)`` with the unbiased (``ddof=1``) variance, so
    that its expectation does not depend on ``S``.

    Raises:
        ValueError: With fewer than 2 networks (no variance).
    """
    var = np.diagonal(covs, axis1=1, axis2=2)  # (S, M)
    if var.shape[0] < 2:
        raise ValueError("the excess kurtosis needs an ensemble of at least 2 networks")
    return float(np.mean(3 * var.var(axis=0, ddof=1) / var.mean(axis=0) ** 2))


def _capped(spec, sweep, measure, profile) -> list[tuple[int, int]]:
    """The depth sweep's units up to ``Profile.depth_width_cap`` (building ``ENSEMBLE``
    networks costs O(depth width^2) each); the wider ones are recorded as capped."""
    return list(measure.capped(spec, sweep, profile.depth_width_cap(spec),
                               why=DEPTH_CAP_REASON))


def _not_depth_swept(spec, profile) -> None:
    """Leave a drawn architecture that the depth-sweep test measures to that test."""
    assume(spec.arch_id not in {s.arch_id for s in profile.depth_sweep(DEPTH_SPEC)})


COVARIANCE = dict(
    id="nngp-at-init",
    statement="At initialization the outputs' covariance approaches the NNGP kernel",
    source="Lee et al. 2018, Sec. 2; Matthews et al. 2018, Thm 4",
    metric="||mean_s K_hat_s - K||_F / ||K||_F, K_hat = output covariance given the last "
           f"hidden layer, {ENSEMBLE} networks per unit, digits inputs",
    tolerance=0.05,
    rate=-0.5,
)


@pytest.mark.claim(**COVARIANCE)
@given(spec=MLPS)
@example(spec=ArchSpec(depth=2, activation="erf"))
@example(spec=ArchSpec(family="cnn", depth=1, activation="relu"))
def test_nngp_covariance(spec, ntk_sweep, ntk_measure, ntk_digits, ntk_profile):
    _not_depth_swept(spec, ntk_profile)
    covariance_error(spec, ntk_sweep, ntk_measure, ntk_digits)


@pytest.mark.claim(**COVARIANCE)
def test_nngp_covariance_depth(ntk_sweep, ntk_measure, ntk_digits, ntk_profile):
    for spec in ntk_profile.depth_sweep(DEPTH_SPEC):
        covariance_error(spec, _capped(spec, ntk_sweep, ntk_measure, ntk_profile), ntk_measure,
                         ntk_digits)


def covariance_error(spec, sweep, measure, digits, reference=None):
    """Measure ``nngp-at-init`` for one architecture over the sweep."""
    for width, seed, k, covs in _units(spec, sweep, measure, digits, reference):
        err = float(np.linalg.norm(covs.mean(0) - k) / np.linalg.norm(k))
        measure(spec, width=width, seed=seed, value=err, ensemble=ENSEMBLE)


GAUSSIAN = dict(
    id="nngp-gaussian",
    statement="At initialization the output at each input is Gaussian with the NNGP variance",
    source="Lee et al. 2018, Sec. 2; Matthews et al. 2018, Thm 4",
    metric="mean_x excess kurtosis 3 Var[K_hat(x, x)] / E[K_hat(x, x)]^2 of the output "
           f"(read-out integrated out; unbiased variance over {ENSEMBLE} networks), digits "
           f"inputs; tolerance = Edgeworth equivalent of KS distance {KS_TOLERANCE}",
    tolerance=round(KURTOSIS_TOLERANCE, 3),
    rate=-1.0,
)


@pytest.mark.claim(**GAUSSIAN)
@given(spec=MLPS)
@example(spec=ArchSpec(depth=2, activation="erf"))
@example(spec=ArchSpec(family="cnn", depth=1, activation="relu"))
def test_nngp_gaussian(spec, ntk_sweep, ntk_measure, ntk_digits, ntk_profile):
    _not_depth_swept(spec, ntk_profile)
    gaussianity(spec, ntk_sweep, ntk_measure, ntk_digits)


@pytest.mark.claim(**GAUSSIAN)
def test_nngp_gaussian_depth(ntk_sweep, ntk_measure, ntk_digits, ntk_profile):
    for spec in ntk_profile.depth_sweep(DEPTH_SPEC):
        gaussianity(spec, _capped(spec, ntk_sweep, ntk_measure, ntk_profile), ntk_measure,
                    ntk_digits)


def gaussianity(spec, sweep, measure, digits, build_width=None):
    """Measure ``nngp-gaussian`` for one architecture over the sweep.

    ``build_width``: build every network at this width while recording the swept one (None:
    the swept width); a network that does not grow is the negative control.
    """
    for width, seed, _, covs in _units(spec, sweep, measure, digits, build_width=build_width):
        measure(spec, width=width, seed=seed, value=excess_kurtosis(covs), ensemble=ENSEMBLE,
                ks_equivalent=excess_kurtosis(covs) * HE3_PHI_MAX / 24)
