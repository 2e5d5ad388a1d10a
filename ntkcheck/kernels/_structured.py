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
``m_b**2 * <sum_p g_a,p(x1), sum_q g_b,q(x2)>``. The position-pair tensor ``(n1, n2, P, P)``
costs ``n1 n2 P**2 (K + O C_out)`` multiply-adds; where the layer's per-sample weight Jacobian
``J[i, a, c, k] = m_w sum_p g_a,c,p(x_i) P_p(x_i)[k]`` (one batched product, ``n O C_out K P``)
contracted over ``(c, k)`` (``n1 n2 O C_out K``, times ``O`` for the full kernel) is cheaper, that
is used instead (:func:`layer_rule`, decided per layer and per block pair; the same holds for a
dense layer applied at several positions). Dense layers on vectors never form a Jacobian.

Output gradients ``g`` come from one forward pass that records each supported layer's input and
output (forward hooks) and one backward pass from the outputs to the recorded layer outputs,
batched over the ``O`` output basis cotangents (``torch.autograd.grad(..., is_grads_batched=True)``,
a ``vmap`` over the backward); the Gram products are then single ``(n1 O) x (n2 O)`` matrix
products per layer.
Parameters of any other module fall back to per-sample Jacobian contraction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

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
    return (nn.Linear,)


