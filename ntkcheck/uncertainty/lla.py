"""End-to-end measurements of the linearized Laplace approximation (LLA) of one network.

Both build a centred network of an :class:`~ntkcheck.arch.ArchSpec` at one width and seed,
train it to the MAP of the model of :mod:`ntkcheck.uncertainty.laplace` (prior ``N(theta_0, I /
delta)``), fit laplace-torch's LLA at the MAP and evaluate its GLM predictive on held-out
inputs:

* :func:`compare_lla_ntk_gp` (claim ``lla-equals-ntkgp``): regression with fixed
  hyperparameters; the LLA predictive against the NTK-GP posterior with the analytic NTK (and,
  as a diagnostic, with the network's empirical NTK at initialization).
* :func:`lla_calibration` (claim ``uncertainty-calibrated``): prior precision (and noise) set
  by laplace-torch's marginal likelihood after training, then the ECE (classification) or the
  interval-coverage error (regression) on held-out data (:mod:`ntkcheck.uncertainty.calibration`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ntkcheck.data import Dataset
from ntkcheck.metrics import relative_frobenius_error
from ntkcheck.uncertainty.calibration import (
    DEFAULT_LEVELS,
    classification_nll,
    coverage_error,
    expected_calibration_error,
    gaussian_nll,
)
from ntkcheck.uncertainty.laplace import (
    CenteredNetwork,
    fit_laplace,
    fit_map,
    lla_predictive,
    log_variance_error,
    ntk_gp_posterior,
    probit_probabilities,
    tune_hyperparameters,
)

__all__ = ["CalibrationResult", "LLAComparison", "compare_lla_ntk_gp", "lla_calibration"]


def _targets(data: Dataset) -> tuple[torch.Tensor, str, int]:
    """Targets in the shape laplace-torch wants, the likelihood and the number of outputs."""
    if data.task == "regression":
        return data.y.reshape(-1, 1), "regression", 1
    return data.y, "classification", data.n_classes


def _centered(spec, width: int, seed: int, data: Dataset, n_out: int, device, dtype
              ) -> CenteredNetwork:
    net = spec.with_width(width).build(seed=seed, input_shape=data.input_shape,
                                       out_features=n_out, device=device, dtype=dtype)
    return CenteredNetwork(net)


@dataclass(frozen=True)
class LLAComparison:
    """LLA predictive against the NTK-GP posterior on held-out inputs.

    Attributes:
        mean_error: ``||m_LLA - m_GP||_2 / ||m_GP||_2`` over the test inputs (analytic NTK).
        log_variance_error: RMS of ``log(v_LLA / v_GP)`` of the latent variances (analytic NTK;
            :func:`ntkcheck.uncertainty.laplace.log_variance_error`).
        init_mean_error: ``mean_error`` against the NTK-GP with the network's empirical NTK at
            initialization instead of the analytic NTK.
        init_log_variance_error: ``log_variance_error`` against that NTK-GP.
        map_objective: Negative log joint at the trained parameters.
        map_grad_norm: Gradient norm there (small at a MAP; ReLU's kinks leave a floor).
        n_params: Trainable parameters.
        hessian_structure: ``"full"`` or ``"gp"``, the laplace-torch structure used.

    """

    mean_error: float
    log_variance_error: float
    init_mean_error: float
    init_log_variance_error: float
    map_objective: float
    map_grad_norm: float
    n_params: int
    hessian_structure: str

    @property
    def value(self) -> float:
        """The claim's metric: the larger of the two errors against the analytic NTK-GP."""
        return max(self.mean_error, self.log_variance_error)


def compare_lla_ntk_gp(
    spec,
    train: Dataset,
    test: Dataset,
    *,
    width: int,
    seed: int,
    prior_precision: float = 1.0,
    sigma_noise: float = 0.7,
    hessian_structure: str = "auto",
    max_iter: int = 50,
    reference_spec=None,
    device: str | torch.device = "cpu",
) -> LLAComparison:
    """Train a centred network to its MAP and compare its LLA with the NTK-GP on ``test``.

    Both predictives use the same ``delta`` and ``sigma`` (fixed: the theorem is for any
    fixed pair). The reference is :func:`ntkcheck.uncertainty.laplace.ntk_gp_posterior` with the
    analytic NTK of ``spec`` (:func:`ntkcheck.kernels.analytic_kernels`).

    Args:
        spec: An NTK-parametrized :class:`~ntkcheck.arch.ArchSpec` with an analytic NTK.
        train: Regression training data ``(N, ...)`` with ``(N,)`` targets.
        test: Held-out inputs ``(M, ...)`` (targets unused).
        width: Hidden width.
        seed: Initialization seed.
        prior_precision: ``delta``.
        sigma_noise: ``sigma``.
        hessian_structure: Passed to :func:`ntkcheck.uncertainty.laplace.fit_laplace`.
        max_iter: L-BFGS iterations of :func:`ntkcheck.uncertainty.laplace.fit_map`.
        reference_spec: Architecture whose analytic NTK defines the NTK-GP (``spec`` when
            None; another one is a deliberately wrong reference, for negative controls).
        device: Device of the network.

    Returns:
        An :class:`LLAComparison`.

    Raises:
        ValueError: For a classification data set.
        LaplaceNotInstalled: Without laplace-torch.

    """
    from ntkcheck.kernels import analytic_kernels, empirical_ntk

    if train.task != "regression":
        raise ValueError("compare_lla_ntk_gp needs a regression data set")
    x, xt = train.x.to(device), test.x.to(device)
    y = train.y.reshape(-1, 1).to(device)
    hyper = dict(prior_precision=prior_precision, sigma_noise=sigma_noise)

    ref = spec if reference_spec is None else reference_spec
    gp = ntk_gp_posterior(analytic_kernels(ref, x).ntk, analytic_kernels(ref, xt, x).ntk,
                          analytic_kernels(ref, xt).ntk.diagonal(), y, **hyper)

    net = _centered(spec, width, seed, train, 1, device, x.dtype)
    k0 = empirical_ntk(net, x)
    gp0 = ntk_gp_posterior(k0, empirical_ntk(net, xt, x), empirical_ntk(net, xt).diagonal(),
                           y, **hyper)

    prior_mean = net.initial_parameters
    fit = fit_map(net, x, y, likelihood="regression", prior_mean=prior_mean,
                  max_iter=max_iter, **hyper)
    la = fit_laplace(net, x, y, likelihood="regression", hessian_structure=hessian_structure,
                     prior_mean=prior_mean, **hyper)
    pred = lla_predictive(la, xt)
    mean, var = pred.mean, pred.variance[:, 0]
    structure = "full" if type(la).__name__ == "FullLaplace" else "gp"
    return LLAComparison(
        mean_error=relative_frobenius_error(mean, gp.mean),
        log_variance_error=log_variance_error(var, gp.variance),
        init_mean_error=relative_frobenius_error(mean, gp0.mean),
        init_log_variance_error=log_variance_error(var, gp0.variance),
        map_objective=fit.objective, map_grad_norm=fit.grad_norm,
        n_params=sum(p.numel() for p in net.parameters()), hessian_structure=structure,
    )


@dataclass(frozen=True)
class CalibrationResult:
    """Calibration of one LLA predictive on held-out data.

    Attributes:
        dataset: Data set name.
        error: ECE (classification,
        :func:`~ntkcheck.uncertainty.calibration.expected_calibration_error`)
            or largest coverage error over the nominal levels (regression,
            :func:`~ntkcheck.uncertainty.calibration.coverage_error`), in ``[0, 1]``.
        nll: Mean held-out negative log-likelihood (nats).
        accuracy: Held-out accuracy (classification; NaN for regression).
        prior_precision: Marginal-likelihood prior precision.
        sigma_noise: Marginal-likelihood noise standard deviation (1 for classification).

    """

    dataset: str
    error: float
    nll: float
    accuracy: float
    prior_precision: float
    sigma_noise: float


def lla_calibration(
    spec,
    train: Dataset,
    test: Dataset,
    *,
    width: int,
    seed: int,
    variance_scale: float = 1.0,
    initial_prior_precision: float = 1.0,
    max_iter: int = 30,
    n_bins: int = 10,
    levels: tuple[float, ...] = DEFAULT_LEVELS,
    device: str | torch.device = "cpu",
) -> CalibrationResult:
    """Calibration of the LLA of a centred network trained on ``train``, measured on ``test``.

    Steps: MAP with prior ``N(theta_0, I / initial_prior_precision)`` (and noise 1 for
    regression targets, which are standardized) by L-BFGS; laplace-torch's function-space LLA
    (``hessian_structure="gp"`` at every width, so the marginal likelihood is the same
    approximation across the sweep; independent outputs for classification); prior precision
    (and noise) by marginal likelihood (:func:`ntkcheck.uncertainty.laplace.tune_hyperparameters`);
    the GLM predictive on ``test`` with the probit link (classification) or
    ``N(f, v_f + sigma^2)`` (regression).

    Args:
        spec: :class:`~ntkcheck.arch.ArchSpec`.
        train: Training data.
        test: Held-out data of the same task.
        width: Hidden width.
        seed: Initialization seed.
        variance_scale: Multiplies the predictive variance: of the logits (classification) or
            of the observations ``v_f + sigma^2`` (regression). ``0.01`` is the deliberately
            over-confident negative control.
        initial_prior_precision: Prior precision of the MAP training.
        max_iter: L-BFGS iterations of the MAP training.
        n_bins: ECE bins.
        levels: Nominal interval levels for regression.
        device: Device of the network.

    Returns:
        A :class:`CalibrationResult`.

    Raises:
        LaplaceNotInstalled: Without laplace-torch.

    """
    y, likelihood, n_out = _targets(train)
    x, xt, y = train.x.to(device), test.x.to(device), y.to(device)
    net = _centered(spec, width, seed, train, n_out, device, x.dtype)
    prior_mean = net.initial_parameters
    fit_map(net, x, y, likelihood=likelihood, prior_precision=initial_prior_precision,
            prior_mean=prior_mean, max_iter=max_iter)
    la = fit_laplace(net, x, y, likelihood=likelihood, hessian_structure="gp",
                     prior_precision=initial_prior_precision, prior_mean=prior_mean,
                     independent_outputs=likelihood == "classification")
    prior, sigma = tune_hyperparameters(la)
    if likelihood == "classification":
        pred = lla_predictive(la, xt, variance_scale=variance_scale)
        probs = probit_probabilities(pred)
        labels = test.y.cpu()
        probs = probs.cpu()
        return CalibrationResult(
            test.name, expected_calibration_error(probs, labels, n_bins),
            classification_nll(probs, labels),
            float((probs.argmax(1) == labels).double().mean()), prior, sigma)
    pred = lla_predictive(la, xt)
    mean = pred.mean[:, 0].cpu()
    var = (pred.variance[:, 0].cpu() + sigma**2) * variance_scale
    target = test.y.cpu()
    return CalibrationResult(test.name, coverage_error(mean, var, target, levels),
                             gaussian_nll(mean, var, target), float("nan"), prior, sigma)
