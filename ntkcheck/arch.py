"""Architecture specifications: an architecture without its width, and how to build it.

An :class:`ArchSpec` is an immutable description of a network family (depth, activation,
parametrization, bias, initialization scales). Widths are swept by claims, never drawn, so a
spec carries no width until :meth:`ArchSpec.with_width` gives it one; :meth:`ArchSpec.build`
then returns a seeded ``torch.nn.Module``.

Families (``width`` is the hidden size swept by claims):

* ``"mlp"``: ``depth`` hidden :class:`Dense` layers of ``width`` units, then a dense read-out.
  Takes flat vectors; any ``input_shape`` is flattened.
* ``"cnn"``: ``depth`` 3x3 :class:`Conv` layers of ``width`` channels (each followed by
  optional BatchNorm, the activation and, with ``pool``, a 2x2 average pooling), global
  average pooling and a dense read-out. Takes images ``(C, H, W)``.
* ``"resnet"``: a small wide-residual net (Zagoruyko & Komodakis 2016, with the basic block of
  He et al. 2016): ``depth`` :class:`BasicBlock` s of two 3x3 convs of ``width`` channels; the
  first block has a 1x1 projection shortcut (the input has other channels), the others an
  identity shortcut; then global average pooling and a dense read-out. Takes images.

Parametrizations (a layer with fan-in ``n`` (``in_channels * kh * kw`` for a conv), stored
parameters ``w`` and ``b``, ``sigma_w`` = ``weight_std``, ``sigma_b`` = ``bias_std``; every
layer computes ``h = weight_multiplier * (w x) + bias_multiplier * b``):

* ``"ntk"`` (Jacot et al. 2018, eq. 1; Lee et al. 2019, eq. 1): ``w, b ~ N(0, 1)``,
  ``weight_multiplier = sigma_w / sqrt(n)``, ``bias_multiplier = sigma_b``, one learning rate
  for all parameters.
* ``"standard"``: ``w ~ N(0, sigma_w**2 / n)``, ``b ~ N(0, sigma_b**2)``, both multipliers 1.
  Same function at initialization as ``"ntk"``, different gradients: its empirical NTK grows
  linearly with the width.
* ``"mup"`` (maximal update parametrization; Yang & Hu 2021, "Feature learning in
  infinite-width neural networks", Table 3 (muP row of the abc-parametrizations); Yang et al.
  2022, "Tensor Programs V", Tables 3 and 8): as ``"ntk"`` for input and hidden layers, but
  the read-out multiplier is ``sigma_w / n`` instead of ``sigma_w / sqrt(n)`` (TP V Table 8:
  read-out weights initialized with O(1) variance, output multiplied by ``1/fan_in``), and the
  learning rates are scaled per layer as :func:`param_groups` returns. This is Yang & Hu's muP
  ``(a_1, a_l, a_{L+1}; b; c) = (-1/2, 0, 1/2; 1/2; 0)`` moved by their symmetry
  ``(a, b, c) -> (a + theta, b - theta, c - 2 theta)`` (SGD; ``c - theta`` for Adam) to unit
  parameter variance (``b = 0``), which leaves the trained function unchanged.

Layers. Every parameter sits in a plain ``nn.Linear`` or ``nn.Conv2d`` (or
``nn.BatchNorm2d``); the multipliers are parameter-free :class:`Scale` modules around it
(:class:`Dense`, :class:`Conv`), activations are :class:`Activation` and pooling
``nn.AvgPool2d`` / :class:`GlobalAvgPool`. Tools that recognise only standard layers
(curvlinops' K-FAC and GGN, laplace-torch's ``kron`` and ``full`` Laplace, the structured
NTK engine) therefore see these networks as they are. Parameter names are
``<index>.linear.weight`` / ``<index>.conv.bias`` and so on.

Initialization always runs on the CPU in float64 from a ``torch.Generator`` seeded with the
given seed, then moves to the requested device and dtype, so the same seed gives the same
network on any device.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

FAMILIES = ("mlp", "cnn", "resnet")
ACTIVATIONS = ("relu", "erf", "tanh", "leaky_relu", "gelu", "identity", "abs")
PARAMETRIZATIONS = ("ntk", "standard", "mup")
#: Roles of a layer in a network; only ``"mup"`` treats them differently.
ROLES = ("input", "hidden", "readout")
#: Families whose inputs are images ``(C, H, W)``.
IMAGE_FAMILIES = ("cnn", "resnet")
OPTIMIZERS = ("sgd", "adam", "adamw")

#: Negative slope used by the ``"leaky_relu"`` activation.
LEAKY_RELU_SLOPE = 0.1


class Activation(nn.Module):
    """An elementwise activation, selected by name (one of :data:`ACTIVATIONS`).

    Raises:
        ValueError: On an unknown name.

    """

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.name == "relu":
            return torch.relu(x)
        if self.name == "erf":
            return torch.special.erf(x)
        if self.name == "tanh":
            return torch.tanh(x)
        if self.name == "leaky_relu":
            return nn.functional.leaky_relu(x, LEAKY_RELU_SLOPE)
        if self.name == "gelu":
            return nn.functional.gelu(x)
        if self.name == "abs":
            return torch.abs(x)
        return x

    def extra_repr(self) -> str:  # noqa: D102
        return self.name


def _multipliers(
    parametrization: str, role: str, fan_in: int, weight_std: float, bias_std: float
) -> tuple[float, float, float, float]:
    """Return ``(weight_multiplier, bias_multiplier, weight_init_std, bias_init_std)``."""
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"unknown parametrization {parametrization!r}; choose one of {PARAMETRIZATIONS}"
        )
    if role not in ROLES:
        raise ValueError(f"unknown layer role {role!r}; choose one of {ROLES}")
    if parametrization == "standard":
        return 1.0, 1.0, weight_std / math.sqrt(fan_in), bias_std
    if parametrization == "mup" and role == "readout":
        return weight_std / fan_in, bias_std, 1.0, 1.0
    return weight_std / math.sqrt(fan_in), bias_std, 1.0, 1.0


class Scale(nn.Module):
    """Multiply by a constant: ``y = factor * x``. Parameter-free.

    The parametrizations' multipliers live in these modules, outside the ``nn.Linear`` /
    ``nn.Conv2d`` that hold the parameters, so curvlinops (K-FAC, GGN), laplace-torch and
    other tools that support only standard layers see standard layers.

    Shapes: any input; the output has its shape and dtype.
    """

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x * self.factor

    def extra_repr(self) -> str:  # noqa: D102
        return f"{self.factor:.6g}"


def _scales(weight_multiplier: float, bias_multiplier: float, bias: bool) -> tuple[float, float]:
    """Return ``(a, c)`` with ``c * (W (a x) + b) = m_w W x + m_b b``.

    Without a trainable bias (or with ``m_b = 0``): ``a = 1``, ``c = m_w``.
    """
    if bias and bias_multiplier != 0:
        return weight_multiplier / bias_multiplier, bias_multiplier
    return 1.0, weight_multiplier


class _Scaled(nn.Sequential):
    """``scale_in``, a standard layer, ``scale_out``: ``m_w * (W x) + m_b * b``.

    Computed as ``c * (W (a x) + b)`` with ``a = m_w / m_b`` and ``c = m_b`` (see
    :class:`Dense`).
    """

    layer: nn.Module

    def _init(self, layer: nn.Module, fan_in: int, *, bias: bool, weight_std: float,
              bias_std: float, parametrization: str, generator: torch.Generator,
              role: str) -> None:
        wm, bm, wstd, bstd = _multipliers(parametrization, role, fan_in, weight_std, bias_std)
        # Same draws, in the same order, as before the layers were standard ones: weight, bias.
        w = torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64)
        b = torch.randn(layer.weight.shape[0], generator=generator, dtype=torch.float64) \
            if bias else None
        with torch.no_grad():
            layer.weight.copy_(w * wstd)
            if layer.bias is not None:
                if bm == 0:  # no effect on the function or its gradients: a frozen zero
                    layer.bias.zero_()
                    layer.bias.requires_grad_(False)
                else:
                    layer.bias.copy_(b * bstd)
        a, c = _scales(wm, bm, layer.bias is not None and bm != 0)
        self.add_module("scale_in", Scale(a))
        self.add_module(self._layer_name, layer)
        self.add_module("scale_out", Scale(c))
        self.parametrization = parametrization
        self.role = role
        self._bias_multiplier = float(bm)

    _layer_name = "layer"

    @property
    def inner(self) -> nn.Module:
        """The standard layer (``nn.Linear`` or ``nn.Conv2d``) holding the parameters."""
        return getattr(self, self._layer_name)

    @property
    def weight(self) -> nn.Parameter:
        """The stored weight (the standard layer's)."""
        return self.inner.weight

    @property
    def bias(self) -> nn.Parameter | None:
        """The stored, trainable bias, or None.

        None without a bias, or with ``bias_std = 0`` under a multiplier parametrization,
        where the bias is a frozen zero.
        """
        b = self.inner.bias
        return b if b is not None and b.requires_grad else None

    @property
    def weight_multiplier(self) -> float:
        """``m_w``: the output is ``m_w * (W x) + m_b * b``."""
        return self.scale_in.factor * self.scale_out.factor

    @property
    def bias_multiplier(self) -> float:
        """``m_b`` of the parametrization (also without a bias, where it has no effect)."""
        return self._bias_multiplier

    def set_multipliers(self, weight_multiplier: float, bias_multiplier: float) -> None:
        """Set ``m_w`` and ``m_b`` (the stored parameters are left as they are)."""
        a, c = _scales(weight_multiplier, bias_multiplier, self.bias is not None)
        self.scale_in.factor, self.scale_out.factor = a, c
        self._bias_multiplier = float(bias_multiplier)


class Dense(_Scaled):
    """A fully connected layer with an explicit parametrization, made of standard modules.

    Computes ``y = weight_multiplier * x @ weight.T + bias_multiplier * bias`` as
    ``Scale(c)(nn.Linear(Scale(a)(x)))`` with ``a = weight_multiplier / bias_multiplier`` and
    ``c = bias_multiplier`` (``a = 1``, ``c = weight_multiplier`` without a bias), so the
    parameters sit in a plain ``nn.Linear`` (child ``linear``; parameter names
    ``linear.weight``, ``linear.bias``) and curvlinops' K-FAC / laplace-torch's ``kron``
    apply (a subclass of ``nn.Linear`` with a custom ``forward`` would be accepted by
    curvlinops and give a wrong K-FAC). Gradients are those of the multiplier form:
    ``d y / d weight = weight_multiplier * x`` and ``d y / d bias = bias_multiplier``.
    Under ``"ntk"`` the multipliers are ``sigma_w / sqrt(fan_in)`` and ``sigma_b`` and the
    parameters are standard normal; under ``"standard"`` both multipliers are 1 and the
    parameters carry the scales; under ``"mup"`` as ``"ntk"``, except that a layer with
    ``role="readout"`` has ``weight_multiplier = sigma_w / fan_in`` (see the module docstring
    for the sources). With a bias and ``bias_std = 0`` under ``"ntk"``/``"mup"`` the bias
    has multiplier 0 (no effect on the function or the NTK): it is stored as a frozen zero.

    Shapes: input ``(N, in_features)``, output ``(N, out_features)``; parameters are float64
    until the module is moved.

    Raises:
        ValueError: On an unknown parametrization or role.

    """

    _layer_name = "linear"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool,
        weight_std: float,
        bias_std: float,
        parametrization: str,
        generator: torch.Generator,
        role: str = "hidden",
    ) -> None:
        super().__init__()
        layer = nn.utils.skip_init(nn.Linear, in_features, out_features, bias=bias,
                                   dtype=torch.float64)  # no draw from the global RNG
        self._init(layer, in_features, bias=bias, weight_std=weight_std, bias_std=bias_std,
                   parametrization=parametrization, generator=generator, role=role)
        self.in_features = in_features
        self.out_features = out_features

    @property
    def fan_in(self) -> int:
        """Number of inputs of one unit (``in_features``)."""
        return self.in_features


