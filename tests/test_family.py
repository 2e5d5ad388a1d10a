"""Tests of ntkcheck.family: users' model families, their dispatch, and --ntk-model."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from hypothesis import find
from torch import nn

from ntkcheck.arch import param_groups
from ntkcheck.family import (
    ModelFamily,
    NotApplicable,
    family_strategy,
    load_family,
)
from ntkcheck.kernel_regime.features import hidden_features, lr_weighted_ntk, readout_covariance
from ntkcheck.kernels import analytic_kernels, empirical_ntk
from ntkcheck.kernels.monte_carlo import init_seeds
from ntkcheck.training.loops import kernel_lr

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_block(first_line: str) -> str:
    """The README's fenced python block whose first line is ``first_line``, verbatim."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if b.splitlines()[0] == first_line]
    assert len(found) == 1, f"README has {len(found)} blocks starting {first_line!r}"
    return found[0]


def _mlp(width, seed, out_features=1, depth=1, activation="relu"):
    act = {"relu": nn.ReLU(), "tanh": nn.Tanh()}[activation]
    layers = [nn.Linear(6, width)]
    for _ in range(depth - 1):
        layers += [act, nn.Linear(width, width)]
    return nn.Sequential(*layers, act, nn.Linear(width, out_features))


FAMILY = ModelFamily("toy", _mlp, (6,), parametrization="standard",
                     choices={"depth": (1, 2, 3), "activation": ("relu", "tanh")})


def _x(shape=(6,), n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64)


# --- members ------------------------------------------------------------------------------------


def test_member_ids_fields_and_repr():
    member = FAMILY.with_choices(depth=2)
    assert member.arch_id == "toy-depth2-relu-standard"
    assert FAMILY.arch_id == "toy-depth1-relu-standard"  # first values
    fields = member.fields()
    assert fields["family"] == "toy" and fields["depth"] == 2 and fields["activation"] == "relu"
    assert fields["parametrization"] == "standard" and fields["bias"] is None
    assert fields["kernel_reference"].startswith("monte-carlo")
    assert repr(member.with_width(8)) == "ModelFamily('toy', depth=2, activation='relu', width=8)"
    other = ModelFamily("t", _mlp, (6,), choices={"depth": (1,), "layers": ((1, 2),),
                                                  "bn": (True,)})
    assert other.arch_id == "t-depth1-layers12-bn-ntk"
    assert other.fields()["choice_layers"] == "(1, 2)" and other.fields()["choice_bn"] is True


def test_member_errors_name_the_cause():
    with pytest.raises(ValueError, match="no choice 'width_mult'"):
        FAMILY.with_choices(width_mult=2)
    with pytest.raises(ValueError, match="not among the declared values"):
        FAMILY.with_choices(depth=7)
    with pytest.raises(ValueError, match="has no width"):
        FAMILY.build(seed=0)
    with pytest.raises(ValueError, match="width must be an integer"):
        FAMILY.with_width(0)
    with pytest.raises(ValueError, match="lists no values"):
        ModelFamily("x", _mlp, (6,), choices={"depth": ()})
    with pytest.raises(ValueError, match="input_shape"):
        ModelFamily("x", _mlp, (0,))
    with pytest.raises(ValueError, match="name"):
        ModelFamily("a b", _mlp, (6,))


def test_build_is_seeded_restores_the_rng_and_reshapes():
    member = FAMILY.with_choices(depth=2).with_width(7)
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    a, b, c = (member.build(seed=s) for s in (1, 1, 2))
    assert torch.equal(torch.random.get_rng_state(), state)
    x = _x()
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    assert a.ntk_family == member and next(a.parameters()).dtype == torch.float64
    images = member.build(seed=1, input_shape=(1, 2, 3))  # same 6 entries: reshaped
    assert torch.equal(images(x.reshape(5, 1, 2, 3)), a(x))
    with pytest.raises(NotApplicable, match=r"takes inputs of shape \(6,\)"):
        member.build(seed=1, input_shape=(1, 8, 8))
    assert member.build(seed=1, out_features=3)(x).shape == (5, 3)


def test_a_factory_without_out_features_has_its_outputs():
    fixed = ModelFamily("fixed", lambda width, seed: nn.Linear(6, 2), (6,), out_features=2)
    assert fixed.with_width(4).build(seed=0, out_features=2)(_x()).shape == (5, 2)
    with pytest.raises(NotApplicable, match="2 output"):
        fixed.with_width(4).build(seed=0, out_features=10)
    probed = ModelFamily("probed", lambda width, seed: nn.Linear(6, 2), (6,))
    with pytest.raises(NotApplicable, match="has 2 output"):
        probed.with_width(4).build(seed=0)


