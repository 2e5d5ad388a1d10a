"""Data sets for claims: shipped real data, MNIST-1D, a synthetic toy, and a user's files.

Every loader returns a :class:`Dataset` of float tensors that has passed :func:`check_data`, so
a claim never trains on NaNs, empty arrays or mismatched inputs and targets. Nothing is
downloaded:

* scikit-learn ships ``digits`` (all 1,797 8x8 images with ``n=None``), ``iris``, ``wine``,
  ``breast_cancer`` and ``diabetes`` inside the package;
* ``mnist1d`` (Greydanus 2020, "Scaling down deep learning", arXiv:2011.14439) is generated
  locally from the 1-d digit templates that the ``mnist1d`` package ships, with the paper's
  default arguments (5,000 sequences of length 40, seed 42; the first 4,000 are its training
  split), never its download;
* ``mnist``, ``fashion_mnist`` and ``cifar10`` are read from a folder the user already has
  (``root=``), in torchvision's layout (``root/MNIST/raw/*-ubyte[.gz]``,
  ``root/FashionMNIST/raw/...``, ``root/cifar-10-batches-py/``) or the files directly in
  ``root``, by parsing the formats with NumPy: the IDX files of LeCun et al. (1998) and the
  CIFAR-10 "python version" pickled batches (Krizhevsky 2009). torchvision is not imported.

Preprocessing (stated because kernels depend on it): features are standardized to zero mean and
unit variance over the full data set (constant features become 0), so that ``||x||^2 / d`` is
about 1 and ``x . x' / d`` -- the first-layer NNGP kernel of an NTK-parametrized network
(Lee et al. 2019, eq. 4) -- is O(1). Regression targets are standardized. Subsets are drawn
with a seeded permutation.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["Dataset", "DataError", "DATASETS", "FOLDER_DATASETS", "load_dataset", "check_data",
           "check_arch_input", "check_loss_targets", "read_idx", "read_cifar10"]


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


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise DataError("the 'mnist1d' data set needs the mnist1d package: pip install "
                        "mnist1d") from exc
    # make_dataset seeds Python's and NumPy's global generators: leave them as they were
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())  # from the shipped templates; no download
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return d["x"], d["y"], d["x_test"], d["y_test"]


def _mnist1d(split: str | None = None) -> tuple[np.ndarray, np.ndarray, str, tuple[int, ...]]:
    x, y, x_test, y_test = _mnist1d_arrays()
    if split == "train":
        return x, y, "classification", (x.shape[1],)
    if split == "test":
        return x_test, y_test, "classification", (x.shape[1],)
    return np.concatenate([x, x_test]), np.concatenate([y, y_test]), "classification", (
        x.shape[1],)


#: Names accepted by :func:`load_dataset` and what loads them.
DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray, str, tuple[int, ...]]]] = {
    "digits": _sklearn("load_digits", "classification", (1, 8, 8)),
    "iris": _sklearn("load_iris", "classification"),
    "wine": _sklearn("load_wine", "classification"),
    "breast_cancer": _sklearn("load_breast_cancer", "classification"),
    "diabetes": _sklearn("load_diabetes", "regression"),
    "sine1d": _sine1d,
    "mnist1d": _mnist1d,
}

#: IDX element types (LeCun et al. 1998, "THE IDX FILE FORMAT"): type code -> big-endian dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST / Fashion-MNIST format), optionally gzip-compressed.

    Format (LeCun et al. 1998, yann.lecun.com/exdb/mnist, "THE IDX FILE FORMAT"): two zero
    bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E
    float64), the number of dimensions ``k``, ``k`` big-endian uint32 sizes, then the data in
    row-major (C) order, big-endian.

    Args:
        path: An IDX file; a name ending in ``.gz`` is decompressed.

    Returns:
        An array of the file's shape, e.g. ``(60000, 28, 28)`` uint8 images or ``(60000,)``
        labels, in native byte order.

    Raises:
        DataError: If the file is not IDX (bad magic number, unknown type code) or is
            truncated / longer than its header says; the message names the file.

    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (its first bytes are {raw[:4]!r}; expected "
                        "0x00 0x00, a type code and the number of dimensions)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the "
                        f"file has {len(raw)} bytes; the file is truncated or corrupt, "
                        "download it again")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and NumPy arrays only (CIFAR-10's batches).

    So that a file in a user's folder cannot run code when it is loaded.
    """

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray",
                "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("_codecs", "encode")}  # how protocol 2 stores bytes written by Python 3

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def read_cifar10(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 "python version" batch (``data_batch_1`` ... ``test_batch``).

    Format (Krizhevsky 2009, www.cs.toronto.edu/~kriz/cifar.html): a pickled dict with
    ``b"data"``, an ``(n, 3072)`` uint8 array whose rows are the red, green and blue 32x32
    planes in row-major order, and ``b"labels"``, ``n`` integers 0..9. Only dicts, lists and
    NumPy arrays are unpickled (no code runs).

    Args:
        path: The batch file.

    Returns:
        ``(images, labels)``: ``(n, 3, 32, 32)`` uint8 and ``(n,)`` int64.

    Raises:
        DataError: If the file is not such a pickle, or ``data`` / ``labels`` are missing or
            of the wrong shape; the message names the file.

    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            batch = _ArrayUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError) as exc:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (a {type(batch).__name__}, "
                        "expected a dict with b'data' and b'labels')")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: a CIFAR-10 batch needs the keys b'data' and b'labels', got "
                        f"{sorted(map(str, batch))}")
    data, labels = np.asarray(data), np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise DataError(f"{path}: data has shape {data.shape} and labels {labels.shape}; a "
                        "CIFAR-10 batch has (n, 3072) data and n labels")
    return data.reshape(-1, 3, 32, 32), labels


