"""Continual-learning metrics: the accuracy matrix, average accuracy and average forgetting.

The accuracy matrix of a run over ``T`` tasks is ``a[i][j]``, the accuracy on (the test set
of) task ``j`` after training on tasks ``0..i`` (Lopez-Paz & Ranzato 2017, "Gradient episodic
memory for continual learning", Sec. 5, the matrix ``R``). Chaudhry et al. 2018 ("Riemannian
walk for incremental learning", Sec. 4, "Forgetting measure"), in 0-based indices with
``k = T - 1`` the last task:

* forgetting of task ``j < T - 1``: ``f_j = max_{l in 0..T-2} a[l][j] - a[T-1][j]``, the
  best accuracy on ``j`` at any earlier point minus its final accuracy. It is negative when
  the final accuracy is the best so far (backward transfer); entries above the diagonal
  (accuracy before ``j`` was trained) take part in the maximum as in the formula -- write NaN
  there to leave them out.
* average forgetting: ``F = 1/(T-1) sum_{j=0}^{T-2} f_j`` -- the mean over the ``T - 1``
  earlier tasks, not over all ``T`` (the last task cannot have been forgotten).
* average accuracy: ``A = 1/T sum_j a[T-1][j]``, the final row's mean.

For 2 tasks, ``F = a[0][0] - a[1][0]``.

Function-space forgetting (Doan et al. 2021, "A theoretical analysis of catastrophic
forgetting through the NTK overlap matrix", Sec. 3, Def. 1): the drift of the outputs on an
earlier task's training inputs, ``Delta_k = 1/N_k sum_{x in X_k} ||f_{T-1}(x) - f_k(x)||^2``
(Doan et al. sum over ``x``; the mean here makes tasks of different sizes comparable), where
``f_k`` is the network right after task ``k``; :func:`output_forgetting`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["check_accuracy_matrix", "average_accuracy", "task_forgetting",
           "average_forgetting", "output_forgetting"]


def check_accuracy_matrix(acc: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Validate an accuracy matrix and return it as a float64 array.

    Args:
        acc: ``(T, T)`` accuracies ``a[i][j]`` in [0, 1]; entries above the diagonal may be
            NaN (not evaluated), the rest must be finite.

    Returns:
        The ``(T, T)`` float64 array.

    Raises:
        ValueError: If ``acc`` is not square and non-empty, has non-finite entries on or below
            the diagonal, or values outside [0, 1].

    """
    a = np.asarray(acc, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"the accuracy matrix must be square (T, T) with T >= 1, got shape "
                         f"{a.shape}")
    lower = np.tril(np.ones(a.shape, dtype=bool))
    if not np.all(np.isfinite(a[lower])):
        raise ValueError("the accuracy matrix needs finite entries on and below the diagonal "
                         "(a[i][j] for j <= i); only entries above it may be NaN")
    seen = a[np.isfinite(a)]
    if np.any(seen < 0) or np.any(seen > 1):
        raise ValueError("accuracies must lie in [0, 1]")
    return a


def average_accuracy(acc: Sequence[Sequence[float]] | np.ndarray) -> float:
    """``A = 1/T sum_j a[T-1][j]``, the mean final accuracy over all tasks (Chaudhry 2018).

    Raises:
        ValueError: As :func:`check_accuracy_matrix`, or a NaN in the last row.

    """
    a = check_accuracy_matrix(acc)
    return float(a[-1].mean())


def task_forgetting(acc: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Forgetting of each earlier task, ``f_j = max_{l <= T-2} a[l][j] - a[T-1][j]``.

    Chaudhry et al. 2018, Sec. 4 (module docstring); NaN entries are left out of the maximum.

    Returns:
        ``(T - 1,)`` float64, one value per task ``j = 0..T-2`` (empty for ``T = 1``); may be
        negative.

    Raises:
        ValueError: As :func:`check_accuracy_matrix`.

    """
    a = check_accuracy_matrix(acc)
    t = a.shape[0]
    out = np.empty(t - 1)
    for j in range(t - 1):
        out[j] = np.nanmax(a[: t - 1, j]) - a[t - 1, j]  # a[j][j] is finite: never all-NaN
    return out


def average_forgetting(acc: Sequence[Sequence[float]] | np.ndarray) -> float:
    """``F = 1/(T-1) sum_{j<T-1} f_j``, the average forgetting (Chaudhry et al. 2018, Sec. 4).

    Args:
        acc: ``(T, T)`` accuracy matrix, ``T >= 2``.

    Returns:
        A float in [-1, 1] (negative: the earlier tasks improved on average).

    Raises:
        ValueError: For ``T < 2`` (nothing can be forgotten) or as
            :func:`check_accuracy_matrix`.

    """
    f = task_forgetting(acc)
    if f.size == 0:
        raise ValueError("average forgetting needs at least 2 tasks")
    return float(f.mean())


def output_forgetting(outputs: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """Function-space forgetting of each earlier task (Doan et al. 2021, Def. 1; module doc).

    Args:
        outputs: ``outputs[i][k]``, the ``(N_k, C_k)`` outputs of task ``k``'s head on its
            training inputs after training task ``i`` (``T x T`` nested; only ``[k][k]`` and
            ``[T-1][k]`` are read, other entries may be None).

    Returns:
        ``(T - 1,)`` float64: ``Delta_k = mean_x ||f_{T-1}(x) - f_k(x)||^2`` for
        ``k = 0..T-2``.

    Raises:
        ValueError: Fewer than 2 stages or mismatched shapes.

    """
    t = len(outputs)
    if t < 2:
        raise ValueError("function-space forgetting needs at least 2 tasks")
    out = np.empty(t - 1)
    for k in range(t - 1):
        own = np.asarray(outputs[k][k], dtype=np.float64)
        last = np.asarray(outputs[t - 1][k], dtype=np.float64)
        if own.shape != last.shape or own.ndim != 2:
            raise ValueError(f"task {k}: outputs of shape {own.shape} and {last.shape}; "
                             "expected one (N_k, C_k) shape")
        out[k] = float(((last - own) ** 2).sum(axis=1).mean())
    return out
