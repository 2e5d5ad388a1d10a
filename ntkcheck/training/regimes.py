"""The two regimes training claims run in: the theory's, and how networks are trained in practice.

NTK theory is proven in one regime and networks are trained in another; the seed paper
(Wenger, Dangel & Kristiadi 2023, arXiv:2310.00137, Sec. 1 and 3) asks whether the theory's
predictions survive the move. Every training claim therefore has two kinds of test:

* :class:`TheoryRegime` -- the setting the theorems are proven in (Jacot et al. 2018; Lee et
  al. 2019, Thm 2.1): NTK parametrization, full-batch gradient descent on the mean squared
  error at the kernel-scaled step ``factor * N / lambda_max`` of the NTK Gram
  (:func:`ntkcheck.training.loops.kernel_lr`; it shrinks like 1/width in the standard
  parametrization, which is the NTK limit again, Lee et al. 2019, Sec. 2.3), a fixed step
  budget. The theory tests of the claims implement it with
  :func:`ntkcheck.training.loops.train`.
* :class:`PracticalRegime` -- how networks are trained (Wenger et al. 2023, Sec. 2): the
  standard parametrization with He initialization, Adam or SGD with momentum at a learning
  rate that does **not** change with the width (chosen once at a base width from a small grid
  by the training loss after a fixed budget, :func:`select_lr`, then held fixed, as
  practitioners do), mini-batches, cross-entropy on class labels, float32, trained to
  convergence by a recorded stopping rule (:func:`train_practical`) on at least a thousand
  examples.

:func:`practical_run` trains one network in the practical regime once and measures from that
one run what every training claim needs (weights, NTK and hidden features before and after,
and the network against its linearization, :func:`ntkcheck.kernel_regime.linearize.linearize`,
trained by the *same* optimizer on the *same* mini-batches from the same initialization, so a
difference means "the network is not its kernel method", not "SGD is not gradient flow").
Runs are cached per process, keyed on (architecture, width, initialization seed, regime,
data), so the claims measured from one run share its cost.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

__all__ = ["ADAM_LR_GRID", "N_TEST", "PRACTICAL_METRICS", "PRACTICAL_REGIME", "PRACTICAL_SPECS",
           "SGD_LR_GRID", "STOP_REASONS", "measure_practical",
           "LrChoice", "PracticalRegime", "PracticalRun", "TheoryRegime", "TrainingRecord",
           "clear_practical_cache", "practical_run", "practical_seed", "practical_split",
           "select_lr", "train_practical"]

#: Adam's learning-rate grid (decades and half-decades around PyTorch's default 1e-3).
ADAM_LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
#: SGD-with-momentum's grid.
SGD_LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: Why :func:`train_practical` stopped: the training-accuracy target was reached, the loss
#: stopped improving (``plateau``), the epoch cap, or the given number of epochs (a replay).
STOP_REASONS = ("target_accuracy", "plateau", "max_epochs", "epochs")


@dataclass(frozen=True)
class TheoryRegime:
    """The regime NTK theory is proven in (module docstring).

    Attributes:
        parametrization: ``"ntk"`` (Jacot et al. 2018, eq. 1).
        optimizer: ``"gd"``: full-batch gradient descent without momentum.
        loss: ``"mse"``, ``1/(2N) sum ||f - y||^2`` (:func:`ntkcheck.training.loops.mse_loss`).
        lr_factor: The step is ``lr_factor * N / lambda_max`` of the NTK Gram
            (:func:`ntkcheck.training.loops.kernel_lr`); below 2 in the kernel regime.

    """

    parametrization: str = "ntk"
    optimizer: str = "gd"
    loss: str = "mse"
    lr_factor: float = 1.0

    def lr(self, spec, model: nn.Module, x: torch.Tensor) -> tuple[float, list[dict] | None]:
        """``(lr, param_groups or None)`` from :func:`ntkcheck.training.loops.kernel_lr`."""
        from ntkcheck.training.loops import kernel_lr

        return kernel_lr(spec, model, x, factor=self.lr_factor)

    def describe(self) -> dict[str, object]:
        """Flat record fields (``regime``, ``optimizer``, ``loss``, ``lr_rule``)."""
        return {"regime": "theory", "optimizer": self.optimizer, "loss": self.loss,
                "lr_rule": f"{self.lr_factor:g} * N / lambda_max(NTK Gram)"}


@dataclass(frozen=True)
class PracticalRegime:
    """How networks are trained in practice (module docstring); one instance for all claims.

    Attributes:
        optimizer: ``"adam"`` (``torch.optim.Adam``, default betas) or ``"sgd"``
            (``torch.optim.SGD`` with ``momentum``).
        momentum: SGD's momentum (ignored by Adam).
        lr: A fixed learning rate, or None to choose it from ``lr_grid`` at ``base_width``
            (:func:`select_lr`). Either way it is the same at every width.
        lr_grid: Candidate rates; None for :data:`ADAM_LR_GRID` / :data:`SGD_LR_GRID`.
        base_width: The width at which the rate is chosen.
        tune_epochs: Epochs of each trial of the grid (the fixed budget of the choice).
        batch_size: Mini-batch size; each epoch visits a seeded permutation of the data.
        target_accuracy: Stop once the full training set's accuracy is at least this.
        plateau_epochs: Stop when the best training loss has not fallen by a fraction
            ``plateau_rtol`` for this many epochs.
        plateau_rtol: See ``plateau_epochs``.
        max_epochs: The epoch cap.
        dtype: Parameter dtype during training (``"float32"``, as in practice; kernels are
            measured on a float64 copy).

    Raises:
        ValueError: On an unknown optimizer or dtype, or a non-positive size or rate.

    """

    optimizer: str = "adam"
    momentum: float = 0.9
    lr: float | None = None
    lr_grid: tuple[float, ...] | None = None
    base_width: int = 256
    tune_epochs: int = 5
    batch_size: int = 128
    target_accuracy: float = 0.99
    plateau_epochs: int = 5
    plateau_rtol: float = 0.01
    max_epochs: int = 60
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"PracticalRegime.optimizer must be 'adam' or 'sgd' (with "
                             f"momentum), got {self.optimizer!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"PracticalRegime.dtype must be 'float32' or 'float64', got "
                             f"{self.dtype!r}")
        for name in ("base_width", "tune_epochs", "batch_size", "plateau_epochs",
                     "max_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PracticalRegime.{name} must be a positive int, got {value!r}")
        rates = ((self.lr,) if self.lr is not None else ()) + tuple(self.lr_grid or ())
        if any(not (isinstance(r, (int, float)) and math.isfinite(r) and r > 0) for r in rates):
            raise ValueError(f"PracticalRegime: learning rates must be positive and finite, "
                             f"got lr={self.lr!r}, lr_grid={self.lr_grid!r}")
        if self.lr_grid is not None and not self.lr_grid:
            raise ValueError("PracticalRegime.lr_grid is empty; give rates or None")

    @property
    def grid(self) -> tuple[float, ...]:
        """The candidate learning rates (``lr_grid`` or the optimizer's default grid)."""
        if self.lr_grid is not None:
            return tuple(self.lr_grid)
        return ADAM_LR_GRID if self.optimizer == "adam" else SGD_LR_GRID

    @property
    def torch_dtype(self) -> torch.dtype:
        """``dtype`` as a ``torch.dtype``."""
        return getattr(torch, self.dtype)

    def describe(self) -> dict[str, object]:
        """Flat record fields describing the regime (the learning rate is recorded per run)."""
        return {"regime": "practical", "optimizer": self.optimizer
                if self.optimizer == "adam" else f"sgd-momentum{self.momentum:g}",
                "loss": "cross_entropy", "batch_size": self.batch_size,
                "lr_rule": "fixed" if self.lr is not None else
                f"grid {','.join(f'{r:g}' for r in self.grid)} at width {self.base_width}, "
                f"{self.tune_epochs} epochs, lowest training loss",
                "stop_rule": f"train acc >= {self.target_accuracy:g}, or loss plateau "
                             f"(< {self.plateau_rtol:g} relative gain in "
                             f"{self.plateau_epochs} epochs), or {self.max_epochs} epochs",
                "train_dtype": self.dtype}


#: The practical regime every training claim's practical test uses (Adam, lr from the grid).
PRACTICAL_REGIME = PracticalRegime()
#: Held-out digits of :func:`practical_split` (the other 1,497 of the 1,797 are trained on).
N_TEST = 300


def practical_split(name: str = "digits", *, n: int | None = None, n_test: int = N_TEST,
                    device: str | torch.device = "cpu"):
    """``(train, test)``: a shipped classification set, the last ``n_test`` held out.

    The full set (scikit-learn's digits: 1,797 images; :func:`ntkcheck.data.load_dataset`),
    or ``n`` examples of it, in a seeded random order (seed 0), float64 (the practical regime
    casts to its training dtype). With ``n`` below ``2 * n_test``, a quarter is held out.

    Raises:
        ntkcheck.data.DataError: For an unknown data set or ``n_test`` out of range.

    """
    from ntkcheck.data import load_dataset

    if n is None:
        n = len(load_dataset(name, n=None, seed=0, device=device))
    data = load_dataset(name, n=n, seed=0, device=device)  # a seeded permutation
    if n < 2 * n_test:
        n_test = max(1, n // 4)
    return data.split(len(data) - n_test)


def practical_seed(spec, width: int, seed: int) -> int:
    """The initialization seed of a practical run: the same for every claim measured from it.

    :func:`ntkcheck.seeding.derive_seed` with the claim id ``"practical-regime"``, so every
    claim's practical test trains (and, through the cache, shares) the same network.
    """
    from ntkcheck.seeding import derive_seed

    return derive_seed("practical-regime", spec.arch_id, int(width), int(seed))


@dataclass(frozen=True)
class TrainingRecord:
    """How one network was trained by :func:`train_practical`.

    Attributes:
        lr: The learning rate (the same at every width).
        epochs: Epochs run.
        steps: Optimizer steps (mini-batches) taken.
        stop_reason: One of :data:`STOP_REASONS`.
        train_loss: Full-training-set mean cross-entropy after the last epoch.
        train_accuracy: Full-training-set accuracy after the last epoch, in [0, 1].
        losses: The same loss before the first epoch and after every epoch (``epochs + 1``
            floats; a replay with a given number of epochs records only the first and last).
        accuracies: The accuracy at the same points.

    """

    lr: float
    epochs: int
    steps: int
    stop_reason: str
    train_loss: float
    train_accuracy: float
    losses: tuple[float, ...] = field(repr=False)
    accuracies: tuple[float, ...] = field(repr=False)


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              chunk: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on all of ``(x, y)``."""
    loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            out = model(x[start:start + chunk])
            target = y[start:start + chunk]
            loss += float(nn.functional.cross_entropy(out, target, reduction="sum"))
            correct += int((out.argmax(dim=1) == target).sum())
    return loss / len(x), correct / len(x)


def train_practical(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    regime: PracticalRegime, *, lr: float, seed: int,
                    epochs: int | None = None, params: list | None = None,
                    callback: Callable[[int, nn.Module], None] | None = None
                    ) -> TrainingRecord:
    """Train ``model`` in place by ``regime``'s optimizer on cross-entropy mini-batches.

    Each epoch visits a permutation of the data drawn from a ``torch.Generator`` seeded with
    ``seed``, in batches of ``regime.batch_size`` (the last one smaller), one step per batch,
    so two calls with the same ``seed`` and data see the same batches in the same order.
    After every epoch the full training set's loss and accuracy are evaluated; without
    ``epochs``, training stops at the first of: accuracy ``>= regime.target_accuracy``
    (``"target_accuracy"``), no relative improvement of the best loss by
    ``regime.plateau_rtol`` in ``regime.plateau_epochs`` epochs (``"plateau"``), or
    ``regime.max_epochs`` (``"max_epochs"``). With ``epochs`` it runs exactly that many
    (``"epochs"``: to replay another model's training, e.g. its linearization's).

    Args:
        model: Network mapping ``(N, *input_shape)`` to ``(N, C)`` logits (or a
            :class:`ntkcheck.kernel_regime.linearize.LinearizedModel`), in its training dtype.
        x: Inputs ``(N, *input_shape)``, the model's dtype and device.
        y: ``(N,)`` int64 labels ``0..C-1``.
        regime: The :class:`PracticalRegime`.
        lr: Base learning rate.
        seed: Seed of the batch order.
        epochs: Run exactly this many epochs instead of the stopping rule.
        params: Parameter groups (e.g. :func:`ntkcheck.arch.param_groups` for muP); all of
            ``model.parameters()`` at ``lr`` by default.
        callback: ``callback(epoch, model)`` after every epoch and before the first (epoch 0),
            under ``torch.no_grad()``.

    Returns:
        A :class:`TrainingRecord`.

    Raises:
        ValueError: On labels that are not ``(N,)`` int64, a non-positive ``lr`` or a negative
            ``epochs``.
        ntkcheck.training.loops.TrainingDiverged: If the training loss becomes non-finite.

    """
    from ntkcheck.training.loops import TrainingDiverged

    if y.dim() != 1 or y.dtype != torch.int64 or len(y) != len(x):
        raise ValueError(f"train_practical needs (N,) int64 labels for {len(x)} inputs, got "
                         f"{tuple(y.shape)} {y.dtype}; use Dataset.y of a classification set")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 0):
        raise ValueError(f"epochs must be a non-negative int or None, got {epochs!r}")
    groups = params if params is not None else list(model.parameters())
    if regime.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(groups, lr=lr)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=regime.momentum)
    gen = torch.Generator().manual_seed(int(seed))
    n, batch = len(x), min(regime.batch_size, len(x))
    losses, accs = [], []
    steps, best, since_best = 0, math.inf, 0
    reason = "epochs"

    def after_epoch(epoch: int) -> None:
        if epochs is None or epoch in (0, epochs):  # a replay needs no stopping rule
            loss, acc = _evaluate(model, x, y)
            if not math.isfinite(loss):
                raise TrainingDiverged(f"training loss is {loss} after epoch {epoch} at "
                                       f"lr={lr:g} ({regime.optimizer}); use a smaller "
                                       "learning rate")
            losses.append(loss)
            accs.append(acc)
        if callback is not None:
            with torch.no_grad():
                callback(epoch, model)

    after_epoch(0)
    best, epoch = losses[0], 0
    while True:
        if epochs is not None:
            if epoch >= epochs:
                break
        elif accs[-1] >= regime.target_accuracy:
            reason = "target_accuracy"
            break
        elif since_best >= regime.plateau_epochs:
            reason = "plateau"
            break
        elif epoch >= regime.max_epochs:
            reason = "max_epochs"
            break
        for idx in torch.randperm(n, generator=gen).split(batch):
            idx = idx.to(x.device)
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            steps += 1
        epoch += 1
        after_epoch(epoch)
        if epochs is not None:
            continue
        if losses[-1] < best * (1 - regime.plateau_rtol):
            best, since_best = losses[-1], 0
        else:
            since_best += 1
    return TrainingRecord(lr=float(lr), epochs=epoch, steps=steps, stop_reason=reason,
                          train_loss=losses[-1], train_accuracy=accs[-1],
                          losses=tuple(losses), accuracies=tuple(accs))


@dataclass(frozen=True)
class LrChoice:
    """The learning rate :func:`select_lr` chose, and the grid it chose from.

    Attributes:
        lr: The chosen rate.
        grid: The candidates.
        losses: Training loss of each candidate after the budget (inf where it diverged).
        base_width: The width the grid was run at.

    """

    lr: float
    grid: tuple[float, ...]
    losses: tuple[float, ...]
    base_width: int

    def describe(self) -> str:
        """``"1e-3 (1e-4: 0.52, 3e-4: 0.21, ...)"``: the choice and each candidate's loss."""
        parts = ", ".join(f"{r:g}: {v:.3g}" for r, v in zip(self.grid, self.losses))
        return f"{self.lr:g} at width {self.base_width} ({parts})"


def _data_key(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(x.detach().cpu().double().numpy().tobytes())
    h.update(y.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _params(model: nn.Module, lr: float, optimizer: str) -> list[dict]:
    from ntkcheck.arch import param_groups

    return param_groups(model, lr, optimizer)


_LR_CHOICES: dict[tuple, LrChoice] = {}


def _select_lr(spec, regime: PracticalRegime, x: torch.Tensor, y: torch.Tensor,
               n_classes: int, device: str) -> LrChoice:
    from ntkcheck.seeding import derive_seed
    from ntkcheck.training.loops import TrainingDiverged

    if regime.lr is not None:
        return LrChoice(float(regime.lr), (float(regime.lr),), (math.nan,), regime.base_width)
    base = spec.with_width(regime.base_width)
    init = derive_seed("practical-lr", base.arch_id, regime.base_width, 0)
    tune = replace(regime, target_accuracy=math.inf, plateau_epochs=regime.tune_epochs + 1)
    losses = []
    for lr in regime.grid:
        net = base.build(seed=init, input_shape=tuple(x.shape[1:]), out_features=n_classes,
                         device=device, dtype=regime.torch_dtype)
        try:
            rec = train_practical(net, x, y, tune, lr=lr, seed=init, epochs=regime.tune_epochs,
                                  params=_params(net, lr, regime.optimizer))
            losses.append(rec.train_loss)
        except TrainingDiverged:
            losses.append(math.inf)
    best = min(range(len(losses)), key=lambda i: losses[i])
    return LrChoice(float(regime.grid[best]), regime.grid, tuple(losses), regime.base_width)


def select_lr(spec, x: torch.Tensor, y: torch.Tensor, regime: PracticalRegime, *,
              device: str | torch.device = "cpu") -> LrChoice:
    """The regime's learning rate for ``spec``'s family: one grid search, then held fixed.

    Trains ``spec`` at ``regime.base_width`` (initialization seed derived from the
    architecture, the same in every process) for ``regime.tune_epochs`` epochs at each rate of
    ``regime.grid`` on ``(x, y)`` and returns the rate with the lowest final training loss
    (a diverged trial counts as infinite loss); ``regime.lr``, when set, is returned as is.
    Cached per process on (architecture, regime, data, device), so every width of a sweep --
    and every claim measured on that architecture -- uses the one rate.

    Args:
        spec: An :class:`ntkcheck.arch.ArchSpec` (its width is ignored).
        x: Training inputs ``(N, *input_shape)``, float.
        y: ``(N,)`` int64 labels.
        regime: The :class:`PracticalRegime`.
        device: Where the trials run.

    Returns:
        An :class:`LrChoice`.

    """
    x = x.to(device=device, dtype=regime.torch_dtype)
    y = y.to(device)
    n_classes = int(y.max()) + 1
    key = (replace(spec, width=None), regime, _data_key(x, y), str(device))
    if key not in _LR_CHOICES:
        _LR_CHOICES[key] = _select_lr(key[0], regime, x, y, n_classes, str(device))
    return _LR_CHOICES[key]


@dataclass(frozen=True)
class PracticalRun:
    """What one practical training run measured (every ratio is relative, dimensionless).

    Attributes:
        training: The network's :class:`TrainingRecord`.
        lr_choice: The :class:`LrChoice` behind ``training.lr``.
        weight_change: ``||theta_T - theta_0||_2 / ||theta_0||_2``.
        kernel_change: ``||Theta_T - Theta_0||_F / ||Theta_0||_F``, the empirical NTK (summed
            over outputs) on the first ``n_probe`` training inputs, in float64.
        feature_change: ``1 - linear CKA`` of the last hidden layer's features on the training
            inputs before and after training (Kornblith et al. 2019).
        lin_deviation: ``max over epochs of ||f_e(z) - f^lin_e(z)||_F / ||f_e(z)||_F`` on the
            held-out inputs ``z`` (epochs 0..E; the linearization trained alike), or NaN
            without a linearization.
        lin_final_error: ``||f_E(z) - f^lin_E(z)||_F / ||f^lin_E(z)||_F`` after training.
        lin_training: The linearization's :class:`TrainingRecord` (same batches, ``E``
            epochs), or None.
        test_accuracy: The network's accuracy on the held-out inputs.
        lin_test_accuracy: The linearization's (NaN without one).
        agreement: Fraction of held-out inputs where both predict the same class.

    """

    training: TrainingRecord
    lr_choice: LrChoice
    weight_change: float
    kernel_change: float
    feature_change: float
    lin_deviation: float = math.nan
    lin_final_error: float = math.nan
    lin_training: TrainingRecord | None = None
    test_accuracy: float = math.nan
    lin_test_accuracy: float = math.nan
    agreement: float = math.nan

    def record(self) -> dict[str, object]:
        """Flat builtin fields for a claim's record: how the network was trained.

        ``lr``, ``epochs``, ``steps``, ``stop_reason``, ``train_accuracy``, ``train_loss``,
        every measured change, and the linearization's and the held-out figures.
        """
        t = self.training
        out: dict[str, object] = {
            "lr": t.lr, "lr_choice": self.lr_choice.describe(), "epochs": t.epochs,
            "steps": t.steps, "stop_reason": t.stop_reason, "train_accuracy": t.train_accuracy,
            "train_loss": t.train_loss, "initial_train_loss": t.losses[0],
            "weight_change": self.weight_change, "kernel_change": self.kernel_change,
            "feature_change": self.feature_change, "test_accuracy": self.test_accuracy}
        if self.lin_training is not None:
            out.update(lin_deviation=self.lin_deviation, lin_final_error=self.lin_final_error,
                       lin_train_accuracy=self.lin_training.train_accuracy,
                       lin_train_loss=self.lin_training.train_loss,
                       lin_test_accuracy=self.lin_test_accuracy, agreement=self.agreement)
        return out


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


def _kernel(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from ntkcheck.kernels import empirical_ntk

    return empirical_ntk(copy.deepcopy(model).double(), x.double())


_RUNS: dict[tuple, PracticalRun] = {}


def clear_practical_cache() -> None:
    """Forget the cached runs and learning-rate choices of this process."""
    _RUNS.clear()
    _LR_CHOICES.clear()


def practical_run(spec, width: int, init_seed: int, train_set, test_set=None,
                  regime: PracticalRegime | None = None, *,
                  device: str | torch.device = "cpu", n_probe: int = 32,
                  linearized: bool = True) -> PracticalRun:
    """Train ``spec`` at ``width`` once in the practical regime and measure what claims need.

    The network is built with ``init_seed`` in ``regime.dtype``, its learning rate is
    :func:`select_lr`'s (the same at every width), and it is trained by
    :func:`train_practical` with the batch order seeded by ``init_seed``. With
    ``linearized``, its linearization at initialization
    (:func:`ntkcheck.kernel_regime.linearize.linearize`) is then trained by the same
    optimizer at the same rate on the same batches for the same number of epochs, and both
    are compared on ``test_set``'s inputs after every epoch (:class:`PracticalRun`). Cached
    per process on (architecture, width, seed, data, regime, device, ``n_probe``); a run with
    the linearization also serves a request without one.

    Args:
        spec: An :class:`ntkcheck.arch.ArchSpec` (any parametrization; muP gets its
            per-layer rates, :func:`ntkcheck.arch.param_groups`).
        width: The width.
        init_seed: Initialization seed (and batch-order seed).
        train_set: A classification :class:`ntkcheck.data.Dataset` to train on.
        test_set: Held-out :class:`ntkcheck.data.Dataset` (needed with ``linearized``).
        regime: The regime (``PracticalRegime()`` by default).
        device: Device to train on.
        n_probe: Training inputs the NTK is measured on (its cost is quadratic in them).
        linearized: Whether to train and compare the linearization.

    Returns:
        A :class:`PracticalRun`.

    Raises:
        ValueError: If the data are not classification data, or ``linearized`` without
            ``test_set``.
        ntkcheck.training.loops.TrainingDiverged: If training diverges.

    """
    from ntkcheck.kernel_regime.features import hidden_features, linear_cka
    from ntkcheck.kernel_regime.linearize import linearize
    from ntkcheck.metrics import relative_change

    regime = regime or PracticalRegime()
    if train_set.task != "classification":
        raise ValueError(f"the practical regime trains on cross-entropy: {train_set.name!r} "
                         "is a regression data set; use a classification set (digits)")
    if linearized and test_set is None:
        raise ValueError("practical_run(linearized=True) needs a held-out test_set")
    dkey = _data_key(train_set.x, train_set.y) + (
        _data_key(test_set.x, test_set.y) if test_set is not None else "")
    key = (replace(spec, width=None), int(width), int(init_seed), dkey, regime, str(device),
           int(n_probe))
    for lin in ((True,) if linearized else (False, True)):
        if key + (lin,) in _RUNS:
            return _RUNS[key + (lin,)]
    dtype = regime.torch_dtype
    x, y = train_set.x.to(device=device, dtype=dtype), train_set.y.to(device)
    n_classes = train_set.n_classes
    choice = select_lr(spec, x, y, regime, device=device)
    net = spec.with_width(width).build(seed=init_seed, input_shape=tuple(x.shape[1:]),
                                       out_features=n_classes, device=device, dtype=dtype)
    lin_model = linearize(net) if linearized else None
    probe = x[:n_probe]
    theta_0, kernel_0, feats_0 = _flat(net), _kernel(net, probe), hidden_features(net, x)
    z = test_set.x.to(device=device, dtype=dtype) if test_set is not None else None
    outs: list[torch.Tensor] = []
    rec = train_practical(net, x, y, regime, lr=choice.lr, seed=init_seed,
                          params=_params(net, choice.lr, regime.optimizer),
                          callback=(lambda e, m: outs.append(m(z))) if linearized else None)
    fields_: dict = dict(
        training=rec, lr_choice=choice,
        weight_change=float(relative_change(_flat(net), theta_0)),
        kernel_change=float(relative_change(_kernel(net, probe), kernel_0)),
        feature_change=max(0.0, 1.0 - linear_cka(feats_0, hidden_features(net, x))))
    if test_set is not None:
        with torch.no_grad():
            fields_["test_accuracy"] = _evaluate(net, z, test_set.y.to(device))[1]
    if lin_model is not None:
        devs: list[float] = []
        lin_outs: list[torch.Tensor] = []

        def compare(epoch: int, m: nn.Module) -> None:
            out = m(z)
            lin_outs.append(out)
            devs.append(float(torch.linalg.norm(outs[epoch] - out)
                              / torch.linalg.norm(outs[epoch])))

        lin_params = lin_model.param_groups(_params(net, choice.lr, regime.optimizer))
        lin_rec = train_practical(lin_model, x, y, regime, lr=choice.lr, seed=init_seed,
                                  epochs=rec.epochs, params=lin_params, callback=compare)
        f, f_lin = outs[-1], lin_outs[-1]
        fields_.update(
            lin_deviation=max(devs),
            lin_final_error=float(torch.linalg.norm(f - f_lin) / torch.linalg.norm(f_lin)),
            lin_training=lin_rec,
            lin_test_accuracy=_evaluate(lin_model, z, test_set.y.to(device))[1],
            agreement=float((f.argmax(1) == f_lin.argmax(1)).double().mean()))
    run = PracticalRun(**fields_)
    _RUNS[key + (linearized,)] = run
    return run


def _practical_specs() -> dict:
    from ntkcheck.arch import ArchSpec
    from ntkcheck.strategies import PAPER_SPECS

    return {
        "mlp-d1": ArchSpec(depth=1, activation="relu", parametrization="standard",
                           weight_std=2**0.5),
        "wenger2023-mlp": PAPER_SPECS["wenger2023-mlp"],
        "wenger2023-cnn": PAPER_SPECS["wenger2023-cnn"],
    }


#: The architectures of the practical tests: a one-hidden-layer ReLU MLP with He
#: initialization (the theory tests' network in the standard parametrization), and the seed
#: paper's depth-3 MLP and CNN (:data:`ntkcheck.strategies.PAPER_SPECS`).
PRACTICAL_SPECS: tuple = tuple(_practical_specs().values())
#: :class:`PracticalRun` attributes a claim can measure.
PRACTICAL_METRICS = ("weight_change", "kernel_change", "feature_change", "lin_deviation",
                     "lin_final_error")


def measure_practical(spec, metric: str, sweep, device, measure, profile,
                      regime: PracticalRegime = PRACTICAL_REGIME) -> None:
    """Measure one :class:`PracticalRun` attribute of ``spec`` over a claim's sweep.

    For each ``(width, seed)`` of ``sweep`` up to ``profile.practical_width_cap(spec)`` (the
    wider ones are recorded as not measured, :data:`ntkcheck.profiles.PRACTICAL_CAP_REASON`),
    trains (or takes from the cache) the practical run on :func:`practical_split`'s data with
    :func:`practical_seed` and records ``metric`` with how the network was trained
    (``regime.describe()`` and :meth:`PracticalRun.record`).

    Args:
        spec: The architecture.
        metric: One of :data:`PRACTICAL_METRICS`.
        sweep: The ``ntk_sweep`` fixture.
        device: The ``ntk_device`` fixture.
        measure: The ``ntk_measure`` fixture (:class:`ntkcheck.plugin.recorder.Recorder`).
        profile: The ``ntk_profile`` fixture.
        regime: The regime (:data:`PRACTICAL_REGIME`).

    Raises:
        ValueError: On an unknown metric.

    """
    from ntkcheck.profiles import PRACTICAL_CAP_REASON

    if metric not in PRACTICAL_METRICS:
        raise ValueError(f"unknown practical metric {metric!r}; choose one of "
                         f"{PRACTICAL_METRICS}")
    train_set, test_set = practical_split(n=profile.practical_examples, device=device)
    cap = profile.practical_width_cap(spec)
    for width, seed in measure.capped(spec, sweep, cap, why=PRACTICAL_CAP_REASON):
        with measure.guard(spec, width=width):
            init = practical_seed(spec, width, seed)
            run = practical_run(spec, width, init, train_set, test_set, regime, device=device)
            measure(spec, width=width, seed=seed, value=getattr(run, metric),
                    dtype=regime.dtype, train_seed=init, n_train=len(train_set),
                    n_test=len(test_set), **regime.describe(), **run.record())
