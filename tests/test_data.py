import numpy as np
import pytest
import torch

from ntkcheck.data import DataError, check_data, load_dataset


def test_digits_is_standardized_images():
    d = load_dataset("digits")
    assert d.x.shape == (1797, 1, 8, 8) and d.x.dtype == torch.float64
    assert d.task == "classification" and d.n_classes == 10 and d.input_shape == (1, 8, 8)
    flat = d.x.reshape(len(d), -1)
    assert torch.allclose(flat.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-12)
    assert d.one_hot().shape == (1797, 10)
    assert d.regression_targets().shape == (1797, 1)


def test_subset_is_seeded():
    a, b = load_dataset("diabetes", n=32, seed=3), load_dataset("diabetes", n=32, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, load_dataset("diabetes", n=32, seed=4).x)
    assert a.task == "regression" and a.y.dtype == torch.float64


@pytest.mark.parametrize(("x", "y", "task", "message"), [
    (np.array([[np.nan, 1.0]]), np.array([0]), "classification", "non-finite"),
    (np.ones((2, 2)), np.array([0.0, np.inf]), "regression", "non-finite value(s)"),
    (np.ones((0, 2)), np.ones(0), "regression", "is empty"),
    (np.ones((3, 2)), np.ones(2), "regression", "3 inputs but 2 targets"),
    (np.ones((2, 2), dtype=np.int64), np.ones(2), "regression", "convert them to float"),
    (np.ones((2, 2)), np.array([0.5, 1.0]), "classification", "integer class labels"),
])
def test_bad_data_is_rejected_with_its_name(x, y, task, message):
    with pytest.raises(DataError, match="'mine'") as err:
        check_data("mine", x, y, task)
    assert message in str(err.value)


def test_npz_files_and_unknown_names(tmp_path):
    path = tmp_path / "toy.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(10, 3)), y=np.arange(10) % 2)
    d = load_dataset(str(path))
    assert d.task == "classification" and d.name == "toy" and len(d) == 10
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="out of range"):
        load_dataset("iris", n=1000)


def test_head_and_split_keep_the_order_and_the_metadata():
    data = load_dataset("digits", n=20, seed=3)
    head = data.head(8)
    assert len(head) == 8 and head.input_shape == (1, 8, 8) and head.n_classes == 10
    assert torch.equal(head.x, data.x[:8]) and torch.equal(head.y, data.y[:8])
    assert data.head(20) is data and data.head(50) is data
    train, test = data.split(12)
    assert torch.equal(torch.cat([train.x, test.x]), data.x)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(DataError, match="positive integer"):
            data.head(bad)
