"""Optimizers as a practitioner runs them, each run recorded as a loss curve.

:func:`fit` trains a network in place with one of :data:`OPTIMIZERS` on full batches or
mini-batches, on the mean squared error (:func:`ntkcheck.training.loops.mse_loss`,
``1/(2N) ||f - y||^2``) or the mean cross-entropy, and returns a :class:`Curve`: one
:class:`CurvePoint` (step, epoch, wall-clock seconds of training, train loss, held-out loss
and accuracy) per evaluation. :func:`tune_lr` picks a step size from a documented grid at one
base width, as practitioners do, to be held fixed at every width.

Optimizers:

* ``"sgd"``: ``torch.optim.SGD`` with heavy-ball momentum (default 0.9; Polyak 1964).
* ``"adam"``: ``torch.optim.Adam`` (Kingma & Ba 2015) with PyTorch's default betas and eps.
* ``"kfac"``: Kronecker-factored approximate curvature (Martens & Grosse 2015, "Optimizing
  neural networks with Kronecker-factored approximate curvature", ICML, Sec. 3-6), through
  curvlinops' ``KFACLinearOperator`` (type-2 Fisher = Gauss-Newton, exact output Hessian) and
  ``KFACInverseLinearOperator`` with heuristic (pi) damping (Sec. 6.3): the step is
  ``theta <- theta - lr (F_KFAC + damping)^-1 grad``, the factors recomputed on the current
  mini-batch every ``curvature_every`` steps. Needs a network of ``nn.Linear`` /
  ``nn.Conv2d`` layers (curvlinops' requirement).
* ``"ngd"``: exact Gauss-Newton / natural gradient on the mini-batch, solved in function
  space (push-through identity, :mod:`ntkcheck.optim.natural_gradient`): for the MSE
  ``J^T (G + lambda I)^-1 r``; for the cross-entropy, with the per-sample output Hessian
  ``H_i = diag(p_i) - p_i p_i^T`` of the softmax (block-diagonal ``H``),
  ``(J^T H J + lambda I)^-1 J^T = J^T (H G + lambda I)^-1``, so the step is
  ``J^T (H G + lambda I)^-1 (p - y_onehot)`` (Martens 2020, Sec. 9; Zhang et al. 2019,
  Sec. 3). ``lambda`` (``damping``) is in units of the NTK Gram matrix ``G`` of the batch.

The clock (``CurvePoint.seconds``) counts training steps only: the held-out evaluation is
timed and left out, so optimizers compare on the cost of their own updates.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ntkcheck.training.loops import cross_entropy_loss, mse_loss

__all__ = ["LOSSES", "OPTIMIZERS", "Curve", "CurvePoint", "TunedLR", "fit", "plain_mlp", "tune_lr"]

#: Optimizers :func:`fit` runs.
OPTIMIZERS = ("sgd", "adam", "kfac", "ngd")
#: Losses :func:`fit` trains on.
LOSSES = ("mse", "cross_entropy")


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation of a training run.

    Attributes:
        step: Optimizer steps taken.
        epoch: Passes over the training set (``step * batch_size / N``, fractional).
        seconds: Wall-clock seconds spent in training steps (evaluations excluded).
        train_loss: Loss on the whole training set.
        test_loss: Loss on the held-out set.
        test_accuracy: Held-out accuracy (classification with cross-entropy), else NaN.

    """

    step: int
    epoch: float
    seconds: float
    train_loss: float
    test_loss: float
    test_accuracy: float


