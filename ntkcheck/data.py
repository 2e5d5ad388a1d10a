"""Data sets for claims: real data shipped with scikit-learn, a synthetic toy, and user files.

Every loader returns a :class:`Dataset` of float tensors that has passed :func:`check_data`, so
a claim never trains on NaNs, empty arrays or mismatched inputs and targets. Nothing is
downloaded: scikit-learn ships ``digits``, ``iris``, ``wine``, ``breast_cancer`` and
``diabetes`` inside the package.

Preprocessing (stated because kernels depend on it): features are standardized to zero mean and
unit variance over the full data set (constant features become 0), so that ``||x||^2 / d`` is
about 1 and ``x . x' / d`` -- the first-layer NNGP kernel of an NTK-parametrized network
(Lee et al. 2019, eq. 4) -- is O(1). Regression targets are standardized. Subsets are drawn
with a seeded permutation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["Dataset", "DataError", "DATASETS", "load_dataset", "check_data", "check_arch_input",
           "check_loss_targets"]


class DataError(ValueError):
    """Raised when a data set cannot be used as it is; the message says how to fix it."""


@dataclass(frozen=True)
class Dataset:
    """A supervised data set as tensors.

    Attributes:
        name: Name used in records and error messages.
        x: Inputs, shape ``(N, *input_shape)``, floating dtype.
        y: Targets: ``(N,)`` int64 class labels for classification, ``(N,)`` float for
            regression.
        task: ``"classification"`` or ``"regression"``.
        input_shape: Shape of one input, e.g. ``(1, 8, 8)`` for digits images.
        n_classes: Number of classes (0 for regression).

    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    task: str
    input_shape: tuple[int, ...]
    n_classes: int

    def __post_init__(self) -> None:
        check_data(self.name, self.x, self.y, self.task)
        if tuple(self.x.shape[1:]) != tuple(self.input_shape):
            raise DataError(
                f"data set {self.name!r}: inputs have shape {tuple(self.x.shape[1:])} per "
                f"example but input_shape is {tuple(self.input_shape)}; make them agree"
            )
        if self.task == "classification" and int(self.y.max()) >= self.n_classes:
            raise DataError(
                f"data set {self.name!r}: label {int(self.y.max())} is out of range for "
                f"n_classes={self.n_classes}; labels must be 0..n_classes-1"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def check_arch(self, spec: object) -> None:
        """Raise :class:`DataError` if ``spec`` cannot take these inputs.

        See :func:`check_arch_input`.
        """
        check_arch_input(self.name, self.input_shape, spec)

    def regression_targets(self) -> torch.Tensor:
        """Scalar regression targets, shape ``(N, 1)``, dtype of ``x``.

        For regression, the standardized targets. For classification, the standardized class
        index (a scalar proxy used for scalar-output NTK claims); use :meth:`one_hot` for the
        one-hot regression of the NTK literature.
        """
        y = self.y.to(self.x.dtype)
        if self.task == "classification":
            y = (y - y.mean()) / y.std().clamp_min(1e-12)
        return y.reshape(-1, 1)

    def one_hot(self) -> torch.Tensor:
        """One-hot targets minus 1/C, shape ``(N, C)`` (Lee et al. 2019, Sec. 3), dtype of x."""
        if self.task != "classification":
            raise DataError(f"{self.name} is a regression data set; it has no one-hot targets")
        eye = torch.nn.functional.one_hot(self.y, self.n_classes).to(self.x.dtype)
        return eye - 1.0 / self.n_classes

    def head(self, n: int) -> Dataset:
        """The first ``n`` examples (all of them when ``n >= len(self)``).

        Raises:
            DataError: If ``n`` is not a positive integer.

        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DataError(f"{self.name}: head(n) needs a positive integer n, got {n!r}")
        return self if n >= len(self) else self.split(n)[0]

    def split(self, n_train: int) -> tuple[Dataset, Dataset]:
        """The first ``n_train`` examples and the rest, as two data sets."""
        if not 0 < n_train < len(self):
            raise DataError(f"{self.name}: cannot split {len(self)} examples at {n_train}")
        a = Dataset(self.name, self.x[:n_train], self.y[:n_train], self.task,
                    self.input_shape, self.n_classes)
        b = Dataset(self.name, self.x[n_train:], self.y[n_train:], self.task,
                    self.input_shape, self.n_classes)
        return a, b


def _as_numpy(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        t = a.detach()
        if t.dtype == torch.bfloat16:  # NumPy has no bfloat16
            t = t.float()
        return t.cpu().numpy()
    return np.asarray(a)


def _kind(arr: np.ndarray) -> str:
    """``"float"``, ``"int"``, ``"bool"``, ``"complex"`` or ``"other"`` (strings, objects)."""
    if arr.dtype == np.bool_:
        return "bool"
    for kind, base in (("float", np.floating), ("int", np.integer),
                       ("complex", np.complexfloating)):
        if np.issubdtype(arr.dtype, base):
            return kind
    return "other"


def check_data(name: str, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
               task: str) -> None:
    """Raise :class:`DataError` if ``x`` and ``y`` cannot be used by a claim.

    Checks, in order: a known task; inputs with a batch dimension; non-empty; the same number
    of inputs and targets; floating-point inputs (not integers, booleans, complex numbers or
    strings); numeric targets; no NaN or Inf in inputs or targets; for classification, one
    integer label ``0..C-1`` per example (not one-hot rows); for regression, targets of shape
    ``(N,)`` or ``(N, K)``.

    Args:
        name: Name of the data set, used in messages.
        x: Inputs, ``(N, ...)``, NumPy array or tensor (any device).
        y: Targets, ``(N,)`` or ``(N, K)``.
        task: ``"classification"`` or ``"regression"``.

    Raises:
        DataError: naming the data set, the problem and the fix.

    """
    if task not in ("classification", "regression"):
        raise DataError(
            f"data set {name!r}: task must be 'classification' or 'regression', got {task!r}"
        )
    xa, ya = _as_numpy(x), _as_numpy(y)
    if xa.ndim == 0 or ya.ndim == 0:
        raise DataError(
            f"data set {name!r}: inputs and targets need a first (batch) dimension, got "
            f"shapes {xa.shape} and {ya.shape}; pass one row per example"
        )
    if xa.shape[0] == 0 or xa.size == 0:
        raise DataError(f"data set {name!r} is empty: pass at least one example")
    if xa.shape[0] != ya.shape[0]:
        raise DataError(
            f"data set {name!r}: {xa.shape[0]} inputs but {ya.shape[0]} targets; "
            "inputs and targets must have the same first dimension"
        )
    if _kind(xa) != "float":
        raise DataError(
            f"data set {name!r}: inputs have dtype {xa.dtype}; convert them to float "
            "(e.g. x.astype('float64')) and scale them before use"
        )
    if _kind(ya) not in ("float", "int"):
        raise DataError(
            f"data set {name!r}: targets have dtype {ya.dtype}; pass numbers (integer class "
            "labels for classification, floats for regression)"
        )
    for what, arr in (("inputs", xa), ("targets", ya)):
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise DataError(
                f"data set {name!r}: {bad} non-finite value(s) (NaN or Inf) in the {what}; "
                "drop or impute them before running claims"
            )
    if task == "classification":
        if _kind(ya) != "int":
            raise DataError(
                f"data set {name!r}: classification targets have dtype {ya.dtype}; "
                "pass integer class labels 0..C-1"
            )
        if ya.ndim != 1:
            raise DataError(
                f"data set {name!r}: classification targets have shape {ya.shape}; pass one "
                "integer label per example, shape (N,) (for one-hot rows use y.argmax(1))"
            )
        if ya.min() < 0:
            raise DataError(
                f"data set {name!r}: class labels must be 0..C-1, got {int(ya.min())}; "
                "relabel the classes (e.g. np.unique(y, return_inverse=True)[1])"
            )
    elif ya.ndim > 2:
        raise DataError(
            f"data set {name!r}: regression targets have shape {ya.shape}; pass (N,) or (N, K)"
        )


def check_loss_targets(name: str, y: torch.Tensor, n_outputs: int, loss: str = "mse") -> None:
    """Raise :class:`DataError` if ``y`` is the wrong kind of target for ``loss``.

    Args:
        name: Name of the data set, used in messages.
        y: Targets passed to the loss.
        n_outputs: Outputs per example of the network (``out_features``).
        loss: ``"mse"`` (:func:`ntkcheck.training.loops.mse_loss`: float targets of exactly the
            output's shape ``(N, n_outputs)``; ``(N,)`` would silently broadcast against
            ``(N, 1)`` outputs to ``(N, N)``) or ``"cross_entropy"`` (integer labels ``(N,)``
            in ``0..n_outputs-1``).

    Raises:
        DataError: naming the data set, the problem and the fix; ``ValueError`` on an
            unknown ``loss``.

    """
    if loss == "mse":
        if not y.dtype.is_floating_point:
            raise DataError(
                f"data set {name!r}: the squared-error loss needs float targets, got {y.dtype} "
                "(class labels?); use dataset.regression_targets() or dataset.one_hot()"
            )
        if y.dim() != 2 or y.shape[1] != n_outputs:
            raise DataError(
                f"data set {name!r}: targets of shape {tuple(y.shape)} do not match the "
                f"network's outputs (N, {n_outputs}) and would broadcast in the loss; use "
                f"y.reshape(-1, {n_outputs}) or dataset.regression_targets()"
            )
    elif loss == "cross_entropy":
        if y.dtype.is_floating_point or y.dim() != 1:
            raise DataError(
                f"data set {name!r}: cross-entropy needs integer labels of shape (N,), got "
                f"{y.dtype} {tuple(y.shape)}; use dataset.y of a classification data set"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_outputs):
            raise DataError(
                f"data set {name!r}: labels must lie in 0..{n_outputs - 1} for a network "
                f"with {n_outputs} outputs, got {int(y.min())}..{int(y.max())}"
            )
    else:
        raise ValueError(f"unknown loss {loss!r}; choose 'mse' or 'cross_entropy'")


def check_arch_input(name: str, input_shape: tuple[int, ...], spec: object) -> None:
    """Raise :class:`DataError` if an architecture cannot take this data set's inputs.

    Args:
        name: Name of the data set, used in messages.
        input_shape: Shape of one input, e.g. ``(1, 8, 8)``.
        spec: An :class:`ntkcheck.arch.ArchSpec`.

    Raises:
        DataError: When an image family (``cnn``, ``resnet``) gets inputs that are not
            ``(C, H, W)``, or pooled images smaller than ``2**depth``; the message names the
            data set and suggests an image data set (digits) or an ``mlp``.

    """
    shape = tuple(int(s) for s in input_shape)
    if getattr(spec, "input_kind", "vector") != "image":
        return
    arch = getattr(spec, "arch_id", repr(spec))
    if len(shape) != 3:
        raise DataError(
            f"data set {name!r} has inputs of shape {shape}, but {arch} takes images "
            "(C, H, W); use an image data set such as 'digits' (1, 8, 8) or an 'mlp' family"
        )
    depth = int(getattr(spec, "depth", 0))
    if getattr(spec, "pool", False) and min(shape[1:]) < 2**depth:
        raise DataError(
            f"data set {name!r} has {shape[1]}x{shape[2]} images, but {arch} pools {depth} "
            f"times and needs at least {2**depth}x{2**depth}; use pool=False or a smaller depth"
        )


def _sklearn(loader: str, task: str, input_shape: tuple[int, ...] | None = None
             ) -> Callable[[], tuple[np.ndarray, np.ndarray, str, tuple[int, ...]]]:
    def load() -> tuple[np.ndarray, np.ndarray, str, tuple[int, ...]]:
        import sklearn.datasets

        x, y = getattr(sklearn.datasets, loader)(return_X_y=True)
        return x.astype(np.float64), y, task, input_shape or (x.shape[1],)

    return load


def _sine1d() -> tuple[np.ndarray, np.ndarray, str, tuple[int, ...]]:
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-3, 3, size=256))[:, None]
    y = np.sin(x[:, 0]) + 0.1 * rng.standard_normal(256)
    return x, y, "regression", (1,)


#: Names accepted by :func:`load_dataset` and what loads them.
DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray, str, tuple[int, ...]]]] = {
    "digits": _sklearn("load_digits", "classification", (1, 8, 8)),
    "iris": _sklearn("load_iris", "classification"),
    "wine": _sklearn("load_wine", "classification"),
    "breast_cancer": _sklearn("load_breast_cancer", "classification"),
    "diabetes": _sklearn("load_diabetes", "regression"),
    "sine1d": _sine1d,
}


def load_dataset(
    name: str,
    *,
    n: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> Dataset:
    """Load a shipped data set (or a user ``.npz`` file with arrays ``x`` and ``y``).

    Args:
        name: A key of :data:`DATASETS`, or a path ending in ``.npz`` (classification when
            ``y`` is an integer array, regression otherwise).
        n: Number of examples to keep (a seeded random subset); all when None.
        seed: Seed of the subset permutation.
        dtype: Floating dtype of the inputs (and regression targets).
        device: Device of the tensors.

    Returns:
        A :class:`Dataset`, preprocessed as the module docstring states.

    Raises:
        DataError: Unknown name, ``n`` out of range, or data that fails :func:`check_data`.

    """
    if str(name).endswith(".npz"):
        path = Path(name)
        if not path.is_file():
            raise DataError(f"data file {str(path)!r} does not exist")
        with np.load(path) as f:
            if "x" not in f or "y" not in f:
                raise DataError(f"{path}: an .npz data file needs arrays named 'x' and 'y'")
            x_raw, y_raw = f["x"], f["y"]
        task = "classification" if np.issubdtype(y_raw.dtype, np.integer) else "regression"
        shape = tuple(x_raw.shape[1:])
    elif name in DATASETS:
        x_raw, y_raw, task, shape = DATASETS[name]()
    else:
        raise DataError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)} or a .npz")
    check_data(str(name), x_raw, y_raw, task)
    x = x_raw.reshape(len(x_raw), -1).astype(np.float64)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    if task == "regression":
        y = (y_raw - y_raw.mean()) / (y_raw.std() or 1.0)
        n_classes = 0
    else:
        y = y_raw.astype(np.int64)
        n_classes = int(y.max()) + 1
    if n is not None:
        if not 0 < n <= len(x):
            raise DataError(f"data set {name!r} has {len(x)} examples; n={n} is out of range")
        idx = np.random.default_rng(seed).permutation(len(x))[:n]
        x, y = x[idx], y[idx]
    ydtype = torch.int64 if task == "classification" else dtype
    return Dataset(
        name=str(name) if not str(name).endswith(".npz") else Path(name).stem,
        x=torch.as_tensor(x.reshape(len(x), *shape), dtype=dtype, device=device),
        y=torch.as_tensor(y, dtype=ydtype, device=device),
        task=task,
        input_shape=tuple(int(s) for s in shape),
        n_classes=n_classes,
    )
