"""ntkcheck: check the predictions of neural tangent kernel theory against real networks.

The public API, importable from the top-level package (loaded on first use, so that the
pytest plugin does not import torch in projects that never run a claim):

* architectures: :class:`ArchSpec`, :mod:`strategies` (Hypothesis strategies), a user's
  own networks: :class:`ModelFamily` (and :class:`NotApplicable`)
* data: :func:`load_dataset`, :class:`Dataset`, :class:`DataError`
* kernels: :func:`empirical_ntk`, :func:`analytic_kernels`, :func:`monte_carlo_ntk`
* the theory and practical training regimes: :class:`TheoryRegime`, :class:`PracticalRegime`
  (:data:`PRACTICAL_REGIME`), :func:`practical_run`, :func:`train_practical`,
  :func:`select_lr`
* training and the kernel regime: :func:`train`, :func:`gradient_descent`, :func:`mse_loss`,
  :func:`linearize`, :func:`gradient_flow`, :func:`kernel_regression`, :func:`ntk_gp`
* second-order optimization: :func:`gram_extreme_eigenvalues`, :func:`jacobian_distance`,
  :func:`natural_gradient_descent`
* uncertainty: :func:`expected_calibration_error`, :func:`interval_coverage`
* continual learning: :func:`train_sequentially`, :func:`average_forgetting`
* reproducibility: :func:`derive_seed`
* claims and verdicts: :class:`Claim`, :func:`compute_verdicts`, :func:`fit_rate`,
  :func:`extrapolate_width`, :func:`relative_frobenius_error`, :func:`relative_change`
* runs: :data:`PROFILES`, :class:`Profile`, :func:`render_report`

Claims themselves are pytest tests; see README.md and ``claims/``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "ArchSpec": "ntkcheck.arch",
    "ModelFamily": "ntkcheck.family",
    "NotApplicable": "ntkcheck.family",
    "strategies": "ntkcheck.strategies",
    "load_dataset": "ntkcheck.data",
    "Dataset": "ntkcheck.data",
    "DataError": "ntkcheck.data",
    "empirical_ntk": "ntkcheck.kernels",
    "analytic_kernels": "ntkcheck.kernels",
    "monte_carlo_ntk": "ntkcheck.kernels",
    "train": "ntkcheck.training.loops",
    "gradient_descent": "ntkcheck.training.loops",
    "mse_loss": "ntkcheck.training.loops",
    "linearize": "ntkcheck.kernel_regime.linearize",
    "gradient_flow": "ntkcheck.kernel_regime.predict",
    "kernel_regression": "ntkcheck.kernel_regime.predict",
    "ntk_gp": "ntkcheck.kernel_regime.predict",
    "gram_extreme_eigenvalues": "ntkcheck.optim.jacobian",
    "jacobian_distance": "ntkcheck.optim.jacobian",
    "natural_gradient_descent": "ntkcheck.optim.natural_gradient",
    "expected_calibration_error": "ntkcheck.uncertainty.calibration",
    "interval_coverage": "ntkcheck.uncertainty.calibration",
    "train_sequentially": "ntkcheck.continual",
    "average_forgetting": "ntkcheck.continual",
    "derive_seed": "ntkcheck.seeding",
    "Claim": "ntkcheck.claim",
    "compute_verdicts": "ntkcheck.verdict",
    "fit_rate": "ntkcheck.metrics",
    "extrapolate_width": "ntkcheck.metrics",
    "relative_frobenius_error": "ntkcheck.metrics",
    "relative_change": "ntkcheck.metrics",
    "PROFILES": "ntkcheck.profiles",
    "Profile": "ntkcheck.profiles",
    "render_report": "ntkcheck.report",
    "Budget": "ntkcheck.continual",
    "CNN_CAP_REASON": "ntkcheck.profiles",
    "DEPTH_CAP_REASON": "ntkcheck.profiles",
    "ClassificationBandit": "ntkcheck.uncertainty.bandits",
    "LaplaceNotInstalled": "ntkcheck.uncertainty.laplace",
    "check_psd": "ntkcheck.numerics",
    "compare_exploration": "ntkcheck.uncertainty.bandits",
    "compare_lla_ntk_gp": "ntkcheck.uncertainty.lla",
    "drift_norms": "ntkcheck.continual",
    "forgetting_bound": "ntkcheck.continual",
    "hidden_features": "ntkcheck.kernel_regime.features",
    "init_seeds": "ntkcheck.kernels.monte_carlo",
    "jacobian_stability_along_ngd": "ntkcheck.optim.natural_gradient",
    "kernel_lr": "ntkcheck.training.loops",
    "kernel_ngd_losses": "ntkcheck.optim.natural_gradient",
    "kernel_race_to_target": "ntkcheck.optim.natural_gradient",
    "linear_cka": "ntkcheck.kernel_regime.features",
    "lla_calibration": "ntkcheck.uncertainty.lla",
    "lr_weighted_ntk": "ntkcheck.kernel_regime.features",
    "ntk_gram": "ntkcheck.optim.jacobian",
    "output_forgetting": "ntkcheck.continual",
    "param_groups": "ntkcheck.arch",
    "permuted_tasks": "ntkcheck.continual",
    "predict_sequential_gd": "ntkcheck.continual",
    "principal_angles": "ntkcheck.continual",
    "race_to_target": "ntkcheck.optim.natural_gradient",
    "readout_covariance": "ntkcheck.kernel_regime.features",
    "require_laplace": "ntkcheck.uncertainty.laplace",
    "rkhs_norm_bound": "ntkcheck.uncertainty.bandits",
    "task_ntk": "ntkcheck.continual",
    "PAPER_SPECS": "ntkcheck.strategies",
    "max_stability_constant": "ntkcheck.optim.natural_gradient",
    "mean_log_contraction": "ntkcheck.optim.natural_gradient",
    "orthogonal_inputs": "ntkcheck.optim.natural_gradient",
    "width_for_tolerance": "ntkcheck.optim.natural_gradient",
    "Curve": "ntkcheck.optim.optimizers",
    "fit": "ntkcheck.optim.optimizers",
    "tune_lr": "ntkcheck.optim.optimizers",
    "plain_mlp": "ntkcheck.optim.optimizers",
    "OPTIMIZERS": "ntkcheck.optim.optimizers",
    "worst_step_contraction": "ntkcheck.optim.natural_gradient",
    "PRACTICAL_CAP_REASON": "ntkcheck.profiles",
    "PRACTICAL_REGIME": "ntkcheck.training.regimes",
    "PracticalRegime": "ntkcheck.training.regimes",
    "PRACTICAL_SPECS": "ntkcheck.training.regimes",
    "measure_practical": "ntkcheck.training.regimes",
    "PracticalRun": "ntkcheck.training.regimes",
    "TheoryRegime": "ntkcheck.training.regimes",
    "TrainingRecord": "ntkcheck.training.regimes",
    "practical_run": "ntkcheck.training.regimes",
    "practical_split": "ntkcheck.training.regimes",
    "practical_seed": "ntkcheck.training.regimes",
    "select_lr": "ntkcheck.training.regimes",
    "train_practical": "ntkcheck.training.regimes",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'ntkcheck' has no attribute {name!r}")
    if name == "strategies":
        return importlib.import_module(module)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
