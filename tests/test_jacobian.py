"""Jacobians, NTK Gram spectra and the matrix-free Jacobian change (ntkcheck.optim.jacobian).

References are independent computations in float64: central finite differences for the
Jacobian, NumPy's eigendecomposition / SVD of explicitly formed matrices for the spectra.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkcheck.arch import ArchSpec
from ntkcheck.data import load_dataset
from ntkcheck.kernel_regime.linearize import linearize
from ntkcheck.optim.jacobian import (
    JacobianOperator,
    gram_extreme_eigenvalues,
    jacobian_distance,
    jacobian_matrix,
    ntk_gram,
    stability_constant,
    stability_radius,
    trainable_params,
)


def _digits(n: int) -> torch.Tensor:
    return load_dataset("digits", n=n, seed=1).x


def _net(spec: ArchSpec, width: int, x: torch.Tensor, out: int, seed: int = 0):
    return spec.with_width(width).build(seed=seed, input_shape=tuple(x.shape[1:]),
                                        out_features=out)


def _perturb(net, scale: float, seed: int = 1) -> dict[str, torch.Tensor]:
    """Move the parameters by Gaussian noise; return the parameters before the move."""
    before = {k: v.clone() for k, v in trainable_params(net).items()}
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return before


SPECS = [ArchSpec(depth=1, activation="erf"), ArchSpec(depth=2, activation="gelu"),
         ArchSpec(family="cnn", depth=1, activation="tanh")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.arch_id)
def test_jacobian_matrix_matches_central_differences(spec):
    x = _digits(3)
    net = _net(spec, 3, x, out=2)
    jac = jacobian_matrix(net, x)
    params = list(net.parameters())
    h = 1e-6
    columns = []
    with torch.no_grad():
        for p in params:
            flat = p.view(-1)
            for i in range(flat.numel()):
                old = float(flat[i])
                flat[i] = old + h
                up = net(x).reshape(-1).clone()
                flat[i] = old - h
                down = net(x).reshape(-1).clone()
                flat[i] = old
                columns.append((up - down) / (2 * h))
    fd = torch.stack(columns, dim=1)
    assert jac.shape == fd.shape == (3 * 2, sum(p.numel() for p in params))
    assert float(torch.linalg.norm(jac - fd) / torch.linalg.norm(fd)) < 1e-7


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.arch_id)
def test_ntk_gram_is_j_jt_sample_major(spec):
    x = _digits(5)
    net = _net(spec, 8, x, out=3)
    jac = jacobian_matrix(net, x).numpy()
    gram = ntk_gram(net, x).numpy()
    np.testing.assert_allclose(gram, jac @ jac.T, rtol=1e-12, atol=1e-13 * np.abs(gram).max())


def test_operator_products_match_the_formed_jacobian():
    x = _digits(4)
    net = _net(ArchSpec(depth=1, activation="relu"), 6, x, out=2)
    jac = jacobian_matrix(net, x)
    op = JacobianOperator(net, x)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(op.n_outputs, generator=gen, dtype=torch.float64)
    w = {k: torch.randn(p.shape, generator=gen, dtype=p.dtype)
         for k, p in trainable_params(net).items()}
    w_flat = torch.cat([t.reshape(-1) for t in w.values()])
    torch.testing.assert_close(op.jvp(w), jac @ w_flat, rtol=1e-12, atol=1e-12)
    back = torch.cat([t.reshape(-1) for t in op.vjp(v).values()])
    torch.testing.assert_close(back, jac.T @ v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", SPECS[::2], ids=lambda s: s.arch_id)
def test_gram_extreme_eigenvalues_dense_lanczos_and_numpy_agree(spec):
    x = _digits(6)
    net = _net(spec, 64, x, out=2)
    jac = jacobian_matrix(net, x).numpy()
    eig = np.linalg.eigvalsh(jac @ jac.T)
    dense = gram_extreme_eigenvalues(net, x, method="dense")
    lanczos = gram_extreme_eigenvalues(net, x, method="lanczos", tol=1e-12)
    for got in (dense, lanczos):
        assert got[0] == pytest.approx(eig[0], rel=1e-8)
        assert got[1] == pytest.approx(eig[-1], rel=1e-8)
    assert gram_extreme_eigenvalues(net, x) == dense  # auto: dense at this size


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.arch_id)
def test_matrix_free_jacobian_change_equals_dense(spec):
    x = _digits(6)
    net = _net(spec, 16, x, out=3)
    params0 = _perturb(net, 0.2)
    j1 = jacobian_matrix(net, x).numpy()
    j0 = jacobian_matrix(net, x, params0).numpy()
    reference = np.linalg.norm(j1 - j0, ord=2)  # NumPy SVD of the formed difference
    dense = jacobian_distance(net, x, params0, method="dense")
    lanczos = jacobian_distance(net, x, params0, method="lanczos")
    assert reference > 1e-3
    assert dense == pytest.approx(reference, rel=1e-12)
    assert lanczos == pytest.approx(dense, rel=1e-8)
    reused = jacobian_distance(net, x, params0, method="dense",
                               jacobian0=torch.as_tensor(j0))
    assert reused == pytest.approx(dense, rel=1e-14)


def test_lanczos_handles_one_and_two_outputs():
    x = _digits(2)
    net = _net(ArchSpec(depth=1), 8, x, out=1)
    params0 = _perturb(net, 0.3)
    assert jacobian_distance(net, x, params0, method="lanczos") == pytest.approx(
        jacobian_distance(net, x, params0, method="dense"), rel=1e-10)
    lo, hi = gram_extreme_eigenvalues(net, x[:1], method="lanczos")
    assert lo == pytest.approx(hi) and lo == pytest.approx(
        float(ntk_gram(net, x[:1]).squeeze()), rel=1e-12)


def test_jacobian_change_is_zero_at_theta_0_and_for_a_linearized_network():
    x = _digits(5)
    net = _net(ArchSpec(depth=1, activation="relu"), 12, x, out=2)
    params0 = {k: v.clone() for k, v in trainable_params(net).items()}
    assert jacobian_distance(net, x, params0) == 0.0
    lin = linearize(net)  # J of f_lin(theta) is J(theta_0) for every theta
    lin0 = {k: v.clone() for k, v in trainable_params(lin).items()}
    _perturb(lin, 0.5)
    for method in ("dense", "lanczos"):
        assert jacobian_distance(lin, x, lin0, method=method) < 1e-12
    _perturb(net, 0.5)
    assert jacobian_distance(net, x, params0) > 0.1  # the network itself moves


def test_stability_constant_and_radius():
    assert stability_constant(0.0, 0.0) == 0.0
    assert stability_constant(0.1, 0.0) == math.inf
    assert stability_constant(0.5, 4.0) == pytest.approx(0.75)
    assert stability_radius(2.0, 4.0) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="Condition 1"):
        stability_radius(1.0, 0.0)


def test_errors_name_the_problem():
    x = _digits(3)
    net = _net(ArchSpec(depth=1), 4, x, out=1)
    with pytest.raises(ValueError, match="unknown method"):
        gram_extreme_eigenvalues(net, x, method="svd")
    with pytest.raises(ValueError, match="names and shapes"):
        jacobian_distance(net, x, {"0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="not trainable parameters"):
        JacobianOperator(net, x, {"nope": torch.zeros(1)})
    for p in net.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters with requires_grad"):
        trainable_params(net)


class _Center(torch.nn.Module):
    """Subtracts the batch mean: one input's output depends on the others."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h - h.mean(0)


