"""Tests of ntkcheck.plugin.devices: device resolution and worker/thread counts, GPU-free."""

from __future__ import annotations

import pytest
import torch

from ntkcheck.plugin.devices import (
    auto_num_workers,
    available_cpus,
    resolve_device,
    threads_per_worker,
    worker_index,
)

CPU = torch.device("cpu")


def cuda(k):
    return torch.device("cuda", k)


@pytest.mark.parametrize(
    ("option", "worker", "count", "expected"),
    [
        ("auto", None, 0, CPU),
        ("auto", "gw3", 0, CPU),
        ("auto", None, 1, cuda(0)),
        ("auto", "master", 4, cuda(0)),
        ("auto", "gw0", 4, cuda(0)),
        ("auto", "gw5", 4, cuda(1)),
        ("auto", "gw7", 2, cuda(1)),
        ("cuda", "gw2", 3, cuda(2)),
        ("cuda", "gw3", 3, cuda(0)),
        ("cuda", None, 2, cuda(0)),
        (" CUDA ", "gw1", 2, cuda(1)),
        ("cpu", "gw1", 8, CPU),
        ("Auto", None, 0, CPU),
        ("cuda:1", "gw0", 2, cuda(1)),  # pinned: every worker on the same GPU
        ("cuda:1", "gw3", 2, cuda(1)),
        ("cuda:0", None, 1, cuda(0)),
    ],
)
def test_resolve_device(option, worker, count, expected):
    assert resolve_device(option, worker, cuda_count=count) == expected


@pytest.mark.parametrize(
    ("option", "count", "message"),
    [
        ("cuda", 0, r"needs CUDA, but no CUDA device is visible.*use 'cpu'"),
        ("cuda:0", 0, r"needs CUDA, but no CUDA device is visible"),
        ("cuda:2", 2, r"out of range: 2 CUDA device\(s\) visible, so use cuda:0 .. cuda:1"),
        ("gpu", 1, r"unknown device option 'gpu'; use 'auto', 'cpu', 'cuda' or 'cuda:K'"),
        ("cuda:-1", 2, r"unknown device option"),
        ("cuda:x", 2, r"unknown device option"),
        ("", 2, r"unknown device option"),
        (None, 2, r"device option must be a string"),
    ],
)
def test_resolve_device_errors(option, count, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(option, "gw0", cuda_count=count)


def test_resolve_device_default_count_matches_this_machine():
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else CPU
    assert resolve_device("auto") == expected
    with pytest.raises(ValueError, match="cuda_count must be an integer >= 0"):
        resolve_device("auto", cuda_count=-1)


def test_resolved_device_is_usable():
    device = resolve_device("auto", "gw0")
    assert torch.ones(2, device=device).sum().item() == 2.0


@pytest.mark.parametrize(("worker", "k"), [("gw0", 0), ("gw12", 12), ("master", None),
                                           (None, None), ("gwx", None), ("xgw1", None)])
def test_worker_index(worker, k):
    assert worker_index(worker) == k


@pytest.mark.parametrize(("cpus", "gpus", "expected"),
                         [(2, 0, 2), (16, 0, 16), (16, 1, 1), (16, 4, 4), (0, 0, 1), (2, 8, 8)])
def test_auto_num_workers(cpus, gpus, expected):
    assert auto_num_workers(cpus, gpus) == expected


def test_auto_num_workers_defaults_and_errors():
    expected = torch.cuda.device_count() or available_cpus()
    assert auto_num_workers() == expected >= 1
    with pytest.raises(ValueError, match="cpu_count must be an integer >= 0"):
        auto_num_workers(-1, 0)
    with pytest.raises(ValueError, match="cuda_count must be an integer >= 0"):
        auto_num_workers(2, 1.5)


@pytest.mark.parametrize(("cpus", "workers", "expected"),
                         [(16, 4, 4), (16, 3, 5), (2, 2, 1), (2, 8, 1), (8, 0, 8), (8, 1, 8),
                          (0, 2, 1)])
def test_threads_per_worker(cpus, workers, expected):
    threads = threads_per_worker(cpus, workers)
    assert threads == expected
    assert threads >= 1
    assert threads * max(workers, 1) <= max(cpus, max(workers, 1))  # no oversubscription


@pytest.mark.parametrize(("cpus", "workers"), [(-1, 2), (4, -2), (4.0, 2), (True, 1)])
def test_threads_per_worker_errors(cpus, workers):
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        threads_per_worker(cpus, workers)