def test_strategy_shrinks_to_the_first_value_of_every_choice():
    found = find(family_strategy(FAMILY), lambda m: m.choice_values["depth"] >= 2)
    assert found.choice_values == {"depth": 2, "activation": "relu"}
    assert find(family_strategy(FAMILY), lambda m: True) == FAMILY.with_choices(
        depth=1, activation="relu")


def test_load_family(tmp_path, monkeypatch):
    (tmp_path / "fammod.py").write_text(
        "from torch import nn\nfrom ntkcheck import ModelFamily\n"
        "def make():\n    return ModelFamily('m', lambda width, seed: nn.Linear(3, 1), (3,))\n"
        "OBJ = make()\nNOT = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_family("fammod:make").name == "m"
    assert load_family("fammod:OBJ").name == "m"
    for target, match in [("fammod", "not package.module:factory"),
                          ("nosuchmod:x", "cannot import"), ("fammod:nope", "no attribute"),
                          ("fammod:NOT", "not an ntkcheck.ModelFamily")]:
        with pytest.raises(ValueError, match=match):
            load_family(target)


# --- dispatch: the library takes a member wherever it takes an ArchSpec ----------------------


def test_analytic_kernels_of_a_member_is_the_monte_carlo_reference():
    member = replace_ref(FAMILY.with_choices(depth=1), width=32, samples=3)
    x = _x()
    kernels = analytic_kernels(member, x)
    nets = [member.with_width(32).build(seed=s) for s in init_seeds(0, 3)]
    ntk = sum(empirical_ntk(n, x) for n in nets) / 3
    with torch.no_grad():
        nngp = sum(n(x) @ n(x).T for n in nets) / 3
    torch.testing.assert_close(kernels.ntk, ntk)
    torch.testing.assert_close(kernels.nngp, nngp)
    assert "width 32" in member.kernel_reference and "3 networks" in member.kernel_reference
    cross = analytic_kernels(member, x[:2], x)
    torch.testing.assert_close(cross.ntk, kernels.ntk[:2])


def replace_ref(member: ModelFamily, width: int, samples: int) -> ModelFamily:
    from dataclasses import replace

    return replace(member, reference_width=width, reference_samples=samples)


def test_kernel_lr_param_groups_and_features_on_a_member():
    member = FAMILY.with_choices(depth=2).with_width(16)
    net, x = member.build(seed=0), _x(n=8)
    lr, groups = kernel_lr(member, net, x)
    assert groups is None
    assert lr == pytest.approx(8 / float(torch.linalg.eigvalsh(empirical_ntk(net, x))[-1]))
    pg = param_groups(net, 0.3)
    assert [g["name"] for g in pg] == [n for n, _ in net.named_parameters()]
    assert {g["lr"] for g in pg} == {0.3}
    torch.testing.assert_close(lr_weighted_ntk(net, x, pg, 0.3), empirical_ntk(net, x))
    torch.testing.assert_close(hidden_features(net, x), net[:-1](x))  # last nn.Linear's input
    with pytest.raises(NotApplicable, match="read-out's initialization"):
        readout_covariance(net, x, member)
    mup = ModelFamily("m", _mlp, (6,), parametrization="mup").with_width(4)
    with pytest.raises(NotApplicable, match="per-layer learning rates"):
        param_groups(mup.build(seed=0), 0.1)
    named = ModelFamily("n", _mlp, (6,), readout="0").with_width(4)
    net = named.build(seed=0)
    torch.testing.assert_close(hidden_features(net, x), x)


# --- the README's example: a user's claim file, and --ntk-model ------------------------------


def _write_readme_example(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tinyres=_readme_block("# tinyres.py"))
    claims = pytester.mkdir("claims")
    (claims / "test_tinyres.py").write_text(_readme_block("# claims/test_tinyres.py"))


def test_readme_family_claim_shrinks_to_the_failing_choice_under_xdist(pytester):
    """The README's tinyres family and claim file, verbatim, under -n 2: the claim fails from
    depth 2 with plain branches on, and the report names the shrunk member."""
    _write_readme_example(pytester)
    result = pytester.runpytest_subprocess(
        "claims", "-n", "2", "-p", "no:cacheprovider", "--ntk-profile", "paper",
        "--ntk-widths", "128,256", "--ntk-seeds", "2", "--hypothesis-seed", "0",
        "--ntk-device", "cpu")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert ("failing architecture (shrunk by Hypothesis): ModelFamily('tinyres', depth=2, "
            "activation='relu', branch='plain')") in out, out
    records = [json.loads(line) for line in (pytester.path / "reports" / "latest" /
                                             "records.jsonl").read_text().splitlines()]
    by_id = {r["arch_id"]: r for r in records}
    assert "tinyres-depth2-relu-plain-ntk" in by_id
    rec = by_id["tinyres-depth2-relu-plain-ntk"]
    assert rec["family"] == "tinyres" and rec["depth"] == 2 and rec["choice_branch"] == "plain"
    assert rec["kernel_reference"].startswith("monte-carlo")
    # the theory: ReLU, plain branches: 1.5 ** depth; scaled: (1 + 1 / (2 depth)) ** depth
    for arch_id, r in by_id.items():
        depth, plain = r["depth"], r["choice_branch"] == "plain"
        if r["activation"] == "relu" and r["width"] == 256:
            expected = 1.5**depth if plain else (1 + 1 / (2 * depth)) ** depth
            assert abs(math.log(r["value"] / expected)) < 0.25, (arch_id, r["value"], expected)


def test_shipped_claims_run_on_the_readme_family_or_say_why_not(pytester):
    """``pytest claims/ --ntk-model tinyres:tiny_resnet`` on copies of the shipped claims."""
    import shutil

    _write_readme_example(pytester)
    shipped = Path(__file__).resolve().parents[1] / "claims"
    for name in ("test_ntk_at_init.py", "test_nngp_at_init.py", "test_gd_rate.py"):
        shutil.copy(shipped / name, pytester.path / "claims" / name)
    (pytester.path / "claims" / "test_tinyres.py").unlink()
    result = pytester.runpytest_subprocess(
        "claims", "-p", "no:cacheprovider", "--ntk-model", "tinyres:tiny_resnet",
        "--ntk-profile", "smoke", "--ntk-widths", "16,32", "--ntk-seeds", "1",
        "--ntk-device", "cpu", "-rs")
    out = result.stdout.str()
    assert "ntkcheck: --ntk-model tinyres:tiny_resnet: family 'tinyres'" in out, out
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) >= 3 and "error" not in outcomes, out
    assert "not applicable to --ntk-model tinyres: this test measures a built-in" in out
    assert "not applicable to tinyres-" in out and "read-out's initialization" in out
    records = [json.loads(line) for line in (pytester.path / "reports" / "latest" /
                                             "records.jsonl").read_text().splitlines()]
    claims = {r["claim_id"] for r in records}
    assert "ntk-at-init" in claims, out  # ran on the family, against the Monte-Carlo reference
    assert all(r["family"] == "tinyres" and r["kernel_reference"] for r in records)


