"""Structured empirical NTK: per-layer Gram products of layer inputs and output gradients.

For a dense layer ``y = m_w * x W^T + m_b * b`` (``m_w``, ``m_b`` the weight and bias multipliers;
1 for ``nn.Linear``) the derivative of output ``a`` w.r.t. ``W`` at one sample is
``m_w * g_a x^T`` with ``g_a = d f_a / d y``, so the layer's share of the NTK is
(Novak et al. 2022, "Fast Finite Width Neural Tangent Kernel", structured derivatives, sec. 4)::

    Theta_W(x1, x2)[a, b] = m_w**2 * <x(x1), x(x2)> * <g_a(x1), g_b(x2)>
    Theta_b(x1, x2)[a, b] = m_b**2 * <g_a(x1), g_b(x2)>

(with a sum over positions when the layer is applied along extra leading axes). For a 2-d
convolution with patches ``P(x)[k, p]`` (``k`` over input channels times kernel offsets, ``p`` over
output positions) the weight share is
``m_w**2 * sum_{p,q} <P_p(x1), P_q(x2)> <g_a,p(x1), g_b,q(x2)>`` (channels summed in both
inner products) and the bias share is
``m_b**2 * <sum_p g_a,p(x1), sum_q g_b,q(x2)>``. The per-sample weight Jacobian is never formed.

Output gradients ``g`` are obtained by adding a zero "probe" tensor to each supported layer's
output (a forward hook) and pulling the ``O`` output basis vectors back to the probes with one
``torch.func.vjp`` under ``vmap``. Parameters of any other module fall back to per-sample Jacobian
contraction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import vjp, vmap

from ntkcheck.kernels import _contraction


@dataclass(frozen=True)
class LayerInfo:
    """A layer the structured implementation handles.

    Attributes:
        name: Qualified module name.
        kind: ``"dense"`` or ``"conv2d"``.
        weight_multiplier: ``m_w`` (1 for plain torch layers).
        bias_multiplier: ``m_b`` (1 for plain torch layers).
        weight: Whether the weight is trainable (included in the NTK).
        bias: Whether the layer has a trainable bias.
        conv: For ``"conv2d"``, the ``unfold`` keyword arguments.

    """

    name: str
    kind: str
    weight_multiplier: float
    bias_multiplier: float
    weight: bool
    bias: bool
    conv: dict = field(default_factory=dict)


def _dense_classes() -> tuple[type, ...]:
    from ntkcheck import arch

    return (nn.Linear, arch.Dense)


def _conv_classes() -> tuple[type, ...]:
    from ntkcheck import arch

    return (nn.Conv2d, arch.Conv)


def _owns_forward(module: nn.Module, classes: tuple[type, ...]) -> type | None:
    """The class in ``classes`` whose unmodified ``forward`` ``module`` uses, if any."""
    for cls in classes:
        if isinstance(module, cls) and type(module).forward is cls.forward:
            return cls
    return None


def _conv_unfold_kwargs(module: nn.Module) -> dict | None:
    """``F.unfold`` arguments reproducing ``module``'s convolution, or None if unsupported."""
    try:
        groups, padding_mode, padding = module.groups, module.padding_mode, module.padding
        kwargs = dict(kernel_size=tuple(module.kernel_size), dilation=tuple(module.dilation),
                      stride=tuple(module.stride))
    except AttributeError:
        return None
    if groups != 1 or padding_mode != "zeros":
        return None
    if isinstance(padding, str):
        if padding != "valid":
            return None
        padding = (0, 0)
    kwargs["padding"] = tuple(padding) if not isinstance(padding, int) else (padding, padding)
    return kwargs


def supported_layers(model: nn.Module) -> dict[str, LayerInfo]:
    """Modules whose parameters the structured implementation handles without a Jacobian.

    A module qualifies if it is an ``nn.Linear``, ``nn.Conv2d`` (zero padding, one group, no
    string padding other than ``"valid"``) or an :class:`ntkcheck.arch.Dense` /
    :class:`ntkcheck.arch.Conv` (whose ``weight_multiplier``/``bias_multiplier`` are read),
    uses its class's own ``forward``, has no parameters besides ``weight`` and ``bias``, and
    shares none of them with another module. Call counts are checked separately.

    Args:
        model: The network.

    Returns:
        Qualified name to :class:`LayerInfo`.

    """
    owners: Counter[int] = Counter()
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] += 1
    dense, conv = _dense_classes(), _conv_classes()
    out: dict[str, LayerInfo] = {}
    for name, m in model.named_modules():
        kind = None
        if _owns_forward(m, dense):
            kind = "dense"
        elif _owns_forward(m, conv):
            kind = "conv2d"
        if kind is None:
            continue
        own = dict(m.named_parameters(recurse=False))
        if not set(own) <= {"weight", "bias"} or "weight" not in own:
            continue
        if any(True for _ in m.children() if any(True for _ in _.parameters())):
            continue
        if any(owners[id(p)] != 1 for p in own.values()):
            continue
        conv_kw: dict = {}
        if kind == "conv2d":
            kw = _conv_unfold_kwargs(m)
            if kw is None:
                continue
            conv_kw = kw
        bias = own.get("bias")
        out[name] = LayerInfo(
            name=name,
            kind=kind,
            weight_multiplier=float(getattr(m, "weight_multiplier", 1.0)),
            bias_multiplier=float(getattr(m, "bias_multiplier", 1.0)),
            weight=bool(own["weight"].requires_grad),
            bias=bias is not None and bool(bias.requires_grad),
            conv=conv_kw,
        )
    return out


