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
        load_dataset("imagenet")
    with pytest.raises(DataError, match="pass root="):
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


def test_full_digits_and_no_split_for_shipped_sets():
    assert len(load_dataset("digits", n=None)) == 1797
    with pytest.raises(DataError, match="has no train/test split"):
        load_dataset("digits", split="train")
    with pytest.raises(DataError, match="split must be"):
        load_dataset("mnist1d", split="validation")


def test_mnist1d_is_generated_from_the_shipped_templates_without_touching_global_rngs():
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    np.random.seed(123)
    random.seed(123)
    before = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    full = load_dataset("mnist1d")
    assert (np.random.random(), random.random()) == before  # the generators were restored
    train, test = load_dataset("mnist1d", split="train"), load_dataset("mnist1d", split="test")
    assert (len(full), len(train), len(test)) == (5000, 4000, 1000)
    assert full.input_shape == (40,) and full.n_classes == 10 and full.task == "classification"
    ref = make_dataset(get_dataset_args())  # the package's own generator, default arguments
    assert np.array_equal(train.y.numpy(), ref["y"])
    raw = ref["x"]
    expected = (raw - raw.mean(0)) / raw.std(0)
    np.testing.assert_allclose(train.x.numpy(), expected, atol=1e-12)
    assert len(load_dataset("mnist1d", n=100, seed=1)) == 100


def _write_idx(path, array):
    import gzip
    import struct

    codes = {np.dtype("uint8"): 0x08, np.dtype(">i4"): 0x0C}
    arr = np.ascontiguousarray(array)
    header = struct.pack(">BBBB", 0, 0, codes[arr.dtype], arr.ndim)
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(header + arr.tobytes())


@pytest.mark.parametrize(("name", "folder", "gz"), [
    ("mnist", "MNIST/raw", False), ("fashion_mnist", "FashionMNIST/raw", True),
    ("mnist", ".", True),
])
def test_idx_folders_in_torchvision_layout(tmp_path, name, folder, gz):
    from ntkcheck.data import read_idx

    rng = np.random.default_rng(0)
    raw = tmp_path / folder
    raw.mkdir(parents=True, exist_ok=True)
    sets = {}
    for split, (images, labels), n in (
            ("train", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), 30),
            ("test", ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), 10)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        _write_idx(raw / f"{images}{suffix}", x)
        _write_idx(raw / f"{labels}{suffix}", y)
        sets[split] = (x, y)
        assert np.array_equal(read_idx(raw / f"{images}{suffix}"), x)
    train = load_dataset(name, root=tmp_path)
    assert train.input_shape == (1, 28, 28) and len(train) == 30 and train.n_classes == 10
    x, y = sets["train"]
    flat = x.reshape(30, -1).astype(np.float64)
    std = flat.std(0)
    expected = (flat - flat.mean(0)) / np.where(std > 0, std, 1.0)
    np.testing.assert_allclose(train.x.reshape(30, -1).numpy(), expected, atol=1e-12)
    assert np.array_equal(train.y.numpy(), y)
    assert len(load_dataset(name, root=tmp_path, split="test")) == 10
    assert len(load_dataset(name, root=tmp_path, split="all")) == 40
    sub = load_dataset(name, root=tmp_path, n=7, seed=2)
    idx = np.random.default_rng(2).permutation(30)[:7]
    np.testing.assert_allclose(sub.x.reshape(7, -1).numpy(), expected[idx], atol=1e-12)


def test_idx_errors_name_the_file(tmp_path):
    from ntkcheck.data import read_idx

    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    _write_idx(bad, np.zeros((3, 2, 2), dtype=np.uint8))
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(bad)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", root=tmp_path, split="test")
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset("mnist", root=tmp_path / "nowhere")


def _write_cifar(path, x, y):
    import pickle

    with open(path, "wb") as fh:  # the layout and protocol of the original python batches
        pickle.dump({b"batch_label": b"x", b"labels": list(map(int, y)),
                     b"data": x.reshape(len(x), -1), b"filenames": [b"a"] * len(x)}, fh,
                    protocol=2)


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(4, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, size=4)
        _write_cifar(folder / name, x, y)
        batches.append((x, y))
    train = load_dataset("cifar10", root=tmp_path)
    assert train.input_shape == (3, 32, 32) and len(train) == 20
    x = np.concatenate([b[0] for b in batches[:5]]).reshape(20, -1).astype(np.float64)
    std = x.std(0)
    np.testing.assert_allclose(train.x.reshape(20, -1).numpy(),
                               (x - x.mean(0)) / np.where(std > 0, std, 1.0), atol=1e-12)
    assert np.array_equal(train.y.numpy(), np.concatenate([b[1] for b in batches[:5]]))
    test = load_dataset("cifar10", root=tmp_path, split="test")
    assert np.array_equal(test.y.numpy(), batches[5][1])


def test_cifar10_refuses_code_and_bad_batches(tmp_path):
    import pickle

    from ntkcheck.data import read_cifar10

    evil = tmp_path / "data_batch_1"
    with open(evil, "wb") as fh:
        pickle.dump({b"data": print}, fh)  # would call a function on loading a reduce
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        read_cifar10(evil)
    _write_cifar(evil, np.zeros((2, 3, 16, 16), dtype=np.uint8), [0, 1])
    with pytest.raises(DataError, match="has \\(n, 3072\\) data"):
        read_cifar10(evil)
    _write_cifar(evil, np.zeros((2, 3, 32, 32), dtype=np.uint8), [0, 1])
    with pytest.raises(DataError, match="data_batch_2 not found"):
        load_dataset("cifar10", root=tmp_path)
