"""Closed-form kernel-regime predictions: MSE gradient flow, kernel regression, the NTK-GP.

Conventions (the same as :mod:`ntkcheck.training.loops`): the loss is ``L = 1/(2N) sum_i ||f(x_i) -
y_i||^2`` over ``N`` training points and ``t = steps * lr`` is continuous time, so a network
in the kernel regime follows ``df/dt = -(1/N) Theta(X, X) (f(X) - Y)``. Lee et al. 2019
("Wide neural networks of any depth evolve as linear models under gradient descent") write
the same flow with ``eta Theta t`` in the exponent for the summed loss; with the mean loss,
``eta t`` becomes ``t / N``. Solving the flow (Lee et al. 2019, eq. 9)::

    f_t(X) = Y + exp(-Theta t / N) (f_0(X) - Y)
    f_t(x) = f_0(x) + Theta(x, X) Theta^-1 (I - exp(-Theta t / N)) (Y - f_0(X))

and ``t -> infinity`` is kernel regression with the NTK,
``f_inf(x) = f_0(x) + Theta(x, X) Theta^-1 (Y - f_0(X))``. With ``f_0`` drawn from the NNGP
``K`` (infinite width) the outputs at time ``t`` are Gaussian (Lee et al. 2019, eq. 16 and the
finite-``t`` form above it), with ``A_t = Theta^-1 (I - exp(-Theta t / N))``::

    mean(x)     = Theta(x, X) A_t Y
    cov(x, x')  = K(x, x') + Theta(x, X) A_t K(X, X) A_t Theta(X, x')
                  - (Theta(x, X) A_t K(X, x') + K(x, X) A_t Theta(X, x'))

Numerics: ``Theta(X, X)`` is symmetrized and eigendecomposed in float64 (``scipy.linalg.eigh``),
``Theta = V diag(lam) V^T``, and ``A_t = V diag((1 - exp(-lam t / N)) / lam) V^T`` with the
filter evaluated as ``-expm1(-lam t / N) / lam`` (``t / N`` at ``lam = 0``), which is bounded by
``t / N`` for finite ``t``. No jitter is added unless asked for (``jitter`` times the mean
diagonal is added to ``Theta(X, X)``, and to ``K(X, X)`` nowhere). When the effective
condition number ``lam_max / max(lam_min, N / t)`` (``lam_max / lam_min`` at ``t = inf``) makes
the float64 result lose more than three significant digits, an
:class:`IllConditionedKernelWarning` names it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch

__all__ = ["GaussianPrediction", "IllConditionedKernelWarning", "gradient_flow",
           "kernel_regression", "ntk_gp", "MAX_RELATIVE_ERROR"]

#: Warn when ``condition number * float64 eps`` exceeds this relative error.
MAX_RELATIVE_ERROR = 1e-3
_EPS = float(np.finfo(np.float64).eps)


class IllConditionedKernelWarning(UserWarning):
    """The kernel Gram matrix is too ill-conditioned for a trustworthy float64 result."""


class GaussianPrediction(NamedTuple):
    """A Gaussian over outputs.

    Attributes:
        mean: ``(M, O)`` float64 mean (``(T, M, O)`` for several times).
        covariance: ``(M, M)`` float64 covariance of each output unit (``(T, M, M)``); the
            output units are independent with this same covariance.

    """

    mean: torch.Tensor
    covariance: torch.Tensor


def _np(a: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().to(torch.float64).numpy()
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite entries")
    return a


def _targets(y: torch.Tensor | np.ndarray, n: int, name: str = "y") -> tuple[np.ndarray, bool]:
    arr = _np(y, name)
    vector = arr.ndim == 1
    arr = arr.reshape(n, -1) if vector else arr
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{name} must be (N,) or (N, O) with N={n}, got {arr.shape}")
    return arr, vector


def _times(t: float | Sequence[float]) -> tuple[list[float], bool]:
    scalar = np.ndim(t) == 0
    times = [float(t)] if scalar else [float(s) for s in np.asarray(t).ravel()]
    if not times or any(not (s >= 0) for s in times):
        raise ValueError(f"times must be >= 0 (math.inf for t -> infinity), got {t!r}")
    return times, scalar


def _eig(kernel: np.ndarray, jitter: float) -> tuple[np.ndarray, np.ndarray]:
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] == 0:
        raise ValueError(f"the training Gram matrix must be square (N, N), got {kernel.shape}")
    if not jitter >= 0:
        raise ValueError(f"jitter must be >= 0, got {jitter!r}")
    k = (kernel + kernel.T) / 2
    if jitter:
        k = k + jitter * float(np.mean(np.diag(k))) * np.eye(len(k))
    return scipy.linalg.eigh(k)


def _filter(lam: np.ndarray, tau: float) -> np.ndarray:
    """``(1 - exp(-lam tau)) / lam`` elementwise (``tau`` at ``lam = 0``; ``1/lam`` at inf)."""
    if math.isinf(tau):
        with np.errstate(divide="ignore"):
            return 1.0 / lam
    with np.errstate(divide="ignore", invalid="ignore"):
        g = -np.expm1(-lam * tau) / lam
    return np.where(lam == 0, tau, g)


def _warn_condition(lam: np.ndarray, tau: float) -> float:
    lam_max = float(lam[-1])
    floor = 0.0 if math.isinf(tau) or tau == 0 else 1.0 / tau
    lam_eff = max(float(lam[0]), floor)
    cond = math.inf if lam_eff <= 0 or lam_max <= 0 else lam_max / lam_eff
    if cond * _EPS > MAX_RELATIVE_ERROR:
        when = "t = inf" if math.isinf(tau) else f"t/N = {tau:.3g}"
        warnings.warn(
            f"the NTK Gram matrix Theta(X, X) has effective condition number {cond:.3g} at "
            f"{when} (eigenvalues {lam[0]:.3g} .. {lam_max:.3g}): the float64 prediction may be "
            f"wrong by up to {min(cond * _EPS, math.inf):.2g} relative and is meaningless "
            "beyond 1; pass jitter > 0 (a diagonal regularizer) or a finite time",
            IllConditionedKernelWarning, stacklevel=3)
    return cond


def _out(a: np.ndarray, like: torch.Tensor | np.ndarray) -> torch.Tensor:
    device = like.device if isinstance(like, torch.Tensor) else "cpu"
    return torch.as_tensor(a, dtype=torch.float64, device=device)


def gradient_flow(
    ntk_train: torch.Tensor,
    y_train: torch.Tensor,
    t: float | Sequence[float],
    ntk_test_train: torch.Tensor | None = None,
    *,
    f0_train: torch.Tensor | None = None,
    f0_test: torch.Tensor | None = None,
    jitter: float = 0.0,
) -> torch.Tensor:
    """Outputs at time ``t`` of MSE gradient flow in the kernel regime (Lee et al. 2019, eq. 9).

    ``f_t(x) = f_0(x) + Theta(x, X) Theta^-1 (I - exp(-Theta t / N)) (Y - f_0(X))`` with the
    1/(2N) loss (module docstring); on the training inputs ``Y + exp(-Theta t / N)(f_0 - Y)``,
    which needs no inverse (so no conditioning warning).
    With ``f_0 = 0`` (the default) this is the mean over initializations of an infinitely wide
    network (the NTK-GP mean).

    Args:
        ntk_train: ``Theta(X, X)``, ``(N, N)``, symmetric positive (semi-)definite.
        y_train: Targets ``(N,)`` or ``(N, O)``.
        t: Continuous time ``steps * lr`` (``>= 0``; ``math.inf`` for kernel regression), or a
            sequence of ``T`` times.
        ntk_test_train: ``Theta(x, X)``, ``(M, N)``; None predicts the training outputs.
        f0_train: Outputs at initialization on ``X``, shape of ``y_train``; zeros if None.
        f0_test: Outputs at initialization on the test inputs, ``(M,)``/``(M, O)``; zeros if None.
        jitter: Relative diagonal regularizer: ``jitter * mean(diag Theta)`` is added to
            ``Theta(X, X)`` (0: none).

    Returns:
        float64 predictions ``(M, O)`` (``(N, O)`` on the training inputs), ``(M,)`` when
        ``y_train`` is ``(N,)``; with several times, a leading ``T`` axis. On the device of
        ``ntk_train``. When an argument requires grad (under ``torch.enable_grad``), the
        result is computed in torch and keeps the autograd graph (see
        :func:`_gradient_flow_autograd`); otherwise it is detached (NumPy/SciPy).

    Raises:
        ValueError: On mismatched shapes, non-finite inputs, negative times or jitter.

    Warns:
        IllConditionedKernelWarning: When the effective condition number times float64 eps
            exceeds :data:`MAX_RELATIVE_ERROR` (module docstring).

    """
    if _tracks_grad(ntk_train, y_train, ntk_test_train, f0_train, f0_test):
        return _gradient_flow_autograd(ntk_train, y_train, t, ntk_test_train, f0_train,
                                       f0_test, jitter)
    k = _np(ntk_train, "ntk_train")
    lam, v = _eig(k, jitter)
    n = len(k)
    y, vector = _targets(y_train, n)
    f0x = np.zeros_like(y) if f0_train is None else _targets(f0_train, n, "f0_train")[0]
    if f0x.shape != y.shape:
        raise ValueError(f"f0_train has shape {f0x.shape}, y_train {y.shape}")
    times, scalar = _times(t)
    resid = v.T @ (y - f0x)  # residual in the eigenbasis, (N, O)
    if ntk_test_train is None:
        kzx, f0z = None, f0x
    else:
        kzx = _np(ntk_test_train, "ntk_test_train")
        if kzx.ndim != 2 or kzx.shape[1] != n:
            raise ValueError(f"ntk_test_train must be (M, {n}), got {kzx.shape}")
        m = kzx.shape[0]
        f0z = np.zeros((m, y.shape[1])) if f0_test is None else _targets(f0_test, m,
                                                                         "f0_test")[0]
    outs = []
    for s in times:
        tau = s / n
        if kzx is None:  # Theta A_t = V diag(1 - exp(-lam tau)) V^T, no division
            gain = 1.0 if math.isinf(tau) else -np.expm1(-lam * tau)
            outs.append(f0z + v @ (np.reshape(gain, (-1, 1)) * resid))
        else:
            _warn_condition(lam, tau)
            with np.errstate(invalid="ignore", over="ignore"):  # warned about above
                outs.append(f0z + kzx @ (v @ (_filter(lam, tau)[:, None] * resid)))
    out = np.stack(outs)
    if vector:
        out = out[..., 0]
    return _out(out[0] if scalar else out, ntk_train)


def _tracks_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(
        isinstance(a, torch.Tensor) and a.requires_grad for a in tensors)


def _gradient_flow_autograd(ntk_train, y_train, t, ntk_test_train, f0_train, f0_test,
                            jitter) -> torch.Tensor:
    """:func:`gradient_flow` in torch (float64), keeping the autograd graph of its inputs.

    ``t = inf``: ``Theta^-1 (Y - f_0)`` by ``torch.linalg.solve``. Finite ``t``:
    ``A_t = Theta^-1 (I - exp(-Theta tau)) = tau phi_1(-Theta tau)`` with
    ``phi_1(M) = M^-1 (e^M - I)`` read off the top-right block of
    ``exp([[M, I], [0, 0]])`` (Higham, *Functions of Matrices*, 2008, Thm 10.10;
    ``torch.linalg.matrix_exp``), defined for singular ``Theta`` too. Gradients of a solve
    are as accurate as the solve (the conditioning warning of the NumPy path applies).
    """

    def as64(a, name):
        a = torch.as_tensor(a)
        a = a.to(torch.float64) if a.is_floating_point() else a.double()
        if not bool(torch.isfinite(a.detach()).all()):
            raise ValueError(f"{name} has non-finite entries")
        return a

    k = as64(ntk_train, "ntk_train")
    if k.dim() != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
        raise ValueError(f"the training Gram matrix must be square (N, N), got "
                         f"{tuple(k.shape)}")
    if not jitter >= 0:
        raise ValueError(f"jitter must be >= 0, got {jitter!r}")
    n = k.shape[0]
    k = (k + k.T) / 2
    eye = torch.eye(n, dtype=torch.float64, device=k.device)
    if jitter:
        k = k + jitter * k.diagonal().mean() * eye
    y = as64(y_train, "y_train").to(k.device)
    vector = y.dim() == 1
    y = y.reshape(n, -1) if vector else y
    if y.dim() != 2 or y.shape[0] != n:
        raise ValueError(f"y must be (N,) or (N, O) with N={n}, got {tuple(y.shape)}")
    f0x = torch.zeros_like(y) if f0_train is None else as64(f0_train, "f0_train").reshape(
        y.shape).to(k.device)
    times, scalar = _times(t)
    lam = torch.linalg.eigvalsh(k.detach()).cpu().numpy()
    kzx = None if ntk_test_train is None else as64(ntk_test_train, "ntk_test_train").to(
        k.device)
    if kzx is not None:
        if kzx.dim() != 2 or kzx.shape[1] != n:
            raise ValueError(f"ntk_test_train must be (M, {n}), got {tuple(kzx.shape)}")
        m = kzx.shape[0]
        f0z = (torch.zeros(m, y.shape[1], dtype=torch.float64, device=k.device)
               if f0_test is None else as64(f0_test, "f0_test").reshape(m, -1).to(k.device))
    outs = []
    for s in times:
        tau = s / n
        resid = y - f0x
        if kzx is None:
            if math.isinf(tau):
                outs.append(y + 0 * resid)
            else:
                outs.append(y - torch.linalg.matrix_exp(-tau * k) @ resid)
            continue
        _warn_condition(lam, tau)
        if math.isinf(tau):
            coef = torch.linalg.solve(k, resid)
        else:
            block = torch.cat([torch.cat([-tau * k, eye], 1),
                               torch.cat([torch.zeros_like(k), torch.zeros_like(k)], 1)])
            coef = tau * (torch.linalg.matrix_exp(block)[:n, n:] @ resid)
        outs.append(f0z + kzx @ coef)
    out = torch.stack(outs)
    if vector:
        out = out[..., 0]
    return out[0] if scalar else out


def kernel_regression(
    ntk_train: torch.Tensor,
    y_train: torch.Tensor,
    ntk_test_train: torch.Tensor | None = None,
    *,
    f0_train: torch.Tensor | None = None,
    f0_test: torch.Tensor | None = None,
    jitter: float = 0.0,
) -> torch.Tensor:
    """``t -> infinity`` of :func:`gradient_flow`: ``f_0(x) + Theta(x, X) Theta^-1 (Y - f_0(X))``.

    The interpolating kernel regressor with the NTK (Jacot et al. 2018, Sec. 5; Lee et al.
    2019, eq. 9 at ``t = inf``). Arguments, returns and errors as :func:`gradient_flow`;
    as there, inputs that require grad give a differentiable result.
    """
    return gradient_flow(ntk_train, y_train, math.inf, ntk_test_train, f0_train=f0_train,
                         f0_test=f0_test, jitter=jitter)


def ntk_gp(
    ntk_train: torch.Tensor,
    nngp_train: torch.Tensor,
    y_train: torch.Tensor,
    t: float | Sequence[float] = math.inf,
    ntk_test_train: torch.Tensor | None = None,
    nngp_test_train: torch.Tensor | None = None,
    nngp_test: torch.Tensor | None = None,
    *,
    jitter: float = 0.0,
) -> GaussianPrediction:
    """Mean and covariance of an infinitely wide network trained by gradient flow for time ``t``.

    The NTK-GP of Lee et al. 2019, eq. 16 (``t = inf``) and its finite-time form (module
    docstring): outputs at initialization are the NNGP ``K`` (Lee et al. 2018), training is
    linear in them, so the outputs stay Gaussian.

    Args:
        ntk_train: ``Theta(X, X)``, ``(N, N)``.
        nngp_train: ``K(X, X)``, ``(N, N)``.
        y_train: Targets ``(N,)`` or ``(N, O)``.
        t: Time ``steps * lr`` (``math.inf`` by default), or a sequence of ``T`` times.
        ntk_test_train: ``Theta(x, X)``, ``(M, N)``; None predicts on the training inputs
            (then ``nngp_test_train`` and ``nngp_test`` must be None too).
        nngp_test_train: ``K(x, X)``, ``(M, N)``.
        nngp_test: ``K(x, x)``, ``(M, M)``.
        jitter: As :func:`gradient_flow` (applied to ``Theta(X, X)`` only).

    Returns:
        :class:`GaussianPrediction`: float64 mean ``(M, O)`` (``(M,)`` for ``(N,)`` targets)
        and covariance ``(M, M)`` per output unit, with a leading ``T`` axis for several times.

    Raises:
        ValueError: On mismatched shapes, missing test kernels, non-finite entries, negative
            times or jitter.

    Warns:
        IllConditionedKernelWarning: As :func:`gradient_flow`.

    """
    k_theta = _np(ntk_train, "ntk_train")
    lam, v = _eig(k_theta, jitter)
    n = len(k_theta)
    kxx = _np(nngp_train, "nngp_train")
    if kxx.shape != (n, n):
        raise ValueError(f"nngp_train must be ({n}, {n}), got {kxx.shape}")
    kxx = (kxx + kxx.T) / 2
    y, vector = _targets(y_train, n)
    test = (ntk_test_train, nngp_test_train, nngp_test)
    if any(a is None for a in test) and not all(a is None for a in test):
        raise ValueError("give all of ntk_test_train, nngp_test_train and nngp_test, or none")
    times, scalar = _times(t)
    vt_y, vt_k = v.T @ y, v.T @ kxx
    if ntk_test_train is None:
        tzx = v @ (lam[:, None] * v.T)  # Theta(X, X) itself (after jitter)
        kzx, kzz = kxx, kxx
    else:
        tzx = _np(ntk_test_train, "ntk_test_train")
        kzx = _np(nngp_test_train, "nngp_test_train")
        kzz = _np(nngp_test, "nngp_test")
        m = tzx.shape[0]
        if tzx.shape != (m, n) or kzx.shape != (m, n) or kzz.shape != (m, m):
            raise ValueError(f"test kernels must be ({m}, {n}), ({m}, {n}), ({m}, {m}); got "
                             f"{tzx.shape}, {kzx.shape}, {kzz.shape}")
    means, covs = [], []
    for s in times:
        tau = s / n
        _warn_condition(lam, tau)
        g = _filter(lam, tau)[:, None]
        ta = (tzx @ v) * g.T  # Theta(x, X) V diag(g): (M, N) in the eigenbasis
        means.append(ta @ vt_y)
        cross = ta @ (v.T @ kzx.T)  # Theta(x, X) A K(X, x')
        cov = kzz + ta @ (vt_k @ v) @ ta.T - cross - cross.T
        covs.append((cov + cov.T) / 2)
    mean, cov = np.stack(means), np.stack(covs)
    if vector:
        mean = mean[..., 0]
    if scalar:
        mean, cov = mean[0], cov[0]
    return GaussianPrediction(_out(mean, ntk_train), _out(cov, ntk_train))
