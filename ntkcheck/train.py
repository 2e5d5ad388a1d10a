"""Training loops shared by claims.

Learning rates are given in the units the theory uses: the loss is the mean squared error
``L(theta) = 1/(2N) sum_i ||f(x_i) - y_i||^2``, so one gradient step with learning rate ``lr``
changes the outputs by ``-(lr / N) Theta(X, X) (f - y)`` to first order, and ``steps * lr`` is
the continuous time ``t`` of gradient flow ``df/dt = -(1/N) Theta (f - y)`` (Jacot et al.
2018, Sec. 4; Lee et al. 2019, eq. 3 with the 1/N convention).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["mse_loss", "gradient_descent", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite; the message suggests a smaller learning rate."""


def mse_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1/(2N) sum_i ||output_i - target_i||^2`` for ``output``, ``target`` of shape (N, O)."""
    return 0.5 * (output - target).pow(2).sum() / output.shape[0]


def gradient_descent(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float,
                     steps: int) -> list[float]:
    """Full-batch gradient descent on :func:`mse_loss`, in place.

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
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for step in range(steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = mse_loss(model(x), y)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise TrainingDiverged(
                f"training loss is {losses[-1]} at step {step} with lr={lr:g}; "
                "use a smaller learning rate (below 2N / lambda_max of the NTK Gram matrix)"
            )
        if step == steps:
            break
        loss.backward()
        opt.step()
    return losses
