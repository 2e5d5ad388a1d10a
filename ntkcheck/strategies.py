"""Hypothesis strategies that draw architecture specs (never widths: claims sweep those).

Every strategy shrinks toward the simplest spec: the smallest depth, the *first* activation,
parametrization and bias choice in the lists given (``st.integers`` shrinks to its minimum,
``st.sampled_from`` to its first element), ``pool``/``batchnorm`` off when ``False`` is
listed first, and, for :func:`architectures`, the first family. Order the choices simplest
first.

Under ``--ntk-model package.module:factory`` (:mod:`ntkcheck.family`) every strategy here draws
members of that user family instead, so the shipped claims run on it; a member whose
parametrization the test does not draw is marked not applicable. :func:`members` draws the
members of any :class:`~ntkcheck.family.ModelFamily` (a user's claim file).

:data:`PAPER_SPECS` holds the settings of the seed paper so claims can pin them with
``@hypothesis.example``.

Example:
    >>> from hypothesis import example, given
    >>> @given(spec=mlps(max_depth=3, parametrizations=("ntk", "standard")))
    ... @example(spec=PAPER_SPECS["wenger2023-mlp"])
    ... def test_something(spec):
    ...     model = spec.with_width(64).build(seed=0, input_shape=(8,))

"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from ntkcheck.arch import ACTIVATIONS, FAMILIES, PARAMETRIZATIONS, ArchSpec
from ntkcheck.family import ModelFamily, active_family, family_strategy

__all__ = ["PAPER_SPECS", "architectures", "cnns", "members", "mlps", "resnets"]

#: Architectures of the seed paper, Wenger, Dangel & Kristiadi 2023, "On the disconnect
#: between theory and practice of neural networks: limits of the NTK perspective" (arXiv
#: 2310.00137): ReLU networks in the standard parametrization, as trained in practice; their
#: MLP has depth 3. ``weight_std = sqrt(2)`` (He initialization) and the CNN's depth and
#: pooling are this package's choices, not read off the paper. Widths are swept by claims.
PAPER_SPECS: dict[str, ArchSpec] = {
    "wenger2023-mlp": ArchSpec(
        family="mlp", depth=3, activation="relu", parametrization="standard", bias=True,
        weight_std=2**0.5,
    ),
    "wenger2023-cnn": ArchSpec(
        family="cnn", depth=2, activation="relu", parametrization="standard", bias=True,
        weight_std=2**0.5, pool=True,
    ),
}


def members(family: ModelFamily) -> st.SearchStrategy[ModelFamily]:
    """Draw members of a user's :class:`~ntkcheck.family.ModelFamily` over its choices.

    Shrinks to the first declared value of every choice (:func:`ntkcheck.family.
    family_strategy`); the plugin names the failing member in the report.
    """
    return family_strategy(family)


def _or_active(default: st.SearchStrategy, parametrizations: Sequence[str]) -> st.SearchStrategy:
    """``default``, or under ``--ntk-model`` the members of that family instead.

    A member whose parametrization is not among ``parametrizations`` (the ones the test
    draws) is marked not applicable, with the reason (the plugin skips the test with it).
    """
    family = active_family()
    if family is None:
        return default
    if family.parametrization not in tuple(parametrizations):
        from dataclasses import replace

        why = (f"the test draws {'/'.join(parametrizations)}-parametrized networks and "
               f"{family.name} is {family.parametrization!r}")
        return st.just(replace(family.with_choices(), not_applicable=why))
    return family_strategy(family)


def _choices(name: str, values: Sequence, allowed: Sequence | None = None) -> st.SearchStrategy:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must list at least one choice, got {values!r}")
    if allowed is not None:
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise ValueError(f"unknown {name} {unknown}; choose from {tuple(allowed)}")
    return st.sampled_from(values)


def _depths(min_depth: int, max_depth: int) -> st.SearchStrategy[int]:
    if not (isinstance(min_depth, int) and isinstance(max_depth, int)
            and 1 <= min_depth <= max_depth):
        raise ValueError(
            f"need integers 1 <= min_depth <= max_depth, got {min_depth!r}, {max_depth!r}"
        )
    return st.integers(min_depth, max_depth)


def _specs(
    family: str,
    *,
    min_depth: int,
    max_depth: int,
    activations: Sequence[str],
    parametrizations: Sequence[str],
    biases: Sequence[bool],
    weight_stds: Sequence[float],
    bias_stds: Sequence[float],
    **image_choices: Sequence[bool],
) -> st.SearchStrategy[ArchSpec]:
    extra = {k: _choices(k, v, (False, True)) for k, v in image_choices.items()}
    return st.builds(
        ArchSpec,
        family=st.just(family),
        depth=_depths(min_depth, max_depth),
        activation=_choices("activations", activations, ACTIVATIONS),
        parametrization=_choices("parametrizations", parametrizations, PARAMETRIZATIONS),
        bias=_choices("biases", biases, (False, True)),
        weight_std=_choices("weight_stds", weight_stds),
        bias_std=_choices("bias_stds", bias_stds),
        **extra,
    )


def mlps(
    *,
    min_depth: int = 1,
    max_depth: int = 4,
    activations: Sequence[str] = ("relu", "erf"),
    parametrizations: Sequence[str] = ("ntk",),
    biases: Sequence[bool] = (True, False),
    weight_stds: Sequence[float] = (1.0,),
    bias_stds: Sequence[float] = (0.1,),
) -> st.SearchStrategy[ArchSpec]:
    """Draw MLP specs (without width); they take flat vectors.

    Args:
        min_depth: Smallest number of hidden layers (>= 1).
        max_depth: Largest number of hidden layers.
        activations: Activation names, simplest first.
        parametrizations: Parametrization names, simplest first.
        biases: Bias choices, in shrink order.
        weight_stds: ``sigma_w`` choices.
        bias_stds: ``sigma_b`` choices.

    Returns:
        A strategy of :class:`~ntkcheck.arch.ArchSpec` with ``family="mlp"`` and no width.

    Raises:
        ValueError: Eagerly, on bad bounds, an empty choice list or an unknown name.

    """
    return _or_active(_specs("mlp", min_depth=min_depth, max_depth=max_depth,
                             activations=activations, parametrizations=parametrizations,
                             biases=biases, weight_stds=weight_stds, bias_stds=bias_stds),
                      parametrizations)


def cnns(
    *,
    min_depth: int = 1,
    max_depth: int = 3,
    activations: Sequence[str] = ("relu", "leaky_relu"),
    parametrizations: Sequence[str] = ("ntk",),
    biases: Sequence[bool] = (True, False),
    pools: Sequence[bool] = (False, True),
    batchnorms: Sequence[bool] = (False,),
    weight_stds: Sequence[float] = (1.0,),
    bias_stds: Sequence[float] = (0.1,),
) -> st.SearchStrategy[ArchSpec]:
    """Draw CNN specs (without width); they take images ``(C, H, W)``.

    With ``pool`` drawn, inputs need ``H, W >= 2**depth``: the default ``max_depth=3`` fits
    8x8 images.

    Args:
        min_depth: Smallest number of conv layers (>= 1).
        max_depth: Largest number of conv layers.
        activations: Activation names, simplest first (ReLU family by default, which the
            analytic CNTK covers).
        parametrizations: Parametrization names, simplest first.
        biases: Bias choices, in shrink order.
        pools: Choices of 2x2 average pooling after every conv layer, in shrink order.
        batchnorms: Choices of BatchNorm after every conv, in shrink order.
        weight_stds: ``sigma_w`` choices.
        bias_stds: ``sigma_b`` choices.

    Returns:
        A strategy of :class:`~ntkcheck.arch.ArchSpec` with ``family="cnn"`` and no width.

    Raises:
        ValueError: Eagerly, on bad bounds, an empty choice list or an unknown name.

    """
    return _or_active(_specs("cnn", min_depth=min_depth, max_depth=max_depth,
                             activations=activations, parametrizations=parametrizations,
                             biases=biases, weight_stds=weight_stds, bias_stds=bias_stds,
                             pool=pools, batchnorm=batchnorms), parametrizations)


def resnets(
    *,
    min_depth: int = 1,
    max_depth: int = 2,
    activations: Sequence[str] = ("relu",),
    parametrizations: Sequence[str] = ("ntk",),
    biases: Sequence[bool] = (True, False),
    pools: Sequence[bool] = (False,),
    batchnorms: Sequence[bool] = (False, True),
    weight_stds: Sequence[float] = (1.0,),
    bias_stds: Sequence[float] = (0.1,),
) -> st.SearchStrategy[ArchSpec]:
    """Draw wide-residual-net specs (without width); they take images ``(C, H, W)``.

    Args:
        min_depth: Smallest number of residual blocks (>= 1).
        max_depth: Largest number of residual blocks.
        activations: Activation names, simplest first.
        parametrizations: Parametrization names, simplest first.
        biases: Bias choices, in shrink order.
        pools: Choices of 2x2 average pooling after every block, in shrink order.
        batchnorms: Choices of BatchNorm after every conv, in shrink order.
        weight_stds: ``sigma_w`` choices.
        bias_stds: ``sigma_b`` choices.

    Returns:
        A strategy of :class:`~ntkcheck.arch.ArchSpec` with ``family="resnet"``, no width.

    Raises:
        ValueError: Eagerly, on bad bounds, an empty choice list or an unknown name.

    """
    return _or_active(_specs("resnet", min_depth=min_depth, max_depth=max_depth,
                             activations=activations, parametrizations=parametrizations,
                             biases=biases, weight_stds=weight_stds, bias_stds=bias_stds,
                             pool=pools, batchnorm=batchnorms), parametrizations)


_FAMILY_STRATEGIES = {"mlp": mlps, "cnn": cnns, "resnet": resnets}


def architectures(
    families: Sequence[str] = ("mlp", "cnn", "resnet"),
    *,
    min_depth: int | None = None,
    max_depth: int | None = None,
    activations: Sequence[str] | None = None,
    parametrizations: Sequence[str] | None = None,
    biases: Sequence[bool] | None = None,
    weight_stds: Sequence[float] | None = None,
    bias_stds: Sequence[float] | None = None,
) -> st.SearchStrategy[ArchSpec]:
    """Draw specs of several families; shrinks toward the first family listed.

    Keyword bounds left ``None`` take each family's default (see :func:`mlps`, :func:`cnns`,
    :func:`resnets`). Use ``spec.input_kind`` (``"vector"`` or ``"image"``) to pick data.

    Args:
        families: Family names, simplest first.
        min_depth: Smallest depth for every family.
        max_depth: Largest depth for every family.
        activations: Activation names for every family.
        parametrizations: Parametrization names for every family.
        biases: Bias choices for every family.
        weight_stds: ``sigma_w`` choices for every family.
        bias_stds: ``sigma_b`` choices for every family.

    Returns:
        A strategy of :class:`~ntkcheck.arch.ArchSpec` without width.

    Raises:
        ValueError: Eagerly, on an unknown or empty family list, or bad bounds.

    """
    families = tuple(families)
    if not families or any(f not in FAMILIES for f in families):
        raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {families!r}")
    given = dict(min_depth=min_depth, max_depth=max_depth, activations=activations,
                 parametrizations=parametrizations, biases=biases, weight_stds=weight_stds,
                 bias_stds=bias_stds)
    kwargs = {k: v for k, v in given.items() if v is not None}
    if active_family() is not None:
        return _or_active(st.nothing(), parametrizations or PARAMETRIZATIONS)
    return st.one_of([_FAMILY_STRATEGIES[f](**kwargs) for f in families])