class Conv(_Scaled):
    """A 2-d convolution (stride 1, "same" zero padding) with an explicit parametrization.

    Computes ``y = weight_multiplier * conv2d(x, weight, padding=padding) +
    bias_multiplier * bias[:, None, None]`` with ``padding = (kh // 2, kw // 2)`` (odd kernels,
    so this is ``padding="same"``), made of standard modules as :class:`Dense` is (a plain
    ``nn.Conv2d``, child ``conv``, between two :class:`Scale` s), with
    ``fan_in = in_channels * kh * kw``: under ``"ntk"`` (Jacot et al. 2018; for convolutions
    Arora et al. 2019, "On exact computation with an infinitely wide neural net", eq. 7) the
    parameters are standard normal, ``weight_multiplier = sigma_w / sqrt(fan_in)`` and
    ``bias_multiplier = sigma_b``; under ``"standard"`` both multipliers are 1 and
    ``weight ~ N(0, sigma_w**2 / fan_in)``, ``bias ~ N(0, sigma_b**2)``; ``"mup"`` is as
    ``"ntk"`` (convolutions are never read-outs here).

    Shapes: input ``(N, in_channels, H, W)``, output ``(N, out_channels, H, W)``; ``weight``
    is ``(out_channels, in_channels, kh, kw)``, ``bias`` is ``(out_channels,)``.

    Raises:
        ValueError: On an unknown parametrization or role, or an even kernel size (``"same"``
            padding needs odd kernels to be symmetric).

    """

    _layer_name = "conv"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        bias: bool,
        weight_std: float,
        bias_std: float,
        parametrization: str,
        generator: torch.Generator,
        role: str = "hidden",
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
        layer = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, kernel_size,
                                   padding=kernel_size // 2, bias=bias, dtype=torch.float64)
        self._init(layer, in_channels * kernel_size**2, bias=bias, weight_std=weight_std,
                   bias_std=bias_std, parametrization=parametrization, generator=generator,
                   role=role)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kernel_size, kernel_size)
        self.padding = (kernel_size // 2, kernel_size // 2)  # "same" for odd kernels

    @property
    def fan_in(self) -> int:
        """Number of inputs of one unit (``in_channels * kh * kw``)."""
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]


