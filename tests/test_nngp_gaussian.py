"""``nngp-gaussian``'s estimator: the output law's excess kurtosis, not the ensemble's noise.

The claim (claims/test_nngp_at_init.py) measures ``3 Var[K_hat(x, x)] / E[K_hat(x, x)]^2``
from an ensemble of networks with the unbiased variance. These tests use real networks: its
mean over many replicate ensembles must not depend on the ensemble size, while the KS distance
of the ensemble's Gaussian mixture that the claim measured before does (it falls like
ensemble^-1/2); and over widths its fitted rate on a depth-1 erf MLP is consistent with -1.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ntkcheck import ArchSpec, fit_rate, init_seeds, load_dataset, readout_covariance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "claims"))
import test_nngp_at_init as claim  # noqa: E402

ERF = ArchSpec(depth=1, activation="erf")
X = load_dataset("digits", n=claim.N_INPUTS, seed=0).x


def _covs(width: int, n_networks: int, seed: int) -> np.ndarray:
    nets = (ERF.with_width(width).build(seed=s, input_shape=X.shape[1:])
            for s in init_seeds(seed, n_networks))
    return np.stack([readout_covariance(net, X, ERF).numpy() for net in nets])


def _ks_mixture(covs: np.ndarray, k: np.ndarray) -> float:
    """The estimator the claim used before: max_x sup_u |mean_s Phi(u / sqrt(r_s)) - Phi(u)|."""
    grid = np.linspace(-6.0, 6.0, 2401)
    ratio = np.diagonal(covs, axis1=1, axis2=2) / np.diag(k)
    mix = stats.norm.cdf(grid[None, None, :] / np.sqrt(ratio)[:, :, None]).mean(0)
    return float(np.abs(mix - stats.norm.cdf(grid)[None, :]).max())


def test_the_estimate_does_not_depend_on_the_ensemble_size():
    from ntkcheck import analytic_kernels

    k = analytic_kernels(ERF, X).nngp.numpy()
    pool = _covs(64, 256, seed=1)  # 256 networks: 32 ensembles of 8, or 4 ensembles of 64
    small = [claim.excess_kurtosis(pool[i:i + 8]) for i in range(0, 256, 8)]
    large = [claim.excess_kurtosis(pool[i:i + 64]) for i in range(0, 256, 64)]
    se = np.hypot(np.std(small, ddof=1) / np.sqrt(len(small)),
                  np.std(large, ddof=1) / np.sqrt(len(large)))
    assert abs(np.mean(small) - np.mean(large)) < 3 * se, (np.mean(small), np.mean(large), se)
    # the former KS estimator does depend on it: it measures the ensemble's own spread
    ks_small = np.mean([_ks_mixture(pool[i:i + 8], k) for i in range(0, 256, 8)])
    ks_large = np.mean([_ks_mixture(pool[i:i + 64], k) for i in range(0, 256, 64)])
    assert ks_small > 2 * ks_large


def test_the_rate_on_a_depth_1_erf_mlp_is_consistent_with_minus_one():
    widths, values = [], []
    for width in (32, 128, 512):
        for seed in range(6):
            widths.append(width)
            values.append(claim.excess_kurtosis(_covs(width, claim.ENSEMBLE, 100 + seed)))
    fit = fit_rate(widths, values)
    assert fit.slope_low <= -1.0 <= fit.slope_high, fit
    assert fit.slope_high < -0.5  # and it excludes the -1/2 of the former estimator


def test_the_tolerance_is_the_edgeworth_equivalent_of_a_ks_distance_of_0_02():
    u = np.linspace(-6, 6, 200001)
    he3_phi = (u**3 - 3 * u) * stats.norm.pdf(u)
    assert claim.HE3_PHI_MAX == pytest.approx(np.abs(he3_phi).max(), rel=1e-9)
    # a scale mixture with this excess kurtosis is within about 0.02 of the Gaussian in KS
    kappa = claim.KURTOSIS_TOLERANCE / 10  # small, where the first Edgeworth term dominates
    s2 = np.array([1 - np.sqrt(kappa / 3), 1 + np.sqrt(kappa / 3)])  # Var = kappa/3, mean 1
    mix = stats.norm.cdf(u[:, None] / np.sqrt(s2)).mean(1)
    ks = np.abs(mix - stats.norm.cdf(u)).max()
    assert ks == pytest.approx(claim.KS_TOLERANCE / 10, rel=0.05)


def test_fewer_than_two_networks_have_no_variance():
    with pytest.raises(ValueError, match="at least 2 networks"):
        claim.excess_kurtosis(np.ones((1, 3, 3)))