def _conv_classes() -> tuple[type, ...]:
    return (nn.Conv2d,)


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

    A module qualifies if it is an ``nn.Linear`` or ``nn.Conv2d`` (zero padding, one group, no
    string padding other than ``"valid"``; the layers of :mod:`ntkcheck.arch` are these, with
    their multipliers in parameter-free modules around them), uses its class's own ``forward``,
    has no parameters besides ``weight`` and ``bias``, and
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
        cache: Quantities formed from the above on first use and reused for every block this
            one is paired with (per-layer weight Jacobians ``(n, O, C_out K)``).

    """

    inputs: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor]
    fallback: dict[str, torch.Tensor]
    cache: dict = field(default_factory=dict)


class _Recorder:
    """Forward hooks that record supported layers' inputs and outputs (and count calls).

    With ``copy_outputs`` a hook returns a copy of the layer output, so that an in-place operation
    downstream (``nn.ReLU(inplace=True)``) cannot rebase the recorded tensor's history.
    """

    def __init__(self, model: nn.Module, names: list[str], copy_outputs: bool = False) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.versions: dict[str, int] = {}
        self.calls: Counter[str] = Counter()
        self.copy_outputs = copy_outputs
        modules = dict(model.named_modules())
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
            self.calls[name] += 1
            self.inputs[name] = args[0].detach()
            self.outputs[name] = out
            self.versions[name] = out._version
            return out.clone() if self.copy_outputs else None

        return hook

    def modified_in_place(self) -> bool:
        """Whether a recorded output was changed in place after its layer returned it."""
        return any(self.outputs[k]._version != v for k, v in self.versions.items())

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def probe_calls(model: nn.Module, x: torch.Tensor, names: list[str]) -> Counter[str]:
    """How many times each named module is called in one forward pass on ``x``."""
    hooks = _Recorder(model, names)
    try:
        with torch.no_grad():
            model(x)
    finally:
        hooks.remove()
    return hooks.calls


def _record_forward(
    model: nn.Module, names: list[str], x: torch.Tensor, n: int, n_out: int
) -> tuple[torch.Tensor, _Recorder]:
    """One forward pass with autograd on that records the layers' inputs and outputs.

    The pass is repeated with copied outputs only if an in-place operation modified a recorded
    output (its autograd history would then no longer be the layer's).

    Returns:
        The ``(n, O)`` outputs and the :class:`_Recorder`.

    """
    xg = x.detach().requires_grad_(x.is_floating_point() or x.is_complex())
    for copy_outputs in (False, True):
        rec = _Recorder(model, names, copy_outputs)
        try:
            with torch.enable_grad():
                out = model(xg).reshape(n, n_out)
        finally:
            rec.remove()
        if not rec.modified_in_place():
            break
    return out, rec


def features(
    model: nn.Module,
    layers: dict[str, LayerInfo],
    fallback_params: dict[str, torch.Tensor],
    x: torch.Tensor,
    n_out: int,
) -> Features:
    """Layer inputs, output gradients and fallback Jacobians of one block of inputs.

    One forward pass on the block records each supported layer's input ``a`` and output ``y``;
    one backward pass, batched over the ``O`` output basis cotangents (``is_grads_batched``,
    i.e. ``vmap`` over the backward), gives ``g[i, o] = d f_o(x_i) / d y(x_i)`` for all layers
    at once (rows of the per-sample Jacobian of the outputs w.r.t. the layer outputs; samples
    are independent, so the batch Jacobian is block diagonal and one cotangent per output
    suffices).

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
    out, rec = _record_forward(model, names, x, n, n_out)
    outs = [rec.outputs[k] for k in names]
    if n_out == 1:
        cot, batched = torch.ones(n, 1, dtype=out.dtype, device=out.device), False
    else:  # cot[o, i, :] = e_o
        basis = torch.eye(n_out, dtype=out.dtype, device=out.device)
        cot, batched = basis.unsqueeze(1).expand(n_out, n, n_out), True
    if out.requires_grad:
        with torch.enable_grad():
            grads = torch.autograd.grad(out, outs, cot, allow_unused=True,
                                        materialize_grads=True, is_grads_batched=batched)
    else:  # the output does not depend on any recorded layer output
        grads = tuple(torch.zeros((n_out, *y.shape) if batched else y.shape, dtype=y.dtype,
                                  device=y.device) for y in outs)
    inputs: dict[str, torch.Tensor] = {}
    out_grads: dict[str, torch.Tensor] = {}
    for name, g in zip(names, grads, strict=True):
        info = layers[name]
        a = rec.inputs[name]
        g = g.movedim(0, 1) if batched else g.unsqueeze(1)  # (n, O, *out_shape)
        if info.kind == "dense":
            inputs[name] = a.reshape(n, -1, a.shape[-1])
            out_grads[name] = g.reshape(n, n_out, -1, g.shape[-1])
        else:
            if a.dim() == 3:  # unbatched conv input is not used with batched x
                raise ValueError(f"layer {name!r} received an unbatched input")
            inputs[name] = conv_patches(a, **info.conv)
            out_grads[name] = g.reshape(n, n_out, g.shape[2], -1)
    return Features(inputs, out_grads, fallback)


def pair_rule_cost(n1: int, n2: int, s: int, k: int, c: int, o: int, output: str) -> float:
    """Multiply-adds of a layer's share through the position-pair tensor ``(n1, n2, S, S)``.

    ``S`` positions, ``k`` inputs per position (fan-in times kernel offsets), ``c`` output
    channels, ``o`` outputs.
    """
    oc = o * o if output == "full" else o
    extra = 0 if output == "trace" else oc * c * s
    return float(n1 * n2) * (s * s * (k + o * c) + extra)


def jacobian_rule_cost(n1: int, n2: int, s: int, k: int, c: int, o: int, output: str) -> float:
    """Multiply-adds of a layer's share through its per-sample weight Jacobian ``(n, O, c k)``.

    Forming the Jacobian costs ``n O c k S`` per block, contracting it ``n1 n2 O c k`` (times
    ``O`` for ``"full"``).
    """
    oc = o * o if output == "full" else o
    return float(n1 + n2) * o * c * k * s + float(n1 * n2) * oc * c * k


def layer_rule(n1: int, n2: int, s: int, k: int, c: int, o: int, output: str) -> str:
    """``"pairs"`` or ``"jacobian"``: the cheaper rule for one layer's weight share.

    Args:
        n1: Inputs of the first block.
        n2: Inputs of the second block.
        s: Positions the layer is applied at (output pixels of a convolution; 1 for a dense
            layer on vectors).
        k: Inputs per position (``fan_in``; input channels times kernel offsets for a conv).
        c: Output channels (``fan_out``).
        o: Outputs of the network ``O``.
        output: ``"full"``, ``"trace"`` or ``"diagonal"``.

    Returns:
        The rule with fewer multiply-adds (:func:`pair_rule_cost`, :func:`jacobian_rule_cost`).

    """
    pairs = pair_rule_cost(n1, n2, s, k, c, o, output)
    jac = jacobian_rule_cost(n1, n2, s, k, c, o, output)
    return "pairs" if pairs < jac else "jacobian"


def _layer_jacobian(feats: Features, name: str, a: torch.Tensor, g: torch.Tensor,
                    positions_last: bool) -> torch.Tensor:
    """Per-sample weight Jacobian ``(n, O, C_out * K)`` of one layer, cached on ``feats``.

    ``J[i, o, c, k] = sum_p g[i, o, c, p] a[i, k, p]``: one batched ``(O C_out, P) @ (P, K)``
    product per sample (the weight multiplier is applied by the caller).

    Args:
        feats: The block's features (the Jacobian is kept in ``feats.cache``).
        name: Layer name.
        a: Conv patches ``(n, K, P)`` (``positions_last``) or dense inputs ``(n, S, K)``.
        g: Output gradients ``(n, O, C_out, P)`` (conv) or ``(n, O, S, C_out)`` (dense).
        positions_last: Whether positions are the last axis of ``a`` and ``g`` (conv layout).

    """
    key = ("jacobian", name)
    if key not in feats.cache:
        n, o = g.shape[0], g.shape[1]
        if positions_last:  # (n, O C, P) @ (n, P, K)
            c = g.shape[2]
            jac = torch.bmm(g.reshape(n, o * c, -1), a.transpose(1, 2))
        else:  # dense along S positions: (n, O, C, S) @ (n, S, K)
            c = g.shape[3]
            jac = torch.bmm(g.transpose(2, 3).reshape(n, o * c, -1), a)
        feats.cache[key] = jac.reshape(n, o, -1)
    return feats.cache[key]


def conv_patches(a: torch.Tensor, kernel_size: tuple[int, int], dilation: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """``torch.nn.functional.unfold(a, ...)``: ``(n, C kh kw, P)`` patches, from strided views.

    The same values in the same order (channels, then kernel rows, then kernel columns; output
    positions row-major), formed by ``Tensor.unfold`` on the zero-padded input and one copy:
    ``F.unfold`` (``im2col``) takes seconds on a few million elements in torch 2.13 on the CPU.

    Args:
        a: ``(n, C, H, W)`` layer input.
        kernel_size: ``(kh, kw)``.
        dilation: ``(dh, dw)``.
        stride: ``(sh, sw)``.
        padding: ``(ph, pw)`` zeros on each side.

    Returns:
        ``(n, C kh kw, oh ow)`` patches.

    """
    (kh, kw), (dh, dw), (sh, sw), (ph, pw) = kernel_size, dilation, stride, padding
    n, c = a.shape[0], a.shape[1]
    x = torch.nn.functional.pad(a, (pw, pw, ph, ph)) if ph or pw else a
    u = x.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
    u = u[..., ::dh, ::dw]  # (n, C, oh, ow, kh, kw)
    return u.permute(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, u.shape[2] * u.shape[3])


def _dense_gram(info: LayerInfo, f1: Features, f2: Features, output: str) -> torch.Tensor:
    """Dense layer share of the kernel; see the module docstring for the formula.

    Layer inputs are ``(n, S, fan_in)`` and output gradients ``(n, O, S, fan_out)`` (``S``
    positions). For ``S > 1`` the cheaper of the position-pair rule and the per-layer Jacobian
    contraction is used (:func:`layer_rule`).

    Returns:
        ``(n1, n2, O, O)``, ``(n1, n2)`` or ``(n1, n2, O)`` for ``output`` ``"full"``,
        ``"trace"`` or ``"diagonal"``.

    """
    name = info.name
    a1, a2, g1, g2 = f1.inputs[name], f2.inputs[name], f1.grads[name], f2.grads[name]
    mw2, mb2 = info.weight_multiplier**2, info.bias_multiplier**2
    if a1.shape[1] == 1 and a2.shape[1] == 1:  # the common case: one position per sample
        a1, a2, g1, g2 = a1[:, 0], a2[:, 0], g1[:, :, 0], g2[:, :, 0]
        (n1, o, c), n2 = g1.shape, g2.shape[0]
        # scale[i, j] = m_w^2 <a_i, a_j> + m_b^2 multiplies every output pair of (i, j).
        if info.weight:
            scale = torch.mm(a1, a2.T).mul_(mw2)
            if info.bias:
                scale.add_(mb2)
        else:
            scale = torch.full((n1, n2), mb2, dtype=g1.dtype, device=g1.device)
        # Output-major views (O, n, C): the layout the batched backward produces, so no copy.
        h1, h2 = g1.transpose(0, 1), g2.transpose(0, 1)
        if output == "trace":  # sum_o (O, n1, C) @ (O, C, n2)
            return scale.mul_(torch.bmm(h1, h2.transpose(1, 2)).sum(0))
        if output == "diagonal":  # (O, n1, C) @ (O, C, n2) -> (O, n1, n2)
            gg = torch.bmm(h1, h2.transpose(1, 2))
            return gg.mul_(scale).permute(1, 2, 0)
        # One (O n1, C) @ (C, O n2) product: the Gram of all output gradients.
        gg = torch.mm(h1.reshape(o * n1, c), h2.reshape(o * n2, c).T).reshape(o, n1, o, n2)
        return gg.mul_(scale[:, None, :]).permute(1, 3, 0, 2)
    # Layer applied along extra axes: sum over pairs of positions (s, t), or its Jacobian.
    res = 0.0
    if info.weight:
        n1, n2, s, k, o, c = a1.shape[0], a2.shape[0], a1.shape[1], a1.shape[2], g1.shape[1], \
            g1.shape[3]
        if layer_rule(n1, n2, s, k, c, o, output) == "jacobian":
            j1 = _layer_jacobian(f1, name, a1, g1, positions_last=False)
            j2 = j1 if f2 is f1 else _layer_jacobian(f2, name, a2, g2, positions_last=False)
            res = mw2 * _contraction.contract(j1, j2, output)
        else:
            aa = torch.einsum("isk,jtk->ijst", a1, a2)
            spec = {"trace": "iasc,jatc->ijst", "diagonal": "iasc,jatc->ijast",
                    "full": "iasc,jbtc->ijabst"}[output]
            gg = torch.einsum(spec, g1, g2)
            extra = gg.dim() - 4
            res = mw2 * (gg * aa.reshape(*aa.shape[:2], *([1] * extra), *aa.shape[2:])).sum(
                (-2, -1))
    if info.bias:
        res = res + mb2 * _contraction.contract(g1.sum(2), g2.sum(2), output)
    return res


def _conv_gram(info: LayerInfo, f1: Features, f2: Features, output: str) -> torch.Tensor:
    """Conv2d share of the kernel; see the module docstring for the formula.

    Patches are ``(n, K, P)`` and output gradients ``(n, O, C_out, P)``. The weight share uses
    the cheaper (:func:`layer_rule`) of the position-pair tensor ``(n1, n2, P, P)`` and the
    layer's per-sample weight Jacobian ``(n, O, C_out K)`` contracted over its last axis.
    """
    name = info.name
    p1, p2, g1, g2 = f1.inputs[name], f2.inputs[name], f1.grads[name], f2.grads[name]
    mw2, mb2 = info.weight_multiplier**2, info.bias_multiplier**2
    res = 0.0
    if info.weight:
        n1, n2, k, s, o, c = p1.shape[0], p2.shape[0], p1.shape[1], p1.shape[2], g1.shape[1], \
            g1.shape[2]
        if layer_rule(n1, n2, s, k, c, o, output) == "jacobian":
            j1 = _layer_jacobian(f1, name, p1, g1, positions_last=True)
            j2 = j1 if f2 is f1 else _layer_jacobian(f2, name, p2, g2, positions_last=True)
            res = mw2 * _contraction.contract(j1, j2, output)
        else:
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
    for info in layers.values():
        if not (info.weight or info.bias):  # no trainable parameter: no share
            continue
        fn = _dense_gram if info.kind == "dense" else _conv_gram
        part = fn(info, f1, f2, output)
        total = part if total is None else total + part
    for name in f1.fallback:
        part = _contraction.contract(f1.fallback[name], f2.fallback[name], output)
        total = part if total is None else total + part
    if total is None:  # every supported layer frozen, no other trainable parameter
        g1, g2 = next(iter(f1.grads.values())), next(iter(f2.grads.values()))
        n1, n2, o = g1.shape[0], g2.shape[0], g1.shape[1]
        shape = {"full": (n1, n2, o, o), "trace": (n1, n2), "diagonal": (n1, n2, o)}[output]
        total = torch.zeros(shape, dtype=g1.dtype, device=g1.device)
    return total
