"""Linearized Laplace (through laplace-torch) and the NTK Gaussian process it becomes.

The model. A network ``g(x; theta)`` is *centred* at its initialization ``theta_0``:
``f(x; theta) = g(x; theta) - g(x; theta_0)`` (:class:`CenteredNetwork`; the centring of Chizat,
Oyallon & Bach 2019, "On lazy training in differentiable programming", so that the
output at initialization is exactly 0 and the trained network has a deterministic
infinite-width limit). The prior is ``theta ~ N(theta_0, I / delta)`` (prior precision
``delta``, prior mean ``theta_0``), the likelihood Gaussian with noise standard deviation
``sigma`` (regression) or categorical on softmax logits (classification).
:func:`fit_map` finds the MAP ``theta_*`` of that model with L-BFGS.

Linearized Laplace (LLA). With the generalized Gauss-Newton (GGN) Hessian, the Laplace
posterior of the network linearized at ``theta_*`` (Khan et al. 2019, "Approximate inference
turns deep networks into Gaussian processes"; Immer, Korzepa & Bauer 2021, "Improving
predictions of Bayesian neural nets via local linearization", whose eq. 15 is the
function-space form laplace-torch implements) has
the GLM predictive ``f(x) ~ N(f(x; theta_*), J(x) Sigma J(x)^T)``,
``Sigma = (J^T Lambda J + delta I)^-1``. :func:`fit_laplace` builds it with laplace-torch
(``subset_of_weights="all"``): ``hessian_structure="full"`` (the ``P x P`` posterior) for
networks of at most :data:`FULL_MAX_PARAMS` parameters, ``"gp"`` (laplace-torch's
``FunctionalLaplace``: the same predictive computed in function space from the empirical NTK
``J J^T``, Immer et al. 2021 eq. 15, with its kernel blocks from
:func:`ntkcheck.kernels.empirical_ntk` instead of materialized Jacobians) above. For
classification laplace-torch's function-space form uses the diagonal of the likelihood
Hessian ``Lambda`` (its documented approximation).
``hessian_structure="kron"`` is laplace-torch's K-FAC Laplace (Ritter, Botev & Barber 2018,
"A scalable Laplace approximation for neural networks"; through curvlinops' K-FAC): an
approximation of the GGN, exact for one layer under MSE, which applies to the networks of
:mod:`ntkcheck.arch` because their parameters sit in plain ``nn.Linear``/``nn.Conv2d``
layers; its ``width x width`` Kronecker factors need ``O(width^3)`` eigendecompositions.
:func:`tune_hyperparameters` sets the prior precision (and, for regression, the noise) by
maximizing laplace-torch's Laplace marginal likelihood.

NTK-GP. By Woodbury's identity the LLA regression predictive *is* GP regression with kernel
``Theta_*(x, x') / delta`` (the empirical NTK at ``theta_*``), prior mean ``f(x; theta_0) = 0``
and noise ``sigma^2``. In the kernel regime (Jacot et al. 2018; Lee et al. 2019, Theorem 2.1)
``Theta_*`` tends to the analytic NTK ``Theta`` as the width grows, so the LLA tends to the
*NTK-GP* posterior (:func:`ntk_gp_posterior`)::

    mean(x) = Theta(x, X) (Theta(X, X) + delta sigma^2 I)^-1 Y
    var(x)  = (Theta(x, x) - Theta(x, X) (Theta(X, X) + delta sigma^2 I)^-1 Theta(X, x)) / delta

(Rasmussen & Williams 2006, eqs. 2.25-2.26, with kernel ``Theta / delta``). Its mean is the
``delta sigma^2 -> 0`` limit of Lee et al. 2019, eq. 16
(:func:`ntkcheck.kernel_regime.predict.ntk_gp`);
their eq. 16 *covariance* is the spread over random initializations of an uncentred network
and is a different object from this Bayesian posterior variance.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.utils import parameters_to_vector

__all__ = ["FULL_MAX_PARAMS", "LAPLACE_INSTALL", "LIKELIHOODS", "STRUCTURES", "CenteredNetwork",
           "GPPosterior", "GaussianPredictive", "LaplaceNotInstalled", "MapResult",
           "check_laplace_memory", "fit_laplace", "fit_map",
           "functional_classification_covariance", "laplace_memory_bytes",
           "lla_predictive", "log_variance_error", "ntk_gp_posterior", "probit_probabilities",
           "require_laplace", "tune_hyperparameters"]

#: How to install laplace-torch without replacing torch (its declared torchvision dependency
#: is not needed and would replace a CPU torch): the repository's one install command.
LAPLACE_INSTALL = "bash install.sh (in the ntkcheck repository; README, Install)"
LIKELIHOODS = ("regression", "classification")
#: Hessian structures accepted by :func:`fit_laplace`.
STRUCTURES = ("auto", "full", "kron", "gp")
#: ``hessian_structure="auto"`` uses ``"full"`` up to this many parameters, ``"gp"`` above.
FULL_MAX_PARAMS = 1000


class LaplaceNotInstalled(ImportError):
    """laplace-torch is missing; the message gives the install line."""


def require_laplace() -> Any:
    """Import and return the ``laplace`` package (laplace-torch).

    Raises:
        LaplaceNotInstalled: If it cannot be imported, naming :data:`LAPLACE_INSTALL`.

    """
    try:
        import laplace
    except ImportError as exc:
        raise LaplaceNotInstalled(
            f"the uncertainty claims need laplace-torch ({exc}); install it, keeping your "
            f"torch, with: {LAPLACE_INSTALL}"
        ) from exc
    return laplace


class CenteredNetwork(nn.Module):
    """``f(x; theta) = g(x; theta) - g(x; theta_0)``: a network minus a frozen copy of itself.

    ``theta_0`` are the parameters of ``model`` when it is wrapped. The frozen copy is not a
    registered submodule, so :meth:`parameters` yields ``model``'s parameters only (what
    laplace-torch linearizes) and :attr:`initial_parameters` is the prior mean.

    Shapes: as ``model`` (``(N, *input_shape) -> (N, O)``); the output is exactly 0 at
    ``theta = theta_0``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        frozen = copy.deepcopy(model).requires_grad_(False).eval()
        self._frozen = (frozen,)  # a tuple: not registered as a submodule

    @property
    def initial_parameters(self) -> torch.Tensor:
        """``theta_0`` as a flat ``(P,)`` tensor in ``parameters()`` order (the prior mean)."""
        return parameters_to_vector(self._frozen[0].parameters()).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.model(x) - self._frozen[0](x)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _check_likelihood(likelihood: str) -> None:
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")


