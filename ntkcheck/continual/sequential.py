"""Sequential training over a task sequence, with a per-task budget, and its accuracy matrix.

Each task is trained with :func:`ntkcheck.training.loops.train` (its loss and learning-rate units:
the
squared loss ``1/(2N) sum_i ||f_head(x_i) - y_i||^2`` on the task's head with targets
:meth:`ntkcheck.continual.tasks.Task.train_targets`, or the cross-entropy of the head's
logits). The per-task budget (:class:`Budget`) is either a number of epochs or "until the
training accuracy is at least ``a``" -- the variable Wenger et al. 2023 (arXiv 2310.00137,
Sec. 3.3) find decides whether wide networks forget less. After each task every task is
evaluated, giving the accuracy matrix ``a[i][j]`` of :mod:`ntkcheck.continual.forgetting`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ntkcheck.continual.forgetting import (
    average_accuracy,
    average_forgetting,
    output_forgetting,
)
from ntkcheck.continual.tasks import Task, TaskSequence
from ntkcheck.training.loops import (
    TrainingDiverged,
    TrainResult,
    _check,
    accuracy,
    cross_entropy_loss,
    mse_loss,
    train,
)

__all__ = ["Budget", "HeadView", "SequentialResult", "train_sequentially"]


@dataclass(frozen=True)
class Budget:
    """How long each task is trained.

    Exactly one of ``epochs`` and ``target_accuracy`` is given. An epoch is one pass over the
    task's training set: one step of full-batch gradient descent, ``ceil(N / batch_size)``
    mini-batch steps otherwise.

    Attributes:
        epochs: Epochs per task (a fixed budget; 0 trains nothing).
        target_accuracy: Train each task until its full-batch training accuracy is at least
            this (in (0, 1]), checked before every step.
        max_epochs: With ``target_accuracy``, the most epochs per task (a task that does not
            reach the target stops there; :attr:`SequentialResult.reached` says so).

    Raises:
        ValueError: Neither or both of ``epochs``/``target_accuracy``, a negative number of
            epochs, a target outside (0, 1] or ``max_epochs < 1``.

    """

    epochs: int | None = None
    target_accuracy: float | None = None
    max_epochs: int = 1000

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.target_accuracy is None):
            raise ValueError("give exactly one of epochs= and target_accuracy=")
        if self.epochs is not None and not (isinstance(self.epochs, int) and self.epochs >= 0):
            raise ValueError(f"epochs must be a non-negative int, got {self.epochs!r}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy!r}")
        if not (isinstance(self.max_epochs, int) and self.max_epochs >= 1):
            raise ValueError(f"max_epochs must be a positive int, got {self.max_epochs!r}")

    @property
    def label(self) -> str:
        """A short description, e.g. ``"5 epochs"`` or ``"train acc >= 0.99"``."""
        if self.epochs is not None:
            return f"{self.epochs} epochs"
        return f"train acc >= {self.target_accuracy:g}"


class HeadView(nn.Module):
    """The outputs of ``model`` restricted to a head: ``model(x)[:, head]``, ``(N, C)``.

    Shares the model's parameters (training the view trains the model).
    """

    def __init__(self, model: nn.Module, head: Iterable[int]) -> None:
        super().__init__()
        self.model = model
        self.head = tuple(int(h) for h in head)
        self.register_buffer("index", torch.as_tensor(self.head, dtype=torch.int64),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.model(x)
        return out.index_select(1, self.index.to(out.device))


@dataclass
class SequentialResult:
    """What sequential training did.

    Attributes:
        accuracy: ``(T, T)`` test accuracy ``a[i][j]`` on task ``j`` after training task ``i``.
        train_accuracy: ``(T, T)`` the same on the tasks' training data.
        train_outputs: ``train_outputs[i][k]``, the ``(N_k, C_k)`` float64 outputs of task
            ``k``'s head on its training inputs after task ``i``.
        steps: Optimizer steps taken per task.
        reached: Per task whether ``target_accuracy`` was reached (None for an epoch budget).
        displacement: Per task ``||theta_after - theta_before||_2`` over all trainable
            parameters (the parameter update that task made).
        lr: The learning rate used.
        budget: The per-task budget.
        losses: Per task, the full-batch training loss before each step and after the last
            (:attr:`ntkcheck.training.loops.TrainResult.losses`).

    """

    accuracy: np.ndarray
    train_accuracy: np.ndarray
    train_outputs: list[list[np.ndarray]]
    steps: list[int]
    reached: list[bool | None]
    displacement: list[float]
    lr: float
    budget: Budget
    losses: list[list[float]] = field(default_factory=list)

    @property
    def average_forgetting(self) -> float:
        """Average forgetting of the test accuracy (Chaudhry et al. 2018); needs ``T >= 2``."""
        return average_forgetting(self.accuracy)

    @property
    def average_accuracy(self) -> float:
        """Mean final test accuracy over all tasks (Chaudhry et al. 2018)."""
        return average_accuracy(self.accuracy)

    @property
    def learned_accuracy(self) -> float:
        """Mean training accuracy of each task right after it was trained, ``mean_i a[i][i]``."""
        return float(np.mean(np.diag(self.train_accuracy)))

    @property
    def output_forgetting(self) -> np.ndarray:
        """Function-space forgetting of each earlier task (Doan et al. 2021), ``(T - 1,)``."""
        return output_forgetting(self.train_outputs)


def _flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


def _view(model: nn.Module, task: Task, n_outputs: int) -> nn.Module:
    if task.head == tuple(range(n_outputs)):
        return model
    return HeadView(model, task.head)


def _train_epochs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float, epochs: int,
                  optimizer: str, loss: str, batch_size: int, params: list | None,
                  target_accuracy: float | None, seed: int) -> TrainResult:
    """Mini-batch epochs (seeded permutation each epoch), full-batch checks at epoch ends."""
    n = int(x.shape[0])
    _check(lr, epochs, optimizer, loss, batch_size, n)
    loss_fn = mse_loss if loss == "mse" else cross_entropy_loss
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = opt_cls(params if params is not None else list(model.parameters()), lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    result = TrainResult(losses=[], steps=0, lr=float(lr))

    def check() -> bool:
        with torch.no_grad():
            out = model(x)
            value = float(loss_fn(out, y))
        result.losses.append(value)
        if not math.isfinite(value):
            raise TrainingDiverged(f"training loss is {value} after {result.steps} steps with "
                                   f"lr={lr:g}; use a smaller learning rate")
        if target_accuracy is None:
            return False
        result.accuracies.append(accuracy(out, y))
        result.reached = result.accuracies[-1] >= target_accuracy
        return result.reached

    done = check()
    for _ in range(epochs):
        if done:
            break
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            idx = idx.to(x.device)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            result.steps += 1
        done = check()
    return result


def train_sequentially(
    model: nn.Module,
    tasks: TaskSequence,
    budget: Budget,
    *,
    lr: float,
    optimizer: str = "gd",
    loss: str = "mse",
    batch_size: int | None = None,
    params: Iterable | None = None,
    seed: int = 0,
    check_every: str = "step",
) -> SequentialResult:
    """Train ``model`` on each task in turn, in place, evaluating every task after each one.

    Args:
        model: Network mapping ``(N, *tasks.input_shape)`` to ``(N, tasks.n_outputs)``.
        tasks: The task sequence (inputs are moved to the model's dtype and device).
        budget: Per-task budget.
        lr: Learning rate (units of :mod:`ntkcheck.training.loops`).
        optimizer: ``"gd"``, ``"sgd"`` or ``"adam"`` (:func:`ntkcheck.training.loops.train`).
        loss: ``"mse"`` (targets :meth:`Task.train_targets`) or ``"cross_entropy"``.
        batch_size: Mini-batch size for ``"sgd"``/``"adam"`` (None: full batch).
        params: Parameter groups for the optimizer (e.g. :func:`ntkcheck.arch.param_groups`);
            all parameters at ``lr`` by default.
        seed: Seed of the mini-batch order (task ``i`` uses ``seed + i``).
        check_every: ``"step"``: :func:`ntkcheck.training.loops.train` (the full-batch loss,
            and with ``target_accuracy`` the training accuracy, before every step;
            :attr:`SequentialResult.losses` filled). ``"epoch"``: a plain mini-batch loop
            that evaluates the full training set only at epoch ends (the target accuracy is
            checked before the first epoch and after each; ``losses`` holds the full-batch
            loss at each check), the way practitioners train; needs ``batch_size``.

    Returns:
        A :class:`SequentialResult`.

    Raises:
        ValueError: If the model's output width is not ``tasks.n_outputs``, an unknown
            ``check_every`` (or ``"epoch"`` without ``batch_size``), or as
            :func:`ntkcheck.training.loops.train`.
        ntkcheck.training.loops.TrainingDiverged: If training diverges.

    """
    if check_every not in ("step", "epoch"):
        raise ValueError(f"check_every must be 'step' or 'epoch', got {check_every!r}")
    if check_every == "epoch" and (batch_size is None or optimizer == "gd"):
        raise ValueError("check_every='epoch' is the mini-batch loop: give batch_size= and "
                         "optimizer='sgd' or 'adam' (or use check_every='step')")
    ref = next(p for p in model.parameters())
    dtype, device = ref.dtype, ref.device

    def prep(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, dtype=dtype)

    with torch.no_grad():
        n_out = model(prep(tasks[0].x_train[:1])).shape[-1]
    if n_out != tasks.n_outputs:
        raise ValueError(f"the model has {n_out} outputs; the task sequence needs "
                         f"{tasks.n_outputs}")
    groups = list(params) if params is not None else None
    n_tasks = len(tasks)
    acc = np.full((n_tasks, n_tasks), np.nan)
    train_acc = np.full((n_tasks, n_tasks), np.nan)
    outputs: list[list[np.ndarray]] = []
    steps, reached, moved, losses = [], [], [], []
    views = [_view(model, t, tasks.n_outputs) for t in tasks]
    for i, task in enumerate(tasks):
        x = prep(task.x_train)
        y = prep(task.train_targets()) if loss == "mse" else task.y_train.to(device)
        n = int(x.shape[0])
        per_epoch = 1 if batch_size is None or batch_size >= n else math.ceil(n / batch_size)
        n_epochs = budget.epochs if budget.epochs is not None else budget.max_epochs
        before = _flat_params(model)
        if check_every == "epoch":
            result = _train_epochs(views[i], x, y, lr=lr, epochs=n_epochs, optimizer=optimizer,
                                   loss=loss, batch_size=int(batch_size), params=groups,
                                   target_accuracy=budget.target_accuracy, seed=seed + i)
        else:
            result = train(views[i], x, y, lr=lr, steps=n_epochs * per_epoch,
                           optimizer=optimizer, loss=loss, batch_size=batch_size,
                           params=groups, target_accuracy=budget.target_accuracy,
                           seed=seed + i)
        moved.append(float(torch.linalg.vector_norm(_flat_params(model) - before)))
        steps.append(result.steps)
        reached.append(result.reached)
        losses.append(result.losses)
        row = []
        with torch.no_grad():
            for j, (other, view) in enumerate(zip(tasks, views)):
                out_tr = view(prep(other.x_train))
                train_acc[i, j] = accuracy(out_tr, other.y_train.to(device))
                acc[i, j] = accuracy(view(prep(other.x_test)), other.y_test.to(device))
                row.append(out_tr.detach().cpu().to(torch.float64).numpy())
        outputs.append(row)
    return SequentialResult(accuracy=acc, train_accuracy=train_acc, train_outputs=outputs,
                            steps=steps, reached=reached, displacement=moved, lr=float(lr),
                            budget=budget, losses=losses)
