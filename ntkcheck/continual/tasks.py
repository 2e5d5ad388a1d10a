"""Task sequences for continual learning, from real data or supplied by the user.

A :class:`TaskSequence` is an ordered tuple of :class:`Task` s that one network learns one
after the other. The three scenarios of van de Ven & Tolias 2019 ("Three scenarios for
continual learning", Sec. 2) are covered:

* ``"domain"`` (domain-incremental): every task has the same classes and reads every output
  unit; the input distribution changes. :func:`permuted_tasks` (a fixed random permutation of
  the pixels per task; Goodfellow et al. 2013, "An empirical investigation of catastrophic
  forgetting") and :func:`rotated_tasks` (a fixed rotation per task; Lopez-Paz & Ranzato 2017,
  "Gradient episodic memory", Sec. 6).
* ``"task"`` (task-incremental): each task has its own classes and its own *head*, a disjoint
  set of output units, used for training and testing that task (:func:`split_tasks`).
* ``"class"`` (class-incremental): each task brings new classes, all tasks share one head over
  all classes, and a test input may be assigned to any class seen or unseen
  (:func:`split_tasks` with ``scenario="class"``).

Labels of a task are indices into its head: ``y = c`` means output unit ``head[c]``. Data sets
from :func:`ntkcheck.data.load_dataset` are already standardized and shuffled with a seed; the
first examples become training data and the following ones test data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ntkcheck.data import Dataset, check_data

__all__ = ["SCENARIOS", "Task", "TaskSequence", "permuted_tasks", "rotated_tasks",
           "split_tasks", "task_sequence"]

#: Continual-learning scenarios (van de Ven & Tolias 2019).
SCENARIOS = ("domain", "task", "class")


@dataclass(frozen=True)
class Task:
    """One task of a sequence.

    Attributes:
        name: Human-readable name (e.g. ``"permuted-1"``).
        x_train: Training inputs ``(N, *input_shape)``, floating dtype.
        y_train: Training labels ``(N,)`` int64, indices into ``head`` (``0 .. C-1``).
        x_test: Test inputs ``(M, *input_shape)``, dtype of ``x_train``.
        y_test: Test labels ``(M,)`` int64, indices into ``head``.
        head: The network's output units this task reads, ``C`` distinct indices.

    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    head: tuple[int, ...]

    @property
    def n_classes(self) -> int:
        """``C``, the number of output units of the task's head."""
        return len(self.head)

    def train_targets(self) -> torch.Tensor:
        """Regression targets for the squared loss: one-hot over the head minus ``1/C``.

        The NTK literature's targets (Lee et al. 2019, Sec. 3), as
        :meth:`ntkcheck.data.Dataset.one_hot`. Shape ``(N, C)``, dtype of ``x_train``.
        """
        eye = torch.nn.functional.one_hot(self.y_train, self.n_classes).to(self.x_train.dtype)
        return eye - 1.0 / self.n_classes


@dataclass(frozen=True)
class TaskSequence:
    """An ordered sequence of tasks learned by one network with ``n_outputs`` output units.

    Attributes:
        tasks: The tasks, in training order (at least one).
        n_outputs: Output units the network needs (every head indexes into ``0..n_outputs-1``).
        scenario: One of :data:`SCENARIOS`.
        input_shape: Shape of one input, e.g. ``(1, 8, 8)``.

    Raises:
        ValueError: No tasks, an unknown scenario, a head outside ``0..n_outputs-1``, labels
            outside a task's head, or tasks whose inputs differ in shape.

    """

    tasks: tuple[Task, ...]
    n_outputs: int
    scenario: str
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("a task sequence needs at least one task")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; choose one of {SCENARIOS}")
        for t in self.tasks:
            if not t.head or len(set(t.head)) != len(t.head) or not all(
                    0 <= h < self.n_outputs for h in t.head):
                raise ValueError(f"task {t.name!r}: head {t.head} must be distinct output "
                                 f"units in 0..{self.n_outputs - 1}")
            for part, x, y in (("train", t.x_train, t.y_train), ("test", t.x_test, t.y_test)):
                if tuple(x.shape[1:]) != tuple(self.input_shape):
                    raise ValueError(f"task {t.name!r}: {part} inputs have shape "
                                     f"{tuple(x.shape[1:])}, expected {self.input_shape}")
                if len(y) and (int(y.min()) < 0 or int(y.max()) >= t.n_classes):
                    raise ValueError(f"task {t.name!r}: {part} labels must index its head "
                                     f"(0..{t.n_classes - 1})")

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __getitem__(self, i: int) -> Task:
        return self.tasks[i]


def _split_rows(data: Dataset, n_train: int, n_test: int | None) -> tuple[slice, slice]:
    if data.task != "classification":
        raise ValueError(f"{data.name} is a regression data set; task sequences need classes")
    n_test = len(data) - n_train if n_test is None else n_test
    if n_train < 1 or n_test < 1 or n_train + n_test > len(data):
        raise ValueError(f"{data.name} has {len(data)} examples: cannot take n_train={n_train} "
                         f"and n_test={n_test}")
    return slice(0, n_train), slice(n_train, n_train + n_test)


