"""Continual learning: metrics by hand, task sequences, sequential training, kernel regime.

The forgetting metric is checked on hand-made accuracy matrices (2 and 4 tasks, negative
forgetting, the T-1 denominator); the NTK-overlap prediction is checked against models that
are linear in their parameters (a linear layer, a linearized MLP), where it is exact; the
principal angles against explicit Jacobians; and each continual claim has a negative control
that fails through the plugin.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from ntkcheck.arch import ArchSpec
from ntkcheck.continual import (
    Budget,
    HeadView,
    TaskSequence,
    average_accuracy,
    average_forgetting,
    check_accuracy_matrix,
    drift_norms,
    forgetting_bound,
    ntk_overlap_matrix,
    output_forgetting,
    permuted_tasks,
    predict_sequential_gd,
    principal_angles,
    rotated_tasks,
    split_tasks,
    task_forgetting,
    task_ntk,
    task_sequence,
    train_sequentially,
)
from ntkcheck.continual.overlap import _gd_filter
from ntkcheck.data import DataError, load_dataset
from ntkcheck.kernel_regime.linearize import linearize

NAN = math.nan


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", n=160, seed=0)


# ----------------------------------------------------------------------------- forgetting


def test_two_tasks_forgetting_is_first_minus_final_accuracy():
    acc = [[0.9, 0.1], [0.6, 0.95]]
    assert average_forgetting(acc) == pytest.approx(0.9 - 0.6)
    assert average_accuracy(acc) == pytest.approx((0.6 + 0.95) / 2)
    np.testing.assert_allclose(task_forgetting(acc), [0.3])


def test_four_tasks_by_hand_divides_by_three():
    acc = [[0.90, NAN, NAN, NAN],
           [0.70, 0.80, NAN, NAN],
           [0.75, 0.60, 0.85, NAN],
           [0.50, 0.65, 0.40, 0.95]]
    # f_0 = max(.90, .70, .75) - .50; f_1 = max(.80, .60) - .65; f_2 = .85 - .40
    np.testing.assert_allclose(task_forgetting(acc), [0.40, 0.15, 0.45], atol=1e-12)
    assert average_forgetting(acc) == pytest.approx(1.0 / 3)  # not / 4
    assert average_accuracy(acc) == pytest.approx((0.50 + 0.65 + 0.40 + 0.95) / 4)


def test_negative_forgetting_when_earlier_tasks_improve():
    acc = [[0.5, NAN, NAN], [0.6, 0.7, NAN], [0.8, 0.9, 0.9]]
    np.testing.assert_allclose(task_forgetting(acc), [-0.2, -0.2], atol=1e-12)
    assert average_forgetting(acc) == pytest.approx(-0.2)


def test_accuracy_before_training_counts_in_the_maximum_unless_nan():
    # Chaudhry et al. 2018 take the max over every earlier row l <= T-2, also l < j.
    acc = [[0.5, 0.9, 0.1], [0.4, 0.8, 0.2], [0.3, 0.6, 0.9]]
    np.testing.assert_allclose(task_forgetting(acc), [0.5 - 0.3, 0.9 - 0.6], atol=1e-12)
    acc[0][1] = NAN
    np.testing.assert_allclose(task_forgetting(acc), [0.2, 0.8 - 0.6], atol=1e-12)


@pytest.mark.parametrize("bad", [[[0.5]], [[0.5, 0.1]], [[NAN, 0.1], [0.2, 0.3]],
                                 [[0.5, NAN], [NAN, 0.3]], [[1.5, 0], [0, 0]], []])
def test_forgetting_rejects_bad_matrices(bad):
    with pytest.raises(ValueError):
        average_forgetting(bad)


def test_single_task_has_no_forgetting_but_an_accuracy():
    assert task_forgetting([[0.7]]).shape == (0,)
    assert average_accuracy([[0.7]]) == pytest.approx(0.7)
    assert check_accuracy_matrix([[0.7]]).dtype == np.float64


def test_output_forgetting_by_hand():
    own0, own1 = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[2.0, 2.0]])
    last0, last1 = np.array([[1.0, 2.0], [0.0, -2.0]]), np.array([[0.0, 0.0]])
    outs = [[own0, None, None], [None, own1, None], [last0, last1, np.zeros((1, 2))]]
    # task 0: mean of 2^2 and 3^2; task 1: 2^2 + 2^2
    np.testing.assert_allclose(output_forgetting(outs), [(4 + 9) / 2, 8.0])
    np.testing.assert_allclose(drift_norms(outs), [math.sqrt(13), math.sqrt(8)])
    with pytest.raises(ValueError):
        output_forgetting([[own0]])


# ----------------------------------------------------------------------------- tasks


def test_permuted_tasks_permute_the_same_images(digits):
    seq = permuted_tasks(digits, 3, n_train=40, n_test=50, seed=1)
    assert len(seq) == 3 and seq.scenario == "domain" and seq.n_outputs == 10
    torch.testing.assert_close(seq[0].x_train, digits.x[:40])
    torch.testing.assert_close(seq[0].x_test, digits.x[40:90])
    for t in seq:
        assert t.head == tuple(range(10))
        torch.testing.assert_close(t.y_train, digits.y[:40])
        a = t.x_train.reshape(40, -1).sort(dim=1).values
        torch.testing.assert_close(a, digits.x[:40].reshape(40, -1).sort(dim=1).values)
    assert not torch.equal(seq[1].x_train, seq[2].x_train)
    again = permuted_tasks(digits, 3, n_train=40, n_test=50, seed=1)
    torch.testing.assert_close(again[2].x_test, seq[2].x_test)
    targets = seq[0].train_targets()
    assert targets.shape == (40, 10) and torch.allclose(targets.sum(1), torch.zeros(40,
                                                                                  dtype=targets.dtype))


def test_rotated_tasks_rotate_counter_clockwise(digits):
    seq = rotated_tasks(digits, (0, 90), n_train=10, n_test=10)
    torch.testing.assert_close(seq[0].x_train, digits.x[:10])
    img = torch.zeros((1, 1, 8, 8), dtype=torch.float64)
    img[0, 0, 0, 7] = 1.0  # top right
    one = load_dataset("digits", n=2, seed=0)
    data = type(one)("dot", torch.cat([img, img]), one.y, "classification", (1, 8, 8), 10)
    rot = rotated_tasks(data, (90,), n_train=1, n_test=1)[0].x_train[0, 0]
    assert float(rot[0, 0]) == pytest.approx(1.0) and float(rot.sum()) == pytest.approx(1.0)


def test_split_tasks_task_and_class_incremental(digits):
    seq = split_tasks(digits, n_train=8, n_test=8)
    assert seq.scenario == "task" and seq.n_outputs == 10 and len(seq) == 5
    for t, task in enumerate(seq):
        assert task.head == (2 * t, 2 * t + 1)
        assert set(task.y_train.tolist()) <= {0, 1}
    cls = split_tasks(digits, [(3, 5), (7,)], scenario="class", n_train=6, n_test=4)
    assert cls.n_outputs == 10 and cls[0].head == tuple(range(10))
    assert set(cls[0].y_train.tolist()) <= {3, 5} and set(cls[1].y_test.tolist()) == {7}
    with pytest.raises(ValueError):
        split_tasks(digits, [(0, 1), (1, 2)], n_train=4)
    with pytest.raises(ValueError):
        split_tasks(digits, scenario="domain", n_train=4)


def test_user_task_sequence(digits):
    x, y = digits.x.reshape(160, -1).numpy(), digits.y.numpy()
    seq = task_sequence([(x[:20], y[:20] % 2), (x[20:40], y[20:40] % 3)], scenario="task")
    assert seq.n_outputs == 5 and seq[0].head == (0, 1) and seq[1].head == (2, 3, 4)
    torch.testing.assert_close(seq[0].x_test, seq[0].x_train)  # (X, y): tested on train data
    shared = task_sequence([(x[:20], y[:20], x[20:30], y[20:30])])
    assert shared.n_outputs == 10 and shared.input_shape == (64,)
    with pytest.raises(ValueError):
        task_sequence([(x[:20],)])
    with pytest.raises(DataError):
        task_sequence([(np.ones((3, 2), dtype=int), np.zeros(3, dtype=int))])


# ----------------------------------------------------------------------------- training


def test_budget_validation():
    assert Budget(epochs=3).label == "3 epochs"
    assert Budget(target_accuracy=0.99).label == "train acc >= 0.99"
    for kw in ({}, {"epochs": 2, "target_accuracy": 0.9}, {"epochs": -1},
               {"target_accuracy": 1.5}, {"target_accuracy": 0.5, "max_epochs": 0}):
        with pytest.raises(ValueError):
            Budget(**kw)


def _mlp(width, seq, seed=0, depth=1):
    return ArchSpec(depth=depth, activation="relu").with_width(width).build(
        seed=seed, input_shape=seq.input_shape, out_features=seq.n_outputs)


def test_train_until_accuracy_and_epoch_budget(digits):
    seq = permuted_tasks(digits, 2, n_train=24, n_test=40)
    res = train_sequentially(_mlp(128, seq), seq, Budget(target_accuracy=1.0, max_epochs=500),
                             lr=2.0)
    assert res.reached == [True, True] and np.all(np.diag(res.train_accuracy) == 1.0)
    assert res.accuracy.shape == (2, 2) and np.all(np.isfinite(res.accuracy))
    assert res.average_forgetting == pytest.approx(res.accuracy[0, 0] - res.accuracy[1, 0])
    fixed = train_sequentially(_mlp(128, seq), seq, Budget(epochs=3), lr=2.0)
    assert fixed.steps == [3, 3] and fixed.reached == [None, None]
    sgd = train_sequentially(_mlp(128, seq), seq, Budget(epochs=2), lr=0.5, optimizer="sgd",
                             batch_size=10)
    assert sgd.steps == [6, 6]  # ceil(24 / 10) steps per epoch
    with pytest.raises(ValueError, match="outputs"):
        train_sequentially(nn.Linear(64, 3).double(), task_sequence(
            [(digits.x.reshape(160, -1)[:10], digits.y[:10])]), Budget(epochs=1), lr=0.1)


def test_task_incremental_heads_leave_other_heads_alone(digits):
    seq = split_tasks(digits, [(0, 1), (2, 3)], n_train=10, n_test=10)
    net = _mlp(64, seq)
    readout = net[-1].weight
    before = readout.detach().clone()
    train_sequentially(net, seq, Budget(epochs=1), lr=1.0)
    moved = (readout.detach() - before).abs().sum(dim=1)
    assert torch.all(moved[:4] > 0) and torch.all(moved[4:] == 0)
    view = HeadView(net, (2, 3))
    assert view(seq[0].x_train).shape == (10, 2)


# ----------------------------------------------------------------------------- kernel regime


def _lr(ntk):
    return min(n / float(np.linalg.eigvalsh(ntk.block(t, t))[-1])
               for t, n in enumerate(ntk.n_points))


@pytest.mark.parametrize("scenario", ["domain", "task"])
def test_linear_model_matches_the_ntk_overlap_prediction(digits, scenario):
    if scenario == "domain":
        seq = permuted_tasks(digits, 3, n_train=16, n_test=8)
    else:
        seq = split_tasks(digits, [(0, 1), (2, 3), (4, 5)], n_train=12, n_test=4)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, seq.n_outputs)).double()
    ntk = task_ntk(model, seq)
    lr, steps = _lr(ntk), [25, 7, 40]
    pred = predict_sequential_gd(ntk, lr=lr, steps=steps)
    outs, moved = [], []
    for i, s in enumerate(steps):  # each task with its own step count
        one = TaskSequence((seq[i],), seq.n_outputs, seq.scenario, seq.input_shape)
        r = train_sequentially(model, one, Budget(epochs=s), lr=lr)
        moved.append(r.displacement[0])
        with torch.no_grad():
            outs.append([(HeadView(model, t.head)(t.x_train)).numpy() for t in seq])
    expected = pred.task_outputs(ntk)
    for i in range(3):
        for k in range(3):
            np.testing.assert_allclose(outs[i][k], expected[i][k], rtol=0, atol=1e-6)
    np.testing.assert_allclose(output_forgetting(outs), output_forgetting(expected),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(moved, pred.displacement, rtol=1e-6)


def test_linearized_network_matches_the_prediction_and_the_bound(digits):
    seq = permuted_tasks(digits, 3, n_train=12, n_test=8)
    net = _mlp(64, seq, seed=3)
    ntk = task_ntk(net, seq)
    lr = _lr(ntk)
    pred = predict_sequential_gd(ntk, lr=lr, steps=15)
    lin = train_sequentially(linearize(net), seq, Budget(epochs=15), lr=lr)
    expected = pred.task_outputs(ntk)
    for i in range(3):
        for k in range(3):
            np.testing.assert_allclose(lin.train_outputs[i][k], expected[i][k], atol=1e-6)
    np.testing.assert_allclose(lin.displacement, pred.displacement, rtol=1e-6)
    drift, bound = drift_norms(expected), forgetting_bound(ntk, pred.displacement)
    assert np.all(drift <= bound * (1 + 1e-9)) and np.all(drift > 0)


def test_principal_angles_match_explicit_jacobians(digits):
    seq = split_tasks(digits, [(0, 1), (2, 3), (4, 5)], scenario="class", n_train=5,
                      n_test=2)
    net = _mlp(16, seq)
    ntk = task_ntk(net, seq)
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = torch.cat([t.x_train for t in seq])
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(net, p, (x,)))(params)
    jac = torch.cat([j.reshape(len(x), 10, -1) for j in jac.values()], dim=-1).numpy()
    rows = np.concatenate([jac[5 * t:5 * t + 5][:, list(task.head)].reshape(-1, jac.shape[-1])
                           for t, task in enumerate(seq)])
    np.testing.assert_allclose(ntk.gram, rows @ rows.T, atol=1e-10)
    for k, t in ((0, 1), (0, 2), (1, 2)):
        explicit = np.sort(scipy.linalg.subspace_angles(rows[ntk.blocks[k]].T,
                                                        rows[ntk.blocks[t]].T))
        angles = principal_angles(ntk, k, t)
        np.testing.assert_allclose(angles, explicit, atol=1e-6)
        cosines = scipy.linalg.svdvals(ntk_overlap_matrix(ntk, k, t))
        np.testing.assert_allclose(np.sort(cosines)[::-1], np.cos(angles), atol=1e-6)
    assert np.all(np.diff(principal_angles(ntk, 0, 1)) >= 0)
    with pytest.raises(ValueError):
        principal_angles(ntk, 0, 3)
    with pytest.raises(ValueError):
        forgetting_bound(ntk, [1.0, -1.0, 1.0])


def test_gd_filter_is_the_geometric_sum():
    a = np.array([0.0, 1e-9, 0.3, 0.7, 1.0, 1.5, 1.99])
    for steps in (0, 1, 7, 40):
        direct = np.array([sum((1 - x) ** s for s in range(steps)) for x in a])
        np.testing.assert_allclose(_gd_filter(a, steps), direct, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError):
        predict_sequential_gd(task_ntk(nn.Linear(2, 2).double(), task_sequence(
            [(np.ones((2, 2)), np.array([0, 1]))])), lr=-1.0, steps=3)


# ----------------------------------------------------------------------------- negative controls

TREND_CLAIM = '''
import pytest
from hypothesis import given, strategies as st
from ntkcheck.arch import ArchSpec
from ntkcheck.continual import Budget, permuted_tasks, task_sequence, train_sequentially
from ntkcheck.data import load_dataset

@pytest.mark.claim(id="forgetting-decreases-identical", statement="s", source="s",
                   metric="average forgetting", tolerance=1.0, scale="semilog",
                   trend="decreasing")
@given(spec=st.just(ArchSpec(depth=1, activation="relu")))
def test_claim(spec, ntk_sweep, ntk_measure):
    t0 = permuted_tasks(load_dataset("digits", n=48, seed=0), 1, n_train=24, n_test=24)[0]
    tasks = task_sequence([(t0.x_train, t0.y_train, t0.x_test, t0.y_test)] * 3)
    for width, seed in ntk_sweep:
        net = spec.with_width(width).build(seed=seed, input_shape=tasks.input_shape,
                                           out_features=10)
        res = train_sequentially(net, tasks, Budget(target_accuracy=0.99, max_epochs=500),
                                 lr=2.0)
        ntk_measure(spec, width=width, seed=seed, value=res.average_forgetting)
'''


def test_negative_control_identical_tasks_show_no_width_trend(pytester):
    """Nothing to forget (three copies of one task): forgetting is 0 at every width."""
    pytester.makepyfile(test_continual_trend_control=TREND_CLAIM)
    result = pytester.runpytest("--ntk-profile", "smoke", "--ntk-widths", "16,32,64",
                                "--ntk-seeds", "2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fails the trend test, not shown decreasing*"])
    import json
    records = [json.loads(x) for x in
               (pytester.path / "reports" / "latest" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["value"] == 0.0 for r in records)


OVERLAP_CLAIM = '''
import dataclasses
import numpy as np
import pytest
from hypothesis import given, strategies as st
from ntkcheck.arch import ArchSpec
from ntkcheck.continual import Budget, permuted_tasks, predict_sequential_gd, task_ntk
from ntkcheck.continual import train_sequentially
from ntkcheck.data import load_dataset

@pytest.mark.claim(id="forgetting-{tag}", statement="s", source="Doan et al. 2021",
                   metric="m", tolerance=0.1, trend="decreasing")
@given(spec=st.just(ArchSpec(depth=1, activation="relu")))
def test_claim(spec, ntk_sweep, ntk_measure):
    tasks = permuted_tasks(load_dataset("digits", n=24, seed=0), 3, n_train=12, n_test=12)
    for width, seed in ntk_sweep:
        build = lambda depth: ArchSpec(depth=depth, activation="relu").with_width(
            width).build(seed=seed, input_shape=tasks.input_shape, out_features=10)
        net = build(1)
        ntk = task_ntk(net, tasks)
        lr = min(12 / np.linalg.eigvalsh(ntk.block(t, t))[-1] for t in range(3))
        # the kernel of a network {offset} layer(s) deeper than the one trained (0: the right one)
        used = dataclasses.replace(task_ntk(build(1 + {offset}), tasks), f0=ntk.f0)
        pred = predict_sequential_gd(used, lr=lr, steps=20)
        res = train_sequentially(net, tasks, Budget(epochs=20), lr=lr)
        po, no = pred.task_outputs(used), res.train_outputs
        d_pred = np.concatenate([(po[2][k] - po[k][k]).ravel() for k in range(2)])
        d_net = np.concatenate([(no[2][k] - no[k][k]).ravel() for k in range(2)])
        value = np.linalg.norm(d_pred - d_net) / np.linalg.norm(d_net)
        ntk_measure(spec, width=width, seed=seed, value=value)
'''


@pytest.mark.parametrize(("offset", "passes"), [(1, False), (0, True)])
def test_negative_control_of_the_ntk_overlap_claim(pytester, offset, passes):
    """A wrong kernel (one layer too deep) breaks the NTK-overlap prediction at every width."""
    pytester.makepyfile(test_continual_kernel_control=OVERLAP_CLAIM.format(
        tag=f"overlap{offset}", offset=offset))
    result = pytester.runpytest("--ntk-profile", "smoke", "--ntk-widths", "512,1024,2048",
                                "--ntk-seeds", "2")
    result.assert_outcomes(passed=int(passes), failed=int(not passes))
    if not passes:
        result.stdout.fnmatch_lines(["*fails at every width up to 2,048*"])


def test_epoch_checked_minibatch_loop(digits):
    """check_every="epoch": ceil(N / B) Adam steps per epoch, the target checked at epoch ends."""
    seq = permuted_tasks(digits, 2, n_train=24, n_test=40)
    kw = dict(lr=1e-2, optimizer="adam", loss="cross_entropy", batch_size=10,
              check_every="epoch")
    fixed = train_sequentially(_mlp(64, seq), seq, Budget(epochs=3), **kw)
    assert fixed.steps == [9, 9] and fixed.reached == [None, None]
    assert [len(x) for x in fixed.losses] == [4, 4]  # before the first epoch, after each
    same = train_sequentially(_mlp(64, seq), seq, Budget(epochs=3), **{**kw, "seed": 0})
    np.testing.assert_array_equal(same.accuracy, fixed.accuracy)  # seeded batch order
    until = train_sequentially(_mlp(64, seq), seq, Budget(target_accuracy=1.0, max_epochs=300),
                               **kw)
    assert until.reached == [True, True] and np.all(np.diag(until.train_accuracy) == 1.0)
    assert all(s % 3 == 0 for s in until.steps)  # whole epochs only
    with pytest.raises(ValueError, match="check_every"):
        train_sequentially(_mlp(64, seq), seq, Budget(epochs=1), lr=0.1, check_every="batch")
    with pytest.raises(ValueError, match="batch_size"):
        train_sequentially(_mlp(64, seq), seq, Budget(epochs=1), lr=0.1, check_every="epoch")


PRACTICAL_CONTROL = '''
import importlib.util

import pytest
from ntkcheck.continual import permuted_tasks, task_sequence
from ntkcheck.data import load_dataset

_spec = importlib.util.spec_from_file_location("continual_claims", {claims!r})
cl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cl)

def _identical(device):
    t0 = cl.practical_tasks(device)[0]
    n = 300
    return task_sequence([(t0.x_train[:n], t0.y_train[:n], t0.x_test, t0.y_test)] * 3)

@pytest.mark.claim(**cl.{claim})
def test_control(ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    if "{control}" == "identical":
        cl.practical_forgetting(cl.{claim}, cl.PAPER_MLP, ntk_sweep, ntk_device, ntk_measure,
                                ntk_profile, tasks=_identical(ntk_device))
    else:  # a width-32 network at every swept width: width cannot matter
        small = permuted_tasks(load_dataset("digits", n=500, seed=0, device=ntk_device), 3,
                               n_train=300, seed=0)
        cl.practical_forgetting(cl.{claim}, cl.PAPER_MLP, ntk_sweep, ntk_device, ntk_measure,
                                ntk_profile, tasks=small, trained_width=32)
'''


@pytest.mark.parametrize(("claim", "control"), [
    ("SHORT", "fixed-width"), ("CONVERGED_CLAIM", "fixed-width"),
    ("CONVERGED_CLAIM", "identical"),
])
def test_negative_controls_of_the_practical_claims(pytester, claim, control):
    """The real claim code where width cannot reduce forgetting, so "decreases with width"
    must fail: a width-32 network (300 training digits per task) recorded at every swept
    width; and (converged) three copies of one task, learned to the target on the first, so
    later tasks take no step and nothing is forgotten at any width."""
    from pathlib import Path
    claims = str(Path(__file__).resolve().parents[1] / "claims" / "test_continual.py")
    pytester.makepyfile(test_practical_control=PRACTICAL_CONTROL.format(claims=claims,
                                                                        claim=claim,
                                                                        control=control))
    result = pytester.runpytest("--ntk-profile", "smoke", "--ntk-widths", "16,32,64",
                                "--ntk-seeds", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fails the trend test, not shown decreasing*"])
    import json
    records = [json.loads(x) for x in
               (pytester.path / "reports" / "latest" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 6
    if control == "identical":
        assert all(r["n_train"] == 300 and r["value"] == 0.0 for r in records)
    else:
        assert all(r["trained_width"] == 32 and r["n_train"] == 300 for r in records)