def test_a_bad_ntk_model_is_a_usage_error(pytester):
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--ntk-model", "nosuchmodule:f")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ntk-model: cannot import 'nosuchmodule'*"])


def test_readme_torchvision_resnet_builds_where_torchvision_is_installed(tmp_path, monkeypatch):
    pytest.importorskip("torchvision", reason="torchvision is not installed (it would replace "
                                              "a CPU torch); the README documents the example")
    (tmp_path / "tv_resnet.py").write_text(_readme_block("# tv_resnet.py"))
    monkeypatch.syspath_prepend(str(tmp_path))
    family = load_family("tv_resnet:tv_resnet")
    net = family.with_width(4).build(seed=0, input_shape=(64,), out_features=3)
    assert net(torch.zeros(2, 64, dtype=torch.float64)).shape == (2, 3)


def test_the_lla_helpers_take_a_member():
    """compare_lla_ntk_gp and lla_calibration on a user family (the NTK-GP reference is then
    the Monte-Carlo one)."""
    pytest.importorskip("laplace")
    from dataclasses import replace

    from ntkcheck.data import load_dataset
    from ntkcheck.uncertainty.lla import compare_lla_ntk_gp, lla_calibration

    data = load_dataset("diabetes", n=30, seed=0)
    train, test = data.split(20)
    fam = replace(ModelFamily("lin", lambda width, seed, out_features=1: nn.Sequential(
        nn.Linear(data.input_shape[0], width), nn.Tanh(), nn.Linear(width, out_features)),
        data.input_shape, parametrization="standard"), reference_width=16, reference_samples=2)
    comparison = compare_lla_ntk_gp(fam, train, test, width=16, seed=0, max_iter=5)
    assert math.isfinite(comparison.value)
    calibration = lla_calibration(fam, train, test, width=16, seed=0)
    assert math.isfinite(calibration.error) and math.isfinite(calibration.nll)
