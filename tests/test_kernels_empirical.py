"""Tests of the empirical NTK: implementations agree, against brute-force autograd."""

import pytest
import torch
from torch import nn

from ntkcheck.arch import ArchSpec
from ntkcheck.kernels import (
    KernelMemoryError,
    TrainModeError,
    empirical_ntk,
    plan_empirical_ntk,
)

IMPLS = ("jacobian", "ntvp", "structured")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def brute_force_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Full NTK (N1, N2, O, O) from one autograd.grad call per (input, output): float64 loops."""
    params = [p for p in model.parameters() if p.requires_grad]

    def jac(x: torch.Tensor) -> torch.Tensor:
        rows = []
        for i in range(x.shape[0]):
            out = model(x[i : i + 1]).reshape(-1)
            rows.append(torch.stack([
                torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[a], params,
                                                                     retain_graph=True)])
                for a in range(out.shape[0])
            ]))
        return torch.stack(rows)  # (N, O, P)

    j1, j2 = jac(x1), jac(x2)
    return torch.einsum("iap,jbp->ijab", j1, j2)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(5, 3, 4, generator=g, dtype=torch.float64),
            torch.randn(4, 3, 4, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("activation", ["relu", "erf", "tanh"])
@pytest.mark.parametrize("parametrization", ["ntk", "standard"])
def test_jacobian_matches_brute_force(data, activation, parametrization):
    x1, x2 = data
    spec = ArchSpec(depth=2, activation=activation, parametrization=parametrization)
    model = spec.with_width(16).build(seed=3, input_shape=(3, 4), out_features=2)
    expected = brute_force_ntk(model, x1, x2)
    got = empirical_ntk(model, x1, x2, implementation="jacobian", output="full")
    assert got.dtype == torch.float64
    assert rel(got, expected) < 1e-12


@pytest.mark.parametrize("output", ["full", "trace", "diagonal"])
@pytest.mark.parametrize("bias", [True, False])
def test_implementations_agree_on_mlp(data, output, bias):
    x1, x2 = data
    spec = ArchSpec(depth=3, activation="leaky_relu", bias=bias, bias_std=0.5)
    model = spec.with_width(24).build(seed=0, input_shape=(3, 4), out_features=3)
    ref = empirical_ntk(model, x1, x2, implementation="jacobian", output=output)
    expected_shape = {"full": (5, 4, 3, 3), "trace": (5, 4), "diagonal": (5, 4, 3)}[output]
    assert ref.shape == expected_shape
    for impl in ("ntvp", "structured", "auto"):
        got = empirical_ntk(model, x1, x2, implementation=impl, output=output)
        assert got.shape == expected_shape
        assert rel(got, ref) < 1e-10, impl


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return (torch.randn(4, 2, 6, 6, generator=g, dtype=torch.float64),
            torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64))


@pytest.mark.parametrize(
    "spec",
    [ArchSpec(family="cnn", depth=2, activation="relu"),
     ArchSpec(family="cnn", depth=2, activation="tanh", pool=True, batchnorm=True,
              parametrization="standard"),
     ArchSpec(family="resnet", depth=2, activation="gelu", batchnorm=True)],
    ids=lambda s: s.arch_id,
)
@pytest.mark.parametrize("output", ["full", "trace", "diagonal"])
def test_implementations_agree_on_cnn_and_resnet(images, spec, output):
    x1, x2 = images
    model = spec.with_width(6).build(seed=0, input_shape=(2, 6, 6), out_features=2)
    if spec.batchnorm:  # non-trivial running statistics, then eval mode
        model.train()
        with torch.no_grad():
            model(torch.randn(16, 2, 6, 6, dtype=torch.float64) * 2 + 0.5)
        model.eval()
    ref = empirical_ntk(model, x1, x2, implementation="jacobian", output=output)
    for impl in ("ntvp", "structured", "auto"):
        assert rel(empirical_ntk(model, x1, x2, implementation=impl, output=output),
                   ref) < 1e-10, impl


def test_cnn_matches_brute_force(images):
    x1, x2 = images
    spec = ArchSpec(family="cnn", depth=1, activation="erf")
    model = spec.with_width(3).build(seed=1, input_shape=(2, 6, 6), out_features=2)
    expected = brute_force_ntk(model, x1, x2)
    assert rel(empirical_ntk(model, x1, x2, implementation="structured", output="full"),
               expected) < 1e-12


def test_output_modes_are_consistent(data):
    x1, x2 = data
    model = ArchSpec(depth=1).with_width(8).build(seed=0, input_shape=(3, 4), out_features=4)
    full = empirical_ntk(model, x1, x2, output="full", implementation="jacobian")
    diag = empirical_ntk(model, x1, x2, output="diagonal", implementation="structured")
    trace = empirical_ntk(model, x1, x2, output="trace", implementation="ntvp")
    torch.testing.assert_close(diag, full.diagonal(dim1=2, dim2=3), rtol=1e-12, atol=0)
    torch.testing.assert_close(trace, full.diagonal(dim1=2, dim2=3).sum(-1), rtol=1e-12, atol=0)


class Gate(nn.Module):
    """A parameterized module the structured implementation does not know: x * tanh(w)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(self.w)