@dataclass
class Curve:
    """A training run's loss curve.

    Attributes:
        optimizer: One of :data:`OPTIMIZERS`.
        lr: Step size.
        batch_size: Mini-batch size (``N`` for full batch).
        loss: One of :data:`LOSSES`.
        points: Evaluations, in order (the first at initialization).
        diverged: Whether the run stopped on a non-finite loss.

    """

    optimizer: str
    lr: float
    batch_size: int
    loss: str
    points: list[CurvePoint] = field(default_factory=list)
    diverged: bool = False

    def to_json(self) -> str:
        """The curve as a compact JSON string (for a record's ``curve`` field)."""
        d = asdict(self)
        d["points"] = [[p.step, round(p.epoch, 4), round(p.seconds, 4), p.train_loss,
                        p.test_loss, p.test_accuracy] for p in self.points]
        return json.dumps(d, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> Curve:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: If ``text`` is not such a JSON string.

        """
        try:
            d = json.loads(text)
            points = [CurvePoint(int(a), float(b), float(c), float(e), float(f), float(g))
                      for a, b, c, e, f, g in d.pop("points")]
            return cls(points=points, **d)
        except (TypeError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a Curve JSON string: {exc}") from None

    def time_to(self, target_test_loss: float) -> tuple[float, float] | None:
        """``(seconds, epochs)`` at the first evaluation with held-out loss ``<= target``.

        None if the run never reached it.
        """
        for p in self.points:
            if p.test_loss <= target_test_loss:
                return p.seconds, p.epoch
        return None

    @property
    def best_test_loss(self) -> float:
        """The smallest held-out loss evaluated (``inf`` without finite points)."""
        vals = [p.test_loss for p in self.points if math.isfinite(p.test_loss)]
        return min(vals) if vals else math.inf


def _loss_fn(loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return mse_loss if loss == "mse" else cross_entropy_loss


def _check(optimizer: str, loss: str, lr: float, epochs: float, batch_size: int | None,
           n: int) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs!r}")
    if batch_size is not None and not (isinstance(batch_size, int) and 1 <= batch_size):
        raise ValueError(f"batch_size must be a positive int or None (full batch), "
                         f"got {batch_size!r}")
    if n < 1:
        raise ValueError("the training set is empty")


def _check_kfac_layers(model: nn.Module) -> None:
    own = [m for m in model.modules() if not list(m.children()) and list(m.parameters())]
    bad = sorted({type(m).__name__ for m in own if not isinstance(m, (nn.Linear, nn.Conv2d))})
    if bad:
        raise ValueError(f"optimizer 'kfac' (curvlinops KFACLinearOperator) supports only "
                         f"nn.Linear and nn.Conv2d layers; the model has {bad}. Build the "
                         "network from torch layers (see ntkcheck.optim.optimizers.plain_mlp)")


def _kfac_inverse(model: nn.Module, params: list[nn.Parameter], xb: torch.Tensor,
                  yb: torch.Tensor, loss: str, damping: float):
    from curvlinops import KFACInverseLinearOperator, KFACLinearOperator

    loss_func = nn.MSELoss() if loss == "mse" else nn.CrossEntropyLoss()
    kfac = KFACLinearOperator(model, loss_func, params, [(xb, yb)], fisher_type="type-2",
                              check_deterministic=False, progressbar=False)
    return KFACInverseLinearOperator(kfac, damping=damping, use_heuristic_damping=True)


def _ngd_direction(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, loss: str,
                   damping: float) -> dict[str, torch.Tensor]:
    from ntkcheck.optim.jacobian import JacobianOperator, ntk_gram

    with torch.no_grad():
        out = model(xb)
    gram = ntk_gram(model, xb).to(torch.float64)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    if loss == "mse":
        r = (out - yb).reshape(-1).to(torch.float64)
        lhs = gram
    else:
        p = torch.softmax(out.to(torch.float64), dim=1)
        onehot = torch.nn.functional.one_hot(yb, out.shape[1]).to(p)
        r = (p - onehot).reshape(-1)
        blocks = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        lhs = torch.block_diag(*blocks) @ gram
    alpha = torch.linalg.solve(lhs + damping * eye, r)
    return JacobianOperator(model, xb).vjp(alpha)


def _step(model: nn.Module, optimizer: str, opt: torch.optim.Optimizer | None,
          params: list[nn.Parameter], names: list[str], xb: torch.Tensor, yb: torch.Tensor,
          loss: str, loss_fn: Callable, lr: float, damping: float, step: int,
          curvature_every: int, state: dict[str, object]) -> bool:
    """One optimizer step on a batch; False when the batch loss is not finite."""
    model.train()
    if optimizer in ("sgd", "adam"):
        assert opt is not None
        opt.zero_grad(set_to_none=True)
        batch_loss = loss_fn(model(xb), yb)
        if not torch.isfinite(batch_loss):
            return False
        batch_loss.backward()
        opt.step()
        return True
    if optimizer == "kfac":
        if "inverse" not in state or step % curvature_every == 0:
            state["inverse"] = _kfac_inverse(model, params, xb, yb, loss, damping)
        batch_loss = (nn.functional.mse_loss(model(xb), yb) if loss == "mse"
                      else nn.functional.cross_entropy(model(xb), yb))
        if not torch.isfinite(batch_loss):
            return False
        grads = torch.autograd.grad(batch_loss, params)
        direction = state["inverse"] @ [g.detach() for g in grads]  # type: ignore[operator]
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.sub_(lr * d)
        return True
    model.eval()
    direction = _ngd_direction(model, xb, yb, loss, damping)
    with torch.no_grad():
        for name, p in zip(names, params, strict=True):
            p.sub_(lr * direction[name].to(p.dtype))
    return all(bool(torch.isfinite(p).all()) for p in params)


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str
              ) -> tuple[float, float]:
    with torch.no_grad():
        out = model(x)
        value = float(_loss_fn(loss)(out, y))
        acc = (float((out.argmax(1) == y).to(torch.float64).mean()) if loss == "cross_entropy"
               else math.nan)
    return value, acc


def fit(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor], *, optimizer: str, lr: float,
        loss: str = "cross_entropy", batch_size: int | None = None, epochs: float = 10,
        seed: int = 0, momentum: float = 0.9, damping: float = 1e-3,
        curvature_every: int = 1, eval_every: float = 1.0,
        target_test_loss: float | None = None, max_seconds: float | None = None) -> Curve:
    """Train ``model`` in place and record its loss curve.

    Args:
        model: Network mapping ``(N, ...)`` to ``(N, O)``; put in train mode while training
            (no dropout or batch norm is assumed to matter) and eval mode for evaluations.
        train: ``(x, y)`` training set: ``y`` int64 class labels ``(N,)`` for
            ``"cross_entropy"``, ``(N, O)`` targets for ``"mse"``.
        test: Held-out ``(x, y)`` in the same format.
        optimizer: One of :data:`OPTIMIZERS` (module docstring).
        lr: Step size (``"kfac"``/``"ngd"``: the fraction of the damped Gauss-Newton step).
        loss: ``"cross_entropy"`` (mean) or ``"mse"`` (``1/(2N) ||f - y||^2``).
        batch_size: Mini-batch size; None trains on the full batch. Batches are drawn by a
            random permutation per epoch (``seed``); a last partial batch is dropped unless
            it is the only one.
        epochs: Training budget in epochs.
        seed: Seed of the batch order (and K-FAC's generator).
        momentum: ``"sgd"``'s momentum.
        damping: ``"kfac"``: curvlinops' damping (heuristic pi split, Martens & Grosse 2015,
            Sec. 6.3); ``"ngd"``: ``lambda`` in units of the batch's NTK Gram matrix (must
            be ``> 0`` for cross-entropy, whose output Hessian is singular).
        curvature_every: ``"kfac"``: recompute the Kronecker factors every this many steps.
        eval_every: Evaluate (train and held-out loss) every this many epochs.
        target_test_loss: Stop at the first evaluation with held-out loss ``<=`` this.
        max_seconds: Stop when the training clock passes this.

    Returns:
        A :class:`Curve` (``diverged`` set when a loss became non-finite).

    Raises:
        ValueError: On an unknown optimizer or loss, a non-positive ``lr``/``epochs``, a bad
            ``batch_size``, non-positive ``damping`` for ``"ngd"`` with cross-entropy, or a
            model with other layers than ``nn.Linear``/``nn.Conv2d`` for ``"kfac"``.

    """
    x, y = train
    n = int(x.shape[0])
    _check(optimizer, loss, lr, epochs, batch_size, n)
    if optimizer == "ngd" and loss == "cross_entropy" and not damping > 0:
        raise ValueError("ngd with cross-entropy needs damping > 0 (the softmax's output "
                         "Hessian is singular)")
    if optimizer == "kfac":
        _check_kfac_layers(model)
    bs = n if batch_size is None else min(int(batch_size), n)
    per_epoch = max(1, n // bs)
    total_steps = max(1, math.ceil(epochs * per_epoch))
    eval_steps = max(1, round(eval_every * per_epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    opt: torch.optim.Optimizer | None = None
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    loss_fn = _loss_fn(loss)
    curve = Curve(optimizer=optimizer, lr=float(lr), batch_size=bs, loss=loss)
    gen = torch.Generator().manual_seed(int(seed))
    clock = 0.0

    def evaluate(step: int) -> bool:
        model.eval()
        tr, _ = _evaluate(model, x, y, loss)
        te, acc = _evaluate(model, test[0], test[1], loss)
        curve.points.append(CurvePoint(step, step / per_epoch, clock, tr, te, acc))
        if not (math.isfinite(tr) and math.isfinite(te)):
            curve.diverged = True
            return True
        return target_test_loss is not None and te <= target_test_loss

    if evaluate(0):
        return curve
    order = torch.randperm(n, generator=gen).to(x.device)
    state: dict[str, object] = {}
    for step in range(total_steps):
        k = step % per_epoch
        if k == 0 and step > 0:
            order = torch.randperm(n, generator=gen).to(x.device)
        idx = order[k * bs:(k + 1) * bs]
        xb, yb = x[idx], y[idx]
        t0 = time.perf_counter()
        try:
            ok = _step(model, optimizer, opt, params, names, xb, yb, loss, loss_fn, lr,
                       damping, step, curvature_every, state)
        except torch.linalg.LinAlgError:  # the curvature of a diverging network
            ok = False
        clock += time.perf_counter() - t0
        if not ok:
            curve.diverged = True
            evaluate(step + 1)
            break
        last = step + 1 == total_steps
        if (step + 1) % eval_steps == 0 or last:
            if evaluate(step + 1):
                break
            if max_seconds is not None and clock >= max_seconds:
                break
    model.eval()
    return curve


@dataclass(frozen=True)
class TunedLR:
    """The step size chosen from a grid.

    Attributes:
        lr: The grid value with the smallest final held-out loss.
        tried: ``(lr, final held-out loss)`` per grid value (``inf`` when it diverged).

    """

    lr: float
    tried: tuple[tuple[float, float], ...]


def tune_lr(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
            test: tuple[torch.Tensor, torch.Tensor], *, optimizer: str, grid: Sequence[float],
            **fit_kwargs) -> TunedLR:
    """Pick the step size of ``grid`` with the smallest held-out loss at the end of a budget.

    Each grid value trains a deep copy of ``model`` (left unchanged) with :func:`fit` and the
    same ``fit_kwargs`` (e.g. ``loss``, ``batch_size``, ``epochs``); a diverged run scores
    ``inf``. Run it once at a base width and hold the result fixed at every width (the
    practical regime: a step size that does not change with width).

    Raises:
        ValueError: On an empty grid or a non-positive value, or if every run diverged.

    """
    if not grid or any(not v > 0 for v in grid):
        raise ValueError(f"grid must be non-empty and positive, got {grid!r}")
    tried = []
    for lr in grid:
        curve = fit(copy.deepcopy(model), train, test, optimizer=optimizer, lr=float(lr),
                    **fit_kwargs)
        final = curve.points[-1].test_loss if not curve.diverged else math.inf
        tried.append((float(lr), final if math.isfinite(final) else math.inf))
    best = min(tried, key=lambda t: t[1])
    if not math.isfinite(best[1]):
        raise ValueError(f"{optimizer}: every step size of {list(grid)} diverged; extend the "
                         "grid downwards")
    return TunedLR(lr=best[0], tried=tuple(tried))


def plain_mlp(in_features: int, width: int, depth: int, out_features: int, *, seed: int,
              weight_std: float = 2**0.5, dtype: torch.dtype = torch.float32,
              device: str | torch.device = "cpu") -> nn.Sequential:
    """A ReLU MLP of ``nn.Linear`` layers in the standard parametrization (for K-FAC).

    ``depth`` hidden layers of ``width`` units; weights ``N(0, weight_std^2 / fan_in)`` (He
    et al. 2015 at the default ``sqrt(2)``), biases zero, as
    ``ArchSpec(parametrization="standard", weight_std=...)`` draws them.

    Raises:
        ValueError: On a non-positive size.

    """
    if min(in_features, width, depth, out_features) < 1:
        raise ValueError("in_features, width, depth and out_features must be >= 1")
    gen = torch.Generator().manual_seed(int(seed))
    sizes = [in_features] + [width] * depth + [out_features]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        lin = nn.Linear(a, b, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=gen, dtype=dtype)
                             * (weight_std / math.sqrt(a)))
            lin.bias.zero_()
        layers.append(lin)
        if i < depth:
            layers.append(nn.ReLU())
    return nn.Sequential(nn.Flatten(), *layers).to(device).eval()
