"""Jacobian spectra and Jacobian stability: the two conditions of fast natural-gradient descent.

Notation: a network ``f(theta, .)`` with ``O`` outputs on ``N`` inputs ``X``; its Jacobian
``J(theta) = d vec f(theta, X) / d theta`` is ``(N*O, P)`` with rows ordered sample-major
(row ``i*O + a`` is output ``a`` of input ``i``), over every parameter with ``requires_grad``.
The NTK Gram matrix is ``G(theta) = J J^T``, ``(N*O, N*O)``: the empirical NTK ``Theta(X, X)``
with all output pairs (Jacot et al. 2018, eq. 2).

Zhang, Martens & Grosse 2019 ("Fast convergence of natural gradient descent for
overparameterized neural networks", NeurIPS), with ``u = vec f(theta, X)`` and the loss
``1/2 ||y - u||^2``:

* Condition 1 (full row rank): ``lambda_0 = lambda_min(G(theta_0)) > 0``;
* Condition 2 (stable Jacobian): there is ``0 <= C <= 1/2`` such that
  ``||J(theta) - J(theta_0)||_2 <= (C / 3) sqrt(lambda_0)`` for every ``theta`` with
  ``||theta - theta_0||_2 <= 3 ||y - u(0)||_2 / sqrt(lambda_0)`` (:func:`stability_radius`).

Under both, natural gradient descent with step ``eta <= (1 - 2C) / (1 + C)^2`` contracts the
squared residual by at least ``1 - eta`` per step (their Theorem 1; see
:mod:`ntkcheck.optim.natural_gradient`). Gradient descent's rate instead depends on ``lambda_0``
itself
(Du et al. 2018, "Gradient descent provably optimizes over-parameterized neural networks",
Theorem 4.1).

Computations, all in the model's dtype (use float64 models to compare with theory), with
eigenvalues in float64:

* ``"dense"``: the Gram matrix from :func:`ntkcheck.kernels.empirical_ntk` (``output="full"``)
  eigendecomposed with ``torch.linalg.eigvalsh``; for the Jacobian change, both Jacobians
  formed explicitly (:func:`jacobian_matrix`) and the spectral norm of their difference taken
  from its SVD. Memory ``N*O*P`` (Jacobians) or ``(N*O)^2`` (Gram).
* ``"lanczos"``: ``scipy.sparse.linalg.eigsh`` (implicitly restarted Lanczos, ARPACK) on the
  ``N*O``-dimensional operators ``v -> J (J^T v)`` and
  ``v -> (J - J_0)((J - J_0)^T v)``, built from ``torch.func.vjp`` (``J^T v``) and
  ``torch.func.jvp`` (``J w``); no Jacobian and no Gram matrix is formed. ``||A||_2 =
  sqrt(lambda_max(A A^T))`` for any matrix ``A``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import scipy.sparse.linalg
import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ntkcheck.kernels import empirical_ntk
from ntkcheck.kernels.empirical import check_eval_mode, check_sample_independence

__all__ = ["METHODS", "JacobianOperator", "check_per_sample", "gram_extreme_eigenvalues",
           "jacobian_distance",
           "jacobian_matrix", "ntk_gram", "stability_constant", "stability_radius",
           "trainable_params"]

#: Methods accepted by :func:`gram_extreme_eigenvalues` and :func:`jacobian_distance`.
METHODS = ("auto", "dense", "lanczos")
#: ``"auto"`` eigendecomposes the Gram matrix densely up to this many rows (``N*O``).
DENSE_MAX_ROWS = 4096
#: ``"auto"`` forms Jacobians explicitly up to this many entries (``N*O*P``, 128 MiB float64).
DENSE_MAX_JACOBIAN = 2**24


def trainable_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters with ``requires_grad``, detached, by qualified name.

    Raises:
        ValueError: If the model has none.

    """
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("the model has no parameters with requires_grad=True")
    return params


def check_per_sample(model: nn.Module, x: torch.Tensor) -> None:
    """The guards of :func:`ntkcheck.kernels.empirical_ntk`, before any Jacobian is formed.

    Raises:
        TrainModeError: As :func:`ntkcheck.kernels.empirical.check_eval_mode` (BatchNorm in
            training mode or without running statistics, active dropout: names the module
            and says ``model.eval()``) and
            :func:`~ntkcheck.kernels.empirical.check_sample_independence` (a module mixing the
            samples of a batch).

    """
    check_eval_mode(model)
    check_sample_independence(model, x)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