def test_plain_torch_layers_with_fallback(data):
    """nn.Linear is structured; LayerNorm and an unknown module fall back to contraction."""
    x1, x2 = data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.LayerNorm(10), nn.Tanh(),
                          Gate(10), nn.Linear(10, 2)).double().eval()
    expected = brute_force_ntk(model, x1, x2)
    for impl in IMPLS:
        got = empirical_ntk(model, x1, x2, implementation=impl, output="full")
        assert rel(got, expected) < 1e-10, impl


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_size_does_not_change_result(data, impl):
    x1, x2 = data
    model = ArchSpec(depth=2, activation="erf").with_width(12).build(
        seed=2, input_shape=(3, 4), out_features=2)
    whole = empirical_ntk(model, x1, x2, implementation=impl, output="full")
    whole_sym = empirical_ntk(model, x1, implementation=impl, output="full")
    for bs in (1, 2, 3, 5):
        got = empirical_ntk(model, x1, x2, implementation=impl, output="full", batch_size=bs)
        torch.testing.assert_close(got, whole, rtol=1e-12, atol=1e-14)
        sym = empirical_ntk(model, x1, implementation=impl, output="full", batch_size=bs)
        torch.testing.assert_close(sym, whole_sym, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("output", ["full", "trace", "diagonal"])
def test_gram_is_exactly_symmetric(data, output):
    x1, _ = data
    model = ArchSpec(depth=2).with_width(16).build(seed=0, input_shape=(3, 4), out_features=3)
    k = empirical_ntk(model, x1, output=output, batch_size=2)
    kt = k.permute(1, 0, 3, 2) if output == "full" else k.transpose(0, 1)
    assert torch.equal(k, kt)
    cross = empirical_ntk(model, x1, x1, output=output, implementation="jacobian")
    assert rel(k, cross) < 1e-12


def test_float32_model_gives_float32_kernel(data):
    x1, x2 = data
    model = ArchSpec(depth=1).with_width(8).build(seed=0, input_shape=(3, 4),
                                                  dtype=torch.float32)
    k32 = empirical_ntk(model, x1, x2)
    k64 = empirical_ntk(model.double(), x1, x2)
    assert k32.dtype == torch.float32
    assert rel(k32.double(), k64) < 1e-5


def test_train_mode_batchnorm_and_dropout_are_refused(data):
    x1, _ = data
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Dropout(0.2), nn.Linear(8, 1)).double()
    model.train()
    with pytest.raises(TrainModeError, match=r"'2' \(BatchNorm1d\).*model\.eval\(\)"):
        empirical_ntk(model, x1)
    model[2].eval()
    with pytest.raises(TrainModeError, match=r"'4' \(Dropout\).*model\.eval\(\)"):
        empirical_ntk(model, x1)


def test_eval_mode_batchnorm_works(data):
    x1, x2 = data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Linear(8, 2)).double()
    model(torch.randn(32, 3, 4, dtype=torch.float64))  # populate the running statistics
    model.eval()
    expected = brute_force_ntk(model, x1, x2)
    for impl in IMPLS:
        assert rel(empirical_ntk(model, x1, x2, implementation=impl, output="full"),
                   expected) < 1e-10


def test_memory_estimate_refuses_huge_kernel():
    model = ArchSpec(depth=1).with_width(64).build(seed=0, input_shape=(2,))
    x = torch.zeros(2_000_000, 2, dtype=torch.float64)  # the kernel alone would be 29 TiB
    with pytest.raises(KernelMemoryError, match=r"GiB.*batch_size"):
        empirical_ntk(model, x)
    with pytest.raises(MemoryError):
        empirical_ntk(model, x, implementation="jacobian", batch_size=8)


def test_invalid_arguments(data):
    x1, _ = data
    model = ArchSpec(depth=1).with_width(4).build(seed=0, input_shape=(3, 4))
    with pytest.raises(ValueError, match="implementation"):
        empirical_ntk(model, x1, implementation="magic")
    with pytest.raises(ValueError, match="output"):
        empirical_ntk(model, x1, output="sum")
    with pytest.raises(ValueError, match="batch_size"):
        empirical_ntk(model, x1, batch_size=0)


def test_auto_plan_prefers_structured_for_wide_networks(data):
    x1, _ = data
    model = ArchSpec(depth=2).with_width(512).build(seed=0, input_shape=(3, 4), out_features=4)
    plan = plan_empirical_ntk(model, x1, output="full")
    assert plan.implementation == "structured"
    assert plan.structured_layers == ["1.linear", "3.linear", "5.linear"]
    n_params = sum(p.numel() for p in model.parameters())
    # The Jacobian alone is N * O * P float64 numbers; structured needs far less.
    assert plan.estimated_bytes["jacobian"] >= 5 * 4 * n_params * 8
    assert plan.estimated_bytes["structured"] < plan.estimated_bytes["jacobian"] / 10
    assert plan.estimated_flops["structured"] < plan.estimated_flops["jacobian"]