def _nll(model: nn.Module, x: torch.Tensor, y: torch.Tensor, likelihood: str,
         sigma_noise: float) -> torch.Tensor:
    out = model(x)
    if likelihood == "regression":
        if out.shape != y.shape:
            raise ValueError(f"regression targets must have the output shape {tuple(out.shape)},"
                             f" got {tuple(y.shape)}")
        return 0.5 * (out - y).pow(2).sum() / sigma_noise**2
    return nn.functional.cross_entropy(out, y, reduction="sum")


@dataclass(frozen=True)
class MapResult:
    """Outcome of :func:`fit_map`.

    Attributes:
        objective: Negative log joint at the end (nats, up to the constant normalizers).
        data_loss: Its likelihood part (sum over the data).
        grad_norm: Euclidean norm of the objective's gradient at the end.
        iterations: L-BFGS iterations taken.

    """

    objective: float
    data_loss: float
    grad_norm: float
    iterations: int


def fit_map(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    likelihood: str,
    prior_precision: float = 1.0,
    sigma_noise: float = 1.0,
    prior_mean: torch.Tensor | float = 0.0,
    max_iter: int = 500,
    tolerance: float = 1e-8,
) -> MapResult:
    """Find the MAP of ``model`` in place with full-batch L-BFGS (strong Wolfe line search).

    Minimizes the negative log joint of the model in the module docstring, the objective that
    laplace-torch's Laplace approximation is centred on::

        sum_i ||f(x_i) - y_i||^2 / (2 sigma^2) + delta / 2 ||theta - theta_prior||^2  (regression)
        sum_i CE(f(x_i), y_i)                + delta / 2 ||theta - theta_prior||^2  (classification)

    Args:
        model: Network ``(N, ...) -> (N, O)``; its ``requires_grad`` parameters are optimized.
        x: ``(N, ...)`` inputs in the model's dtype.
        y: ``(N, O)`` float targets (regression) or ``(N,)`` int64 labels (classification).
        likelihood: ``"regression"`` or ``"classification"``.
        prior_precision: ``delta > 0``.
        sigma_noise: Noise standard deviation ``sigma > 0`` (regression only).
        prior_mean: ``theta_prior``: a float or a flat ``(P,)`` tensor (e.g.
            :attr:`CenteredNetwork.initial_parameters`).
        max_iter: Most L-BFGS iterations.
        tolerance: Stop when the largest gradient entry falls below this (``tolerance_grad``).

    Returns:
        A :class:`MapResult`.

    Raises:
        ValueError: On an unknown likelihood, non-positive ``prior_precision`` or
            ``sigma_noise``, or a ``prior_mean`` of the wrong size.
        FloatingPointError: If the objective becomes non-finite.

    """
    _check_likelihood(likelihood)
    if not prior_precision > 0 or not sigma_noise > 0:
        raise ValueError(f"prior_precision and sigma_noise must be > 0, got {prior_precision}, "
                         f"{sigma_noise}")
    params = [p for p in model.parameters() if p.requires_grad]
    mean = torch.as_tensor(prior_mean, dtype=params[0].dtype, device=params[0].device)
    n_params = sum(p.numel() for p in params)
    if mean.dim() and mean.shape != (n_params,):
        raise ValueError(f"prior_mean must be a float or ({n_params},), got {tuple(mean.shape)}")
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=tolerance,
                            tolerance_change=1e-14, history_size=50,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        theta = parameters_to_vector(params)
        loss = (_nll(model, x, y, likelihood, sigma_noise)
                + 0.5 * prior_precision * (theta - mean).pow(2).sum())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the MAP objective became {loss.item()}; standardize the "
                                     "data or raise the prior precision")
        loss.backward()
        return loss

    opt.step(closure)
    objective = closure().detach()
    grad = torch.cat([p.grad.reshape(-1) for p in params]).detach()
    with torch.no_grad():
        data_loss = float(_nll(model, x, y, likelihood, sigma_noise))
    state = opt.state[opt._params[0]]
    return MapResult(float(objective), data_loss, float(grad.norm()), int(state.get("n_iter", 0)))


