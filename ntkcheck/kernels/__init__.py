"""The kernel engine: empirical, analytic (infinite-width) and Monte Carlo NTKs.

* :func:`empirical_ntk`: the NTK of a concrete ``torch.nn.Module`` at its current parameters.
* :func:`analytic_kernels`: the infinite-width NNGP kernel and NTK of an ``ArchSpec``.
* :func:`monte_carlo_ntk`: the average empirical NTK over random initializations.
"""

from ntkcheck.kernels._memory import KernelMemoryError
from ntkcheck.kernels.analytic import Kernels, analytic_kernels, mlp_kernels
from ntkcheck.kernels.duals import get_dual
from ntkcheck.kernels.empirical import Plan, TrainModeError, empirical_ntk, plan_empirical_ntk
from ntkcheck.kernels.monte_carlo import monte_carlo_ntk

__all__ = [
    "KernelMemoryError",
    "Kernels",
    "Plan",
    "TrainModeError",
    "analytic_kernels",
    "empirical_ntk",
    "get_dual",
    "mlp_kernels",
    "monte_carlo_ntk",
    "plan_empirical_ntk",
]