def test_plan_lists_fallback_modules():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), Gate(10), nn.Linear(10, 2)).double()
    plan = plan_empirical_ntk(model.eval(), torch.zeros(2, 3, 4, dtype=torch.float64))
    assert plan.structured_layers == ["1", "3"]


class Twice(nn.Module):
    """The same linear layer applied twice (weight sharing): structured must fall back."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(12, 6)
        self.shared = nn.Linear(6, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x.flatten(1)))
        return self.out(torch.tanh(self.shared(torch.tanh(self.shared(h)))))


def test_weight_sharing_and_strided_convolutions(data, images):
    torch.manual_seed(0)
    twice = Twice().double().eval()
    x1, x2 = data
    expected = brute_force_ntk(twice, x1, x2)
    assert plan_empirical_ntk(twice, x1).structured_layers == ["inp", "out"]
    assert rel(empirical_ntk(twice, x1, x2, implementation="structured", output="full"),
               expected) < 1e-10
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(),
                         nn.Conv2d(3, 4, (3, 2), dilation=(1, 2), padding=(1, 0)), nn.Flatten(),
                         nn.LazyLinear(2)).double()
    i1, i2 = images
    conv(i1)  # materialize the lazy layer
    conv.eval()
    assert plan_empirical_ntk(conv, i1).structured_layers == ["0", "2", "4"]
    expected = brute_force_ntk(conv, i1, i2)
    for output in ("full", "trace"):
        got = empirical_ntk(conv, i1, i2, implementation="structured", output=output)
        ref = expected if output == "full" else expected.diagonal(dim1=2, dim2=3).sum(-1)
        assert rel(got, ref) < 1e-10


def test_inputs_of_the_wrong_shape_are_a_value_error():
    net = ArchSpec(depth=1).with_width(16).build(seed=0, input_shape=(8,))
    with pytest.raises(ValueError, match=r"cannot take inputs of shape \(5,\)"):
        empirical_ntk(net, torch.randn(4, 5, dtype=torch.float64))


@pytest.mark.parametrize("rule", ["pairs", "jacobian"])
def test_both_layer_rules_give_the_kernel(images, rule, monkeypatch):
    """The position-pair rule and the per-layer Jacobian rule of the structured engine, each
    forced on every conv layer and on a linear layer applied along a sequence axis."""
    from ntkcheck.kernels import _structured

    monkeypatch.setattr(_structured, "layer_rule", lambda *a, **k: rule)
    torch.manual_seed(1)
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(),
                         nn.Conv2d(3, 4, (3, 2), dilation=(1, 2), padding=(1, 0)),
                         nn.Flatten(2), nn.Linear(3, 5), nn.Tanh(), nn.Flatten(),
                         nn.LazyLinear(2)).double()
    i1, i2 = images
    conv(i1)  # materialize the lazy layer
    conv.eval()
    assert plan_empirical_ntk(conv, i1).structured_layers == ["0", "2", "4", "7"]
    expected = brute_force_ntk(conv, i1, i2)
    for output in ("full", "trace", "diagonal"):
        got = empirical_ntk(conv, i1, i2, implementation="structured", output=output)
        ref = {"full": expected, "trace": expected.diagonal(dim1=2, dim2=3).sum(-1),
               "diagonal": expected.diagonal(dim1=2, dim2=3)}[output]
        assert rel(got, ref) < 1e-10, output
        sym = empirical_ntk(conv, i1, implementation="structured", output=output)
        ref = empirical_ntk(conv, i1, implementation="jacobian", output=output)
        assert rel(sym, ref) < 1e-10, output


def test_auto_times_a_probe_when_the_estimates_are_close():
    """Two candidates within PROBE_FLOPS_RATIO of each other: the one that runs faster on the
    probe batch wins even with the larger estimate; the choice is cached per key."""
    import time

    from ntkcheck.kernels import empirical

    class Fake(empirical._Impl):
        def __init__(self, name, flops, delay):
            self.name, self._flops, self.delay, self.calls = name, flops, delay, 0

        def features(self, x):
            self.calls += 1
            time.sleep(self.delay)
            return x

        def gram(self, f1, f2):
            return f1 @ f2.T

        def flops(self, n1, n2, nb1):
            return self._flops * n1 * n2

    slow = Fake("slow", 1e9, 0.05)
    fast = Fake("fast", 2e9, 0.0)
    far = Fake("far", 1e12, 0.0)  # outside the ratio: never probed
    x = torch.randn(64, 3)
    key = ("test-probe", 1)
    empirical._PROBE_CACHE.pop(key, None)
    assert empirical._auto_choice([slow, fast, far], x, 64, 64, 1, key) is fast
    assert far.calls == 0 and slow.calls > 0
    calls = slow.calls
    assert empirical._auto_choice([slow, fast, far], x, 64, 64, 1, key) is fast
    assert slow.calls == calls  # cached: no second probe
    small = ("test-probe", 2)
    assert empirical._auto_choice([slow, fast], x[:1], 1, 1, 1, small) is slow  # tiny: by count
