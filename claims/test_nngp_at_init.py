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
* ``nngp-gaussian``: the Kolmogorov-Smirnov distance between the output law at each input
  (the mixture ``mean_s N(0, K_hat_s(x, x))``) and ``N(0, K(x, x))``, largest over inputs.
  (A KS test of sampled outputs would need far more networks: its noise floor is
  ~1/sqrt(#networks) at every width.)
"""

import numpy as np
import pytest
from hypothesis import example, given
from scipy import stats

from ntkcheck import ArchSpec, analytic_kernels, init_seeds, readout_covariance, strategies

#: Networks per (width, seed) unit.
ENSEMBLE = 8
#: Inputs the outputs are observed on.
N_INPUTS = 16
#: Standardized grid on which the KS distance of the mixture is taken.
GRID = np.linspace(-6.0, 6.0, 2401)

#: Depth-1 MLPs are drawn; a depth-2 MLP and a depth-1 CNN (3x3 convolutions, global average
#: pooling) are pinned (the depth-2 MLP's width x width layer dominates the cost).
MLPS = strategies.mlps(min_depth=1, max_depth=1, parametrizations=("ntk", "standard"))


def _units(spec, sweep, measure, digits, reference=None):
    """Per unit: (width, seed, K, (ENSEMBLE, M, M) read-out covariances of the ensemble).

    ``K`` is the NNGP kernel of ``reference`` (``spec`` by default; another architecture is a
    negative control).
    """
    x = digits.x[:N_INPUTS]
    reference = reference or spec
    for width, seed in sweep:
        k = analytic_kernels(reference.with_width(width), x).nngp.cpu().numpy()  # width-free
        init = measure.seed(spec, width=width, seed=seed)
        covs = []
        for s in init_seeds(init, ENSEMBLE):
            net = spec.with_width(width).build(seed=s, input_shape=digits.input_shape,
                                               device=x.device)
            covs.append(readout_covariance(net, x, spec).cpu().numpy())
        yield width, seed, k, np.stack(covs)


def _ks_mixture(k: np.ndarray, covs: np.ndarray) -> float:
    """max over inputs of sup_u |mean_s Phi(u / sqrt(r_s)) - Phi(u)|, r_s = K_hat_s / K."""
    ratio = np.diagonal(covs, axis1=1, axis2=2) / np.diag(k)  # (S, M)
    mix = stats.norm.cdf(GRID[None, None, :] / np.sqrt(ratio)[:, :, None]).mean(0)
    return float(np.abs(mix - stats.norm.cdf(GRID)[None, :]).max())


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
@example(spec=ArchSpec(depth=1, activation="relu"))
@example(spec=ArchSpec(depth=2, activation="erf"))
@example(spec=ArchSpec(family="cnn", depth=1, activation="relu"))
def test_nngp_covariance(spec, ntk_sweep, ntk_measure, ntk_digits):
    covariance_error(spec, ntk_sweep, ntk_measure, ntk_digits)


def covariance_error(spec, sweep, measure, digits, reference=None):
    """Measure ``nngp-at-init`` for one architecture over the sweep."""
    for width, seed, k, covs in _units(spec, sweep, measure, digits, reference):
        err = float(np.linalg.norm(covs.mean(0) - k) / np.linalg.norm(k))
        measure(spec, width=width, seed=seed, value=err, ensemble=ENSEMBLE)


GAUSSIAN = dict(
    id="nngp-gaussian",
    statement="At initialization the output at each input is Gaussian with the NNGP variance",
    source="Lee et al. 2018, Sec. 2; Matthews et al. 2018, Thm 4",
    metric="max_x KS distance between the output law (read-out integrated out, "
           f"{ENSEMBLE} networks) and N(0, K(x, x)), digits inputs",
    tolerance=0.02,
    rate=-0.5,
)


@pytest.mark.claim(**GAUSSIAN)
@given(spec=MLPS)
@example(spec=ArchSpec(depth=1, activation="relu"))
@example(spec=ArchSpec(depth=2, activation="erf"))
@example(spec=ArchSpec(family="cnn", depth=1, activation="relu"))
def test_nngp_gaussian(spec, ntk_sweep, ntk_measure, ntk_digits):
    ks_distance(spec, ntk_sweep, ntk_measure, ntk_digits)


def ks_distance(spec, sweep, measure, digits, reference=None):
    """Measure ``nngp-gaussian`` for one architecture over the sweep."""
    for width, seed, k, covs in _units(spec, sweep, measure, digits, reference):
        measure(spec, width=width, seed=seed, value=_ks_mixture(k, covs), ensemble=ENSEMBLE)
