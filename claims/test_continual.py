"""Continual learning: does width reduce forgetting? (Wenger et al. 2023, Sec. 3.3)

Mirzadeh et al. 2022 ("Wide neural networks forget less catastrophically") report that wider
networks forget less; in the kernel regime forgetting is governed by the overlap of the tasks'
NTK feature subspaces (Doan et al. 2021, the NTK overlap matrix; Bennani et al. 2020).
Wenger, Dangel & Kristiadi 2023 (arXiv 2310.00137, Sec. 3.3) find that wide networks forget
less only when they are not trained to high accuracy on each task. Three claims:

* ``forgetting-decreases-with-width-short`` / ``-converged``: the average forgetting of test
  accuracy (Chaudhry et al. 2018) decreases with width -- the slope of forgetting against
  log(width), fitted on every seed, has its 95% interval below 0 (``scale="semilog"``,
  ``trend="decreasing"``; forgetting can be zero or negative, so no power law is fitted). The
  tolerance 1 is the largest possible forgetting: the claim is the trend, not a level.
  Trained as in practice: the seed paper's standard-parametrization MLP (He initialization),
  float32, a fixed Adam step (:data:`LR` at every width, Kingma & Ba 2015), mini-batches of
  :data:`BATCH`, cross-entropy, one shared 10-way head
  (:func:`ntkcheck.train_sequentially` with ``check_every="epoch"``; the practical-regime
  module ``ntkcheck.training.regimes`` had not landed). Per-task budgets: *short* -- the value
  is the forgetting after :data:`SHORT_EPOCHS` epoch(s) per task (Mirzadeh et al.'s few-epoch
  setting); the rest of the training-length sweep (:data:`LENGTHS` per profile) is recorded
  beside it (``forgetting_<n>ep``, ``learned_<n>ep``), and so is the forgetting when every
  task is trained until its training accuracy reaches :data:`MATCH` (``forgetting_matched``,
  ``learned_matched``: forgetting at matched learned accuracy, since a fixed budget lets wider
  networks learn more and so have more to forget); *converged* -- each task is trained until
  its training accuracy (checked after every epoch) is at least :data:`CONVERGED`'s target, at
  most its ``max_epochs`` (``reached`` records the fraction of tasks that got there). Every
  record keeps ``learned_accuracy`` (the mean training accuracy of each task right after it
  was trained) and ``average_accuracy``. Read together in the report they are the seed
  paper's test. Data: all 1,797 scikit-learn digits, three permuted-pixel tasks (task 0
  unpermuted) of 1,200 training and 597 test images each.
* ``forgetting-ntk-overlap``: the kernel-regime prediction of what is forgotten -- the drift
  ``f_T(X_k) - f_k(X_k)`` of the outputs on every earlier task's training inputs, whose squared
  norm over ``N_k`` is Doan et al. 2021's forgetting -- from the empirical NTK at
  initialization (:func:`ntkcheck.continual.predict_sequential_gd`, exact for the linearized
  network) matches the network's drift within 10% relative error, and the error shrinks with
  width (``trend="decreasing"``; predicted rate -1). The drift vectors are compared because a
  wrong kernel can match the scalar forgetting by a coincidence of norms; the scalar
  forgetting of the prediction, the linearized network and the network are recorded too.
  Recorded beside it: ``bound_ratio``, the drift over the principal-angle bound
  ``||J_k|| sum_{t>k} cos(theta_1(k, t)) ||delta_t||`` (:func:`ntkcheck.continual.
  forgetting_bound`). That bound is no longer a claim (``forgetting-bounded`` was dropped): it
  chains two norm inequalities (``||J_k v|| <= ||J_k|| ||P_k v||`` and
  ``||P_k delta_t|| <= cos(theta_1) ||delta_t||`` for an update ``delta_t`` in task ``t``'s
  row space), so it holds for the linearized network by construction and is loose by a factor
  4-6 on these tasks; a network would have to leave the kernel regime by that factor before it
  could fail, which no swept width comes near. Its falsifiable content, what the NTK overlap
  predicts the network forgets, is ``forgetting-ntk-overlap``, which compares the drift vectors
  themselves.

Kernel-regime setup (claim 3): three permuted-digits tasks, squared loss on one-hot targets
minus 1/10, full-batch gradient descent at the largest ``lambda_max`` of the tasks' full
(input x output) Gram blocks, ``lr = N / lambda_max``; one-hidden-layer NTK-parametrized MLPs
(ReLU pinned, erf drawn); float64; 20 steps per task; the tasks' training inputs.

Every network is initialized from ``ntk_measure.seed`` (a seed derived from the claim, the
architecture, the width and the seed index). Widths above a profile's cap are recorded as not
measured (``ntk_measure.capped``): the practical claims train up to :data:`PRACTICAL_CAP`
(``quick``), the kernel claims up to :data:`KERNEL_CAP` (``smoke``, ``quick``); ``paper``
sweeps every width. Kernel-claim examples per task: smoke 12, quick 24, paper 64.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from threadpoolctl import threadpool_limits

from ntkcheck import (
    ArchSpec,
    Budget,
    average_forgetting,
    drift_norms,
    forgetting_bound,
    linearize,
    load_dataset,
    output_forgetting,
    permuted_tasks,
    predict_sequential_gd,
    principal_angles,
    strategies,
    task_ntk,
    train_sequentially,
)

N_TASKS = 3
N_TRAIN = 1200  # per task; the other 597 digits are each task's test set
LR = 1e-3  # Adam, every width
BATCH = 64
SHORT_EPOCHS = 1
#: The training-length sweep (epochs per task) recorded by the short claim, per profile.
LENGTHS = {"smoke": (1,), "quick": (1, 3, 10), "paper": (1, 3, 10, 30)}
MATCH = 0.9  # matched learned accuracy: train each task until its training accuracy >= 0.9
CONVERGED = Budget(target_accuracy=0.99, max_epochs=200)
PRACTICAL_CAP = {"smoke": None, "quick": 1024, "paper": None}
PRACTICAL_CAP_REASON = ("the quick profile trains the practical continual claims up to width "
                        "1024 (3 tasks x 1,200 digits, Adam; cost grows with width); the paper "
                        "profile trains every width")
KERNEL_CAP = {"smoke": 2048, "quick": 2048, "paper": None}
KERNEL_CAP_REASON = ("the kernel-regime continual claims form float64 task NTKs; smoke and "
                     "quick stop at 2048, the paper profile sweeps every width")
KERNEL_SIZES = {"smoke": 12, "quick": 24, "paper": 64}
KERNEL_STEPS = 20  # GD steps per task in the kernel-regime claims

#: The seed paper's MLP in its standard parametrization (He init), one hidden layer.
PAPER_MLP = ArchSpec(depth=1, activation="relu", parametrization="standard", weight_std=2**0.5)
WIDTH_SPECS = strategies.mlps(min_depth=1, max_depth=1, activations=("relu", "tanh"),
                              parametrizations=("standard",), biases=(True,),
                              weight_stds=(2**0.5,))
KERNEL_SPECS = strategies.mlps(min_depth=1, max_depth=1, activations=("relu", "erf"),
                               parametrizations=("ntk",), biases=(True,))

SHORT = dict(
    id="forgetting-decreases-with-width-short",
    statement="Wider networks forget less (short training: 1 epoch of Adam per task)",
    source="Mirzadeh et al. 2022; tested as in Wenger et al. 2023, Sec. 3.3",
    metric="average forgetting of test accuracy, 3 permuted-digits tasks (Chaudhry et al. "
           "2018), SP MLP, Adam at a fixed step, cross-entropy; claim: slope vs log(width) < 0",
    tolerance=1.0,
    units="accuracy",
    scale="semilog",
    trend="decreasing",
)
CONVERGED_CLAIM = dict(
    id="forgetting-decreases-with-width-converged",
    statement="Wider networks forget less (each task trained to >= 99% training accuracy)",
    source="NTK-regime prediction (Doan et al. 2021); tested as in Wenger et al. 2023, "
           "Sec. 3.3",
    metric="average forgetting of test accuracy, 3 permuted-digits tasks (Chaudhry et al. "
           "2018), SP MLP, Adam at a fixed step, cross-entropy; claim: slope vs log(width) < 0",
    tolerance=1.0,
    units="accuracy",
    scale="semilog",
    trend="decreasing",
)


@pytest.fixture(autouse=True)
def _blas_threads():
    """Linear algebra on as many threads as torch (the plugin's per-worker share)."""
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        yield


def _name(profile) -> str:
    return profile.name if profile.name in LENGTHS else "quick"


@functools.lru_cache(maxsize=4)
def _tasks(n_train: int, n_test: int | None, device: str):
    data = load_dataset("digits", n=None if n_test is None else n_train + n_test, seed=0,
                        device=device)
    return permuted_tasks(data, N_TASKS, n_train=n_train, n_test=n_test, seed=0)


def practical_tasks(device) -> object:
    """The practical claims' task sequence: all digits, 1,200 train / 597 test per task."""
    return _tasks(N_TRAIN, None, str(device))


def _train(spec, width: int, init: int, tasks, budget: Budget, device):
    net = spec.with_width(width).build(seed=init, input_shape=tasks.input_shape,
                                       out_features=tasks.n_outputs, device=device,
                                       dtype=torch.float32)
    return train_sequentially(net, tasks, budget, lr=LR, optimizer="adam",
                              loss="cross_entropy", batch_size=BATCH, seed=init,
                              check_every="epoch")


def practical_forgetting(claim: dict, spec, sweep, device, measure, profile,
                         tasks=None, trained_width=None) -> None:
    """Measure one practical continual claim (``SHORT`` or ``CONVERGED_CLAIM``) over the sweep.

    For the negative controls: ``tasks`` replaces the permuted-digits sequence, and
    ``trained_width`` (an int) trains a network of that width at every swept width.
    """
    tasks = practical_tasks(device) if tasks is None else tasks
    name = _name(profile)
    for width, seed in measure.capped(spec, sweep, PRACTICAL_CAP[name], PRACTICAL_CAP_REASON):
        init = measure.seed(spec, width=width, seed=seed)
        extra: dict = {}
        trained = width if trained_width is None else int(trained_width)
        if trained_width is not None:
            extra["trained_width"] = trained
        if claim["id"] == SHORT["id"]:
            for n in LENGTHS[name]:
                r = _train(spec, trained, init, tasks, Budget(epochs=n), device)
                extra[f"forgetting_{n}ep"] = r.average_forgetting
                extra[f"learned_{n}ep"] = r.learned_accuracy
                if n == SHORT_EPOCHS:
                    res = r
            m = _train(spec, trained, init, tasks, Budget(target_accuracy=MATCH, max_epochs=200),
                       device)
            extra.update(forgetting_matched=m.average_forgetting,
                         learned_matched=m.learned_accuracy, match_target=MATCH,
                         matched_reached=float(np.mean([bool(x) for x in m.reached])))
            budget = Budget(epochs=SHORT_EPOCHS)
        else:
            budget = CONVERGED
            res = _train(spec, trained, init, tasks, budget, device)
            extra["reached"] = float(np.mean([bool(x) for x in res.reached]))
        measure(spec, width=width, seed=seed, value=res.average_forgetting, dtype="float32",
                budget=budget.label, learned_accuracy=res.learned_accuracy,
                average_accuracy=res.average_accuracy,
                train_forgetting=average_forgetting(res.train_accuracy),
                mean_steps=float(np.mean(res.steps)), lr=LR, batch_size=BATCH,
                optimizer="adam", loss="cross_entropy", n_tasks=len(tasks),
                n_train=int(tasks[0].x_train.shape[0]), n_test=int(tasks[0].x_test.shape[0]),
                **extra)


@pytest.mark.claim(**SHORT, setting="practical")
@given(spec=WIDTH_SPECS)
@example(spec=PAPER_MLP)
def test_forgetting_decreases_with_width_short(spec, ntk_sweep, ntk_device, ntk_measure,
                                               ntk_profile):
    practical_forgetting(SHORT, spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile)


@pytest.mark.claim(**CONVERGED_CLAIM, setting="practical")
@given(spec=WIDTH_SPECS)
@example(spec=PAPER_MLP)
def test_forgetting_decreases_with_width_converged(spec, ntk_sweep, ntk_device, ntk_measure,
                                                   ntk_profile):
    practical_forgetting(CONVERGED_CLAIM, spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile)


def _drifts(outputs) -> np.ndarray:
    """``f_T(X_k) - f_k(X_k)`` for every earlier task ``k``, concatenated (Doan et al. 2021)."""
    last = len(outputs) - 1
    return np.concatenate([(outputs[last][k] - outputs[k][k]).ravel() for k in range(last)])


@functools.lru_cache(maxsize=64)
def _kernel_experiment(spec: ArchSpec, width: int, seed: int, device: str, n: int
                       ) -> dict[str, float]:
    """One (architecture, width, initialization seed) of a kernel-regime claim."""
    tasks = _tasks(n, n, device)
    net = spec.with_width(width).build(seed=seed, input_shape=tasks.input_shape,
                                       out_features=tasks.n_outputs, device=device)
    ntk = task_ntk(net, tasks)
    lr = min(n / float(np.linalg.eigvalsh(ntk.block(t, t))[-1]) for t in range(len(ntk)))
    pred = predict_sequential_gd(ntk, lr=lr, steps=KERNEL_STEPS)
    lin = train_sequentially(linearize(net), tasks, Budget(epochs=KERNEL_STEPS), lr=lr)
    res = train_sequentially(net, tasks, Budget(epochs=KERNEL_STEPS), lr=lr)
    pred_outputs = pred.task_outputs(ntk)
    f_pred = float(output_forgetting(pred_outputs).mean())
    f_net = float(res.output_forgetting.mean())
    drift_pred, drift_net = _drifts(pred_outputs), _drifts(res.train_outputs)
    bound_net = forgetting_bound(ntk, res.displacement)
    bound_lin = forgetting_bound(ntk, pred.displacement)
    pred_acc = np.array([[float(np.mean(o.argmax(1) == t.y_train.cpu().numpy()))
                          for o, t in zip(stage, tasks)] for stage in pred_outputs])
    cos1 = [math.cos(principal_angles(ntk, k, t)[0])
            for k in range(len(ntk)) for t in range(k + 1, len(ntk))]
    return {
        "drift_error": float(np.linalg.norm(drift_pred - drift_net) / np.linalg.norm(drift_net)),
        "forgetting_gap": abs(f_pred - f_net) / f_net,
        "forgetting_pred": f_pred, "forgetting_net": f_net,
        "forgetting_linearized": float(lin.output_forgetting.mean()),
        "acc_forgetting_pred": average_forgetting(pred_acc),
        "acc_forgetting_net": average_forgetting(res.train_accuracy),
        "bound_ratio": float(np.max(drift_norms(res.train_outputs) / bound_net)),
        "bound_ratio_linearized": float(np.max(drift_norms(pred_outputs) / bound_lin)),
        "mean_cos_theta1": float(np.mean(cos1)), "lr": lr,
        "learned_accuracy": res.learned_accuracy,
    }


@pytest.mark.claim(
    id="forgetting-ntk-overlap",
    statement="The NTK-overlap (kernel-regime) prediction of forgetting matches the network, "
              "increasingly with width",
    source="Doan et al. 2021, Thm. 1 and Sec. 4; rate: Dyer & Gur-Ari 2020 (O(1/width) "
           "deviation from the linearized model)",
    metric="||δ_pred - δ_net|| / ||δ_net||, δ = (f_T(X_k) - f_k(X_k)) over earlier tasks k, "
           "3 permuted-digits tasks; ||δ_k||² / N_k is Doan et al. 2021's forgetting",
    tolerance=0.1,
    rate=-1.0,
    trend="decreasing",
)
@given(spec=KERNEL_SPECS)
@example(spec=ArchSpec(depth=1, activation="relu"))
def test_forgetting_ntk_overlap(spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    name = _name(ntk_profile)
    for width, seed in ntk_measure.capped(spec, ntk_sweep, KERNEL_CAP[name], KERNEL_CAP_REASON):
        init = ntk_measure.seed(spec, width=width, seed=seed)
        out = _kernel_experiment(spec, width, init, str(ntk_device), KERNEL_SIZES[name])
        ntk_measure(spec, width=width, seed=seed, value=out["drift_error"],
                    **{k: v for k, v in out.items() if k != "drift_error"})