class _Inputs:
    """What laplace-torch's function-space code receives instead of a Jacobian: the inputs.

    The kernel hooks of :func:`_functional_laplace_class` compute ``J(x1) J(x2)^T`` from these
    inputs with :func:`ntkcheck.kernels.empirical_ntk`, so no ``(N, O, P)`` Jacobian is formed.
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x


def _jvp(model: nn.Module, x: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """``J(x) v`` for a flat parameter vector ``v`` (``parameters()`` order): ``(N, O)``."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    tangents, offset = {}, 0
    for k, p in params.items():
        tangents[k] = vector[offset:offset + p.numel()].reshape_as(p).to(p.dtype)
        offset += p.numel()

    def call(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(model, (p, buffers), (x,))

    _, out = jvp(call, (params,), (tangents,))
    return out.detach()


@functools.cache
def _functional_laplace_class() -> type:
    """laplace-torch's ``FunctionalLaplace`` with its kernel blocks from ntkcheck's NTK engine.

    laplace-torch forms every kernel block ``J(x1) J(x2)^T`` from materialized Jacobians
    (``(N, O, P)`` per batch, recomputed for every block and every test batch): about a
    minute for 100 digits test points at width 4096 on one CPU core, against about a second
    with structured NTK blocks. Here only the hooks
    that produce those blocks are replaced: ``_jacobians`` returns the inputs (and the
    outputs), ``_kernel_batch``, ``_kernel_star`` and ``_kernel_batch_star`` return the same
    blocks from :func:`ntkcheck.kernels.empirical_ntk` (structured derivatives, no Jacobian),
    and ``_mean_scatter_term_batch`` forms ``J (theta_prior - theta_*)`` with a
    Jacobian-vector product. The posterior, the marginal likelihood and the predictive remain
    laplace-torch's (``tests/test_uncertainty.py`` checks the result against laplace-torch's
    own ``FunctionalLaplace`` and ``FullLaplace``).
    """
    from laplace import FunctionalLaplace
    from laplace.utils.enums import Likelihood

    from ntkcheck.kernels import empirical_ntk

    class NTKFunctionalLaplace(FunctionalLaplace):
        _key = ("ntkcheck", "gp")  # keep laplace.Laplace()'s ("all", "gp") mapping unchanged

        def _ntk(self, x1: torch.Tensor, x2: torch.Tensor | None, output: str) -> torch.Tensor:
            return empirical_ntk(self.model, x1, x2, output=output).to(self._dtype)

        def _jacobians(self, X: torch.Tensor, enable_backprop: bool | None = None) -> tuple:
            if enable_backprop:
                raise NotImplementedError("no backpropagation through the ntkcheck kernels")
            with torch.no_grad():
                out = self.model(X)
            return _Inputs(X), out.detach()

        def _kernel_batch(self, jacobians: _Inputs, batch: torch.Tensor) -> torch.Tensor:
            if self.independent_outputs:
                return self._ntk(jacobians.x, batch, "diagonal")  # (b1, b2, C)
            k = self._ntk(jacobians.x, batch, "full")  # (b1, b2, C, C) -> (b1 C, b2 C)
            b1, b2, c, _ = k.shape
            return k.permute(0, 2, 1, 3).reshape(b1 * c, b2 * c)

        def _kernel_star(self, jacobians: _Inputs, joint: bool = False) -> torch.Tensor:
            output = "diagonal" if self.independent_outputs else "full"
            k = self._ntk(jacobians.x, None, output)  # (b, b, C) or (b, b, C, C)
            if joint:
                return k
            d = k.diagonal(dim1=0, dim2=1)  # (C, b) or (C, C, b)
            return d.T if self.independent_outputs else d.permute(2, 0, 1)

        def _kernel_batch_star(self, jacobians: _Inputs, batch: torch.Tensor) -> torch.Tensor:
            output = "diagonal" if self.independent_outputs else "full"
            return self._ntk(jacobians.x, batch, output)  # (b1, b2, C) or (b1, b2, C, C)

        def _mean_scatter_term_batch(self, Js: _Inputs, f: torch.Tensor, y: torch.Tensor
                                     ) -> torch.Tensor:
            shift = _jvp(self.model, Js.x, self.prior_mean - self.mean)
            if self.likelihood == Likelihood.REGRESSION:
                return y - (f + shift)
            return -shift

    return NTKFunctionalLaplace


def fit_laplace(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    likelihood: str,
    hessian_structure: str = "auto",
    prior_precision: float = 1.0,
    sigma_noise: float = 1.0,
    prior_mean: torch.Tensor | float = 0.0,
    batch_size: int = 16,
    independent_outputs: bool = False,
) -> Any:
    """Fit laplace-torch's linearized Laplace (all weights, GGN) at ``model``'s parameters.

    Args:
        model: The trained network (at its MAP), ``(N, ...) -> (N, O)``.
        x: ``(N, ...)`` training inputs.
        y: ``(N, O)`` float targets (regression) or ``(N,)`` int64 labels (classification).
        likelihood: ``"regression"`` or ``"classification"``.
        hessian_structure: ``"full"``, ``"kron"`` (K-FAC, module docstring), ``"gp"``
            (function space: laplace-torch's
            ``FunctionalLaplace`` on all ``N`` points, no subset of data, with its kernel
            blocks from ntkcheck's NTK engine, see :func:`_functional_laplace_class`) or
            ``"auto"`` (``"full"`` up to :data:`FULL_MAX_PARAMS` parameters).
        prior_precision: Isotropic prior precision ``delta``.
        sigma_noise: Noise standard deviation (regression; must be 1 for classification).
        prior_mean: Prior mean, a float or a flat ``(P,)`` tensor.
        batch_size: Batch size of the training loader laplace-torch iterates.
        independent_outputs: ``"gp"`` only: use the diagonal output blocks of the NTK (exact
            for one output; in the infinite-width limit the NTK is diagonal in the outputs,
            Jacot et al. 2018, Theorem 1), which divides the kernel cost by ``O``.

    Returns:
        The fitted laplace-torch object (``FullLaplace``, ``KronLaplace`` or a
        ``FunctionalLaplace``).

    The model's (and its submodules') train/eval modes are restored afterwards
    (laplace-torch's ``fit`` leaves the model in eval mode). The memory is estimated first
    (:func:`laplace_memory_bytes`), and the ``"full"`` GGN of a float64 model is formed in
    float64 (:func:`_ggn_backend`).

    Raises:
        LaplaceNotInstalled: Without laplace-torch.
        ValueError: On an unknown likelihood or structure.
        KernelMemoryError: If the estimated memory exceeds what is available, before
            laplace-torch allocates (:func:`check_laplace_memory`).

    """
    laplace = require_laplace()
    from torch.utils.data import DataLoader, TensorDataset

    _check_likelihood(likelihood)
    if hessian_structure not in STRUCTURES:
        raise ValueError(f"unknown hessian_structure {hessian_structure!r}; choose one of "
                         f"{STRUCTURES}")
    if hessian_structure == "auto":
        hessian_structure = "full" if _n_params(model) <= FULL_MAX_PARAMS else "gp"
    check_laplace_memory(model, x, hessian_structure=hessian_structure,
                         batch_size=batch_size, independent_outputs=independent_outputs)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    kwargs = dict(sigma_noise=sigma_noise, prior_precision=prior_precision,
                  prior_mean=prior_mean)
    modes = [(m, m.training) for m in model.modules()]
    try:
        if hessian_structure in ("full", "kron"):
            from laplace.curvature import CurvlinopsGGN

            backend = _ggn_backend() if hessian_structure == "full" else CurvlinopsGGN
            la = laplace.Laplace(model, likelihood, subset_of_weights="all",
                                 hessian_structure=hessian_structure, backend=backend,
                                 **kwargs)
        else:  # FunctionalLaplace accepts only laplace-torch's own backend classes
            from laplace.curvature import CurvlinopsGGN

            cls = _functional_laplace_class()
            la = cls(model, likelihood, n_subset=len(x),
                     independent_outputs=independent_outputs, backend=CurvlinopsGGN,
                     **kwargs)
        la.fit(loader)
    finally:  # laplace-torch's fit() calls model.eval() and leaves it so
        for m, training in modes:
            m.train(training)
    return la


def laplace_memory_bytes(model: nn.Module, x: torch.Tensor, *, hessian_structure: str,
                         batch_size: int = 16, independent_outputs: bool = False) -> float:
    """Estimated peak bytes of :func:`fit_laplace` and one predictive batch (laplace-torch).

    With ``P`` trainable parameters, ``C`` outputs, ``N`` training inputs, ``b`` the batch
    size and ``s`` the model's item size:

    * ``"full"``: the ``P x P`` GGN, the posterior precision and its inverse
      (``3 P^2``), plus a batch's Jacobians ``b C P`` (laplace-torch's backends);
    * ``"kron"``: each weight's two Kronecker factors (``out^2 + in^2``) and their
      eigenbases, plus a batch's Jacobians;
    * ``"gp"``: the kernel over the training set and its Cholesky factor (``2 (N C)^2``,
      ``2 C N^2`` with ``independent_outputs``), a batch's kernel blocks against the
      training set (``b N C^2``), plus a batch's Jacobians ``b C P``.

    Args:
        model: The network (one forward pass on one input gives ``C``).
        x: ``(N, ...)`` training inputs.
        hessian_structure: ``"full"``, ``"kron"`` or ``"gp"``.
        batch_size: laplace-torch's batch size.
        independent_outputs: As :func:`fit_laplace`.

    Returns:
        The estimate in bytes.

    """
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    itemsize = params[0].element_size()
    with torch.no_grad():
        n_out = int(model(x[:1]).numel())
    n, b = len(x), min(batch_size, len(x))
    jac = b * n_out * n_params
    if hessian_structure == "full":
        return float(itemsize) * (3 * n_params**2 + jac)
    if hessian_structure == "kron":  # two Kronecker factors per weight, and their eigenbases
        factors = sum(p.shape[0] ** 2 + (p.numel() // p.shape[0]) ** 2
                      for p in params if p.dim() >= 2)
        return float(itemsize) * (4 * factors + jac)
    kernel = 2 * n_out * n**2 if independent_outputs else 2 * (n * n_out) ** 2
    return float(itemsize) * (kernel + b * n * n_out**2 + jac)


def check_laplace_memory(model: nn.Module, x: torch.Tensor, *, hessian_structure: str,
                         batch_size: int = 16, independent_outputs: bool = False) -> None:
    """Refuse a Laplace fit whose :func:`laplace_memory_bytes` exceeds free memory.

    Raises:
        KernelMemoryError: With the estimate, the available memory and what to change
            (``independent_outputs=True``, ``"gp"`` instead of ``"full"``, fewer training
            points, a smaller batch_size or a last-layer Laplace).

    """
    from ntkcheck.kernels._memory import check_memory

    n_params = _n_params(model)
    device = next(model.parameters()).device
    need = laplace_memory_bytes(model, x, hessian_structure=hessian_structure,
                                batch_size=batch_size, independent_outputs=independent_outputs)
    check_memory(
        need, device,
        f"fit_laplace(hessian_structure={hessian_structure!r}) on {len(x)} inputs with "
        f"{n_params} parameters",
        "pass hessian_structure='gp' (function space: no P x P matrix), "
        "independent_outputs=True (C kernels of N x N instead of one of NC x NC), fewer "
        "training inputs or a smaller batch_size, or fit a last-layer Laplace with "
        "laplace-torch directly (subset_of_weights='last_layer')")


@functools.cache
def _ggn_backend() -> type:
    """laplace-torch's ``CurvlinopsGGN`` with the full GGN formed in the model's dtype.

    laplace-torch 0.3's ``CurvlinopsInterface.full`` forms the ``P x P`` matrix as
    ``linop @ torch.eye(P)``: a float32 identity, so curvlinops multiplies in float32 and
    the GGN of a float64 model is accurate only to float32 (relative error about 1e-8
    against the exact ``J^T Lambda J``). This subclass makes the identity in the
    parameters' dtype and device; everything else is laplace-torch's.
    """
    from laplace.curvature import CurvlinopsGGN

    class CurvlinopsGGNInModelDtype(CurvlinopsGGN):
        def full(self, x, y, **kwargs):  # noqa: D102
            if self.subnetwork_indices is not None:
                return super().full(x, y, **kwargs)
            curvlinops_kwargs = {k: v for k, v in kwargs.items() if k != "N"}
            if isinstance(x, dict):
                curvlinops_kwargs["batch_size_fn"] = lambda x: x[self.dict_key_x].shape[0]
            linop = self._linop_context(self.model, self.lossfunc, self.params, [(x, y)],
                                        check_deterministic=False, **curvlinops_kwargs)
            p = next(self.model.parameters())
            eye = torch.eye(linop.shape[0], dtype=p.dtype, device=p.device)
            h = torch.as_tensor(linop @ eye, device=p.device, dtype=p.dtype)
            loss = self.lossfunc(self.model(x), y)
            return self.factor * loss.detach(), self.factor * h

    return CurvlinopsGGNInModelDtype


def _is_functional(la: Any) -> bool:
    from laplace.baselaplace import BaseFunctionalLaplace

    return isinstance(la, BaseFunctionalLaplace)


def tune_hyperparameters(la: Any, *, tune_noise: bool | None = None,
                         bounds: tuple[float, float] = (1e-6, 1e6), max_iter: int = 50
                         ) -> tuple[float, float]:
    """Maximize laplace-torch's log marginal likelihood over the prior precision (and noise).

    The objective is ``la.log_marginal_likelihood(prior_precision, sigma_noise)`` (the Laplace
    evidence laplace-torch's ``optimize_prior_precision(method="marglik")`` maximizes; for
    ``"gp"`` objects the GP evidence of the linearized model),
    maximized over the logarithms of a scalar prior precision and, for regression, the noise
    standard deviation, by SciPy's L-BFGS-B with autograd gradients (a few tens of evaluations
    where laplace-torch's default Adam loop takes 100 steps). The fitted object is updated in
    place.

    Args:
        la: A fitted object from :func:`fit_laplace`.
        tune_noise: Also tune ``sigma_noise``; default: for regression only.
        bounds: Bounds of each hyperparameter (applied to its logarithm).
        max_iter: Most L-BFGS-B iterations.

    Returns:
        ``(prior_precision, sigma_noise)`` after tuning.

    Raises:
        ValueError: If ``tune_noise`` is asked for a classification likelihood.

    """
    import scipy.optimize

    regression = la.likelihood == "regression"
    tune_noise = regression if tune_noise is None else tune_noise
    if tune_noise and not regression:
        raise ValueError("the noise can only be tuned for a regression likelihood")
    dtype, device = la._dtype, la._device
    x0 = [math.log(float(la.prior_precision.reshape(-1)[0]))]
    if tune_noise:
        x0.append(math.log(float(la.sigma_noise)))

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.tensor(z, dtype=dtype, device=device, requires_grad=True)
        sigma = t[1].exp() if tune_noise else None
        neg = -la.log_marginal_likelihood(t[0].exp().reshape(1), sigma)
        (grad,) = torch.autograd.grad(neg, t)
        return neg.detach().item(), grad.detach().cpu().numpy().astype(np.float64)

    log_bounds = [(math.log(bounds[0]), math.log(bounds[1]))] * len(x0)
    res = scipy.optimize.minimize(objective, np.array(x0), jac=True, method="L-BFGS-B",
                                  bounds=log_bounds, options={"maxiter": max_iter})
    prior = float(math.exp(res.x[0]))
    sigma = float(math.exp(res.x[1])) if tune_noise else float(la.sigma_noise)
    la.sigma_noise = sigma
    la.prior_precision = prior  # after the noise: a FunctionalLaplace refactors on this
    return prior, sigma


class GaussianPredictive(NamedTuple):
    """Gaussian latent predictive at ``M`` inputs.

    Attributes:
        mean: ``(M, O)`` predictive mean.
        variance: ``(M, O)`` marginal variance of each output (function variance, no noise).
        covariance: ``(M, O, O)`` output covariance per input (``None`` when not formed).

    """

    mean: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor | None = None


def lla_predictive(la: Any, x: torch.Tensor, *, batch_size: int = 32,
                   variance_scale: float = 1.0) -> GaussianPredictive:
    """The LLA's GLM predictive of the latent function (laplace-torch), in batches.

    For ``"gp"`` objects ``la.predictive_moments``; for ``"full"`` the backend's Jacobians and
    ``la.functional_variance`` (what ``la(x, pred_type="glm")`` computes).

    Args:
        la: A fitted object from :func:`fit_laplace`.
        x: ``(M, ...)`` inputs.
        batch_size: Inputs per laplace-torch call.
        variance_scale: Multiplies the covariance (1: the LLA itself; e.g. 0.01 makes a
            deliberately over-confident predictive, the negative control of the calibration
            claim).

    For function-space classification the covariance is
    :func:`functional_classification_covariance` (laplace-torch's own can be negative or
    capped where training probabilities saturate).

    Returns:
        A :class:`GaussianPredictive` (float64 on the inputs' device), without observation
        noise (add ``la.sigma_noise ** 2`` for regression targets).

    Raises:
        ValueError: On a non-positive ``variance_scale`` or an empty ``x``.

    """
    if not variance_scale > 0:
        raise ValueError(f"variance_scale must be > 0, got {variance_scale!r}")
    if len(x) == 0:
        raise ValueError("x must hold at least one input")
    means, covs = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        if _is_functional(la):
            with warnings.catch_warnings():  # expected after tune_hyperparameters
                warnings.filterwarnings("ignore", "The prior precision has changed since fit")
                mean, cov = la.predictive_moments(xb)
            if la.likelihood == "classification":
                cov = functional_classification_covariance(la, xb)
        else:
            js, mean = la.backend.jacobians(xb)
            cov = la.functional_variance(js)
        means.append(mean.detach())
        covs.append(cov.detach())
    mean = torch.cat(means).to(torch.float64)
    cov = torch.cat(covs).to(torch.float64) * variance_scale
    return GaussianPredictive(mean, cov.diagonal(dim1=1, dim2=2).clone(), cov)


def functional_classification_covariance(la: Any, x: torch.Tensor) -> torch.Tensor:
    """Latent predictive covariance of a function-space (``"gp"``) classification Laplace.

    The GP posterior ``K** - K*M (K_MM + W^-1)^-1 KM*`` (Immer et al. 2021, eq. 15) with
    ``K = Theta / delta`` and ``W = diag(Lambda)`` (laplace-torch's diagonal likelihood
    Hessian), evaluated in the form of Rasmussen & Williams 2006, Algorithm 3.2:
    ``B = I + W^1/2 K_MM W^1/2 = L L^T``, ``v = L^-1 W^1/2 KM*``, ``cov = K** - v^T v``.
    ``B``'s eigenvalues are at least 1, and a saturated training probability (``W = 0``:
    ``p (1 - p)`` rounds to 0) enters exactly as an uninformative point. laplace-torch
    0.3 instead factors ``K_MM + W^-1`` and replaces ``1/0`` by 10, which caps the
    variances near 10 and, with ``K`` large against the tiny ``W^-1`` of confident points,
    loses the cancellation ``K** - v^T v`` to negative variances. The result is
    symmetrized and projected on the PSD cone per input (eigenvalues below 0 set to 0);
    an eigenvalue below ``-1e-6 * max(K**)`` is an error instead.

    Args:
        la: A fitted function-space object from :func:`fit_laplace` (classification).
        x: ``(b, ...)`` test inputs.

    Returns:
        ``(b, C, C)`` float64 covariance per input.

    Raises:
        FloatingPointError: If the covariance is not PSD beyond round-off.

    """
    js, _ = la._jacobians(x)
    scale = float(torch.as_tensor(la.gp_kernel_prior_variance).reshape(-1)[0])
    k_star = scale * la._kernel_star(js)  # (b, C, C) or (b, C)
    k_m_star = torch.cat([scale * la._kernel_batch_star(js, xb.to(la._device))
                          for xb, _ in la.train_loader], dim=1)
    h = float(la._H_factor)

    def reduce(kmm: torch.Tensor, lam: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        w = torch.sqrt((h * lam).clamp_min(0)).to(torch.float64)
        b = torch.eye(len(w), dtype=torch.float64, device=w.device) + (
            w[:, None] * (scale * kmm.to(torch.float64)) * w[None, :])
        chol = torch.linalg.cholesky((b + b.T) / 2)
        v = torch.linalg.solve_triangular(chol, w.reshape(-1, *[1] * (rhs.dim() - 1))
                                          * rhs.to(torch.float64), upper=False)
        return v

    if la.independent_outputs:
        variances = []
        for c in range(k_star.shape[-1]):
            v = reduce(la.K_MM[c], la.L[c], k_m_star[:, :, c].T)  # (M, b)
            variances.append(k_star[:, c].to(torch.float64) - (v * v).sum(0))
        cov = torch.diag_embed(torch.stack(variances, dim=-1))
    else:
        n_test, _, n_out, _ = k_m_star.shape
        # k_m_star[b, m, c, e] = K(x*_b, x_m)[c, e]: training index m C + e, test output c
        rhs = k_m_star.permute(1, 3, 0, 2).reshape(-1, n_test, n_out)  # (M C, b, C)
        v = reduce(la.K_MM, la.L, rhs.reshape(rhs.shape[0], -1)).reshape(rhs.shape)
        cov = k_star.to(torch.float64) - torch.einsum("kbm,kbn->bmn", v, v)
    cov = (cov + cov.transpose(1, 2)) / 2
    evals, evecs = torch.linalg.eigh(cov)
    prior = k_star.to(torch.float64).reshape(len(cov), -1).abs().max()
    if bool((evals < -1e-6 * prior).any()):
        raise FloatingPointError(
            f"the function-space predictive covariance has eigenvalue {float(evals.min()):.3g}"
            f" (prior variance up to {float(prior):.3g}): not PSD beyond round-off; compute "
            "the model in float64, or use hessian_structure='full'")
    if bool((evals < 0).any()):
        cov = evecs @ torch.diag_embed(evals.clamp_min(0)) @ evecs.transpose(1, 2)
    return cov


def probit_probabilities(predictive: GaussianPredictive) -> torch.Tensor:
    """Class probabilities from a Gaussian over logits by the probit approximation.

    ``softmax(mean / sqrt(1 + pi/8 var))`` per class (MacKay 1992, "The evidence framework
    applied to classification networks"; laplace-torch's ``link_approx="probit"``).

    Args:
        predictive: Latent predictive with ``(M, C)`` mean and variance.

    Returns:
        ``(M, C)`` float64 probabilities.

    Raises:
        ValueError: If a variance is negative or NaN (the square root would give NaN), or a
            mean is not finite.

    """
    var = torch.as_tensor(predictive.variance)
    if bool(torch.isnan(var).any()) or bool((var < 0).any()):
        raise ValueError(
            f"the predictive has negative or NaN variances (smallest {float(var.min()):.3g}), "
            "so the probit probabilities would be NaN; the latent covariance is not PSD: use "
            "lla_predictive (which projects the function-space covariance on the PSD cone) or "
            "compute the model in float64")
    if not bool(torch.isfinite(torch.as_tensor(predictive.mean)).all()):
        raise ValueError("the predictive mean has NaN or Inf entries")
    kappa = 1.0 / torch.sqrt(1.0 + math.pi / 8.0 * var)
    return torch.softmax(kappa * predictive.mean, dim=-1)


class GPPosterior(NamedTuple):
    """Posterior of a GP at ``M`` test inputs: ``mean`` ``(M, O)``, ``variance`` ``(M,)``."""

    mean: torch.Tensor
    variance: torch.Tensor


def ntk_gp_posterior(
    kernel_train: torch.Tensor,
    kernel_test_train: torch.Tensor,
    kernel_test_diag: torch.Tensor,
    y_train: torch.Tensor,
    *,
    prior_precision: float,
    sigma_noise: float,
) -> GPPosterior:
    """GP regression posterior with kernel ``Theta / delta`` and noise ``sigma^2`` (zero mean).

    The NTK-GP of the module docstring (Rasmussen & Williams 2006, Algorithm 2.1 and eqs.
    2.25-2.26 with ``k = Theta / delta``)::

        mean = Theta(x, X) (Theta(X, X) + delta sigma^2 I)^-1 Y
        var  = (Theta(x, x) - Theta(x, X) (Theta(X, X) + delta sigma^2 I)^-1 Theta(X, x)) / delta

    computed in float64 with a Cholesky factorization (SciPy).

    Args:
        kernel_train: ``Theta(X, X)``, ``(N, N)``, symmetric positive semi-definite.
        kernel_test_train: ``Theta(x, X)``, ``(M, N)``.
        kernel_test_diag: ``Theta(x, x)`` for each test input, ``(M,)``.
        y_train: ``(N,)`` or ``(N, O)`` targets (the same kernel for every output).
        prior_precision: ``delta > 0``.
        sigma_noise: ``sigma > 0``.

    Returns:
        :class:`GPPosterior` with ``(M, O)`` mean (``(M, 1)`` for ``(N,)`` targets) and
        ``(M,)`` latent variance (no noise), float64 on the device of ``kernel_train``.

    Raises:
        ValueError: On mismatched shapes or non-positive hyperparameters.
        numpy.linalg.LinAlgError: If ``Theta(X, X) + delta sigma^2 I`` is not positive
            definite in float64.

    """
    if not prior_precision > 0 or not sigma_noise > 0:
        raise ValueError("prior_precision and sigma_noise must be > 0")

    def arr(t: torch.Tensor) -> np.ndarray:
        return torch.as_tensor(t).detach().cpu().to(torch.float64).numpy()

    k, kxs, kss, y = (arr(kernel_train), arr(kernel_test_train), arr(kernel_test_diag),
                      arr(y_train))
    n = k.shape[0]
    y = y.reshape(n, -1)
    if k.shape != (n, n) or kxs.ndim != 2 or kxs.shape[1] != n or kss.shape != (kxs.shape[0],):
        raise ValueError(f"kernel shapes do not fit: train {k.shape}, test-train {kxs.shape}, "
                         f"test diagonal {kss.shape}")
    k = (k + k.T) / 2 + prior_precision * sigma_noise**2 * np.eye(n)
    chol = scipy.linalg.cho_factor(k, lower=True)
    mean = kxs @ scipy.linalg.cho_solve(chol, y)
    reduction = np.einsum("mn,nm->m", kxs, scipy.linalg.cho_solve(chol, kxs.T))
    var = (kss - reduction) / prior_precision
    device = torch.as_tensor(kernel_train).device
    return GPPosterior(torch.as_tensor(mean, device=device),
                       torch.as_tensor(np.maximum(var, 0.0), device=device))


def log_variance_error(variance: torch.Tensor, reference: torch.Tensor) -> float:
    """Root-mean-square of ``log(variance / reference)``: a scale-free variance error.

    ``sqrt(mean_m (log v_m - log r_m)^2)``; 0.1 means variances off by about 10% (nats).

    Args:
        variance: ``(M,)`` (or any shape) positive variances.
        reference: Same number of positive reference variances.

    Returns:
        The RMS log ratio (``inf`` when a variance is 0).

    Raises:
        ValueError: On a size mismatch or negative entries.

    """
    v = torch.as_tensor(variance).detach().to(torch.float64).reshape(-1)
    r = torch.as_tensor(reference).detach().to(torch.float64).reshape(-1).to(v.device)
    if v.shape != r.shape or not len(v):
        raise ValueError(f"need two non-empty variance vectors of one size, got {tuple(v.shape)}"
                         f" and {tuple(r.shape)}")
    if bool((v < 0).any()) or bool((r < 0).any()):
        raise ValueError("variances must be non-negative")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(torch.sqrt(torch.mean((torch.log(v) - torch.log(r)) ** 2)))
