"""Training loops shared by claims: full-batch GD, mini-batch SGD and Adam on MSE or CE.

Units. Learning rates are given in the units the theory uses: the squared loss is
``L(theta) = 1/(2N) sum_i ||f(x_i) - y_i||^2`` (:func:`mse_loss`), so one gradient step with
learning rate ``lr`` changes the training outputs by ``-(lr / N) Theta(X, X) (f - y)`` to
first order, and ``t = steps * lr`` is the continuous time of gradient flow
``df/dt = -(1/N) Theta(X, X) (f - y)`` (Jacot et al. 2018, Sec. 4; Lee et al. 2019, eq. 3 with
the 1/N convention; :mod:`ntkcheck.kernel_regime.predict` uses the same ``t``). Full-batch GD is
stable in
the kernel regime for ``lr < 2N / lambda_max(Theta(X, X))``. Cross-entropy is the mean over
examples (``torch.nn.functional.cross_entropy``); continuous time has no kernel meaning there.

Every loop trains the model in place, leaves its train/eval mode alone (networks from
:meth:`ntkcheck.arch.ArchSpec.build` are in eval mode, which MLPs ignore) and records the
*full-batch* training loss before each step and after the last one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["LOSSES", "OPTIMIZERS", "TrainResult", "TrainingDiverged", "accuracy",
           "cross_entropy_loss", "gradient_descent", "kernel_lr", "mse_loss", "steps_for_time",
           "train"]

#: Loss names accepted by :func:`train`.
LOSSES = ("mse", "cross_entropy")
#: Optimizer names accepted by :func:`train`: ``"gd"`` full-batch gradient descent, ``"sgd"``
#: mini-batch SGD (needs ``batch_size``), ``"adam"`` (full batch unless ``batch_size``).
OPTIMIZERS = ("gd", "sgd", "adam")


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite; the message suggests a smaller learning rate."""


