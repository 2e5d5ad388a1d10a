"""Tests of ntkcheck.strategies: valid specs that build, bounds, shrinking, paper specs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, example, find, given, settings
from hypothesis import strategies as st

from ntkcheck import strategies
from ntkcheck.arch import ArchSpec
from ntkcheck.strategies import PAPER_SPECS, architectures, cnns, mlps, resnets

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SHAPES = {"vector": (6,), "image": (2, 8, 8)}


def _check_builds(spec: ArchSpec) -> None:
    assert spec.width is None  # strategies never draw the width
    shape = SHAPES[spec.input_kind]
    model = spec.with_width(3).build(seed=0, input_shape=shape, out_features=2)
    out = model(torch.ones(2, *shape, dtype=torch.float64))
    assert out.shape == (2, 2) and torch.isfinite(out).all()


@FAST
@given(spec=mlps())
def test_mlps_defaults(spec):
    assert spec.family == "mlp" and 1 <= spec.depth <= 4
    assert spec.activation in ("relu", "erf") and spec.parametrization == "ntk"
    _check_builds(spec)


@FAST
@given(spec=cnns())
def test_cnns_defaults(spec):
    assert spec.family == "cnn" and 1 <= spec.depth <= 3 and not spec.batchnorm
    assert spec.arch_id.startswith(f"cnn-d{spec.depth}-") and spec.arch_id.endswith("gap")
    _check_builds(spec)


@FAST
@given(spec=resnets(parametrizations=("ntk", "mup")))
def test_resnets(spec):
    assert spec.family == "resnet" and 1 <= spec.depth <= 2 and not spec.pool
    assert spec.parametrization in ("ntk", "mup")
    _check_builds(spec)


@FAST
@given(spec=mlps(min_depth=2, max_depth=3, activations=("tanh", "abs"),
                 parametrizations=("standard", "mup"), biases=(False,),
                 weight_stds=(1.5,), bias_stds=(0.0,)))
def test_bounds_are_respected(spec):
    assert 2 <= spec.depth <= 3 and spec.activation in ("tanh", "abs")
    assert spec.parametrization in ("standard", "mup") and spec.bias is False
    assert spec.weight_std == 1.5 and spec.bias_std == 0.0


@FAST
@given(spec=architectures(max_depth=2, activations=("relu",)))
def test_architectures_mix_families(spec):
    assert spec.depth <= 2 and spec.activation == "relu"
    _check_builds(spec)


def test_architectures_draw_every_family():
    seen = set()

    @settings(max_examples=60, deadline=None, database=None)
    @given(spec=architectures())
    def collect(spec):
        seen.add(spec.family)

    collect()
    assert seen == {"mlp", "cnn", "resnet"}


def test_find_shrinks_to_the_simplest_spec():
    spec = find(mlps(), lambda s: s.depth >= 3, settings=settings(database=None))
    assert spec == ArchSpec(family="mlp", depth=3, activation="relu", parametrization="ntk",
                            bias=True)
    # Shrinking goes to the first listed choices, whatever they are.
    spec = find(cnns(activations=("abs", "relu"), biases=(False, True)),
                lambda s: s.depth >= 2, settings=settings(database=None))
    assert (spec.depth, spec.activation, spec.bias, spec.pool) == (2, "abs", False, False)
    spec = find(architectures(("resnet", "mlp")), lambda s: True,
                settings=settings(database=None))
    assert spec.family == "resnet" and spec.depth == 1 and not spec.batchnorm


def test_find_shrinks_other_fields_toward_simplest():
    spec = find(mlps(parametrizations=("ntk", "standard", "mup")),
                lambda s: s.parametrization == "mup", settings=settings(database=None))
    assert spec == ArchSpec(depth=1, parametrization="mup")


@pytest.mark.parametrize(
    ("strategy", "kwargs", "message"),
    [
        (mlps, {"min_depth": 3, "max_depth": 2}, "1 <= min_depth <= max_depth"),
        (mlps, {"min_depth": 0}, "1 <= min_depth <= max_depth"),
        (mlps, {"activations": ("relu", "swish")}, r"unknown activations \['swish'\]"),
        (cnns, {"parametrizations": ()}, "at least one choice"),
        (resnets, {"batchnorms": ("yes",)}, "unknown batchnorm"),
        (architectures, {"families": ("mlp", "rnn")}, "families must be a non-empty subset"),
    ],
)
def test_bad_arguments_fail_eagerly(strategy, kwargs, message):
    with pytest.raises(ValueError, match=message):
        strategy(**kwargs)


def test_paper_specs():
    mlp, cnn = PAPER_SPECS["wenger2023-mlp"], PAPER_SPECS["wenger2023-cnn"]
    assert (mlp.family, mlp.depth, mlp.activation, mlp.parametrization) == (
        "mlp", 3, "relu", "standard")
    assert cnn.family == "cnn" and cnn.parametrization == "standard"
    for spec in PAPER_SPECS.values():
        _check_builds(spec)


@FAST
@given(spec=mlps(parametrizations=("ntk", "standard")))
@example(spec=PAPER_SPECS["wenger2023-mlp"])
def test_paper_spec_can_be_pinned_with_example(spec):
    _check_builds(spec)


def test_strategies_are_hypothesis_strategies():
    for strategy in (mlps(), cnns(), resnets(), architectures()):
        assert isinstance(strategy, st.SearchStrategy)
        assert isinstance(find(strategy, lambda s: True, settings=settings(database=None)),
                          ArchSpec)


def test_under_ntk_model_the_strategies_draw_the_active_family():
    """--ntk-model points every strategy at the user's family; a test drawing another
    parametrization than the family's gets a member marked not applicable, with the reason."""
    from hypothesis import find
    from torch import nn

    from ntkcheck.family import ModelFamily, set_active_family

    family = ModelFamily("fam", lambda width, seed: nn.Linear(2, 1), (2,), parametrization="ntk",
                         choices={"depth": (1, 2)})
    set_active_family(family)
    try:
        drawn = find(strategies.mlps(parametrizations=("ntk",)), lambda m: True)
        assert drawn == family.with_choices(depth=1) and not drawn.not_applicable
        assert find(strategies.cnns(), lambda m: m.choice_values["depth"] == 2).arch_id == \
            "fam-depth2-ntk"
        other = find(strategies.mlps(parametrizations=("standard",)), lambda m: True)
        assert "draws standard-parametrized networks and fam is 'ntk'" in other.not_applicable
        assert find(strategies.architectures(), lambda m: True).name == "fam"
    finally:
        set_active_family(None)
    assert isinstance(find(strategies.mlps(), lambda m: True), ArchSpec)