def permuted_tasks(data: Dataset, n_tasks: int, *, n_train: int, n_test: int | None = None,
                   seed: int = 0, identity_first: bool = True) -> TaskSequence:
    """Permuted tasks: the same images with a fixed random permutation of the pixels per task.

    Goodfellow et al. 2013 ("An empirical investigation of catastrophic forgetting in
    gradient-based neural networks", Sec. 5); the usual "permuted MNIST", here on the given
    data (e.g. scikit-learn's digits). Domain-incremental: all tasks share every output unit.

    Args:
        data: A classification data set (e.g. ``load_dataset("digits", n=...)``).
        n_tasks: Number of tasks ``T >= 1``.
        n_train: Training examples per task: the first ``n_train`` of ``data``.
        n_test: Test examples per task: the next ``n_test`` (all the rest when None).
        seed: Seed of the permutations (``numpy.random.default_rng``).
        identity_first: Whether task 0 keeps the original pixel order.

    Returns:
        A :class:`TaskSequence` with ``scenario="domain"`` and ``n_outputs = data.n_classes``.

    Raises:
        ValueError: For a regression data set, ``n_tasks < 1`` or sizes that do not fit.

    """
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    tr, te = _split_rows(data, n_train, n_test)
    d = int(np.prod(data.input_shape))
    rng = np.random.default_rng(seed)
    perms = [np.arange(d) if (t == 0 and identity_first) else rng.permutation(d)
             for t in range(n_tasks)]
    flat = data.x.reshape(len(data), d)
    head = tuple(range(data.n_classes))
    tasks = []
    for t, perm in enumerate(perms):
        x = flat[:, torch.as_tensor(perm, device=flat.device)].reshape(data.x.shape)
        tasks.append(Task(f"permuted-{t}", x[tr], data.y[tr], x[te], data.y[te], head))
    return TaskSequence(tuple(tasks), data.n_classes, "domain", tuple(data.input_shape))


def rotated_tasks(data: Dataset, angles: Sequence[float], *, n_train: int,
                  n_test: int | None = None) -> TaskSequence:
    """Rotated tasks: the same images rotated by a fixed angle per task (degrees).

    Lopez-Paz & Ranzato 2017 ("Gradient episodic memory for continual learning", Sec. 6,
    "MNIST rotations"); Mirzadeh et al. 2022 ("Wide neural networks forget less
    catastrophically") use rotated MNIST. Each ``(C, H, W)`` (or ``(H, W)``) image is rotated
    counter-clockwise about its centre with ``scipy.ndimage.rotate`` (bilinear, ``order=1``,
    same size, pixels from outside the frame set to 0, the mean of standardized data).
    Domain-incremental.

    Args:
        data: A classification data set of images.
        angles: One rotation per task, in degrees (e.g. ``(0, 30, 60)``).
        n_train: Training examples per task.
        n_test: Test examples per task (all the rest when None).

    Returns:
        A :class:`TaskSequence` with ``scenario="domain"``.

    Raises:
        ValueError: For inputs that are not images, no angles, or sizes that do not fit.

    """
    import scipy.ndimage

    if len(data.input_shape) not in (2, 3):
        raise ValueError(f"rotated tasks need images (H, W) or (C, H, W); {data.name} inputs "
                         f"have shape {data.input_shape}")
    if not len(angles):
        raise ValueError("give at least one angle")
    tr, te = _split_rows(data, n_train, n_test)
    x_np = data.x.detach().cpu().numpy()
    head = tuple(range(data.n_classes))
    tasks = []
    for angle in angles:
        rot = scipy.ndimage.rotate(x_np, float(angle), axes=(-1, -2), reshape=False, order=1,
                                   mode="constant", cval=0.0)
        x = torch.as_tensor(rot, dtype=data.x.dtype, device=data.x.device)
        tasks.append(Task(f"rotated-{angle:g}", x[tr], data.y[tr], x[te], data.y[te], head))
    return TaskSequence(tuple(tasks), data.n_classes, "domain", tuple(data.input_shape))