def mse_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1/(2N) sum_i ||output_i - target_i||^2`` (scalar) for ``(N, O)`` tensors.

    Raises:
        ValueError: If the shapes differ (a ``(N,)`` target against ``(N, 1)`` outputs would
            silently broadcast to ``(N, N)``).

    """
    if output.shape != target.shape:
        raise ValueError(f"mse_loss: output {tuple(output.shape)} and target "
                         f"{tuple(target.shape)} differ; reshape the target to (N, O)")
    return 0.5 * (output - target).pow(2).sum() / output.shape[0]


def cross_entropy_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``output`` ``(N, C)`` and int64 labels ``target`` ``(N,)``.

    Raises:
        ValueError: If ``target`` is not a 1-d integer tensor of length N.

    """
    if target.dim() != 1 or target.dtype.is_floating_point or len(target) != len(output):
        raise ValueError(f"cross_entropy_loss needs int64 labels of shape (N,), got "
                         f"{tuple(target.shape)} {target.dtype}")
    return nn.functional.cross_entropy(output, target)


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of inputs whose arg-max output is the target class, in [0, 1].

    Args:
        output: ``(N, C)`` logits or regression outputs, ``C >= 2``.
        target: ``(N,)`` integer labels, or ``(N, C)`` one-hot regression targets (their
            arg-max is the label, as for :meth:`ntkcheck.data.Dataset.one_hot`).

    Raises:
        ValueError: For scalar outputs (accuracy needs classes) or mismatched shapes.

    """
    if output.dim() != 2 or output.shape[1] < 2:
        raise ValueError(f"accuracy needs (N, C >= 2) outputs, got {tuple(output.shape)}")
    labels = target if target.dim() == 1 else target.argmax(dim=1)
    if labels.shape[0] != output.shape[0]:
        raise ValueError(f"{output.shape[0]} outputs but {labels.shape[0]} targets")
    return float((output.argmax(dim=1) == labels).double().mean())


def steps_for_time(t: float, lr: float) -> int:
    """The number of steps ``round(t / lr)`` that reach continuous time ``t`` at ``lr``.

    Raises:
        ValueError: If ``t < 0`` or ``lr <= 0``.

    """
    if not t >= 0 or not lr > 0:
        raise ValueError(f"need t >= 0 and lr > 0, got t={t!r}, lr={lr!r}")
    return int(round(t / lr))


def kernel_lr(spec, model: nn.Module, x: torch.Tensor,
              factor: float = 1.0) -> tuple[float, list[dict] | None]:
    """The kernel regime's natural full-batch learning rate ``factor * N / lambda_max``.

    ``lambda_max`` is the largest eigenvalue of the NTK Gram matrix that gradient descent
    follows (module docstring): for ``"ntk"`` and ``"standard"`` the analytic NTK
    (:func:`ntkcheck.kernels.analytic_kernels`, at ``spec``'s width for ``"standard"``, whose
    NTK grows with the width); for ``"mup"`` the learning-rate-weighted empirical NTK of
    ``model`` at its current parameters (:func:`ntkcheck.kernel_regime.features.lr_weighted_ntk`)
    with muP's
    per-layer rates (:func:`ntkcheck.arch.param_groups`), per output unit (its trace over the
    ``O`` outputs divided by ``O``); for a user's :class:`ntkcheck.family.ModelFamily`
    member (no analytic kernel) the empirical NTK of ``model`` at its current parameters, per
    output unit. ``factor = 1`` contracts the top
    residual mode in one step; GD is stable for ``factor < 2`` in the kernel regime.

    Args:
        spec: The :class:`ntkcheck.arch.ArchSpec` or ModelFamily member ``model`` was built
            from (with its width).
        model: The network.
        x: Training inputs ``(N, *input_shape)``.
        factor: Multiple of ``N / lambda_max``.

    Returns:
        ``(lr, params)``: the base rate, and for muP the parameter groups to pass to
        :func:`train` as ``params`` (None otherwise: one rate for every parameter).

    Raises:
        NotImplementedError: For a family without an analytic kernel (see
            :func:`ntkcheck.kernels.analytic_kernels`).
        ntkcheck.family.NotApplicable: For a user family whose parametrization is neither
            ``"ntk"`` nor ``"standard"`` (its per-layer rates are not known).

    """
    from ntkcheck.arch import param_groups
    from ntkcheck.family import is_family
    from ntkcheck.kernel_regime.features import lr_weighted_ntk
    from ntkcheck.kernels import analytic_kernels, empirical_ntk

    n = len(x)
    if is_family(spec):
        spec.lr_scales(model)  # NotApplicable outside ntk / standard
        with torch.no_grad():
            n_out = model(x[:1]).reshape(1, -1).shape[1]
        gram = empirical_ntk(model, x) / n_out
        return factor * n / float(torch.linalg.eigvalsh(gram.double())[-1]), None
    if spec.parametrization == "mup":
        with torch.no_grad():
            n_out = model(x[:1]).reshape(1, -1).shape[1]
        gram = lr_weighted_ntk(model, x, param_groups(model, 1.0), 1.0) / n_out
        lr = factor * n / float(torch.linalg.eigvalsh(gram.double())[-1])
        return lr, param_groups(model, lr)
    gram = analytic_kernels(spec, x).ntk
    return factor * n / float(torch.linalg.eigvalsh(gram)[-1]), None


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        losses: Full-batch training loss at each recorded step: before step 0, 1, ... and after
            the last step (``steps + 1`` floats).
        steps: Number of optimizer steps taken.
        lr: The base learning rate.
        reached: Whether ``target_loss``/``target_accuracy`` was reached (None without one).
        diverged: Whether training stopped because the loss exceeded ``diverge_factor`` times
            its initial value (only with ``raise_on_divergence=False``).
        accuracies: Full-batch training accuracy at each recorded step, when tracked.

    """

    losses: list[float]
    steps: int
    lr: float
    reached: bool | None = None
    diverged: bool = False
    accuracies: list[float] = field(default_factory=list)

    @property
    def time(self) -> float:
        """Continuous gradient-flow time ``steps * lr`` (module docstring; GD/SGD only)."""
        return self.steps * self.lr

    @property
    def final_loss(self) -> float:
        """The training loss after the last step."""
        return self.losses[-1]


