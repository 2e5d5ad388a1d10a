"""Second-order optimization on the squared loss: natural gradient / Gauss-Newton descent.

Gauss-Newton / natural gradient in function space, tuned gradient descent as its baseline, and
both on the linearized (kernel) model in closed form.

Loss and units as in :mod:`ntkcheck.training.loops`: ``L(theta) = 1/(2N) ||f(theta, X) - y||^2``
over
``N`` inputs with ``O`` outputs each (``u = vec f(theta, X)``, ``N*O`` values), ``J`` the
``(N*O, P)`` Jacobian and ``G = J J^T`` the NTK Gram matrix
(:func:`ntkcheck.optim.jacobian.ntk_gram`).

Natural gradient = Gauss-Newton. For the squared loss the Fisher information of the Gaussian
likelihood with unit variance equals the Gauss-Newton matrix ``J^T J / N`` (Martens 2020, "New
insights and perspectives on the natural gradient method", JMLR, Sec. 9.2), so natural
gradient descent and Gauss-Newton take the same step. With damping ``lambda`` and the
push-through identity ``(J^T J + lambda I)^-1 J^T = J^T (J J^T + lambda I)^-1`` the step is
computed in function space, an ``N*O`` linear system instead of a ``P``-dimensional one::

    theta_{k+1} = theta_k - eta * J^T (J J^T + lambda I)^-1 (u_k - y)

(Zhang, Martens & Grosse 2019, "Fast convergence of natural gradient descent for
overparameterized neural networks", Sec. 3, at ``lambda = 0``, where ``(J J^T)^-1`` becomes the
Moore-Penrose pseudo-inverse ``(J J^T)^+``). ``lambda`` is in the units of ``G``; it equals
``N`` times a damping added to the mean-loss Gauss-Newton matrix ``J^T J / N``. On a linear
model (``J`` constant) one step maps the residual to ``(I - eta G (G + lambda I)^-1)(u_k - y)``:
``(1 - eta) (u_k - y)`` at ``lambda = 0``, a squared-residual contraction of ``(1 - eta)^2``.
Zhang et al.'s Theorem 1 guarantees the contraction ``||y - u_{k+1}||^2 <= (1 - eta)
||y - u_k||^2`` per step for a nonlinear network when ``eta <= (1 - 2C) / (1 + C)^2`` and the
Jacobian conditions of :mod:`ntkcheck.optim.jacobian` hold with constant ``C``.

Gradient descent on the same loss changes the outputs by ``-(lr / N) G (u_k - y)`` to first
order, so its rate depends on the spectrum of ``G`` (Du et al. 2018, Theorem 4.1: squared
residual contraction ``1 - lr lambda_0 / (2N)`` per step in this module's units); it is stable
on a quadratic for ``lr < 2N / lambda_max(G)`` and fastest at ``lr = 2N / (lambda_max +
lambda_min)`` (Nesterov 2004, "Introductory lectures on convex optimization", Thm 2.1.15).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ntkcheck.optim.jacobian import (
    DENSE_MAX_JACOBIAN,
    JacobianOperator,
    gram_extreme_eigenvalues,
    jacobian_distance,
    jacobian_matrix,
    ntk_gram,
    stability_constant,
    stability_radius,
    trainable_params,
)
from ntkcheck.training.loops import TrainingDiverged, TrainResult, mse_loss, train

__all__ = ["Race", "StabilityRun", "TunedRun", "censored_ratio", "gauss_newton_direction",
           "gd_learning_rates", "jacobian_stability_along_ngd", "kernel_gd_losses",
           "kernel_ngd_losses", "kernel_race_to_target", "max_stability_constant",
           "mean_log_contraction", "natural_gradient_descent", "orthogonal_inputs",
           "race_to_target", "steps_to_target", "tuned_gradient_descent",
           "width_for_tolerance", "worst_step_contraction"]


def gauss_newton_direction(model: nn.Module, x: torch.Tensor, residual: torch.Tensor, *,
                           damping: float = 0.0) -> dict[str, torch.Tensor]:
    """The function-space Gauss-Newton direction ``J^T (J J^T + lambda I)^-1 r``.

    Args:
        model: Network in eval mode at the current parameters (trainable ones are used).
        x: ``(N, *input_shape)`` inputs.
        residual: ``r = f(theta, X) - y``, shape ``(N, O)`` (or anything with ``N*O``
            entries in sample-major order).
        damping: ``lambda >= 0`` in units of the NTK Gram matrix ``G``. At 0 the
            pseudo-inverse ``G^+`` is used (``torch.linalg.pinv``, Hermitian, its default
            cut-off ``N*O * eps * lambda_max(G)``).

    Returns:
        The direction by parameter name (same shapes and dtype as the parameters); subtract
        ``eta`` times it to take a step.

    Raises:
        ValueError: If ``damping < 0`` or ``residual`` has the wrong size.
        KernelMemoryError, TrainModeError: As :func:`ntkcheck.kernels.empirical_ntk`.

    """
    if not damping >= 0:
        raise ValueError(f"damping must be >= 0, got {damping!r}")
    gram = ntk_gram(model, x).to(torch.float64)
    r = residual.detach().reshape(-1).to(torch.float64)
    if r.numel() != gram.shape[0]:
        raise ValueError(f"residual has {r.numel()} entries, the Gram matrix {gram.shape[0]} rows")
    if damping > 0:
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        alpha = torch.linalg.solve(gram + damping * eye, r)
    else:
        alpha = torch.linalg.pinv(gram, hermitian=True) @ r
    return JacobianOperator(model, x).vjp(alpha)


def natural_gradient_descent(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    damping: float = 0.0,
    target_loss: float | None = None,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """Full-batch natural gradient (= Gauss-Newton) descent on the MSE, in place.

    Each step is ``theta <- theta - lr * J^T (J J^T + damping I)^-1 (f(theta, X) - y)``
    (module docstring; Zhang, Martens & Grosse 2019, Sec. 3).

    Args:
        model: Network in eval mode mapping ``(N, ...)`` to ``(N, O)``; trained in place.
        x: ``(N, *input_shape)`` inputs in the model's dtype.
        y: ``(N, O)`` targets.
        lr: Step size ``eta`` (dimensionless: the fraction of the full Gauss-Newton step;
            ``1`` solves a linear model in one step). Must be in ``(0, 2)``.
        steps: Step budget.
        damping: ``lambda >= 0`` in units of the NTK Gram matrix (0: pseudo-inverse).
        target_loss: Stop as soon as :func:`ntkcheck.training.loops.mse_loss` is ``<=`` this.
        callback: Called as ``callback(k, model)`` after ``k = 0, 1, ...`` steps (at
            initialization first), under ``torch.no_grad()``.

    Returns:
        A :class:`ntkcheck.training.loops.TrainResult`: ``losses[k]`` the MSE after ``k`` steps.

    Raises:
        ValueError: On ``lr`` outside ``(0, 2)``, negative ``steps`` or ``damping``, or
            ``y`` of another shape than the outputs.
        TrainingDiverged: If the loss becomes non-finite.

    """
    if not (isinstance(lr, (int, float)) and 0 < lr < 2):
        raise ValueError(f"lr (eta) must be in (0, 2), got {lr!r}")
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    result = TrainResult(losses=[], steps=0, lr=float(lr))
    while True:
        with torch.no_grad():
            out = model(x)
            loss = float(mse_loss(out, y))
            result.losses.append(loss)
            if callback is not None:
                callback(result.steps, model)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"natural gradient descent: loss {loss} at step "
                                   f"{result.steps} with eta={lr:g}; use a smaller eta or damping")
        if target_loss is not None:
            result.reached = loss <= target_loss
            if result.reached:
                break
        if result.steps == steps:
            break
        direction = gauss_newton_direction(model, x, out - y, damping=damping)
        with torch.no_grad():
            for name, p in zip(names, params, strict=True):
                p.sub_(lr * direction[name])
        result.steps += 1
    return result


def steps_to_target(losses: Sequence[float], target: float) -> int | None:
    """The first ``k`` with ``losses[k] <= target``, or None if none is."""
    for k, value in enumerate(losses):
        if value <= target:
            return k
    return None


@dataclass(frozen=True)
class TunedRun:
    """The best run of a learning-rate grid.

    Attributes:
        steps: Fewest steps to the target over the grid, or None if no run reached it.
        lr: The learning rate that took ``steps`` (None if none reached the target).
        tried: ``(lr, steps or None, diverged)`` per learning rate, in the order tried.

    """

    steps: int | None
    lr: float | None
    tried: tuple[tuple[float, int | None, bool], ...]


def tuned_gradient_descent(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                           lrs: Sequence[float], target_loss: float, max_steps: int,
                           diverge_factor: float = 1e3) -> TunedRun:
    """Full-batch GD on the MSE from the same initialization for each learning rate.

    Each rate trains a deep copy of ``model`` (left unchanged) with
    :func:`ntkcheck.training.loops.train` until the loss is ``<= target_loss``, it exceeds
    ``diverge_factor`` times its initial value (diverged), or the budget runs out. Rates are
    tried largest first and each later run's budget is cut to one step fewer than the best so
    far (it cannot win with more), so tuning costs little more than the winning run.

    Args:
        model: Network at its initialization (not modified).
        x: ``(N, *input_shape)`` inputs.
        y: ``(N, O)`` targets.
        lrs: Learning rates to try (units of :mod:`ntkcheck.training.loops`), e.g. fractions of
            ``2N / (lambda_max + lambda_min)`` of the NTK Gram matrix.
        target_loss: The loss to reach.
        max_steps: Budget per learning rate.
        diverge_factor: Loss ratio treated as divergence.

    Returns:
        A :class:`TunedRun`.

    Raises:
        ValueError: On an empty ``lrs``, a non-positive rate or a negative budget.

    """
    if not lrs or any(not lr > 0 for lr in lrs):
        raise ValueError(f"lrs must be non-empty and positive, got {lrs!r}")
    if not (isinstance(max_steps, int) and max_steps >= 0):
        raise ValueError(f"max_steps must be a non-negative int, got {max_steps!r}")
    best: int | None = None
    best_lr: float | None = None
    tried = []
    for lr in sorted((float(v) for v in lrs), reverse=True):
        budget = max_steps if best is None else best - 1
        if budget < 0:
            tried.append((lr, None, False))
            continue
        net = copy.deepcopy(model)
        try:
            res = train(net, x, y, lr=lr, steps=budget, target_loss=target_loss,
                        diverge_factor=diverge_factor, raise_on_divergence=False)
            diverged = res.diverged
        except TrainingDiverged:  # a non-finite loss
            res, diverged = None, True
        steps = res.steps if res is not None and res.reached else None
        tried.append((lr, steps, diverged))
        if steps is not None and (best is None or steps < best):
            best, best_lr = steps, lr
    return TunedRun(steps=best, lr=best_lr, tried=tuple(tried))


def _eig(kernel: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    k = kernel.detach().to(torch.float64).cpu().numpy()
    lam, vec = np.linalg.eigh((k + k.T) / 2)
    return np.clip(lam, 0.0, None), vec


def kernel_gd_losses(kernel: torch.Tensor, residual: torch.Tensor, *, lr: float,
                     steps: int) -> np.ndarray:
    """MSE of gradient descent on the linearized model with a fixed kernel, in closed form.

    With ``Theta = V diag(s) V^T`` (per output, the same for every output as for an
    infinite-width NTK ``Theta ⊗ I_O``), GD with rate ``lr`` maps the residual to
    ``(I - (lr / N) Theta)^k r_0`` (Lee et al. 2019, eq. 3 in discrete time, the units of
    :mod:`ntkcheck.training.loops`), so ``L_k = 1/(2N) sum_{i,a} (1 - lr s_i / N)^(2k) c_{ia}^2``
    with
    ``c = V^T r_0``.

    Args:
        kernel: ``(N, N)`` kernel Gram matrix (e.g. the analytic NTK ``Theta_inf(X, X)``).
        residual: ``r_0 = f_0(X) - y``, ``(N, O)`` or ``(N,)``.
        lr: Learning rate.
        steps: Number of steps.

    Returns:
        ``(steps + 1,)`` float64 array of losses after ``0 .. steps`` steps (may overflow to
        ``inf`` for an unstable ``lr``).

    """
    lam, vec = _eig(kernel)
    n = kernel.shape[0]
    r = residual.detach().to(torch.float64).cpu().numpy().reshape(n, -1)
    energy = ((vec.T @ r) ** 2).sum(axis=1)  # (N,): squared residual per eigendirection
    factor = (1.0 - lr * lam / n) ** 2
    k = np.arange(steps + 1)[:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        return (factor[None, :] ** k * energy[None, :]).sum(axis=1) / (2 * n)


def kernel_ngd_losses(kernel: torch.Tensor, residual: torch.Tensor, *, lr: float, steps: int,
                      damping: float = 0.0) -> np.ndarray:
    """MSE of natural gradient descent on the linearized model with a fixed kernel.

    Each step multiplies the residual's component along eigenvalue ``s_i`` by
    ``1 - eta s_i / (s_i + lambda)`` (``1 - eta`` where ``s_i > 0`` at ``lambda = 0``; the
    pseudo-inverse leaves components with ``s_i = 0`` unchanged). See the module docstring.

    Args:
        kernel: ``(N, N)`` kernel Gram matrix.
        residual: ``r_0 = f_0(X) - y``, ``(N, O)`` or ``(N,)``.
        lr: Step size ``eta``.
        steps: Number of steps.
        damping: ``lambda >= 0`` (kernel units).

    Returns:
        ``(steps + 1,)`` float64 array of losses after ``0 .. steps`` steps.

    """
    lam, vec = _eig(kernel)
    n = kernel.shape[0]
    r = residual.detach().to(torch.float64).cpu().numpy().reshape(n, -1)
    energy = ((vec.T @ r) ** 2).sum(axis=1)
    if damping > 0:
        gain = lam / (lam + damping)
    else:
        gain = (lam > n * np.finfo(np.float64).eps * lam.max()).astype(np.float64)
    factor = (1.0 - lr * gain) ** 2
    k = np.arange(steps + 1)[:, None]
    return (factor[None, :] ** k * energy[None, :]).sum(axis=1) / (2 * n)


@dataclass(frozen=True)
class StabilityRun:
    """The Jacobian's change along a natural-gradient trajectory (Zhang et al.'s Condition 2).

    Attributes:
        c_prime: ``C' = 3 max_t ||J(theta_t) - J(theta_0)||_2 / sqrt(lambda_0)``
            (:func:`ntkcheck.optim.jacobian.stability_constant`); Condition 2 needs ``<= 1/2``.
        lambda_0: ``lambda_min(J_0 J_0^T)``.
        lambda_max: ``lambda_max(J_0 J_0^T)``.
        max_jacobian_change: ``max_t ||J(theta_t) - J(theta_0)||_2`` over ``t = 1 .. steps``.
        max_move_over_radius: ``max_t ||theta_t - theta_0||_2`` divided by the radius
            ``3 ||y - u_0||_2 / sqrt(lambda_0)`` of Condition 2 (``0`` when
            ``lambda_0 <= 0``): below 1, the trajectory stays inside the ball.
        losses: The MSE after ``0 .. steps`` steps.

    """

    c_prime: float
    lambda_0: float
    lambda_max: float
    max_jacobian_change: float
    max_move_over_radius: float
    losses: list[float]


def jacobian_stability_along_ngd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                                 lr: float, steps: int, damping: float = 0.0) -> StabilityRun:
    """Train by NGD in place and measure how far the Jacobian moves from its initial value.

    At every iterate ``theta_t`` (``t = 1 .. steps``) of :func:`natural_gradient_descent`,
    ``||J(theta_t) - J(theta_0)||_2`` is computed by
    :func:`ntkcheck.optim.jacobian.jacobian_distance`
    (dense with ``J_0`` reused, or Lanczos for large Jacobians).

    Args:
        model: Network at initialization, in eval mode; trained in place.
        x: ``(N, *input_shape)`` inputs.
        y: ``(N, O)`` targets.
        lr: NGD step size ``eta``.
        steps: Number of NGD steps (at least 1).
        damping: NGD damping (units of the NTK Gram matrix).

    Returns:
        A :class:`StabilityRun`.

    Raises:
        ValueError: If ``steps < 1``, or as :func:`natural_gradient_descent`.

    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    params0 = {k: v.clone() for k, v in trainable_params(model).items()}
    lam0, lam_max = gram_extreme_eigenvalues(model, x)
    n_params = sum(v.numel() for v in params0.values())
    dense = y.numel() * n_params <= DENSE_MAX_JACOBIAN
    jac0 = jacobian_matrix(model, x) if dense else None
    with torch.no_grad():
        residual0 = float(torch.linalg.norm(model(x) - y))
    changes: list[float] = []
    moves: list[float] = []

    def record(step: int, net: nn.Module) -> None:
        if step == 0:
            return
        changes.append(jacobian_distance(net, x, params0, jacobian0=jac0))
        moves.append(math.sqrt(sum(float((p - params0[k]).pow(2).sum())
                                   for k, p in trainable_params(net).items())))

    result = natural_gradient_descent(model, x, y, lr=lr, steps=steps, damping=damping,
                                      callback=record)
    radius = stability_radius(residual0, lam0) if lam0 > 0 else math.inf
    return StabilityRun(c_prime=stability_constant(max(changes), lam0), lambda_0=lam0,
                        lambda_max=lam_max, max_jacobian_change=max(changes),
                        max_move_over_radius=max(moves) / radius, losses=result.losses)