def split_tasks(data: Dataset, groups: Sequence[Sequence[int]] | None = None, *,
                scenario: str = "task", n_train: int, n_test: int | None = None
                ) -> TaskSequence:
    """Split tasks: disjoint groups of classes, one group per task (e.g. digits 0/1, 2/3, ...).

    Zenke et al. 2017 ("Continual learning through synaptic intelligence", split MNIST).
    With ``scenario="task"`` each task gets its own head of ``len(group)`` output units
    (allocated in order) and labels are positions in the group; with ``scenario="class"`` all
    tasks share one head over every class of ``data`` and labels are the class indices.

    Args:
        data: A classification data set.
        groups: Class groups, disjoint; default consecutive pairs ``(0, 1), (2, 3), ...``.
        scenario: ``"task"`` or ``"class"``.
        n_train: Training examples per task: the first ``n_train`` of the group's examples.
        n_test: Test examples per task: the next ``n_test`` (all the rest when None).

    Returns:
        A :class:`TaskSequence`.

    Raises:
        ValueError: Unknown or overlapping classes, a scenario other than "task"/"class", or
            a group with too few examples.

    """
    if scenario not in ("task", "class"):
        raise ValueError(f"split tasks are 'task'- or 'class'-incremental, not {scenario!r}")
    if data.task != "classification":
        raise ValueError(f"{data.name} is a regression data set; task sequences need classes")
    if groups is None:
        groups = [tuple(range(c, min(c + 2, data.n_classes)))
                  for c in range(0, data.n_classes, 2)]
    flat = [int(c) for g in groups for c in g]
    if len(set(flat)) != len(flat) or not all(0 <= c < data.n_classes for c in flat):
        raise ValueError(f"class groups {groups} must be disjoint classes of 0..{data.n_classes-1}")
    tasks, offset = [], 0
    for g in groups:
        g = tuple(int(c) for c in g)
        idx = torch.nonzero(torch.isin(data.y, torch.as_tensor(g, device=data.y.device)))[:, 0]
        n_te = len(idx) - n_train if n_test is None else n_test
        if n_train < 1 or n_te < 1 or n_train + n_te > len(idx):
            raise ValueError(f"classes {g} have {len(idx)} examples in {data.name}: cannot take "
                             f"n_train={n_train} and n_test={n_te}")
        tr, te = idx[:n_train], idx[n_train:n_train + n_te]
        if scenario == "task":
            local = {c: i for i, c in enumerate(g)}
            relabel = torch.as_tensor([local.get(int(c), -1) for c in range(data.n_classes)],
                                      device=data.y.device)
            head = tuple(range(offset, offset + len(g)))
            offset += len(g)
        else:
            relabel = torch.arange(data.n_classes, device=data.y.device)
            head = tuple(range(data.n_classes))
        tasks.append(Task(f"split-{'-'.join(map(str, g))}", data.x[tr], relabel[data.y[tr]],
                          data.x[te], relabel[data.y[te]], head))
    n_out = offset if scenario == "task" else data.n_classes
    return TaskSequence(tuple(tasks), n_out, scenario, tuple(data.input_shape))


def task_sequence(tasks: Sequence[tuple], *, scenario: str = "domain",
                  names: Sequence[str] | None = None,
                  dtype: torch.dtype = torch.float64) -> TaskSequence:
    """A task sequence from user data: one ``(X, y)`` or ``(X, y, X_test, y_test)`` per task.

    With ``(X, y)`` a task is tested on its training data (forgetting then measures what the
    network no longer fits). Labels are integers ``0..C_t-1``. ``"domain"`` and ``"class"``:
    all tasks share one head over ``max label + 1`` units; ``"task"``: each task gets a head of
    its own ``C_t`` units, in order.

    Args:
        tasks: Per task a tuple of arrays or tensors.
        scenario: One of :data:`SCENARIOS`.
        names: Task names (default ``"task-0"``, ...).
        dtype: Floating dtype of the inputs.

    Returns:
        A :class:`TaskSequence`.

    Raises:
        ValueError: Tuples of another length, or data that fails
            :func:`ntkcheck.data.check_data` (:class:`ntkcheck.data.DataError`).

    """
    if not len(tasks):
        raise ValueError("give at least one task")
    parsed = []
    for i, t in enumerate(tasks):
        if len(t) not in (2, 4):
            raise ValueError(f"task {i}: give (X, y) or (X, y, X_test, y_test), got {len(t)} "
                             "arrays")
        arrs = list(t) if len(t) == 4 else [t[0], t[1], t[0], t[1]]
        name = names[i] if names is not None else f"task-{i}"
        for j in (0, 2):
            x = torch.as_tensor(np.asarray(arrs[j]) if not isinstance(arrs[j], torch.Tensor)
                                else arrs[j])
            y = torch.as_tensor(np.asarray(arrs[j + 1]) if not isinstance(arrs[j + 1],
                                                                          torch.Tensor)
                                else arrs[j + 1])
            check_data(name, x.to(dtype) if x.is_floating_point() else x, y, "classification")
            arrs[j], arrs[j + 1] = x.to(dtype), y.to(torch.int64)
        parsed.append((name, *arrs))
    n_cls = [int(max(p[2].max(), p[4].max())) + 1 for p in parsed]
    shared = max(n_cls)
    out, offset = [], 0
    for (name, xtr, ytr, xte, yte), c in zip(parsed, n_cls):
        if scenario == "task":
            head = tuple(range(offset, offset + c))
            offset += c
        else:
            head = tuple(range(shared))
        out.append(Task(name, xtr, ytr, xte, yte, head))
    n_out = offset if scenario == "task" else shared
    return TaskSequence(tuple(out), n_out, scenario, tuple(parsed[0][1].shape[1:]))