def _check(lr: float, steps: int, optimizer: str, loss: str, batch_size: int | None,
           n: int) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if optimizer == "sgd" and batch_size is None:
        raise ValueError("optimizer='sgd' needs a batch_size (use 'gd' for full batches)")
    if batch_size is not None and not (isinstance(batch_size, int) and 0 < batch_size <= n):
        raise ValueError(f"batch_size must be an int in 1..{n}, got {batch_size!r}")


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    optimizer: str = "gd",
    loss: str = "mse",
    batch_size: int | None = None,
    params: Iterable | None = None,
    target_loss: float | None = None,
    target_accuracy: float | None = None,
    seed: int = 0,
    diverge_factor: float | None = None,
    raise_on_divergence: bool = True,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place with a step budget and an optional target.

    Args:
        model: Network mapping ``(N, ...)`` to ``(N, O)``; also a
            :class:`ntkcheck.kernel_regime.linearize.LinearizedModel` (trained the same way).
        x: Inputs ``(N, ...)``, the model's dtype and device.
        y: Targets: ``(N, O)`` floats for ``"mse"``; ``(N,)`` int64 labels for
            ``"cross_entropy"``.
        lr: Base learning rate (units: module docstring).
        steps: Step budget (the most steps taken).
        optimizer: One of :data:`OPTIMIZERS`. ``"gd"`` and ``"sgd"`` use
            ``torch.optim.SGD`` without momentum, ``"adam"`` ``torch.optim.Adam``.
        loss: ``"mse"`` (:func:`mse_loss`) or ``"cross_entropy"`` (:func:`cross_entropy_loss`).
        batch_size: Mini-batch size (``"sgd"``, optionally ``"adam"``): each epoch visits a
            seeded random permutation of the data in batches; one step per batch.
        params: Parameters or parameter groups for the optimizer (e.g.
            :func:`ntkcheck.arch.param_groups` for muP learning rates); all of
            ``model.parameters()`` at ``lr`` by default.
        target_loss: Stop as soon as the full-batch training loss is ``<=`` this.
        target_accuracy: Stop as soon as the full-batch training accuracy (:func:`accuracy`)
            is ``>=`` this.
        seed: Seed of the mini-batch order.
        diverge_factor: Treat a loss above ``diverge_factor * losses[0]`` as divergence.
        raise_on_divergence: Raise :class:`TrainingDiverged` on divergence (and always on a
            non-finite loss when True); with False, stop and return ``diverged=True``.
        callback: Called as ``callback(k, model)`` at the parameters after ``k`` steps, for
            ``k = 0 .. steps taken``, under ``torch.no_grad()``.

    Returns:
        A :class:`TrainResult` (``losses[k]`` is the full-batch loss after ``k`` steps).

    Raises:
        ValueError: On an unknown optimizer or loss, a non-positive ``lr``, a negative
            ``steps``, or a bad ``batch_size``.
        TrainingDiverged: If the loss becomes non-finite, or exceeds ``diverge_factor``
            times its initial value, while ``raise_on_divergence`` is True.

    """
    n = int(x.shape[0])
    _check(lr, steps, optimizer, loss, batch_size, n)
    loss_fn = mse_loss if loss == "mse" else cross_entropy_loss
    groups = list(params) if params is not None else list(model.parameters())
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = opt_cls(groups, lr=lr)
    track_acc = target_accuracy is not None
    gen = torch.Generator().manual_seed(int(seed))
    order: list[torch.Tensor] = []
    result = TrainResult(losses=[], steps=0, lr=float(lr))

    def record(value: float, out: torch.Tensor) -> bool:
        """Append the loss; return True when training must stop."""
        result.losses.append(value)
        if track_acc:
            result.accuracies.append(accuracy(out.detach(), y))
        if callback is not None:
            with torch.no_grad():
                callback(result.steps, model)
        bad = not math.isfinite(value) or (
            diverge_factor is not None and value > diverge_factor * result.losses[0])
        if bad:
            if raise_on_divergence:
                raise TrainingDiverged(
                    f"training loss is {value:.4g} at step {result.steps} (initial "
                    f"{result.losses[0]:.4g}) with lr={lr:g}; use a smaller learning rate "
                    "(full-batch GD on the MSE is stable below 2N / lambda_max(NTK Gram))")
            result.diverged = True
            return True
        hit = ((target_loss is not None and value <= target_loss)
               or (track_acc and result.accuracies[-1] >= target_accuracy))
        if target_loss is not None or track_acc:
            result.reached = bool(hit)
        return hit or result.steps == steps

    full_batch = batch_size is None or batch_size == n
    while True:
        if full_batch:
            opt.zero_grad(set_to_none=True)
            out = model(x)
            value = loss_fn(out, y)
            if record(value.item(), out):
                break
            value.backward()
        else:
            with torch.no_grad():
                out = model(x)
                stop = record(loss_fn(out, y).item(), out)
            if stop:
                break
            if not order:
                order = list(torch.randperm(n, generator=gen).split(batch_size))
            idx = order.pop(0).to(x.device)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
        result.steps += 1
    return result


def gradient_descent(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float,
                     steps: int) -> list[float]:
    """Full-batch gradient descent on :func:`mse_loss`, in place (``train(..., "gd")``).

    Args:
        model: Network mapping (N, ...) to (N, O); trained in place.
        x: Inputs, shape (N, ...).
        y: Targets, shape (N, O), same dtype as the model.
        lr: Learning rate (see the module docstring for its units).
        steps: Number of full-batch steps.

    Returns:
        The training loss before each step and after the last one (``steps + 1`` floats).

    Raises:
        TrainingDiverged: If the loss becomes NaN or Inf.

    """
    return train(model, x, y, lr=lr, steps=steps).losses
