"""Forgetting in the kernel regime: the NTK-overlap prediction and the principal-angle bound.

Setting (Doan et al. 2021, "A theoretical analysis of catastrophic forgetting through the NTK
overlap matrix", AISTATS, Sec. 3-4; Bennani et al. 2020, "Generalisation guarantees for
continual learning with orthogonal gradient descent", Sec. 3): the linearized network
``f_lin(x; theta) = f(x; theta_0) + J(x)(theta - theta_0)`` (Lee et al. 2019, eq. 5; see
:mod:`ntkcheck.kernel_regime.linearize`) is trained on tasks ``0..T-1`` in turn by full-batch
gradient
descent on the squared loss ``1/(2N_t) sum_i ||f_head(x_i) - y_i||^2`` of task ``t``
(:mod:`ntkcheck.training.loops` units). Index the *rows* ``(i, c)`` of task ``t`` by its training
inputs
``i`` and its head's output units ``c``, and let ``J_t`` be the ``(N_t C_t, P)`` Jacobian of
those rows at ``theta_0`` and ``G = J J^T`` the empirical NTK between all rows
(:func:`task_ntk`).

Prediction (exact for the linearized model). Every step on task ``t`` moves the parameters by
``-(lr/N_t) J_t^T r_s`` with ``r_s`` the residual on its rows, so ``r_{s+1} = (I - A) r_s``
with ``A = (lr/N_t) G_tt``, and after ``S`` steps every row ``x`` moves by::

    f(x) <- f(x) - (lr/N_t) G(x, t) c,   c = sum_{s<S} (I - A)^s r_0 = V g(a) V^T r_0,

where ``A = V diag(a) V^T`` and ``g(a) = (1 - (1 - a)^S) / a`` (``S`` at ``a = 0``): the
discrete-time form of Lee et al. 2019, eq. 9 (Doan et al. 2021, Thm. 1 is its converged limit
``c = A^-1 r_0``, the minimum-norm update). The parameter update of task ``t`` is
``delta_t = -(lr/N_t) J_t^T c``, of norm ``(lr/N_t) sqrt(c^T G_tt c)``
(:func:`predict_sequential_gd`).

NTK overlap and principal angles. With ``J_k = U_k S_k V_k^T`` (thin SVD), Doan et al.'s NTK
overlap matrix ``O_{k,t} = V_k^T V_t`` (Sec. 4) has the cosines of the principal angles
between the tasks' NTK feature subspaces ``row(J_k)`` and ``row(J_t)`` as singular values
(Bjorck & Golub 1973). Both are computed from ``G`` alone: ``O = S_k^-1 U_k^T G_kt U_t S_t^-1``
(:func:`ntk_overlap_matrix`), and :func:`principal_angles` applies
``scipy.linalg.subspace_angles`` to a factor ``Phi`` of ``G = Phi Phi^T``, whose rows are
isometric to the rows of ``J``.

Bound. ``delta_t`` lies in ``row(J_t)`` and ``J_k = J_k P_k``, so the drift of task ``k``'s
outputs while task ``t`` trains obeys ``||J_k delta_t|| <= ||J_k||_2 cos(theta_1(k, t))
||delta_t||`` with ``theta_1`` the smallest principal angle (``||P_k P_t||_2 = cos theta_1``;
Doan et al. 2021, Sec. 4: forgetting is governed by ``||S_k O_{k,t}||``). Summing over the
later tasks gives :func:`forgetting_bound` for ``||f_{T-1}(X_k) - f_k(X_k)||``. It is exact
for the linearized model and holds for a network to the extent it trains in the kernel regime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch
from torch import nn

from ntkcheck.continual.tasks import TaskSequence
from ntkcheck.kernels import empirical_ntk

__all__ = ["TaskNTK", "SequentialPrediction", "task_ntk", "predict_sequential_gd",
           "principal_angles", "ntk_overlap_matrix", "forgetting_bound", "drift_norms"]

#: Eigenvalues of a Gram matrix below this fraction of the largest are treated as zero.
RTOL = 1e-10


@dataclass(frozen=True)
class TaskNTK:
    """The empirical NTK between the rows (input, head unit) of all tasks' training data.

    Attributes:
        gram: ``(R, R)`` float64 ``G = J J^T``, ``R = sum_t N_t C_t``; task ``t``'s rows are
            ``blocks[t]``, ordered input-major (row ``i * C_t + c``).
        blocks: Row range of each task.
        f0: ``(R,)`` float64 outputs of the network at ``theta_0`` on the rows.
        targets: ``(R,)`` float64 squared-loss targets (one-hot over the head minus ``1/C``).
        n_points: ``N_t`` per task.
        n_classes: ``C_t`` per task.

    """

    gram: np.ndarray
    blocks: tuple[slice, ...]
    f0: np.ndarray
    targets: np.ndarray
    n_points: tuple[int, ...]
    n_classes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.blocks)

    def block(self, k: int, t: int) -> np.ndarray:
        """``G_kt``, the ``(N_k C_k, N_t C_t)`` block between tasks ``k`` and ``t``."""
        return self.gram[self.blocks[k], self.blocks[t]]

    def per_task(self, rows: np.ndarray) -> list[np.ndarray]:
        """Split a ``(R,)`` vector into per-task ``(N_t, C_t)`` arrays."""
        return [rows[b].reshape(n, c) for b, n, c in zip(self.blocks, self.n_points,
                                                         self.n_classes)]

    @cached_property
    def factor(self) -> np.ndarray:
        """``Phi`` with ``Phi Phi^T = G`` up to eigenvalues below ``RTOL`` times the largest.

        ``(R, r)``: ``V diag(sqrt(lam))`` from ``scipy.linalg.eigh(G)``; its rows have the
        inner products of the rows of ``J`` (an isometric image of the NTK features).
        """
        lam, vec = scipy.linalg.eigh(self.gram)
        keep = lam > RTOL * max(float(lam[-1]), 0.0)
        return vec[:, keep] * np.sqrt(lam[keep])


def task_ntk(model: nn.Module, tasks: TaskSequence, *, implementation: str = "auto",
             batch_size: int | None = None) -> TaskNTK:
    """The empirical NTK of ``model`` at its current parameters on all tasks' training data.

    Computes :func:`ntkcheck.kernels.empirical_ntk` with ``output="full"`` on the
    concatenated training inputs and keeps, for each task, the rows of its head's units.

    Args:
        model: Network with ``tasks.n_outputs`` outputs (in eval mode; float64 recommended).
        tasks: The task sequence.
        implementation: Passed to :func:`ntkcheck.kernels.empirical_ntk`.
        batch_size: Passed to :func:`ntkcheck.kernels.empirical_ntk`.

    Returns:
        A :class:`TaskNTK` in float64.

    Raises:
        ValueError: As :func:`ntkcheck.kernels.empirical_ntk`.
        ntkcheck.kernels.KernelMemoryError: If the full kernel does not fit in memory.

    """
    ref = next(p for p in model.parameters())
    x = torch.cat([t.x_train for t in tasks]).to(device=ref.device, dtype=ref.dtype)
    kernel = empirical_ntk(model, x, output="full", implementation=implementation,
                           batch_size=batch_size)
    points, units, blocks, targets = [], [], [], []
    start = offset = 0
    for t in tasks:
        n, c = len(t.x_train), t.n_classes
        points.append(np.repeat(np.arange(offset, offset + n), c))
        units.append(np.tile(np.asarray(t.head), n))
        blocks.append(slice(start, start + n * c))
        targets.append(t.train_targets().detach().cpu().to(torch.float64).numpy().reshape(-1))
        start += n * c
        offset += n
    p = torch.as_tensor(np.concatenate(points), device=kernel.device)
    u = torch.as_tensor(np.concatenate(units), device=kernel.device)
    gram = kernel[p[:, None], p[None, :], u[:, None], u[None, :]]
    with torch.no_grad():
        f0 = model(x)[p, u]
    as_np = lambda a: a.detach().cpu().to(torch.float64).numpy()  # noqa: E731
    gram = as_np(gram)
    return TaskNTK(gram=(gram + gram.T) / 2, blocks=tuple(blocks), f0=as_np(f0),
                   targets=np.concatenate(targets),
                   n_points=tuple(len(t.x_train) for t in tasks),
                   n_classes=tuple(t.n_classes for t in tasks))


class SequentialPrediction(NamedTuple):
    """The linearized model's trajectory over a task sequence (:func:`predict_sequential_gd`).

    Attributes:
        outputs: ``(T, R)`` float64 outputs on every row after training each task.
        displacement: ``(T,)`` float64 ``||theta_t - theta_{t-1}||_2`` of each task's update.

    """

    outputs: np.ndarray
    displacement: np.ndarray

    def task_outputs(self, ntk: TaskNTK) -> list[list[np.ndarray]]:
        """Per stage and task: ``[i][k]`` is task ``k``'s ``(N_k, C_k)`` outputs after task ``i``.

        The input of :func:`ntkcheck.continual.forgetting.output_forgetting`.
        """
        return [ntk.per_task(row) for row in self.outputs]


def _gd_filter(a: np.ndarray, steps: int) -> np.ndarray:
    """``g(a) = sum_{s<S} (1 - a)^s = (1 - (1 - a)^S) / a``, stably (``S`` at ``a = 0``)."""
    a = np.asarray(a, dtype=np.float64)
    out = np.full(a.shape, float(steps))
    small = np.abs(a) < 0.5
    nz = small & (a != 0)
    out[nz] = -np.expm1(steps * np.log1p(-a[nz])) / a[nz]
    big = ~small
    out[big] = (1.0 - np.power(1.0 - a[big], steps)) / a[big]
    return out


def predict_sequential_gd(ntk: TaskNTK, *, lr: float, steps: int | Sequence[int]
                          ) -> SequentialPrediction:
    """The linearized network after full-batch GD on each task in turn (module docstring).

    Exact for the linearized model (and for any model linear in its parameters) trained with
    :func:`ntkcheck.continual.sequential.train_sequentially` (``optimizer="gd"``,
    ``loss="mse"``), up to float64 round-off.

    Args:
        ntk: The NTK at ``theta_0`` (:func:`task_ntk`).
        lr: Learning rate (units of :mod:`ntkcheck.training.loops`).
        steps: GD steps per task: one int for every task, or one per task (e.g. the steps a
            network took to reach a target accuracy).

    Returns:
        A :class:`SequentialPrediction`.

    Raises:
        ValueError: A non-positive ``lr``, negative steps, or a steps list of the wrong
            length.

    """
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be positive, got {lr!r}")
    per_task = [int(steps)] * len(ntk) if np.ndim(steps) == 0 else [int(s) for s in steps]
    if len(per_task) != len(ntk) or min(per_task) < 0:
        raise ValueError(f"steps must be one non-negative int or {len(ntk)} of them")
    f = ntk.f0.copy()
    outputs, moved = [], []
    for b, n, s in zip(ntk.blocks, ntk.n_points, per_task):
        g_tt = ntk.gram[b, b]
        a, v = scipy.linalg.eigh((lr / n) * g_tt)
        c = v @ (_gd_filter(a, s) * (v.T @ (f[b] - ntk.targets[b])))
        f = f - (lr / n) * (ntk.gram[:, b] @ c)
        moved.append((lr / n) * math.sqrt(max(float(c @ g_tt @ c), 0.0)))
        outputs.append(f.copy())
    return SequentialPrediction(np.stack(outputs), np.asarray(moved))


def _check_pair(ntk: TaskNTK, k: int, t: int) -> None:
    if not (0 <= k < len(ntk) and 0 <= t < len(ntk)):
        raise ValueError(f"task indices must be in 0..{len(ntk) - 1}, got {k}, {t}")


def principal_angles(ntk: TaskNTK, k: int, t: int) -> np.ndarray:
    """Principal angles between the NTK feature subspaces ``row(J_k)`` and ``row(J_t)``.

    ``scipy.linalg.subspace_angles`` of the columns of ``Phi_k^T`` and ``Phi_t^T``
    (:attr:`TaskNTK.factor`). Source: module docstring (Doan et al. 2021, Sec. 4).

    Returns:
        Angles in radians, ascending (``theta_1`` first), ``min(rank_k, rank_t)`` of them.

    Raises:
        ValueError: Task indices out of range.

    """
    _check_pair(ntk, k, t)
    phi = ntk.factor
    return np.sort(scipy.linalg.subspace_angles(phi[ntk.blocks[k]].T, phi[ntk.blocks[t]].T))


def _svd_from_gram(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lam, u = scipy.linalg.eigh(g)
    keep = lam > RTOL * max(float(lam[-1]), 0.0)
    return u[:, keep], np.sqrt(lam[keep])


def ntk_overlap_matrix(ntk: TaskNTK, k: int, t: int) -> np.ndarray:
    """Doan et al. 2021's NTK overlap matrix ``O_{k,t} = V_k^T V_t`` (Sec. 4).

    Computed as ``S_k^-1 U_k^T G_kt U_t S_t^-1`` from the eigendecompositions
    ``G_kk = U_k S_k^2 U_k^T`` (eigenvalues below ``RTOL`` times the largest dropped). Its
    singular values are the cosines of :func:`principal_angles`.

    Returns:
        ``(rank_k, rank_t)`` float64.

    Raises:
        ValueError: Task indices out of range.

    """
    _check_pair(ntk, k, t)
    u_k, s_k = _svd_from_gram(ntk.block(k, k))
    u_t, s_t = _svd_from_gram(ntk.block(t, t))
    return (u_k.T @ ntk.block(k, t) @ u_t) / s_k[:, None] / s_t[None, :]


def forgetting_bound(ntk: TaskNTK, displacement: Sequence[float]) -> np.ndarray:
    """Upper bound on each earlier task's output drift from the principal angles.

    ``B_k = ||J_k||_2 sum_{t=k+1}^{T-1} cos(theta_1(k, t)) ||delta_t||`` bounds
    ``||f_{T-1}(X_k) - f_k(X_k)||_F`` over task ``k``'s rows (module docstring), with
    ``||J_k||_2 = sqrt(lambda_max(G_kk))``. The function-space forgetting
    (:func:`ntkcheck.continual.forgetting.output_forgetting`) is then at most ``B_k^2 / N_k``.

    Args:
        ntk: The NTK at ``theta_0``.
        displacement: ``||delta_t||`` per task, ``(T,)``: from
            :func:`predict_sequential_gd` (the bound is then exact) or a network's measured
            update (:attr:`ntkcheck.continual.sequential.SequentialResult.displacement`).

    Returns:
        ``(T - 1,)`` float64 bounds.

    Raises:
        ValueError: A displacement of the wrong length or a negative one.

    """
    d = np.asarray(displacement, dtype=np.float64)
    if d.shape != (len(ntk),) or np.any(d < 0) or not np.all(np.isfinite(d)):
        raise ValueError(f"displacement must be {len(ntk)} non-negative finite norms")
    out = np.empty(len(ntk) - 1)
    for k in range(len(ntk) - 1):
        norm_k = math.sqrt(max(float(scipy.linalg.eigvalsh(ntk.block(k, k))[-1]), 0.0))
        cos1 = [math.cos(float(principal_angles(ntk, k, t)[0])) for t in range(k + 1, len(ntk))]
        out[k] = norm_k * float(np.dot(cos1, d[k + 1:]))
    return out


def drift_norms(outputs: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """``||f_{T-1}(X_k) - f_k(X_k)||_F`` per earlier task, from ``outputs[i][k]`` ``(N_k, C_k)``.

    Returns:
        ``(T - 1,)`` float64 (the quantity :func:`forgetting_bound` bounds).

    """
    t = len(outputs)
    return np.asarray([float(np.linalg.norm(np.asarray(outputs[t - 1][k])
                                            - np.asarray(outputs[k][k])))
                       for k in range(t - 1)])
