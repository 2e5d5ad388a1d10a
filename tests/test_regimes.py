"""Tests of ntkcheck.training.regimes: the practical regime's loop, lr choice and shared run."""

import math

import pytest
import torch

from ntkcheck import ArchSpec, load_dataset
from ntkcheck.profiles import PROFILES
from ntkcheck.training.loops import TrainingDiverged
from ntkcheck.training.regimes import (
    ADAM_LR_GRID,
    PRACTICAL_REGIME,
    PRACTICAL_SPECS,
    PracticalRegime,
    TheoryRegime,
    clear_practical_cache,
    practical_run,
    practical_seed,
    practical_split,
    select_lr,
    train_practical,
)

SPEC = ArchSpec(depth=1, activation="relu", parametrization="standard", weight_std=2**0.5)
#: A cheap regime for tests: a small grid, few epochs.
FAST = PracticalRegime(lr_grid=(1e-3, 1e-2), base_width=16, tune_epochs=1, max_epochs=4)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", n=300, seed=0).split(200)


def _net(width=32, seed=0, dtype=torch.float32):
    return SPEC.with_width(width).build(seed=seed, input_shape=64, out_features=10,
                                        dtype=dtype)


def test_regime_defaults_and_validation():
    r = PracticalRegime()
    assert r.grid == ADAM_LR_GRID and r.optimizer == "adam" and r.batch_size == 128
    assert PracticalRegime(optimizer="sgd").grid[0] == 1e-3
    assert r.describe()["regime"] == "practical"
    assert PracticalRegime(optimizer="sgd").describe()["optimizer"] == "sgd-momentum0.9"
    assert TheoryRegime().describe()["optimizer"] == "gd"
    for bad in (dict(optimizer="rmsprop"), dict(batch_size=0), dict(lr=-1.0),
                dict(lr_grid=()), dict(dtype="float16"), dict(max_epochs=1.5)):
        with pytest.raises(ValueError):
            PracticalRegime(**bad)
    assert hash(PRACTICAL_REGIME) == hash(PracticalRegime())  # frozen: a cache key
    assert len(practical_split()[0]) >= 1000  # the "at least 1,000 examples"


def test_same_seed_same_batches_and_stop_reasons(digits):
    (train, _) = digits
    x, y = train.x.float(), train.y
    runs = []
    for _ in range(2):
        net = _net()
        runs.append((train_practical(net, x, y, FAST, lr=1e-2, seed=3), net))
    (a, na), (b, nb) = runs
    assert a == b
    assert all(torch.equal(p, q) for p, q in zip(na.parameters(), nb.parameters()))
    assert a.stop_reason in ("target_accuracy", "plateau", "max_epochs")
    assert a.steps == a.epochs * math.ceil(len(x) / FAST.batch_size)
    assert len(a.losses) == a.epochs + 1 and a.losses[-1] < a.losses[0]
    # the accuracy target stops training as soon as it is met
    easy = PracticalRegime(target_accuracy=0.0, max_epochs=3)
    assert train_practical(_net(), x, y, easy, lr=1e-2, seed=0).stop_reason == "target_accuracy"
    # the epoch cap
    capped = PracticalRegime(target_accuracy=1.01, max_epochs=1, plateau_epochs=5)
    rec = train_practical(_net(), x, y, capped, lr=1e-4, seed=0)
    assert (rec.stop_reason, rec.epochs) == ("max_epochs", 1)
    # a plateau: a rate too small to move the loss by 1% within two epochs
    flat = PracticalRegime(target_accuracy=1.01, plateau_epochs=2, plateau_rtol=0.5,
                           max_epochs=50)
    rec = train_practical(_net(), x, y, flat, lr=1e-5, seed=0)
    assert (rec.stop_reason, rec.epochs) == ("plateau", 2)
    # a replay runs exactly the given epochs
    rec = train_practical(_net(), x, y, FAST, lr=1e-2, seed=0, epochs=2)
    assert (rec.stop_reason, rec.epochs) == ("epochs", 2)


def test_sgd_momentum_and_errors(digits):
    (train, _) = digits
    x, y = train.x.float(), train.y
    rec = train_practical(_net(), x, y, PracticalRegime(optimizer="sgd", max_epochs=2), lr=0.05,
                          seed=0)
    assert rec.losses[-1] < rec.losses[0]
    with pytest.raises(ValueError, match="int64 labels"):
        train_practical(_net(), x, y.float(), FAST, lr=1e-3, seed=0)
    with pytest.raises(TrainingDiverged, match="smaller learning rate"):
        train_practical(_net(), x, y, PracticalRegime(optimizer="sgd", max_epochs=3),
                        lr=1e6, seed=0)


def test_select_lr_picks_the_lowest_loss_and_is_cached(digits):
    (train, _) = digits
    clear_practical_cache()
    choice = select_lr(SPEC, train.x, train.y, FAST)
    assert choice.grid == FAST.grid and choice.base_width == FAST.base_width
    assert choice.lr == FAST.grid[min(range(2), key=lambda i: choice.losses[i])]
    # the same rate for the spec at any width (the width is not part of the key)
    assert select_lr(SPEC.with_width(4096), train.x, train.y, FAST) is choice
    assert select_lr(SPEC, train.x, train.y, PracticalRegime(lr=0.5)).lr == 0.5


def test_practical_run_measures_and_shares_one_training(digits):
    train, test = digits
    clear_practical_cache()
    run = practical_run(SPEC, 32, 7, train, test, FAST)
    assert practical_run(SPEC, 32, 7, train, test, FAST) is run
    assert practical_run(SPEC, 32, 7, train, test, FAST, linearized=False) is run
    assert run.lin_training.epochs == run.training.epochs
    assert run.lin_training.steps == run.training.steps
    rec = run.record()
    for key in ("lr", "epochs", "steps", "stop_reason", "train_accuracy", "train_loss",
                "weight_change", "kernel_change", "lin_deviation", "agreement"):
        assert key in rec
        assert isinstance(rec[key], (int, float, str))
    assert 0 < run.weight_change and 0 < run.kernel_change and 0 <= run.feature_change <= 1
    assert run.lin_deviation >= 0 and 0 <= run.agreement <= 1
    # an independent check of the weight change: retrain by hand with the recorded rate
    net = _net(seed=7)
    theta_0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double()
    train_practical(net, train.x.float(), train.y, FAST, lr=run.training.lr, seed=7)
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double()
    assert float((theta - theta_0).norm() / theta_0.norm()) == pytest.approx(
        run.weight_change, rel=1e-6)
    with pytest.raises(ValueError, match="test_set"):
        practical_run(SPEC, 16, 0, train, None, FAST)
    with pytest.raises(ValueError, match="regression"):
        practical_run(SPEC, 16, 0, load_dataset("diabetes", n=50), None, FAST,
                      linearized=False)


def test_profiles_cap_the_deep_practical_networks():
    quick = PROFILES["quick"]
    d1, d3, cnn = PRACTICAL_SPECS
    assert quick.practical_width_cap(d1) is None
    assert quick.practical_width_cap(d3) == quick.practical_max_width
    assert quick.practical_width_cap(cnn) == quick.practical_cnn_max_width
    assert PROFILES["paper"].practical_width_cap(d3) is None
    assert practical_seed(d1, 64, 0) == practical_seed(d1, 64, 0) != practical_seed(d1, 64, 1)