@dataclass
class Features:
    """Per-block quantities from which structured kernel blocks are formed.

    Attributes:
        inputs: Per supported layer, its input: dense ``(n, S, fan_in)``, conv patches
            ``(n, C * kh * kw, P)``.
        grads: Per supported layer, output gradients: dense ``(n, O, S, fan_out)``, conv
            ``(n, O, C_out, P)``.
        fallback: Per-sample Jacobians ``(n, O, numel)`` of the remaining parameters.

    """

    inputs: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor]
    fallback: dict[str, torch.Tensor]


class _ProbeHooks:
    """Forward hooks that record inputs and add zero probes to supported layers' outputs."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.deltas: dict[str, torch.Tensor] | None = None
        self.inputs: dict[str, torch.Tensor] = {}
        self.out_shapes: dict[str, torch.Size] = {}
        self.calls: Counter[str] = Counter()
        modules = dict(model.named_modules())
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
            self.calls[name] += 1
            self.inputs[name] = args[0]
            self.out_shapes[name] = out.shape
            if self.deltas is not None:
                return out + self.deltas[name]
            return None

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def probe_calls(model: nn.Module, x: torch.Tensor, names: list[str]) -> Counter[str]:
    """How many times each named module is called in one forward pass on ``x``."""
    hooks = _ProbeHooks(model, names)
    try:
        with torch.no_grad():
            model(x)
    finally:
        hooks.remove()
    return hooks.calls


def features(
    model: nn.Module,
    layers: dict[str, LayerInfo],
    fallback_params: dict[str, torch.Tensor],
    x: torch.Tensor,
    n_out: int,
) -> Features:
    """Layer inputs, output gradients and fallback Jacobians of one block of inputs.

    Args:
        model: The network (eval mode; samples processed independently).
        layers: Supported layers, each called exactly once per forward pass.
        fallback_params: Parameters outside ``layers`` (detached), by name.
        x: ``(n, *input_shape)`` inputs.
        n_out: Outputs per sample ``O``.

    Returns:
        The block's :class:`Features`.

    """
    n = x.shape[0]
    names = list(layers)
    fallback: dict[str, torch.Tensor] = {}
    if fallback_params:
        with torch.no_grad():
            fallback = _contraction.per_sample_jacobian(model, fallback_params, x, n_out)
    if not names:
        return Features({}, {}, fallback)
    hooks = _ProbeHooks(model, names)
    try:
        with torch.no_grad():
            model(x[:1])
            shapes = {k: (n, *hooks.out_shapes[k][1:]) for k in names}
            zeros = tuple(torch.zeros(shapes[k], dtype=x.dtype, device=x.device) for k in names)

            def fn(*deltas: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
                hooks.deltas = dict(zip(names, deltas, strict=True))
                hooks.inputs = {}
                out = model(x).reshape(n, n_out)
                return out, dict(hooks.inputs)

            _, vjp_fn, layer_inputs = vjp(fn, *zeros, has_aux=True)
            hooks.deltas = None
            if n_out == 1:
                grads = tuple(g.unsqueeze(1) for g in vjp_fn(torch.ones(n, 1, dtype=x.dtype,
                                                                        device=x.device)))
            else:
                basis = torch.eye(n_out, dtype=x.dtype, device=x.device)
                cot = basis.unsqueeze(1).expand(n_out, n, n_out)
                grads = tuple(g.movedim(0, 1).contiguous() for g in vmap(vjp_fn)(cot))
    finally:
        hooks.remove()
    inputs: dict[str, torch.Tensor] = {}
    out_grads: dict[str, torch.Tensor] = {}
    for name, g in zip(names, grads, strict=True):
        info = layers[name]
        a = layer_inputs[name].detach()
        if info.kind == "dense":
            inputs[name] = a.reshape(n, -1, a.shape[-1])
            out_grads[name] = g.reshape(n, n_out, -1, g.shape[-1])
        else:
            if a.dim() == 3:  # unbatched conv input is not used with batched x
                raise ValueError(f"layer {name!r} received an unbatched input")
            inputs[name] = torch.nn.functional.unfold(a, **info.conv)
            out_grads[name] = g.reshape(n, n_out, g.shape[2], -1)
    return Features(inputs, out_grads, fallback)


def _dense_gram(info: LayerInfo, a1, a2, g1, g2, output: str) -> torch.Tensor:
    """Dense layer share of the kernel; see the module docstring for the formula."""
    mw2, mb2 = info.weight_multiplier**2, info.bias_multiplier**2
    if a1.shape[1] == 1 and a2.shape[1] == 1:  # the common case: one position per sample
        a1, a2, g1, g2 = a1[:, 0], a2[:, 0], g1[:, :, 0], g2[:, :, 0]
        if output == "trace":
            gg = g1.reshape(g1.shape[0], -1) @ g2.reshape(g2.shape[0], -1).T
            res = mw2 * (a1 @ a2.T) * gg if info.weight else torch.zeros_like(gg)
            return res + mb2 * gg if info.bias else res
        (n1, o, c), n2 = g1.shape, g2.shape[0]
        if output == "diagonal":  # (O, n1, C) @ (O, C, n2) -> (n1, n2, O)
            gg = torch.bmm(g1.transpose(0, 1), g2.permute(1, 2, 0)).permute(1, 2, 0)
            shape = (slice(None), slice(None), None)
        else:  # one (n1 O, C) @ (C, n2 O) product
            gg = (g1.reshape(n1 * o, c) @ g2.reshape(n2 * o, c).T).reshape(n1, o, n2, o)
            gg = gg.permute(0, 2, 1, 3)
            shape = (slice(None), slice(None), None, None)
        scale = mw2 * (a1 @ a2.T) if info.weight else torch.zeros_like(gg[shape[:2]])
        if info.bias:
            scale = scale + mb2
        return scale[shape] * gg
    # Layer applied along extra axes: sum over pairs of positions (s, t).
    aa = torch.einsum("isk,jtk->ijst", a1, a2)
    spec = {"trace": "iasc,jatc->ijst", "diagonal": "iasc,jatc->ijast",
            "full": "iasc,jbtc->ijabst"}[output]
    res = 0.0
    if info.weight:
        gg = torch.einsum(spec, g1, g2)
        extra = gg.dim() - 4
        res = mw2 * (gg * aa.reshape(*aa.shape[:2], *([1] * extra), *aa.shape[2:])).sum((-2, -1))
    if info.bias:
        res = res + mb2 * _contraction.contract(g1.sum(2), g2.sum(2), output)
    return res


def _conv_gram(info: LayerInfo, p1, p2, g1, g2, output: str) -> torch.Tensor:
    """Conv2d share of the kernel; see the module docstring for the formula."""
    mw2, mb2 = info.weight_multiplier**2, info.bias_multiplier**2
    res = 0.0
    if info.weight:
        pp = torch.einsum("ikp,jkq->ijpq", p1, p2)  # (n1, n2, P, P)
        if output == "trace":
            gg = torch.einsum("iacp,jacq->ijpq", g1, g2)
            res = mw2 * (gg * pp).sum((-2, -1))
        else:
            t = torch.einsum("jbcq,ijpq->ijbcp", g2, pp)
            spec = "iacp,ijacp->ija" if output == "diagonal" else "iacp,ijbcp->ijab"
            res = mw2 * torch.einsum(spec, g1, t)
    if info.bias:
        res = res + mb2 * _contraction.contract(g1.sum(-1), g2.sum(-1), output)
    return res


def gram(
    layers: dict[str, LayerInfo], f1: Features, f2: Features, output: str
) -> torch.Tensor:
    """Kernel block from two blocks' :class:`Features` (sum over layers and fallback params).

    Returns:
        ``(n1, n2, O, O)``, ``(n1, n2)`` or ``(n1, n2, O)`` for ``output`` ``"full"``,
        ``"trace"``, ``"diagonal"``.

    """
    total = None
    for name, info in layers.items():
        fn = _dense_gram if info.kind == "dense" else _conv_gram
        part = fn(info, f1.inputs[name], f2.inputs[name], f1.grads[name], f2.grads[name], output)
        total = part if total is None else total + part
    for name in f1.fallback:
        part = _contraction.contract(f1.fallback[name], f2.fallback[name], output)
        total = part if total is None else total + part
    return total