class GlobalAvgPool(nn.Module):
    """Global average pooling: ``(N, C, H, W) -> (N, C)``, the mean over ``H`` and ``W``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x.mean(dim=(-2, -1))


class BasicBlock(nn.Module):
    """A residual basic block (He et al. 2016, Fig. 2 left; "ResNet v1" ordering).

    Computes ``act(shortcut(x) + bn2(conv2(act(bn1(conv1(x))))))`` with 3x3 :class:`Conv` s;
    ``shortcut`` is the identity, or a 1x1 :class:`Conv` (plus BatchNorm when ``batchnorm``)
    projection when ``in_channels != out_channels``. BatchNorm layers are
    ``nn.BatchNorm2d`` (affine, running statistics); kernels use the network in eval mode.

    Shapes: input ``(N, in_channels, H, W)``, output ``(N, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        activation: str,
        batchnorm: bool,
        first_role: str,
        **layer_kw: object,
    ) -> None:
        super().__init__()
        self.conv1 = Conv(in_channels, out_channels, 3, role=first_role, **layer_kw)
        self.bn1 = nn.BatchNorm2d(out_channels) if batchnorm else nn.Identity()
        self.act = Activation(activation)
        self.conv2 = Conv(out_channels, out_channels, 3, role="hidden", **layer_kw)
        self.bn2 = nn.BatchNorm2d(out_channels) if batchnorm else nn.Identity()
        if in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            proj = [Conv(in_channels, out_channels, 1, role=first_role, **layer_kw)]
            if batchnorm:
                proj.append(nn.BatchNorm2d(out_channels))
            self.shortcut = nn.Sequential(*proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        h = self.act(self.bn1(self.conv1(x)))
        return self.act(self.shortcut(x) + self.bn2(self.conv2(h)))


def _check_int(name: str, value: object, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}; {hint}")
    return int(value)


@dataclass(frozen=True)
class ArchSpec:
    """An architecture without (or with) its width.

    Attributes:
        family: Network family, one of :data:`FAMILIES` (see the module docstring).
        depth: ``"mlp"``: number of hidden layers (an MLP of depth ``L`` has ``L + 1`` dense
            layers); ``"cnn"``: number of conv layers; ``"resnet"``: number of residual blocks.
        activation: One of :data:`ACTIVATIONS`.
        parametrization: ``"ntk"``, ``"standard"`` or ``"mup"`` (see the module docstring).
        bias: Whether dense and conv layers have a bias.
        weight_std: ``sigma_w``, the weight standard deviation (times ``sqrt(fan_in)``).
        bias_std: ``sigma_b``, the bias standard deviation; ignored when ``bias`` is False.
        width: Hidden width (units, or channels for ``"cnn"``/``"resnet"``), or ``None`` for a
            spec that has not been given one.
        pool: ``"cnn"``/``"resnet"`` only: a 2x2 average pooling (stride 2) after every conv
            layer / block; inputs then need ``H, W >= 2**depth``.
        batchnorm: ``"cnn"``/``"resnet"`` only: ``nn.BatchNorm2d`` after every conv.

    Raises:
        ValueError: On an unknown family, activation or parametrization, a depth below 1,
            a non-positive or non-integer width, a negative standard deviation, or ``pool`` /
            ``batchnorm`` on an MLP.

    """

    family: str = "mlp"
    depth: int = 2
    activation: str = "relu"
    parametrization: str = "ntk"
    bias: bool = True
    weight_std: float = 1.0
    bias_std: float = 0.1
    width: int | None = None
    pool: bool = False
    batchnorm: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(
                f"unknown architecture family {self.family!r}; choose one of {FAMILIES}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose one of {ACTIVATIONS}"
            )
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"unknown parametrization {self.parametrization!r}; "
                f"choose one of {PARAMETRIZATIONS}"
            )
        depth = _check_int(
            "depth", self.depth, 1, "depth counts layers (mlp, cnn) or blocks (resnet)"
        )
        object.__setattr__(self, "depth", depth)  # numpy ints become builtin ints
        if self.width is not None:
            width = _check_int(
                "width", self.width, 1,
                "widths are the hidden-layer sizes swept by a claim, e.g. 64, 256, 1024",
            )
            object.__setattr__(self, "width", width)
        if not self.weight_std > 0 or not self.bias_std >= 0:
            raise ValueError(
                f"weight_std must be > 0 and bias_std >= 0, got {self.weight_std}, {self.bias_std}"
            )
        if self.family not in IMAGE_FAMILIES and (self.pool or self.batchnorm):
            raise ValueError(
                f"pool and batchnorm apply to the families {IMAGE_FAMILIES} only, not "
                f"{self.family!r}; leave them False"
            )

    @property
    def input_kind(self) -> str:
        """What one input is: ``"vector"`` (mlp; any shape is flattened) or ``"image"``."""
        return "image" if self.family in IMAGE_FAMILIES else "vector"

    @property
    def arch_id(self) -> str:
        """A stable, human-readable id without the width.

        Format: ``{family}-d{depth}-{activation}-{parametrization}-{b|nb}``, then for image
        families ``-pool`` (if ``pool``), ``-bn`` (if ``batchnorm``) and ``-gap`` (the global
        average pooling read-out), then non-default ``-sw{weight_std:g}`` and (with a bias)
        ``-sb{bias_std:g}``. Underscores are dropped from activation names. Examples:
        ``mlp-d3-relu-ntk-b``, ``cnn-d2-relu-ntk-b-gap``, ``resnet-d2-relu-ntk-b-bn-gap``,
        ``mlp-d1-leakyrelu-standard-nb-sw1.41``.
        """
        parts = [self.family, f"d{self.depth}", self.activation.replace("_", ""),
                 self.parametrization, "b" if self.bias else "nb"]
        if self.family in IMAGE_FAMILIES:
            if self.pool:
                parts.append("pool")
            if self.batchnorm:
                parts.append("bn")
            parts.append("gap")
        default = ArchSpec()
        if self.weight_std != default.weight_std:
            parts.append(f"sw{self.weight_std:g}")
        if self.bias and self.bias_std != default.bias_std:
            parts.append(f"sb{self.bias_std:g}")
        return "-".join(parts)

    def with_width(self, width: int) -> ArchSpec:
        """Return a copy of this spec with hidden width ``width``.

        Raises:
            ValueError: If ``width`` is not a positive integer (bools and floats are refused;
                numpy integers are accepted).

        """
        width = _check_int(
            "width", width, 1,
            "widths are the hidden-layer sizes swept by a claim, e.g. 64, 256, 1024",
        )
        return replace(self, width=width)

    def fields(self) -> dict[str, object]:
        """Return the spec's fields (width excluded) as a flat dict of builtins, for records."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "width"}

    def _image_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        if len(shape) != 3 or any(s < 1 for s in shape):
            raise ValueError(
                f"a {self.family!r} network takes images: input_shape must be (C, H, W), e.g. "
                f"(1, 8, 8), got {shape}; only 'mlp' takes flat vectors"
            )
        c, h, w = shape
        if self.pool and min(h, w) < 2**self.depth:
            raise ValueError(
                f"{self.arch_id} halves H and W {self.depth} times (pool=True), so it needs "
                f"H, W >= {2**self.depth}; got input_shape {shape}. Use a larger image, a "
                "smaller depth or pool=False"
            )
        return c, h, w

    def build(
        self,
        *,
        seed: int,
        input_shape: int | Sequence[int],
        out_features: int = 1,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> nn.Module:
        """Build the network with seeded initialization.

        Args:
            seed: Seed of the initialization (same seed, same network, on any device).
            input_shape: Shape of one input (an int or a tuple). MLPs flatten it; image
                families need ``(C, H, W)``.
            out_features: Number of outputs (classes or regression targets).
            device: Device to place the network on.
            dtype: Parameter dtype (float64 by default, as kernels are compared in float64).

        Returns:
            A ``torch.nn.Module`` in eval mode mapping ``(N, *input_shape)`` to
            ``(N, out_features)``. Its :class:`Dense` / :class:`Conv` layers (a plain
            ``nn.Linear`` / ``nn.Conv2d`` between two :class:`Scale` s) carry a ``role``
            (``"input"``, ``"hidden"`` or ``"readout"``) used by :func:`param_groups`.

        Raises:
            ValueError: If the spec has no width (call :meth:`with_width` first), if an image
                family gets a shape that is not ``(C, H, W)`` (or too small to pool ``depth``
                times), or if ``out_features`` is not a positive integer.

        """
        if self.width is None:
            raise ValueError(
                f"{self.arch_id} has no width; call spec.with_width(n).build(...) instead"
            )
        out_features = _check_int("out_features", out_features, 1, "the number of outputs")
        shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        gen = torch.Generator().manual_seed(int(seed))
        kw = dict(bias=self.bias, weight_std=self.weight_std, bias_std=self.bias_std,
                  parametrization=self.parametrization, generator=gen)
        if self.family == "mlp":
            model = self._build_mlp(math.prod(shape), out_features, kw)
        elif self.family == "cnn":
            model = self._build_cnn(self._image_shape(shape)[0], out_features, kw)
        else:
            model = self._build_resnet(self._image_shape(shape)[0], out_features, kw)
        return model.to(device=device, dtype=dtype).eval()

    def _build_mlp(self, in_features: int, out_features: int, kw: dict) -> nn.Module:
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for i in range(self.depth):
            role = "input" if i == 0 else "hidden"
            layers += [Dense(fan_in, self.width, role=role, **kw), Activation(self.activation)]
            fan_in = self.width
        layers.append(Dense(fan_in, out_features, role="readout", **kw))
        return nn.Sequential(*layers)

    def _build_cnn(self, in_channels: int, out_features: int, kw: dict) -> nn.Module:
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(self.depth):
            role = "input" if i == 0 else "hidden"
            layers.append(Conv(channels, self.width, 3, role=role, **kw))
            if self.batchnorm:
                layers.append(nn.BatchNorm2d(self.width))
            layers.append(Activation(self.activation))
            if self.pool:
                layers.append(nn.AvgPool2d(2))
            channels = self.width
        layers += [GlobalAvgPool(), Dense(self.width, out_features, role="readout", **kw)]
        return nn.Sequential(*layers)

    def _build_resnet(self, in_channels: int, out_features: int, kw: dict) -> nn.Module:
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(self.depth):
            layers.append(BasicBlock(channels, self.width, activation=self.activation,
                                     batchnorm=self.batchnorm,
                                     first_role="input" if i == 0 else "hidden", **kw))
            if self.pool:
                layers.append(nn.AvgPool2d(2))
            channels = self.width
        layers += [GlobalAvgPool(), Dense(self.width, out_features, role="readout", **kw)]
        return nn.Sequential(*layers)


def _lr_scales(layer: Dense | Conv, optimizer: str) -> tuple[float, float]:
    """Learning-rate multipliers ``(weight, bias)`` of one layer (see :func:`param_groups`)."""
    if layer.parametrization != "mup":
        return 1.0, 1.0
    n_in = layer.in_features if isinstance(layer, Dense) else layer.in_channels
    n_out = layer.out_features if isinstance(layer, Dense) else layer.out_channels
    if optimizer == "sgd":
        if layer.role == "input":
            return float(n_out), float(n_out)
        if layer.role == "hidden":
            return float(n_in), float(n_out)
        return float(n_in), 1.0
    if layer.role == "hidden":
        return 1.0 / math.sqrt(layer.fan_in), 1.0
    return 1.0, 1.0


def param_groups(model: nn.Module, lr: float, optimizer: str = "sgd") -> list[dict]:
    """Per-parameter learning rates of a network built by :meth:`ArchSpec.build`.

    Under ``"ntk"`` and ``"standard"`` every parameter gets ``lr``. Under ``"mup"`` the
    learning rates below (``n`` = the width: the fan-out of an input layer, the fan-in
    channels/units of hidden and read-out layers; ``fan_in`` includes the kernel size) realise
    muP for the stored, unit-variance parameters. They are TP V Table 3's per-layer rates
    (Yang et al. 2022: SGD ``lr * fan_out`` for input weights and biases, ``lr`` hidden,
    ``lr / fan_in`` read-out; Adam ``lr``, ``lr / fan_in``, ``lr / fan_in``) divided by the
    squared (SGD) or plain (Adam) width-dependent part of each ``weight_multiplier``,
    i.e. Yang & Hu 2021 Table 3's muP after their symmetry to ``b = 0``:

    ==================  =============  ======================
    parameter           SGD            Adam / AdamW
    ==================  =============  ======================
    input weights       ``lr * n``     ``lr``
    hidden weights      ``lr * n``     ``lr / sqrt(fan_in)``
    read-out weights    ``lr * n``     ``lr``
    input/hidden bias   ``lr * n``     ``lr``
    read-out bias       ``lr``         ``lr``
    BatchNorm affine    ``lr * n``     ``lr``
    ==================  =============  ======================

    With these, one step changes hidden features by Theta(1) in the width (the defining
    property of muP), while ``"ntk"`` with a constant ``lr`` changes them by O(1/sqrt(n)).

    A network built by a user's :class:`ntkcheck.family.ModelFamily` gets ``lr`` for every
    parameter under ``"ntk"`` and ``"standard"``
    (:meth:`ntkcheck.family.ModelFamily.lr_scales`).

    Args:
        model: A network from :meth:`ArchSpec.build` (or :meth:`ModelFamily.build`).
        lr: Base learning rate (a width-independent constant).
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.

    Returns:
        One dict per parameter, ``{"params": [p], "lr": float, "name": str}``, covering every
        parameter once; pass it to ``torch.optim.SGD`` / ``Adam`` / ``AdamW``.

    Raises:
        ValueError: On an unknown optimizer, a non-positive ``lr``, or a model with parameters
            outside :class:`Dense`, :class:`Conv` and ``nn.BatchNorm2d`` layers.
        ntkcheck.family.NotApplicable: For a user family under another parametrization.

    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    from ntkcheck.family import family_of

    family = family_of(model)
    if family is not None:  # a user's network: one rate (NotApplicable outside ntk/standard)
        scales = family.lr_scales(model)
        return [{"params": [p], "lr": lr * scales[name], "name": name}
                for name, p in model.named_parameters()]
    opt = "sgd" if optimizer == "sgd" else "adam"
    layers = [m for m in model.modules() if isinstance(m, (Dense, Conv))]
    mup = any(m.parametrization == "mup" for m in layers)
    scales: dict[int, float] = {}
    for m in model.modules():
        if isinstance(m, (Dense, Conv)):
            ws, bs = _lr_scales(m, opt)
            scales[id(m.inner.weight)] = ws
            if m.inner.bias is not None:  # a frozen zero bias (bias_std = 0) included
                scales[id(m.inner.bias)] = bs
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            s = float(m.num_features) if mup and opt == "sgd" else 1.0
            for p in m.parameters(recurse=False):
                scales[id(p)] = s
    groups = []
    for name, p in model.named_parameters():
        if id(p) not in scales:
            raise ValueError(
                f"parameter {name!r} is not in a Dense, Conv or BatchNorm2d layer; "
                "param_groups needs a network built by ArchSpec.build"
            )
        groups.append({"params": [p], "lr": lr * scales[id(p)], "name": name})
    return groups
