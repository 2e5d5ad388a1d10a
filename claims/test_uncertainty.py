"""Uncertainty in the kernel regime: linearized Laplace, the NTK-GP, and calibration.

The model (:mod:`ntkcheck.uncertainty.laplace`): a network centred at its initialization ``theta_0``
(output 0 at ``theta_0``), prior ``theta ~ N(theta_0, I / delta)``, trained to its MAP by
L-BFGS; laplace-torch's linearized Laplace approximation (LLA, all weights, GGN, GLM
predictive) at the MAP.

``lla-equals-ntkgp``: the LLA is GP regression with the empirical NTK at the MAP as kernel
(Khan et al. 2019; Immer et al. 2021, eq. 15); in the kernel regime that NTK tends
to the analytic NTK (Jacot et al. 2018; Lee et al. 2019, Theorem 2.1), so the LLA predictive
tends to the NTK-GP posterior (:func:`ntkcheck.uncertainty.laplace.ntk_gp_posterior`). Its kernel
fluctuates by O(width^-1/2) at initialization and moves by O(width^-1/2) in training, hence
the predicted slope -1/2. Regression on diabetes (``n_inputs`` training points, as many
held-out test points), fixed ``delta = 1`` (the prior has the NTK parametrization's
initialization variance) and ``sigma = 0.7`` (about the residual standard deviation of a
linear fit to the standardized targets, R^2 ~ 0.5).

``uncertainty-calibrated``: the product's claim that the LLA of a wide network, with prior
precision (and noise) set by laplace-torch's marginal likelihood, is calibrated on held-out
data: ECE (10 equal-width bins, top label) on digits and breast cancer, and the largest
deviation of the coverage of central 50/80/90/95% intervals from nominal on diabetes; the
metric is the worst of the three. ``n_inputs`` training points, ``max(200, 2 n_inputs)``
held-out points per data set (the sampling error of an ECE or a coverage on 200 points is
about 0.03-0.05, inside the tolerance 0.1).

Sizes per profile (``n_inputs``): smoke 24, quick 48, paper 256; widths from the profile.
"""

import pytest
from hypothesis import example, given

from ntkcheck import (
    ArchSpec,
    LaplaceNotInstalled,
    compare_lla_ntk_gp,
    lla_calibration,
    load_dataset,
    require_laplace,
    strategies,
)

try:
    require_laplace()
except LaplaceNotInstalled as exc:
    pytest.skip(str(exc), allow_module_level=True)

#: Data sets of the calibration claim.
CALIBRATION_DATA = ("digits", "breast_cancer", "diabetes")


@pytest.mark.claim(
    id="lla-equals-ntkgp",
    statement="The linearized-Laplace predictive of a trained wide network approaches the "
              "NTK-GP posterior",
    source="Khan et al. 2019; Immer et al. 2021, eq. 15; kernel regime: Jacot et al. "
           "2018, Lee et al. 2019, Thm 2.1",
    metric="max(||m_LLA - m_NTKGP|| / ||m_NTKGP||, RMS log(v_LLA / v_NTKGP)) on held-out "
           "diabetes inputs",
    tolerance=0.1,
    rate=-0.5,
)
@given(spec=strategies.mlps(min_depth=1, max_depth=1, activations=("erf", "relu"),
                            biases=(True,)))
@example(spec=ArchSpec(depth=1, activation="relu"))
def test_lla_equals_ntk_gp(spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    n = ntk_profile.n_inputs
    train, test = load_dataset("diabetes", n=2 * n, seed=0, device=ntk_device).split(n)
    for width, seed in ntk_sweep:
        with ntk_measure.guard(spec, width=width, seed=seed) as init_seed:  # OOM: not measured
            c = compare_lla_ntk_gp(spec, train, test, width=width, seed=init_seed,
                                   device=ntk_device)
            ntk_measure(spec, width=width, seed=seed, value=c.value, mean_error=c.mean_error,
                    log_variance_error=c.log_variance_error,
                    init_mean_error=c.init_mean_error,
                    init_log_variance_error=c.init_log_variance_error,
                    map_grad_norm=c.map_grad_norm, n_params=c.n_params,
                    hessian_structure=c.hessian_structure)


@pytest.mark.claim(
    id="uncertainty-calibrated",
    statement="The linearized-Laplace predictive of a wide network (marginal-likelihood "
              "prior) is calibrated on held-out data",
    source="product claim; LLA: Immer et al. 2021; ECE: Guo et al. 2017, eq. 3; coverage: "
           "Kuleshov et al. 2018",
    metric="max(ECE digits, ECE breast cancer, max |coverage - level| diabetes); 10 "
           "equal-width bins, levels 0.5/0.8/0.9/0.95",
    tolerance=0.1,
)
@given(spec=strategies.mlps(min_depth=1, max_depth=1, activations=("relu", "erf"),
                            biases=(True,)))
@example(spec=ArchSpec(depth=1, activation="relu"))
def test_uncertainty_calibrated(spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    n = ntk_profile.n_inputs
    n_test = max(200, 2 * n)
    splits = {name: load_dataset(name, n=n + n_test, seed=0, device=ntk_device).split(n)
              for name in CALIBRATION_DATA}
    for width, seed in ntk_sweep:
        with ntk_measure.guard(spec, width=width, seed=seed) as init_seed:  # OOM: not measured
            results = {name: lla_calibration(spec, train, test, width=width, seed=init_seed,
                                             device=ntk_device)
                       for name, (train, test) in splits.items()}
            extra = {}
            for name, r in results.items():
                extra.update({f"{name}_error": r.error, f"{name}_nll": r.nll,
                              f"{name}_prior_precision": r.prior_precision})
                if r.accuracy == r.accuracy:  # classification
                    extra[f"{name}_accuracy"] = r.accuracy
            extra["diabetes_sigma_noise"] = results["diabetes"].sigma_noise
            ntk_measure(spec, width=width, seed=seed,
                    value=max(r.error for r in results.values()), **extra)