#: Torchvision's folder (under ``root``) and file names of the IDX data sets, per split.
_IDX_SETS = {
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
}
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


def _find(root: Path, folders: tuple[str, ...], name: str) -> Path | None:
    for folder in folders:
        for candidate in (root / folder / name, root / folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _load_folder(name: str, root: str | Path | None, split: str | None
                 ) -> tuple[np.ndarray, np.ndarray, str, tuple[int, ...]]:
    if root is None:
        raise DataError(f"data set {name!r} is read from your own copy: pass root= the folder "
                        "that holds it (torchvision's root, e.g. load_dataset("
                        f"{name!r}, root='~/data')); nothing is downloaded")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"data set {name!r}: root {str(base)!r} is not a folder")
    splits = ("train", "test") if split == "all" else (split or "train",)
    xs, ys = [], []
    for part in splits:
        if name == "cifar10":
            folders = ("cifar-10-batches-py", ".")
            for file in _CIFAR_FILES[part]:
                found = _find(base, folders, file)
                if found is None:
                    raise DataError(f"data set 'cifar10' ({part}): {file} not found in "
                                    f"{base}/cifar-10-batches-py or {base}; extract "
                                    "cifar-10-python.tar.gz there")
                x, y = read_cifar10(found)
                xs.append(x)
                ys.append(y)
        else:
            folders = (f"{_IDX_SETS[name]}/raw", _IDX_SETS[name], "raw", ".")
            paths = [_find(base, folders, f) for f in _IDX_FILES[part]]
            missing = [f for f, p in zip(_IDX_FILES[part], paths) if p is None]
            if missing:
                raise DataError(f"data set {name!r} ({part}): {', '.join(missing)}[.gz] not "
                                f"found in {base}/{_IDX_SETS[name]}/raw or {base}; point root "
                                "at the folder torchvision downloaded into")
            x, y = read_idx(paths[0]), read_idx(paths[1]).astype(np.int64)
            if x.ndim != 3 or y.shape != (len(x),):
                raise DataError(f"data set {name!r}: images of shape {x.shape} and labels of "
                                f"shape {y.shape}; expected (n, H, W) and (n,)")
            xs.append(x[:, None])
            ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    return x, y, "classification", tuple(int(s) for s in x.shape[1:])


#: Data sets read from a user's folder (``load_dataset(name, root=...)``).
FOLDER_DATASETS = ("mnist", "fashion_mnist", "cifar10")
#: Data sets with a train / test split (``load_dataset(name, split=...)``).
_SPLIT_DATASETS = ("mnist1d", *FOLDER_DATASETS)


