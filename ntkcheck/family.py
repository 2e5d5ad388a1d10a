"""Users' own networks: a width-parametrized model family that claims accept like an ArchSpec.

A :class:`ModelFamily` wraps a factory ``factory(width, seed, **choices) -> nn.Module`` written
in plain torch, the shape of one input, the parametrization the factory implements and the
*choices* it takes (depth, activation, ..., each a list of values, simplest first). A member of
the family (the family with one value per choice, :meth:`ModelFamily.with_choices`) has the
interface claims use on an :class:`ntkcheck.arch.ArchSpec`: ``arch_id``, ``fields()``,
``parametrization``, ``input_kind``, ``with_width(n)`` and ``build(seed=, input_shape=,
out_features=, device=, dtype=)``. :func:`family_strategy` draws members with Hypothesis
(shrinking to the first value of every choice).

Infinite-width reference. A user's network has no analytic kernel here, so
:func:`ntkcheck.kernels.analytic_kernels` given a member returns :meth:`ModelFamily.
reference_kernels`: a Monte-Carlo estimate of the kernels at the family's
``reference_width`` (default: the widest width the run sweeps): the NTK as the mean empirical NTK
(:func:`ntkcheck.kernels.monte_carlo_ntk`) and the NNGP as the mean output covariance
``f(x) f(x')`` over ``reference_samples`` independently initialized networks. By Jacot et al.
2018 (Theorem 1) and Lee et al. 2018 both tend to the infinite-width kernels as that width
grows, for networks whose limit exists; the substitute is only as good as that width is wide.
Every record of a member says so in its ``kernel_reference`` field.

Measurements that do not apply to a family (one that needs an ntkcheck read-out layer, muP
rates for an unknown network, inputs of another size, ...) raise :class:`NotApplicable`, which
the pytest plugin reports as a skipped, *not applicable* test with the reason.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

__all__ = ["KERNEL_REFERENCE", "ModelFamily", "NotApplicable", "family_strategy",
           "is_family", "load_family"]

#: The ``kernel_reference`` field of a family member's records (``{width}``, ``{samples}``
#: are filled in).
KERNEL_REFERENCE = ("monte-carlo: mean empirical NTK and output covariance of {samples} "
                    "networks at width {width} (no analytic kernel)")


class NotApplicable(Exception):  # noqa: N818 - a verdict, not an error of the caller
    """A measurement that does not apply to this network; the message says why."""


def _token(key: str, value: Any) -> str:
    if isinstance(value, bool):
        text = key if value else f"no{key}"
    elif isinstance(value, str):
        text = value
    else:
        text = f"{key}{value:g}" if isinstance(value, float) else f"{key}{value}"
    return re.sub(r"[^A-Za-z0-9.]+", "", text)


@dataclass(frozen=True)
class ModelFamily:
    """A width-parametrized network family of the user's, and (with choices) one member.

    Attributes:
        name: Family name (letters, digits, ``-``, ``_``, ``.``); starts every ``arch_id``.
        factory: ``factory(width, seed, **choices) -> nn.Module``; may also accept
            ``out_features`` (the number of outputs a claim asks for). It may initialize with
            torch's global RNG: :meth:`build` seeds it with ``seed`` and restores it after.
            The module maps ``(N, *input_shape)`` to ``(N, out_features)``.
        input_shape: Shape of one input, e.g. ``(64,)`` or ``(1, 8, 8)``. Data of another
            shape with as many entries is reshaped; data of another size is not applicable.
        parametrization: What the factory implements: ``"ntk"``, ``"standard"``, ``"mup"``
            or another word. Claims drawing NTK-parametrized networks run only on ``"ntk"``.
        choices: ``{name: [values, simplest first]}``, the options the factory takes.
        out_features: Outputs of a factory that does not take ``out_features`` (else None).
        readout: Qualified name of the read-out ``nn.Linear`` (default: the last
            ``nn.Linear`` in module order); the hidden features are its input.
        reference_width: Width of the Monte-Carlo reference (module docstring); None: the
            widest width of the run (set by the plugin), else 1024.
        reference_samples: Networks averaged for the reference (>= 2).
        selected: The member's value of every choice (empty for the family itself).
        width: The member's width (None until :meth:`with_width`).
        not_applicable: Why a test that drew this member does not apply to it ("" if it
            does); set by :mod:`ntkcheck.strategies` under ``--ntk-model``.

    Raises:
        ValueError: On an empty name, a bad input shape, an empty choice list, or
            ``reference_samples < 2``.

    """

    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    parametrization: str = "ntk"
    choices: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    out_features: int | None = None
    readout: str | None = None
    reference_width: int | None = None
    reference_samples: int = 4
    selected: tuple[tuple[str, Any], ...] = ()
    width: int | None = None
    not_applicable: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", self.name):
            raise ValueError(f"a model family needs a name of letters, digits, '-', '_', '.', "
                             f"got {self.name!r}")
        if not callable(self.factory):
            raise ValueError(f"factory must be callable (width, seed, **choices) -> nn.Module, "
                             f"got {self.factory!r}")
        shape = ((self.input_shape,) if isinstance(self.input_shape, int)
                 else tuple(self.input_shape))
        if not shape or any(not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"input_shape must be positive ints, e.g. (64,) or (1, 8, 8), "
                             f"got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)
        choices = {str(k): tuple(v) for k, v in dict(self.choices).items()}
        for key, values in choices.items():
            if not values:
                raise ValueError(f"choice {key!r} lists no values; give at least one")
        object.__setattr__(self, "choices", choices)
        if self.reference_samples < 2:
            raise ValueError(f"reference_samples must be >= 2, got {self.reference_samples}")

    def __hash__(self) -> int:  # choices is a dict: hash its items
        return hash((self.name, self.factory, self.input_shape, self.parametrization,
                     tuple(self.choices.items()), self.out_features, self.readout,
                     self.reference_width, self.reference_samples, self.selected, self.width,
                     self.not_applicable))

    # --- members ---------------------------------------------------------------------------

    @property
    def choice_values(self) -> dict[str, Any]:
        """The member's choices: every declared choice, its first value unless selected."""
        values = {k: v[0] for k, v in self.choices.items()}
        values.update(dict(self.selected))
        return values

    def with_choices(self, **values: Any) -> ModelFamily:
        """The member with these choice values (the others at their first value).

        Raises:
            ValueError: On an undeclared choice or a value not among its declared values.

        """
        for key, value in values.items():
            if key not in self.choices:
                raise ValueError(f"{self.name} has no choice {key!r}; declared: "
                                 f"{sorted(self.choices)}")
            if value not in self.choices[key]:
                raise ValueError(f"{self.name}: {key}={value!r} is not among the declared "
                                 f"values {list(self.choices[key])}")
        merged = {**dict(self.selected), **values}
        return replace(self, selected=tuple((k, merged[k]) for k in self.choices if k in merged))

    def with_width(self, width: int) -> ModelFamily:
        """The member with hidden width ``width`` (a positive int).

        Raises:
            ValueError: If ``width`` is not a positive integer.

        """
        if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
            raise ValueError(f"width must be an integer >= 1, got {width!r}")
        return replace(self, width=int(width))

    @property
    def arch_id(self) -> str:
        """``{name}-{choice tokens}-{parametrization}``, e.g. ``tinyres-blocks2-relu-ntk``.

        A token is a string value itself, ``{key}{value}`` for numbers and ``key`` /
        ``no{key}`` for booleans, in the declared order of the choices.
        """
        tokens = [_token(k, v) for k, v in self.choice_values.items()]
        return "-".join([self.name, *tokens, _token("", self.parametrization)])

    @property
    def input_kind(self) -> str:
        """``"image"`` for a ``(C, H, W)`` input shape, else ``"vector"``."""
        return "image" if len(self.input_shape) == 3 else "vector"

    @property
    def kernel_reference(self) -> str:
        """What stands in for the analytic kernel (:data:`KERNEL_REFERENCE`)."""
        return KERNEL_REFERENCE.format(width=self.reference_width or 1024,
                                       samples=self.reference_samples)

    def fields(self) -> dict[str, object]:
        """The member's record fields: the standard ones where a choice of that name exists.

        ``family`` (the name), ``depth``, ``activation``, ``parametrization``, ``bias``,
        ``weight_std``, ``bias_std`` (None unless a choice has that name), every other choice
        as ``choice_<name>`` (values other than bool, int, float and str as their ``str``)
        and ``kernel_reference``.
        """
        values = {k: v if isinstance(v, (bool, int, float, str)) or v is None else str(v)
                  for k, v in self.choice_values.items()}  # records hold builtin scalars
        standard = ("depth", "activation", "bias", "weight_std", "bias_std")
        out: dict[str, object] = {"family": self.name, "parametrization": self.parametrization}
        out.update({k: values.get(k) for k in standard})
        out.update({f"choice_{k}": v for k, v in values.items() if k not in standard})
        out["kernel_reference"] = self.kernel_reference
        return out

    def __repr__(self) -> str:
        inner = ", ".join([repr(self.name), *(f"{k}={v!r}" for k, v in self.choice_values.items())])
        width = f", width={self.width}" if self.width is not None else ""
        return f"ModelFamily({inner}{width})"

    # --- building ----------------------------------------------------------------------------

    def build(
        self,
        *,
        seed: int,
        input_shape: int | Sequence[int] | None = None,
        out_features: int = 1,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> nn.Module:
        """Build the member at its width, seeded; the interface of :meth:`ArchSpec.build`.

        Args:
            seed: Seed of the initialization: torch's global RNG is seeded with it during the
                factory call and restored afterwards.
            input_shape: Shape of the inputs the caller has; a shape with as many entries as
                :attr:`input_shape` is reshaped to it in the returned module (its first child
                is then an ``nn.Unflatten``); None: :attr:`input_shape`.
            out_features: Outputs wanted.
            device: Device of the network.
            dtype: Parameter dtype.

        Returns:
            The module, in eval mode, with attribute ``ntk_family`` (this member).

        Raises:
            ValueError: If the member has no width.
            NotApplicable: If the inputs have another number of entries, or the factory
                cannot give ``out_features`` outputs.

        """
        if self.width is None:
            raise ValueError(f"{self.arch_id} has no width; call family.with_width(n).build(...)")
        shape = self.input_shape if input_shape is None else (
            (input_shape,) if isinstance(input_shape, int) else tuple(input_shape))
        if math.prod(shape) != math.prod(self.input_shape):
            raise NotApplicable(f"{self.arch_id} takes inputs of shape {self.input_shape}; "
                                f"this measurement has inputs of shape {shape}")
        kwargs = dict(self.choice_values)
        takes_out = "out_features" in inspect.signature(self.factory).parameters
        if takes_out:
            kwargs["out_features"] = int(out_features)
        elif self.out_features is not None and self.out_features != out_features:
            raise NotApplicable(f"{self.arch_id} has {self.out_features} output(s); this "
                                f"measurement needs {out_features} (let the factory take "
                                "out_features)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = self.factory(self.width, int(seed), **kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name}'s factory returned {type(model).__name__}, not an "
                            "nn.Module")
        if tuple(shape) != self.input_shape:
            model = nn.Sequential(nn.Flatten(), nn.Unflatten(1, self.input_shape), model)
        model = model.to(device=device, dtype=dtype).eval()
        if not takes_out:
            with torch.no_grad():
                probe = torch.zeros(1, *shape, device=device, dtype=dtype)
                n_out = model(probe).reshape(1, -1).shape[1]
            if n_out != out_features:
                raise NotApplicable(f"{self.arch_id} has {n_out} output(s); this measurement "
                                    f"needs {out_features} (let the factory take out_features)")
        model.ntk_family = self
        return model

    # --- infinite-width substitute ---------------------------------------------------------------

    def reference_kernels(self, x1: torch.Tensor, x2: torch.Tensor | None = None):
        """Monte-Carlo NNGP kernel and NTK at :attr:`reference_width` (module docstring).

        Args:
            x1: ``(N1, *shape)`` inputs (reshaped as in :meth:`build`).
            x2: ``(N2, *shape)`` inputs or None (``x1``).

        Returns:
            :class:`ntkcheck.kernels.analytic.Kernels` with ``(N1, N2)`` float64 ``nngp`` (mean
            of ``f(x1) f(x2)`` over the networks, per output) and ``ntk`` (mean empirical NTK).

        """
        from ntkcheck.kernels.analytic import Kernels
        from ntkcheck.kernels.monte_carlo import init_seeds, monte_carlo_ntk

        width = self.reference_width or 1024
        x1 = torch.as_tensor(x1, dtype=torch.float64)
        x2 = None if x2 is None else torch.as_tensor(x2, dtype=torch.float64)
        ntk, _ = monte_carlo_ntk(self, x1, x2, width=width, n_samples=self.reference_samples)
        nngp = torch.zeros_like(ntk)
        member = self.with_width(width)
        for s in init_seeds(0, self.reference_samples):
            net = member.build(seed=s, input_shape=tuple(x1.shape[1:]), device=x1.device)
            with torch.no_grad():
                f1 = net(x1).reshape(len(x1), -1)
                f2 = f1 if x2 is None else net(x2).reshape(len(x2), -1)
            nngp += f1 @ f2.T / f1.shape[1]
        return Kernels(nngp=nngp / self.reference_samples, ntk=ntk)

    def readout_layer(self, model: nn.Module) -> nn.Linear:
        """The read-out ``nn.Linear`` of a built member (:attr:`readout` or the last one).

        Raises:
            NotApplicable: If the model has no ``nn.Linear`` (or none of that name).

        """
        modules = dict(model.named_modules())
        if self.readout is not None:
            for name, mod in modules.items():
                if name == self.readout or name.endswith(f".{self.readout}"):
                    return mod
            raise NotApplicable(f"{self.arch_id} has no module {self.readout!r} (readout=)")
        linears = [m for m in modules.values() if type(m) is nn.Linear]
        if not linears:
            raise NotApplicable(f"{self.arch_id} has no nn.Linear read-out layer")
        return linears[-1]

    def lr_scales(self, model: nn.Module) -> dict[str, float]:
        """Per-parameter learning-rate multipliers: 1 for every parameter.

        Raises:
            NotApplicable: Under ``"mup"`` (or another parametrization than ``"ntk"`` and
                ``"standard"``): its per-layer rates are the factory's business.

        """
        if self.parametrization not in ("ntk", "standard"):
            raise NotApplicable(f"{self.arch_id}: per-layer learning rates of a "
                                f"{self.parametrization!r} user network are not known here")
        return {name: 1.0 for name, _ in model.named_parameters()}


def is_family(obj: object) -> bool:
    """Whether ``obj`` is a :class:`ModelFamily` (a member or the family)."""
    return isinstance(obj, ModelFamily)


def family_of(model: nn.Module) -> ModelFamily | None:
    """The member a model was built from by :meth:`ModelFamily.build`, or None."""
    fam = getattr(model, "ntk_family", None)
    return fam if isinstance(fam, ModelFamily) else None


def family_strategy(family: ModelFamily):
    """A Hypothesis strategy of the family's members over its declared choices.

    Every choice is drawn with ``sampled_from`` its values, so a failing member shrinks to
    the first (simplest) value of every choice that does not matter.

    Returns:
        A strategy of :class:`ModelFamily` members (without width).

    """
    from hypothesis import strategies as st

    if not family.choices:
        return st.just(family.with_choices())
    draws = {k: st.sampled_from(v) for k, v in family.choices.items()}
    return st.fixed_dictionaries(draws).map(lambda d: family.with_choices(**d))


def load_family(target: str) -> ModelFamily:
    """Import ``package.module:name`` and return the :class:`ModelFamily` it names.

    ``name`` is a :class:`ModelFamily` or a callable without arguments that returns one.

    Raises:
        ValueError: On a target without ``:``, a module that cannot be imported, a missing
            name, or an object that is not (and does not return) a ModelFamily.

    """
    hint = "; pass --ntk-model package.module:factory, e.g. mymodels.nets:tiny_resnet"
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--ntk-model {target!r} is not package.module:factory{hint}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--ntk-model: cannot import {module_name!r} ({exc}){hint}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--ntk-model: {module_name!r} has no attribute {attr!r}{hint}")
        obj = getattr(obj, part)
    if not isinstance(obj, ModelFamily) and callable(obj):
        try:
            obj = obj()
        except TypeError as exc:
            raise ValueError(f"--ntk-model: {target} must be a ModelFamily or take no "
                             f"arguments and return one ({exc})") from None
    if not isinstance(obj, ModelFamily):
        raise ValueError(f"--ntk-model: {target} is a {type(obj).__name__}, not an "
                         "ntkcheck.ModelFamily (or a function returning one)")
    return obj


# --- the family the plugin points shipped claims at (--ntk-model) ------------------------------

_ACTIVE: list[ModelFamily] = []


def active_family() -> ModelFamily | None:
    """The family of ``--ntk-model`` in this process, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


def set_active_family(family: ModelFamily | None) -> None:
    """Point the strategies of :mod:`ntkcheck.strategies` at ``family`` (None: stop).

    The pytest plugin calls this for ``--ntk-model``.
    """
    _ACTIVE.clear()
    if family is not None:
        _ACTIVE.append(family)