class JacobianOperator:
    """The Jacobian ``J = d vec f(theta, X) / d theta`` of a network at fixed parameters.

    Products only (no Jacobian is formed): :meth:`jvp` maps a parameter-space tangent to the
    ``N*O`` output space, :meth:`vjp` maps an output-space cotangent back. The backward graph
    of the ``vjp`` is built once and reused.

    Args:
        model: Network mapping ``(N, *input_shape)`` to ``(N, O)`` (or any ``(N, ...)``).
        x: ``(N, *input_shape)`` inputs, cast to the parameters' dtype and device.
        params: Parameters to evaluate at, by name (default: the model's current trainable
            parameters); names must be trainable parameters of ``model``. Parameters not named
            are held at their current values.

    Attributes:
        output: ``(N*O,)`` the flattened outputs ``vec f(theta, X)``, detached.
        n_outputs: ``N*O``.

    Raises:
        ValueError: If ``params`` names something that is not a trainable parameter.
        TrainModeError: As :func:`check_per_sample`.

    """

    def __init__(self, model: nn.Module, x: torch.Tensor,
                 params: Mapping[str, torch.Tensor] | None = None) -> None:
        own = trainable_params(model)
        if params is None:
            params = own
        unknown = sorted(set(params) - set(own))
        if unknown:
            raise ValueError(f"params names {unknown}, not trainable parameters of the model")
        self.model = model
        self.params = {k: v.detach() for k, v in params.items()}
        ref = next(iter(self.params.values()))
        self.x = torch.as_tensor(x).to(device=ref.device, dtype=ref.dtype)
        check_per_sample(model, self.x)
        out, self._vjp = vjp(self._f, self.params)
        self.output = out.detach()
        self.n_outputs = int(out.numel())

    def _f(self, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(self.model, dict(p), (self.x,)).reshape(-1)

    def jvp(self, tangent: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``J w`` for a parameter-space tangent ``w`` (same names and shapes); ``(N*O,)``."""
        with warnings.catch_warnings():
            # torch.func registers its jvp decompositions with torch.jit.script on first use
            warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated",
                                    category=DeprecationWarning)
            return jvp(self._f, (self.params,), (dict(tangent),))[1].detach()

    def vjp(self, cotangent: torch.Tensor) -> dict[str, torch.Tensor]:
        """``J^T v`` for an ``(N*O,)`` (or ``(N, O)``) cotangent ``v``; by parameter name."""
        v = torch.as_tensor(cotangent).to(self.output).reshape(self.output.shape)
        return {k: t.detach() for k, t in self._vjp(v)[0].items()}


def jacobian_matrix(model: nn.Module, x: torch.Tensor,
                    params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The Jacobian formed explicitly (for small networks and reference computations).

    Per-sample Jacobians with ``torch.func.jacrev`` under ``torch.func.vmap`` over the inputs
    (the recipe of the torch.func per-sample-gradient and NTK tutorials), so the model must
    treat samples independently (eval mode).

    Args:
        model: Network mapping ``(N, *input_shape)`` to ``(N, O)``.
        x: ``(N, *input_shape)`` inputs.
        params: Parameters to evaluate at (default: current), as for :class:`JacobianOperator`.

    Returns:
        ``(N*O, P)`` tensor in the parameters' dtype; rows sample-major, columns in the order
        of ``params`` (default ``model.named_parameters()``), each parameter flattened.

    Raises:
        ValueError: If ``params`` names something that is not a trainable parameter.
        TrainModeError: As :func:`check_per_sample` (the per-sample Jacobian of a model
            that mixes samples is not the batched one).

    """
    own = trainable_params(model)
    params = own if params is None else {k: v.detach() for k, v in params.items()}
    unknown = sorted(set(params) - set(own))
    if unknown:
        raise ValueError(f"params names {unknown}, not trainable parameters of the model")
    ref = next(iter(params.values()))
    x = torch.as_tensor(x).to(device=ref.device, dtype=ref.dtype)
    check_per_sample(model, x)

    def f(p: Mapping[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(p), (xi.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    n = x.shape[0]
    blocks = [jac[k].reshape(n, -1, params[k].numel()) for k in params]
    return torch.cat(blocks, dim=2).reshape(-1, sum(v.numel() for v in params.values()))


def ntk_gram(model: nn.Module, x: torch.Tensor, *, batch_size: int | None = None
             ) -> torch.Tensor:
    """The NTK Gram matrix ``G = J J^T`` over all ``N*O`` outputs.

    Computed by :func:`ntkcheck.kernels.empirical_ntk` with ``output="full"`` (its cheapest
    implementation) and reordered sample-major.

    Args:
        model: Network in eval mode mapping ``(N, *input_shape)`` to ``(N, O)``.
        x: ``(N, *input_shape)`` inputs.
        batch_size: Passed to :func:`~ntkcheck.kernels.empirical_ntk` (bounds memory).

    Returns:
        ``(N*O, N*O)`` symmetric PSD tensor in the model's dtype; entry ``(i*O + a, j*O + b)``
        is ``Theta(x_i, x_j)[a, b]``.

    Raises:
        KernelMemoryError, TrainModeError, ValueError: As :func:`empirical_ntk`.

    """
    k = empirical_ntk(model, x, output="full", batch_size=batch_size)
    n, _, o, _ = k.shape
    return k.permute(0, 2, 1, 3).reshape(n * o, n * o)


def _eigsh(matvec, n: int, which: str, tol: float, seed: int, dtype: torch.dtype,
           device: torch.device, ncv: int = 24) -> float:
    """One extreme eigenvalue of a symmetric ``n x n`` operator by ARPACK Lanczos."""

    def mv(v: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.ascontiguousarray(v).reshape(-1), dtype=dtype, device=device)
        return matvec(t).to(torch.float64).cpu().numpy()

    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    if not np.any(mv(v0)):  # the zero operator (e.g. a Jacobian that did not change)
        return 0.0
    vals = scipy.sparse.linalg.eigsh(op, k=1, which=which, tol=tol, v0=v0,
                                     ncv=min(n, ncv), maxiter=100 * n,
                                     return_eigenvectors=False)
    return float(vals[0])


def gram_extreme_eigenvalues(model: nn.Module, x: torch.Tensor, *, method: str = "auto",
                             tol: float = 1e-10, seed: int = 0) -> tuple[float, float]:
    """``(lambda_min, lambda_max)`` of the NTK Gram matrix ``J J^T`` (``N*O`` rows).

    ``lambda_min > 0`` is Condition 1 of Zhang, Martens & Grosse 2019 (full row rank of ``J``).

    Args:
        model: Network in eval mode.
        x: ``(N, *input_shape)`` inputs.
        method: ``"dense"`` (float64 ``eigvalsh`` of :func:`ntk_gram`), ``"lanczos"``
            (ARPACK on ``v -> J (J^T v)``, nothing formed) or ``"auto"`` (dense up to
            :data:`DENSE_MAX_ROWS` rows). Lanczos converges slowly to ``lambda_min`` when the
            small eigenvalues cluster; it is meant for ``N*O`` beyond a few thousand.
        tol: ARPACK's relative accuracy of the eigenvalues (Lanczos only; 0 means machine
            precision).
        seed: Seed of Lanczos' random start vector.

    Returns:
        Two Python floats (units of the NTK: output units squared per parameter unit squared).

    Raises:
        ValueError: On an unknown method.
        TrainModeError: As :func:`check_per_sample` (every method).
        scipy.sparse.linalg.ArpackNoConvergence: If Lanczos does not converge.

    """
    _check_method(method)
    ref = next(iter(trainable_params(model).values()))
    check_per_sample(model, torch.as_tensor(x).to(ref))
    if method == "auto":
        ref = next(iter(trainable_params(model).values()))
        with torch.no_grad():
            n = int(model(torch.as_tensor(x[:1]).to(ref)).numel()) * int(x.shape[0])
        method = "dense" if n <= DENSE_MAX_ROWS else "lanczos"
    if method == "dense":
        eig = torch.linalg.eigvalsh(ntk_gram(model, x).to(torch.float64))
        return float(eig[0]), float(eig[-1])
    op = JacobianOperator(model, x)
    n, ref = op.n_outputs, op.output

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return op.jvp(op.vjp(v))

    if n <= 2:  # ARPACK needs k < n: form the tiny operator instead
        g = torch.stack([matvec(e) for e in torch.eye(n, dtype=ref.dtype, device=ref.device)])
        eig = torch.linalg.eigvalsh(((g + g.T) / 2).to(torch.float64))
        return float(eig[0]), float(eig[-1])
    # The smallest eigenvalue of a PSD operator converges slowly (its gap relative to the
    # spectrum's width is small); a larger Krylov basis cuts the number of restarts.
    lo = _eigsh(matvec, n, "SA", tol, seed, ref.dtype, ref.device, ncv=96)
    hi = _eigsh(matvec, n, "LA", tol, seed, ref.dtype, ref.device)
    return lo, hi


def jacobian_distance(model: nn.Module, x: torch.Tensor, params0: Mapping[str, torch.Tensor],
                      *, method: str = "auto", tol: float = 1e-12, seed: int = 0,
                      jacobian0: torch.Tensor | None = None) -> float:
    """``||J(theta) - J(theta_0)||_2``: spectral norm of the Jacobian's change.

    ``theta`` is the model's current parameters, ``theta_0`` is ``params0``. This is the
    left-hand side of Condition 2 of Zhang, Martens & Grosse 2019.

    Args:
        model: Network at ``theta``.
        x: ``(N, *input_shape)`` inputs.
        params0: ``theta_0`` by name: the same names and shapes as the model's trainable
            parameters (e.g. ``{k: v.detach().clone() for k, v in model.named_parameters()}``
            taken at initialization).
        method: ``"dense"`` (both Jacobians formed, SVD of the difference), ``"lanczos"``
            (ARPACK on ``v -> D (D^T v)`` with ``D = J(theta) - J(theta_0)``, two ``vjp`` and
            two ``jvp`` per product, nothing formed) or ``"auto"`` (dense up to
            :data:`DENSE_MAX_JACOBIAN` Jacobian entries).
        tol: ARPACK's relative accuracy of ``lambda_max(D D^T)`` (Lanczos only).
        seed: Seed of Lanczos' random start vector.
        jacobian0: ``J(theta_0)`` from :func:`jacobian_matrix`, reused by the dense method
            (saves recomputing it along a trajectory); ignored by Lanczos.

    Returns:
        The norm, a Python float (output units per parameter unit).

    Raises:
        ValueError: On an unknown method or ``params0`` that does not match the model.
        TrainModeError: As :func:`check_per_sample` (every method).
        scipy.sparse.linalg.ArpackNoConvergence: If Lanczos does not converge.

    """
    _check_method(method)
    own = trainable_params(model)
    check_per_sample(model, torch.as_tensor(x).to(next(iter(own.values()))))
    if set(params0) != set(own) or any(params0[k].shape != own[k].shape for k in own):
        raise ValueError("params0 must have the names and shapes of the model's trainable "
                         "parameters")
    n_params = sum(v.numel() for v in own.values())
    if method == "auto":
        with torch.no_grad():
            ref = next(iter(own.values()))
            n_out = int(model(torch.as_tensor(x[:1]).to(ref)).numel()) * int(x.shape[0])
        method = "dense" if n_out * n_params <= DENSE_MAX_JACOBIAN else "lanczos"
    if method == "dense":
        j0 = jacobian_matrix(model, x, params0) if jacobian0 is None else jacobian0
        diff = jacobian_matrix(model, x) - j0
        return float(torch.linalg.matrix_norm(diff.to(torch.float64), ord=2))
    op = JacobianOperator(model, x)
    op0 = JacobianOperator(model, x, params0)
    n_out = op.n_outputs

    def matvec(v: torch.Tensor) -> torch.Tensor:
        g, g0 = op.vjp(v), op0.vjp(v)
        d = {k: g[k] - g0[k] for k in g}
        return op.jvp(d) - op0.jvp(d)

    ref = op.output
    if n_out <= 2:
        m = torch.stack([matvec(e) for e in torch.eye(n_out, dtype=ref.dtype,
                                                      device=ref.device)])
        top = float(torch.linalg.eigvalsh(((m + m.T) / 2).to(torch.float64))[-1])
    else:
        top = _eigsh(matvec, n_out, "LA", tol, seed, ref.dtype, ref.device)
    return math.sqrt(max(top, 0.0))


def stability_radius(residual_norm: float, lambda_0: float) -> float:
    """``3 ||y - u(0)||_2 / sqrt(lambda_0)``: the ball of Zhang, Martens & Grosse's Condition 2.

    Args:
        residual_norm: ``||y - f(theta_0, X)||_2`` over all ``N*O`` outputs (not a mean).
        lambda_0: ``lambda_min(J_0 J_0^T) > 0``.

    Raises:
        ValueError: If ``lambda_0 <= 0`` (Condition 1 fails; the ball is unbounded).

    """
    if not lambda_0 > 0:
        raise ValueError(f"lambda_0 must be > 0 (Condition 1), got {lambda_0}")
    return 3.0 * float(residual_norm) / math.sqrt(lambda_0)


def stability_constant(jacobian_change: float, lambda_0: float) -> float:
    """``C' = 3 ||J(theta) - J(theta_0)||_2 / sqrt(lambda_0)``, the smallest ``C`` of Condition 2.

    Zhang, Martens & Grosse 2019 need ``C <= 1/2`` (their Condition 2 and Theorem 1).

    Args:
        jacobian_change: ``||J(theta) - J(theta_0)||_2`` (e.g. its maximum over a trajectory).
        lambda_0: ``lambda_min(J_0 J_0^T)``.

    Returns:
        ``C'`` (dimensionless); ``inf`` when ``lambda_0 <= 0`` and the change is positive, 0
        when the change is 0.

    """
    if jacobian_change == 0:
        return 0.0
    if not lambda_0 > 0:
        return math.inf
    return 3.0 * float(jacobian_change) / math.sqrt(lambda_0)