def censored_ratio(slow_steps: int | None, fast_steps: int | None, budget: int) -> float:
    """``slow / fast`` steps, a run that missed its target counting as ``budget`` steps.

    So the ratio is a lower bound when only the slow run missed, an upper bound when only the
    fast one did, and 1 when both did.

    Raises:
        ValueError: If ``budget < 1``.

    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    slow = budget if slow_steps is None else slow_steps
    fast = budget if fast_steps is None else fast_steps
    return max(slow, 1) / max(fast, 1)


@dataclass(frozen=True)
class Race:
    """Steps natural gradient and tuned gradient descent take to a target loss.

    Attributes:
        ngd_steps: NGD steps to the target, or None if it was not reached within ``budget``.
        gd_steps: Fewest GD steps over the learning-rate grid, or None.
        gd_lr: The learning rate of ``gd_steps`` (None if no rate reached the target).
        target: The target MSE.
        budget: Step budget of each run.
        ratio: :func:`censored_ratio` ``(gd_steps, ngd_steps, budget)``.

    """

    ngd_steps: int | None
    gd_steps: int | None
    gd_lr: float | None
    target: float
    budget: int
    ratio: float


def gd_learning_rates(lambda_min: float, lambda_max: float, n: int,
                      fractions: Sequence[float]) -> list[float]:
    """``c * 2N / (lambda_max + lambda_min)`` for each fraction ``c``.

    ``2N / (lambda_max + lambda_min)`` is the fastest constant GD step on the quadratic the
    linearized network defines (Nesterov 2004, Thm 2.1.15, in :mod:`ntkcheck.training.loops`'s
    units).
    On a residual dominated by the top eigendirection a smaller step can be faster: that
    direction's factor ``1 - lr lambda_max / N`` is near ``-1`` at the fastest step.

    Raises:
        ValueError: If ``lambda_max <= 0``.

    """
    if not lambda_max > 0:
        raise ValueError(f"lambda_max must be > 0, got {lambda_max}")
    return [c * 2 * n / (lambda_max + max(lambda_min, 0.0)) for c in fractions]


def race_to_target(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eta: float,
                   target_fraction: float, lr_fractions: Sequence[float], budget: int
                   ) -> Race:
    """NGD vs tuned GD from the same initialization, to ``target_fraction`` of the initial MSE.

    GD tries :func:`gd_learning_rates` of the network's NTK Gram matrix at initialization
    (:func:`tuned_gradient_descent`); NGD runs with step ``eta``. Neither changes ``model``.

    Args:
        model: Network at initialization (not modified).
        x: ``(N, *input_shape)`` inputs.
        y: ``(N, O)`` targets.
        eta: NGD step size.
        target_fraction: Target as a fraction of the initial MSE, in ``(0, 1)``.
        lr_fractions: GD learning rates as fractions of ``2N / (lambda_max + lambda_min)``.
        budget: Step budget of every run.

    Returns:
        A :class:`Race`.

    Raises:
        ValueError: On a ``target_fraction`` outside ``(0, 1)`` or a budget below 1.

    """
    if not 0 < target_fraction < 1:
        raise ValueError(f"target_fraction must be in (0, 1), got {target_fraction}")
    if not (isinstance(budget, int) and budget >= 1):
        raise ValueError(f"budget must be an int >= 1, got {budget!r}")
    lam_min, lam_max = gram_extreme_eigenvalues(model, x)
    with torch.no_grad():
        target = target_fraction * float(mse_loss(model(x), y))
    lrs = gd_learning_rates(lam_min, lam_max, len(x), lr_fractions)
    gd = tuned_gradient_descent(model, x, y, lrs=lrs, target_loss=target, max_steps=budget)
    ngd = natural_gradient_descent(copy.deepcopy(model), x, y, lr=eta, steps=budget,
                                   target_loss=target)
    ngd_steps = ngd.steps if ngd.reached else None
    return Race(ngd_steps=ngd_steps, gd_steps=gd.steps, gd_lr=gd.lr, target=target,
                budget=budget, ratio=censored_ratio(gd.steps, ngd_steps, budget))


def kernel_race_to_target(kernel: torch.Tensor, residual: torch.Tensor, *, eta: float,
                          target_fraction: float, lr_fractions: Sequence[float], budget: int
                          ) -> Race:
    """:func:`race_to_target` for the linearized model with a fixed kernel, in closed form.

    Uses :func:`kernel_gd_losses` and :func:`kernel_ngd_losses` with the learning-rate grid of
    the kernel's own extreme eigenvalues, e.g. for the infinite-width network (analytic NTK)
    from the finite network's initial residual.

    Args:
        kernel: ``(N, N)`` kernel Gram matrix (per output; ``Theta ⊗ I_O`` is implied).
        residual: ``r_0 = f_0(X) - y``, ``(N, O)``.
        eta: NGD step size.
        target_fraction: Target as a fraction of the initial MSE, in ``(0, 1)``.
        lr_fractions: GD learning rates as fractions of ``2N / (lambda_max + lambda_min)``.
        budget: Step budget.

    Returns:
        A :class:`Race` (``gd_lr`` the fastest rate, None if none reached the target).

    """
    lam = torch.linalg.eigvalsh(kernel.detach().to(torch.float64))
    n = kernel.shape[0]
    best: tuple[int, float] | None = None
    target = None
    for lr in gd_learning_rates(float(lam[0]), float(lam[-1]), n, lr_fractions):
        losses = kernel_gd_losses(kernel, residual, lr=lr, steps=budget)
        target = target_fraction * losses[0]
        k = steps_to_target(losses, target)
        if k is not None and (best is None or k < best[0]):
            best = (k, lr)
    ngd = kernel_ngd_losses(kernel, residual, lr=eta, steps=budget)
    target = target_fraction * ngd[0]
    ngd_steps = steps_to_target(ngd, target)
    gd_steps = best[0] if best else None
    return Race(ngd_steps=ngd_steps, gd_steps=gd_steps, gd_lr=best[1] if best else None,
                target=float(target), budget=budget,
                ratio=censored_ratio(gd_steps, ngd_steps, budget))


def worst_step_contraction(losses: Sequence[float], eta: float, *, floor: float = 1e-20
                           ) -> float:
    """``max_k (L_{k+1} / L_k) / (1 - eta)``: the worst per-step contraction vs Zhang et al.

    ``L_k`` is proportional to the squared residual ``||y - u_k||^2``; Zhang, Martens & Grosse
    2019 (Thm 1) bound every ratio ``L_{k+1} / L_k`` by ``1 - eta``, so the result is ``<= 1``
    where their bound holds (``1 - eta`` for a linear model at ``damping = 0``). Steps from a
    loss below ``floor * L_0`` (round-off) are skipped.

    Args:
        losses: MSE after ``0, 1, ...`` steps (at least two values, ``L_0 > 0``).
        eta: The NGD step size, in ``(0, 1)``.
        floor: Relative loss below which steps are ignored.

    Raises:
        ValueError: With fewer than two losses, ``L_0 <= 0`` or ``eta`` outside ``(0, 1)``.

    """
    if len(losses) < 2 or not losses[0] > 0:
        raise ValueError("need at least two losses with a positive initial loss")
    if not 0 < eta < 1:
        raise ValueError(f"eta must be in (0, 1), got {eta}")
    ratios = [b / a for a, b in zip(losses[:-1], losses[1:], strict=True)
              if a > floor * losses[0]]
    return max(ratios) / (1 - eta)


def max_stability_constant(eta: float) -> float:
    """The largest ``C`` for which step ``eta`` is licensed: ``eta = (1 - 2C) / (1 + C)^2``.

    Zhang, Martens & Grosse 2019, Thm 1 allows ``eta <= (1 - 2C) / (1 + C)^2``; the right side
    falls from 1 at ``C = 0`` to 0 at ``C = 1/2``, so for ``eta`` in ``(0, 1]`` the condition
    is ``C <= C_max(eta)`` with ``C_max`` the root in ``[0, 1/2)`` of
    ``eta C^2 + (2 + 2 eta) C + eta - 1 = 0``:
    ``C_max = (-(1 + eta) + sqrt((1 + eta)^2 - eta (eta - 1))) / eta``.

    Raises:
        ValueError: If ``eta`` is not in ``(0, 1]``.

    """
    if not 0 < eta <= 1:
        raise ValueError(f"eta must be in (0, 1], got {eta!r}")
    return (-(1 + eta) + math.sqrt((1 + eta) ** 2 - eta * (eta - 1))) / eta


def width_for_tolerance(width: float, value: float, tolerance: float, rate: float) -> float:
    """The width at which ``value`` reaches ``tolerance`` if it scales as ``width^rate``.

    ``w* = width (tolerance / value)^(1 / rate)`` (``width`` itself when ``value`` already
    satisfies it on the side the rate moves to).

    Raises:
        ValueError: If a value, the width or the tolerance is not positive, or ``rate == 0``.

    """
    if not (width > 0 and value > 0 and tolerance > 0) or rate == 0:
        raise ValueError("width, value and tolerance must be > 0 and rate non-zero")
    if (rate < 0 and value <= tolerance) or (rate > 0 and value >= tolerance):
        return float(width)
    return float(width) * (tolerance / value) ** (1.0 / rate)


def mean_log_contraction(losses: Sequence[float], *, floor: float = 1e-20) -> float:
    """``mean_k log(L_{k+1} / L_k)``: the mean per-step log contraction of a loss curve.

    Steps from a loss below ``floor * L_0`` (round-off) are skipped.

    Raises:
        ValueError: With fewer than two losses or ``L_0 <= 0``.

    """
    if len(losses) < 2 or not losses[0] > 0:
        raise ValueError("need at least two losses with a positive initial loss")
    logs = [math.log(b / a) for a, b in zip(losses[:-1], losses[1:], strict=True)
            if a > floor * losses[0] and b > 0]
    if not logs:
        raise ValueError("no step above the round-off floor")
    return sum(logs) / len(logs)


def orthogonal_inputs(n: int, dim: int, *, dtype: torch.dtype = torch.float64,
                      device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` orthogonal inputs ``sqrt(dim) e_i`` with alternating targets ``+-1``, ``(n, 1)``.

    Orthogonal inputs of equal norm give the NTK Gram its largest ``lambda_0`` for a given
    ``n`` (Zhang et al. 2019's width requirement grows like ``n^4 / lambda_0^4``), so it is a
    setting where the Jacobian conditions can hold at widths a CPU sweeps.

    Raises:
        ValueError: If ``n > dim`` or either is below 1.

    """
    if not 1 <= n <= dim:
        raise ValueError(f"need 1 <= n <= dim, got n={n}, dim={dim}")
    x = torch.eye(dim, dtype=dtype, device=device)[:n] * math.sqrt(dim)
    y = torch.where(torch.arange(n, device=device) % 2 == 0, 1.0, -1.0).to(dtype)
    return x, y.reshape(-1, 1)