def _available_memory() -> int | None:
    """Free physical memory in bytes (Linux ``sysconf``), or None where unknown."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _standardize(x: np.ndarray, idx: np.ndarray | None, chunk: int = 4096) -> np.ndarray:
    """``(x[idx] - mean) / std`` per feature, mean and std over all of ``x`` (float64).

    Computed in chunks, so that a uint8 image set is never copied whole to float64.
    """
    n = len(x)
    total = np.zeros(x.shape[1], dtype=np.float64)
    for i in range(0, n, chunk):
        total += x[i:i + chunk].sum(axis=0, dtype=np.float64)
    mean = total / n
    sq = np.zeros_like(mean)
    for i in range(0, n, chunk):
        sq += ((x[i:i + chunk].astype(np.float64) - mean) ** 2).sum(axis=0)
    std = np.sqrt(sq / n)
    rows = x if idx is None else x[idx]
    return (rows.astype(np.float64) - mean) / np.where(std > 0, std, 1.0)


def load_dataset(
    name: str,
    *,
    n: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    root: str | Path | None = None,
    split: str | None = None,
) -> Dataset:
    """Load a shipped data set, a user's MNIST / Fashion-MNIST / CIFAR-10, or an ``.npz`` file.

    Args:
        name: A key of :data:`DATASETS` (shipped or generated), one of
            :data:`FOLDER_DATASETS` (read from ``root``), or a path ending in ``.npz`` with
            arrays ``x`` and ``y`` (classification when ``y`` is an integer array, regression
            otherwise).
        n: Number of examples to keep (a seeded random subset); all when None.
        seed: Seed of the subset permutation.
        dtype: Floating dtype of the inputs (and regression targets).
        device: Device of the tensors.
        root: The folder holding a :data:`FOLDER_DATASETS` set (torchvision's ``root``).
        split: ``"train"``, ``"test"`` or ``"all"`` for the sets that have one
            (``mnist1d`` and :data:`FOLDER_DATASETS`); None means ``"all"`` for ``mnist1d``
            and ``"train"`` for the folder sets. Other sets have no split (use
            :meth:`Dataset.split`).

    Returns:
        A :class:`Dataset`, preprocessed as the module docstring states (per-feature
        standardization over the whole split, before ``n`` examples are drawn). Images keep
        their shape: ``(1, 28, 28)`` for MNIST / Fashion-MNIST, ``(3, 32, 32)`` for CIFAR-10,
        ``(40,)`` sequences for MNIST-1D.

    Raises:
        DataError: Unknown name or split, ``root`` missing or without the files, ``n`` out
            of range, a result larger than the free memory (pass a smaller ``n``), or data
            that fails :func:`check_data`.

    """
    if split is not None and split not in ("train", "test", "all"):
        raise DataError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if split is not None and name not in _SPLIT_DATASETS:
        raise DataError(f"data set {name!r} has no train/test split (only "
                        f"{', '.join(_SPLIT_DATASETS)} do); load it whole and use "
                        "Dataset.split(n_train)")
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
    elif name == "mnist1d":
        x_raw, y_raw, task, shape = _mnist1d(split)
    elif name in DATASETS:
        x_raw, y_raw, task, shape = DATASETS[name]()
    elif name in FOLDER_DATASETS:
        x_raw, y_raw, task, shape = _load_folder(name, root, split)
    else:
        raise DataError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}, one of "
                        f"{list(FOLDER_DATASETS)} with root=, or a .npz file")
    if name in FOLDER_DATASETS:  # uint8 pixels, finite by construction: check the labels
        check_data(str(name), np.zeros((len(y_raw), 1)), y_raw, task)
    else:
        check_data(str(name), x_raw, y_raw, task)
    flat = np.asarray(x_raw).reshape(len(x_raw), -1)
    idx = None
    if n is not None:
        if not 0 < n <= len(flat):
            raise DataError(f"data set {name!r} has {len(flat)} examples; n={n} is out of range")
        idx = np.random.default_rng(seed).permutation(len(flat))[:n]
    rows = len(flat) if idx is None else len(idx)
    need = 2 * rows * flat.shape[1] * 8  # the float64 array and its tensor copy
    free = _available_memory()
    if free is not None and need > free:
        raise DataError(f"data set {name!r}: {rows} examples of {flat.shape[1]} features need "
                        f"about {need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB "
                        "free; pass a smaller n=")
    x = _standardize(flat, idx)
    if task == "regression":
        y = (y_raw - y_raw.mean()) / (y_raw.std() or 1.0)
        n_classes = 0
    else:
        y = np.asarray(y_raw).astype(np.int64)
        n_classes = int(y.max()) + 1
    if idx is not None:
        y = y[idx]
    ydtype = torch.int64 if task == "classification" else dtype
    return Dataset(
        name=str(name) if not str(name).endswith(".npz") else Path(name).stem,
        x=torch.as_tensor(x.reshape(len(x), *shape), dtype=dtype, device=device),
        y=torch.as_tensor(y, dtype=ydtype, device=device),
        task=task,
        input_shape=tuple(int(s) for s in shape),
        n_classes=n_classes,
    )