def _guarded_calls(model: torch.nn.Module, x: torch.Tensor):
    params0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    return {
        "jacobian_matrix": lambda: jacobian_matrix(model, x),
        "JacobianOperator": lambda: JacobianOperator(model, x),
        "jacobian_distance": lambda: jacobian_distance(model, x, params0, method="dense"),
        "jacobian_distance-lanczos": lambda: jacobian_distance(model, x, params0,
                                                               method="lanczos"),
        "gram-lanczos": lambda: gram_extreme_eigenvalues(model, x, method="lanczos"),
        "gram-dense": lambda: gram_extreme_eigenvalues(model, x, method="dense"),
    }


def _small(middle: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), middle, torch.nn.Tanh(),
                               torch.nn.Linear(6, 2)).double()


@pytest.mark.parametrize("call", list(_guarded_calls(_small(torch.nn.Identity()),
                                                     torch.zeros(1, 4))))
def test_jacobians_refuse_modules_that_mix_samples(call):
    from ntkcheck.kernels import TrainModeError

    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    train_bn = _small(torch.nn.BatchNorm1d(6)).train()
    with pytest.raises(TrainModeError, match=r"'1' \(BatchNorm1d\) is in training mode.*"
                       r"model\.eval\(\)"):
        _guarded_calls(train_bn, x)[call]()
    no_stats = _small(torch.nn.BatchNorm1d(6, track_running_stats=False)).eval()
    with pytest.raises(TrainModeError, match=r"'1' \(BatchNorm1d\) has "
                       r"track_running_stats=False"):
        _guarded_calls(no_stats, x)[call]()
    with pytest.raises(TrainModeError, match=r"module '1' \(_Center\) makes the samples of a "
                       r"batch interact.*differ by"):
        _guarded_calls(_small(_Center()), x)[call]()
    _guarded_calls(_small(torch.nn.BatchNorm1d(6)).eval(), x)[call]()  # control: eval mode
