"""The empirical (finite-width) neural tangent kernel of a PyTorch network.

``Theta(x1, x2)[a, b] = sum_p (d f_a(x1) / d theta_p) (d f_b(x2) / d theta_p)`` at the network's
current parameters (Jacot et al. 2018, eq. 2), summed over all parameters with
``requires_grad``. Three implementations give one answer (up to float rounding):

* ``"jacobian"``: per-sample Jacobians with ``torch.func.jacrev`` under ``vmap``, contracted.
* ``"ntvp"``: NTK-vector products (``vjp`` at ``x2`` then ``jvp`` at ``x1``), no Jacobian held.
* ``"structured"``: per-layer Gram products of layer inputs and back-propagated output gradients
  for ``nn.Linear``, ``nn.Conv2d`` and the :mod:`ntkcheck.arch` layers (Novak et al. 2022,
  "Fast Finite Width Neural Tangent Kernel", structured derivatives); any other parameterized
  module falls back to Jacobian contraction. See :mod:`ntkcheck.kernels._structured`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ntkcheck.kernels import _contraction, _structured
from ntkcheck.kernels._memory import available_memory_bytes, check_memory
from ntkcheck.numerics import with_float64_fallback

IMPLEMENTATIONS = ("auto", "jacobian", "ntvp", "structured")
OUTPUTS = ("full", "trace", "diagonal")


class TrainModeError(ValueError):
    """Raised when a module makes one sample's output depend on the batch or on randomness."""


class SampleMixingError(TrainModeError):
    """Raised when a batched forward pass differs from the per-sample ones (samples interact)."""


def check_eval_mode(model: nn.Module) -> None:
    """Refuse modules for which the per-input-pair NTK is undefined.

    Args:
        model: The network.

    Raises:
        TrainModeError: If a BatchNorm layer is in training mode (or keeps no running
            statistics, so it normalizes with batch statistics even in eval mode) or a dropout
            layer with ``p > 0`` is in training mode. The message names the module.

    """
    for name, m in model.named_modules():
        label = f"{name or '<root>'!r} ({type(m).__name__})"
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.training:
                raise TrainModeError(
                    f"module {label} is in training mode: it normalizes with statistics of the "
                    "whole batch, so one input's output depends on the others and the NTK is "
                    "not defined per pair of inputs; call model.eval() before computing kernels "
                    "or Jacobians"
                )
            if m.running_mean is None:
                raise TrainModeError(
                    f"module {label} has track_running_stats=False and normalizes with batch "
                    "statistics even in eval mode; the NTK is not defined per pair of inputs "
                    "(a per-sample Jacobian differs from the batched one); build it with "
                    "track_running_stats=True and call model.eval(), or remove it"
                )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise TrainModeError(
                f"module {label} is an active dropout layer (training mode, p={m.p}): the "
                "network is random, so its NTK is undefined; call model.eval() before "
                "computing kernels or Jacobians"
            )


#: Inputs of the probe batch of :func:`check_sample_independence`.
PROBE_INPUTS = 3


def _batch_tensor(value, n: int) -> torch.Tensor | None:
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == n:
        return value.detach()
    return None


def check_sample_independence(model: nn.Module, x: torch.Tensor,
                              n_probe: int = PROBE_INPUTS) -> None:
    """Refuse a model whose output for one input depends on the other inputs of the batch.

    Runs the model on the first ``n_probe`` inputs as one batch and on each alone (no
    autograd) and compares, for the model and for every submodule (forward hooks), the
    batched output rows with the per-sample outputs. A difference beyond
    ``sqrt(eps) * max |output|`` (``eps`` of the output's dtype; rounding of batched and
    unbatched kernels stays orders of magnitude below) means the samples interact (a layer
    that normalizes or centres over the batch, ``h - h.mean(0)``, or a random forward pass),
    so no per-pair kernel or per-sample Jacobian exists and the implementations would return
    different matrices. The module named is the first (innermost) one whose inputs agree
    but whose outputs differ.

    Args:
        model: The network (in eval mode).
        x: ``(N, *input_shape)`` inputs in the model's dtype and device (``N >= 2`` to test
            anything).
        n_probe: Inputs in the probe batch.

    Raises:
        SampleMixingError: If the batched and per-sample outputs differ; the message names the
            module and the size of the difference.

    """
    probe = x[:n_probe]
    n = probe.shape[0]
    if n < 2:
        return
    calls: dict[str, list] = {}
    order: list[str] = []

    def hook(mod, args, out, name):
        rec = calls.setdefault(name, [])
        if name not in order:
            order.append(name)
        rec.append((args[0] if args else None, out))

    handles = [m.register_forward_hook(lambda mod, a, o, name=name: hook(mod, a, o, name))
               for name, m in model.named_modules()]
    try:
        with torch.no_grad():
            batched = model(probe)
            per_call = {k: list(v) for k, v in calls.items()}
            singles = []
            for i in range(n):
                calls.clear()
                singles.append((model(probe[i:i + 1]), {k: list(v) for k, v in calls.items()}))
    finally:
        for h in handles:
            h.remove()

    def gap(joint, parts) -> tuple[float, float]:
        j = _batch_tensor(joint, n)
        ps = [_batch_tensor(p, 1) for p in parts]
        if j is None or any(p is None for p in ps) or not j.is_floating_point():
            return 0.0, 0.0
        alone = torch.cat(ps)
        if alone.shape != j.shape:
            return 0.0, 0.0
        scale = float(j.abs().max()) if j.numel() else 0.0
        diff = float((j - alone).abs().max()) if j.numel() else 0.0
        tol = math.sqrt(torch.finfo(j.dtype).eps) * max(scale, torch.finfo(j.dtype).tiny)
        return diff, tol

    out_diff, out_tol = gap(batched, [s[0] for s in singles])
    if not out_diff > out_tol:
        return
    culprit = "<root>"
    for name in order:
        rec = per_call.get(name, [])
        for idx, (inp, out) in enumerate(rec):
            parts = [s[1].get(name, []) for s in singles]
            if any(len(p) <= idx for p in parts):
                continue
            in_diff, in_tol = gap(inp, [p[idx][0] for p in parts])
            o_diff, o_tol = gap(out, [p[idx][1] for p in parts])
            if o_diff > o_tol and not in_diff > in_tol:
                culprit = name or "<root>"
                break
        else:
            continue
        break
    module = model.get_submodule("" if culprit == "<root>" else culprit)
    raise SampleMixingError(
        f"module {culprit!r} ({type(module).__name__}) makes the samples of a batch interact: "
        f"the model's outputs on {n} inputs batched and one at a time differ by {out_diff:.3g} "
        f"(round-off allows {out_tol:.3g}), e.g. a layer that normalizes or centres over the "
        "batch (h - h.mean(0)) or a random forward pass. The NTK and per-sample Jacobians are "
        "not defined per input; make the layer act on each sample alone (e.g. a LayerNorm or "
        "fixed statistics), or put it in eval mode"
    )


@dataclass
class _Probe:
    """Per-sample sizes from one forward pass on a single input."""

    n_out: int
    n_params: int
    activations: int  # elements output by all leaf modules
    macs: int  # multiply-accumulates of linear/conv layers (plus one per other activation)
    layer_cost: dict[str, tuple[str, int, int, int, int]]  # kind, S or P, in, out, C_out
    calls: dict[str, int]


def _probe(
    model: nn.Module, x: torch.Tensor, candidates: dict[str, _structured.LayerInfo]
) -> _Probe:
    stats = {"act": 0, "macs": 0}
    calls: dict[str, int] = {}
    layer_cost: dict[str, tuple[str, int, int, int, int]] = {}
    handles = []
    for name, m in model.named_modules():
        if next(m.children(), None) is not None and name not in candidates:
            continue

        def hook(mod, args, out, name=name):
            if not isinstance(out, torch.Tensor):
                return
            stats["act"] += out.numel()
            if name in candidates:
                calls[name] = calls.get(name, 0) + 1
                info = candidates[name]
                a = args[0]
                if info.kind == "dense":
                    s = a.numel() // a.shape[-1]
                    layer_cost[name] = ("dense", s, a.shape[-1], out.shape[-1], out.shape[-1])
                    stats["macs"] += s * a.shape[-1] * out.shape[-1]
                else:
                    w = mod.weight
                    p = out[0, 0].numel()
                    layer_cost[name] = ("conv2d", p, w[0].numel(), out.shape[1], out.shape[1])
                    stats["macs"] += p * w.numel()
            else:  # elementwise work, plus one use of each own parameter
                stats["macs"] += out.numel() + sum(
                    p.numel() for p in mod.parameters(recurse=False)
                )

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = model(x[:1])
    except RuntimeError as exc:  # e.g. "mat1 and mat2 shapes cannot be multiplied"
        raise ValueError(
            f"the model cannot take inputs of shape {tuple(x.shape[1:])} (one input; the first "
            f"dimension is the batch): {str(exc).splitlines()[0]}. Pass x1/x2 shaped "
            "(N, *input_shape) as the model was built for (e.g. spec.build(input_shape=...))"
        ) from exc
    finally:
        for h in handles:
            h.remove()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return _Probe(out.numel(), n_params, stats["act"], stats["macs"], layer_cost, calls)


def _out_elems(n_out: int, output: str) -> int:
    return {"full": n_out * n_out, "trace": 1, "diagonal": n_out}[output]


class _Impl:
    """One implementation: per-block features, the kernel of two feature blocks, and costs."""

    name = ""

    def __init__(self, model: nn.Module, params: dict[str, torch.Tensor], probe: _Probe,
                 output: str) -> None:
        self.model, self.params, self.probe, self.output = model, params, probe, output

    def features(self, x: torch.Tensor):  # noqa: D102
        return x

    def gram(self, f1, f2) -> torch.Tensor:  # noqa: D102
        raise NotImplementedError

    def memory_elems(self, b1: int, b2: int, reuse: bool) -> float:  # noqa: D102
        raise NotImplementedError

    def flops(self, n1: int, n2: int, nb1: int) -> float:  # noqa: D102
        raise NotImplementedError


class _Jacobian(_Impl):
    name = "jacobian"

    def features(self, x):
        with torch.no_grad():
            return _contraction.per_sample_jacobian(self.model, self.params, x, self.probe.n_out)

    def gram(self, f1, f2):
        total = None
        for k in f1:
            part = _contraction.contract(f1[k], f2[k], self.output)
            total = part if total is None else total + part
        return total

    def memory_elems(self, b1, b2, reuse):
        # Stored Jacobians of both blocks and the backward pass of one block; a convolution's
        # per-sample weight gradient unfolds its input for every output (n O K P elements).
        p = self.probe
        stored = (b1 + (0 if reuse else b2)) * p.n_out * p.n_params
        unfold = max((s * k for kind, s, k, _, _ in p.layer_cost.values() if kind == "conv2d"),
                     default=0)
        return stored + max(b1, b2) * p.n_out * (p.activations + unfold)

    def flops(self, n1, n2, nb1):
        p = self.probe
        oc = p.n_out**2 if self.output == "full" else p.n_out
        return (n1 + nb1 * n2) * p.n_out * (3 * p.macs + p.n_params) + n1 * n2 * oc * p.n_params


class _NTVP(_Impl):
    name = "ntvp"

    def chunk(self, b1: int, b2: int) -> int:
        """Kernel columns per ``vmap`` call: a quarter of free memory, at most all columns."""
        p = self.probe
        per_col = 3 * p.n_params + 3 * b1 * p.activations + b1 * p.n_out
        free = available_memory_bytes(next(self.model.parameters()).device) or (8 << 30)
        itemsize = next(self.model.parameters()).element_size()
        return int(max(1, min(b2 * p.n_out, free // 4 // (itemsize * per_col))))

    def gram(self, x1, x2):
        with torch.no_grad():
            k = _contraction.ntvp_kernel(self.model, self.params, x1, x2, self.probe.n_out,
                                         self.chunk(x1.shape[0], x2.shape[0]))
        if self.output == "trace":
            return k.diagonal(dim1=2, dim2=3).sum(-1)
        if self.output == "diagonal":
            return k.diagonal(dim1=2, dim2=3)
        return k

    def memory_elems(self, b1, b2, reuse):
        p = self.probe
        per_col = 3 * p.n_params + 3 * b1 * p.activations + b1 * p.n_out
        return self.chunk(b1, b2) * per_col + b2 * p.activations + b1 * b2 * p.n_out**2

    def flops(self, n1, n2, nb1):
        p = self.probe
        return 3 * n2 * p.n_out * (n1 + nb1) * p.macs


class _Structured(_Impl):
    name = "structured"

    def __init__(self, model, params, probe, output, layers):
        super().__init__(model, params, probe, output)
        self.layers = layers
        covered = set()
        for name in layers:
            covered.update(f"{name}.{k}" if name else k for k in ("weight", "bias"))
        self.fallback = {k: v for k, v in params.items() if k not in covered}
        self.n_fallback = sum(v.numel() for v in self.fallback.values())

    def features(self, x):
        return _structured.features(self.model, self.layers, self.fallback, x, self.probe.n_out)

    def gram(self, f1, f2):
        return _structured.gram(self.layers, f1, f2, self.output)

    def _layer_terms(self, b1, b2):
        """Elements of features and intermediates and multiply-adds of one block pair.

        Each layer's weight share uses the rule :func:`_structured.layer_rule` picks for
        these block sizes (the per-layer Jacobians it forms are kept with the features).
        """
        p, o = self.probe, self.probe.n_out
        oc = o**2 if self.output == "full" else o
        res = _out_elems(o, self.output)
        feats = inter = flops = 0.0
        for name in self.layers:
            kind, s, fan_in, fan_out, c_out = p.layer_cost[name]
            feats += (b1 + b2) * s * (fan_in + o * fan_out)
            if kind == "dense" and s == 1:
                inter = max(inter, b1 * b2 * (res + 1) + (b1 + b2) * o * fan_out)
                flops += b1 * b2 * (fan_in + oc * fan_out)
                continue
            args = (b1, b2, s, fan_in, c_out, o, self.output)
            if _structured.layer_rule(*args) == "jacobian":
                feats += (b1 + b2) * o * c_out * fan_in
                inter = max(inter, b1 * b2 * res + (b1 + b2) * o * c_out * s)
                flops += _structured.jacobian_rule_cost(*args)
            else:
                extra = 0 if self.output == "trace" else b1 * b2 * o * c_out * s
                inter = max(inter, 2 * b1 * b2 * s * s + b1 * b2 * res * s * s + extra)
                flops += _structured.pair_rule_cost(*args)
        return feats, inter, flops

    def memory_elems(self, b1, b2, reuse):
        p = self.probe
        feats, inter, _ = self._layer_terms(b1, 0 if reuse else b2)
        feats += self._layer_terms(max(b1, b2), 0)[0]  # the block being computed
        inter = self._layer_terms(b1, b2)[1]
        jac = (b1 + (0 if reuse else b2) + max(b1, b2)) * p.n_out * self.n_fallback
        # The batched backward holds O copies of every activation's gradient.
        return feats + inter + jac + 2 * max(b1, b2) * p.n_out * p.activations

    def flops(self, n1, n2, nb1):
        p = self.probe
        b1, nb2 = math.ceil(n1 / nb1), 1
        b2 = n2 if nb1 == 1 else min(n2, b1)
        nb2 = math.ceil(n2 / b2)
        _, _, per_block = self._layer_terms(b1, b2)
        oc = p.n_out**2 if self.output == "full" else p.n_out
        return ((n1 + nb1 * n2) * p.n_out * 3 * p.macs + nb1 * nb2 * per_block
                + n1 * n2 * oc * self.n_fallback)


PROBE_MIN_FLOPS = 2e9
"""Below this many estimated multiply-adds ``auto`` picks by the estimate alone (the
computation is then about as cheap as timing a probe)."""

PROBE_FLOPS_RATIO = 4.0
"""``auto`` times a probe of each implementation whose estimate is within this factor of the
smallest one (the estimates miss per-operation overheads and kernel efficiencies)."""

PROBE_MAX_INPUTS = 16
"""Most inputs of an ``auto`` probe batch (an eighth of ``x1``, at least 2)."""

_PROBE_CACHE: dict[tuple, str] = {}


def _signature(model: nn.Module, x1: torch.Tensor, n1: int, n2: int, output: str) -> tuple:
    """Key of an ``auto`` probe: the model's structure and parameter shapes, inputs, output."""
    shapes = tuple((k, tuple(v.shape), v.requires_grad) for k, v in model.named_parameters())
    modules = tuple(type(m).__name__ for m in model.modules())
    return (modules, shapes, tuple(x1.shape[1:]), x1.dtype, str(x1.device), n1, n2, output,
            torch.get_num_threads())


def _timed_probe(impl: _Impl, x: torch.Tensor) -> float:
    """Seconds for features and the symmetric Gram of the probe batch ``x`` (best of two)."""
    import time

    best = math.inf
    for _ in range(2):
        start = time.perf_counter()
        f = impl.features(x)
        impl.gram(f, f)
        best = min(best, time.perf_counter() - start)
    return best


def _auto_choice(pool: list[_Impl], x1: torch.Tensor, n1: int, n2: int, nb1: int,
                 key: tuple) -> _Impl:
    """The implementation ``auto`` uses among ``pool`` (those that fit in memory).

    By the multiply-add estimates; where several are within :data:`PROBE_FLOPS_RATIO` of the
    smallest and the work exceeds :data:`PROBE_MIN_FLOPS`, each of those is timed on a probe
    batch of ``m`` inputs (``x1[:m]``, a ``(m, m)`` Gram, ``m`` an eighth of ``n1`` within
    ``[2, PROBE_MAX_INPUTS]``) and its time scaled by its own
    estimate ``flops(n1, n2) / flops(m, m)``. The choice is cached per model structure,
    input shape, sizes, output and thread count, so sweeps probe once.
    """
    ranked = sorted(pool, key=lambda i: i.flops(n1, n2, nb1))
    best = ranked[0].flops(n1, n2, nb1)
    close = [i for i in ranked if i.flops(n1, n2, nb1) <= PROBE_FLOPS_RATIO * best]
    if len(close) == 1 or best < PROBE_MIN_FLOPS:
        return ranked[0]
    if key in _PROBE_CACHE:
        return next((i for i in close if i.name == _PROBE_CACHE[key]), ranked[0])
    m = max(2, min(n1, PROBE_MAX_INPUTS, math.ceil(n1 / 8)))
    xp = x1[:m]
    estimate = {}
    for impl in close:
        estimate[impl.name] = (_timed_probe(impl, xp) * impl.flops(n1, n2, nb1)
                               / max(impl.flops(m, m, 1), 1.0))
    name = min(estimate, key=estimate.get)
    _PROBE_CACHE[key] = name
    return next(i for i in close if i.name == name)


def _transpose(k: torch.Tensor, output: str) -> torch.Tensor:
    """``K(x2, x1)`` from ``K(x1, x2)``: swap the input axes (and the output axes for full)."""
    return k.permute(1, 0, 3, 2) if output == "full" else k.transpose(0, 1)


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


@dataclass
class Plan:
    """How :func:`empirical_ntk` will compute a kernel.

    Attributes:
        implementation: The implementation chosen (``"auto"`` resolved).
        estimated_bytes: Estimated peak memory of each implementation, in bytes.
        estimated_flops: Estimated floating-point work of each implementation.
        structured_layers: Qualified names of the layers the structured implementation handles
            from Gram products (other parameters fall back to Jacobian contraction).
    """

    implementation: str
    estimated_bytes: dict[str, float]
    estimated_flops: dict[str, float]
    structured_layers: list[str]


@dataclass
class _Setup:
    impl: _Impl
    plan: Plan
    x1: torch.Tensor
    x2: torch.Tensor
    symmetric: bool
    n_out: int
    b1: int
    b2: int


def _setup(model, x1, x2, implementation, output, batch_size) -> _Setup:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r}; choose one of "
                         f"{IMPLEMENTATIONS}")
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; choose one of {OUTPUTS}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    check_eval_mode(model)
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("the model has no parameters with requires_grad=True; its NTK is zero")
    ref = next(iter(params.values()))
    dtype, device = ref.dtype, ref.device
    symmetric = x2 is None
    x1 = torch.as_tensor(x1).to(device=device, dtype=dtype)
    x2 = x1 if symmetric else torch.as_tensor(x2).to(device=device, dtype=dtype)
    if x1.dim() < 1 or x1.shape[1:] != x2.shape[1:] or x1.shape[0] == 0 or x2.shape[0] == 0:
        raise ValueError(f"x1 and x2 must be non-empty batches of inputs of one shape, got "
                         f"{tuple(x1.shape)} and {tuple(x2.shape)}")

    candidates = _structured.supported_layers(model)
    probe = _probe(model, x1, candidates)
    check_sample_independence(model, x1)
    layers = {k: v for k, v in candidates.items() if probe.calls.get(k, 0) == 1}
    n1, n2 = x1.shape[0], x2.shape[0]
    b1, b2 = min(n1, batch_size or n1), min(n2, batch_size or n2)
    nb1 = math.ceil(n1 / b1)
    impls: dict[str, _Impl] = {
        "jacobian": _Jacobian(model, params, probe, output),
        "ntvp": _NTVP(model, params, probe, output),
        "structured": _Structured(model, params, probe, output, layers),
    }
    itemsize = ref.element_size()
    result_bytes = n1 * n2 * _out_elems(probe.n_out, output) * itemsize

    def need(impl: _Impl) -> float:
        return result_bytes + itemsize * impl.memory_elems(b1, b2, symmetric and nb1 == 1)

    if implementation == "auto":
        free = available_memory_bytes(device)
        fits = [i for i in impls.values() if free is None or need(i) <= free]
        if fits:
            impl = _auto_choice(fits, x1, n1, n2, nb1, _signature(model, x1, n1, n2, output))
        else:  # nothing fits: the cheapest, refused with its estimate below
            impl = min(impls.values(), key=lambda i: i.flops(n1, n2, nb1))
    else:
        impl = impls[implementation]
    plan = Plan(impl.name, {k: need(v) for k, v in impls.items()},
                {k: v.flops(n1, n2, nb1) for k, v in impls.items()}, list(layers))
    check_memory(need(impl), device,
                 f"empirical_ntk(implementation={impl.name!r}) on {n1}x{n2} inputs "
                 f"(blocks of {b1}x{b2}, {probe.n_params} parameters, {probe.n_out} outputs)")
    return _Setup(impl, plan, x1, x2, symmetric, probe.n_out, b1, b2)


def plan_empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    implementation: str = "auto",
    output: str = "trace",
    batch_size: int | None = None,
) -> Plan:
    """The :class:`Plan` :func:`empirical_ntk` follows for these arguments, without computing.

    Arguments and errors are those of :func:`empirical_ntk` (one forward pass on one input is
    run to measure layer sizes).
    """
    return _setup(model, x1, x2, implementation, output, batch_size).plan


def empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    implementation: str = "auto",
    output: str = "trace",
    batch_size: int | None = None,
) -> torch.Tensor:
    """Empirical NTK ``J(x1) J(x2)^T`` of ``model`` at its current parameters.

    The derivative is taken w.r.t. every parameter with ``requires_grad`` (Jacot et al. 2018,
    eq. 2). Computation runs without recording autograd history on the parameters, in the
    model's dtype and on its device (float64 models are the ones to use for comparisons with
    theory; float32 models give float32 kernels).

    ``implementation="auto"`` estimates, per candidate, the peak memory and the floating-point
    work (multiply-adds), keeps the candidates that fit in free memory, and picks the cheapest;
    where several are within a factor :data:`PROBE_FLOPS_RATIO` of the cheapest (the counts
    miss per-operation overheads and kernel efficiencies), it times each on a small probe batch
    and scales the time by its own estimate (once per model structure and sizes, see
    :func:`_auto_choice`). With ``O`` outputs, ``P`` trainable parameters, ``F``
    multiply-accumulates of one forward pass on one input, ``n1``/``n2`` inputs and ``B1``
    blocks of ``x1``, ``c = O**2`` for ``"full"`` else ``O``:

    * ``jacobian``: ``(n1 + B1 n2) O (3F + P) + n1 n2 c P``;
    * ``ntvp``: ``3 n2 O (n1 + B1) F``;
    * ``structured``: ``(n1 + B1 n2) 3 O F`` plus, per block pair and layer ``l`` (``S_l``
      positions: 1 for dense layers on vectors, output pixels for convolutions; ``K_l`` inputs
      per position, ``C_l`` outputs), ``n1 n2 (K_l + c C_l)`` for dense layers on vectors and
      otherwise the cheaper of the position-pair rule ``n1 n2 S_l^2 (K_l + O C_l)`` (plus
      ``n1 n2 c C_l S_l`` unless ``"trace"``) and the layer-Jacobian rule
      ``(n1 + n2) O C_l K_l S_l + n1 n2 c C_l K_l``
      (:func:`ntkcheck.kernels._structured.layer_rule`); plus the ``jacobian`` cost of any
      fallback parameters.

    Args:
        model: A ``torch.nn.Module`` mapping ``(n, *input_shape)`` to ``(n, O)`` (or any
            ``(n, ...)`` output, flattened to ``O`` values per input). Put it in eval mode.
        x1: ``(N1, *input_shape)`` inputs; cast to the model's dtype and device.
        x2: ``(N2, *input_shape)`` inputs, or ``None`` for ``x2 = x1``; the Gram is then
            computed once (upper block triangle) and made exactly symmetric.
        implementation: ``"auto"``, ``"jacobian"``, ``"ntvp"`` or ``"structured"``.
        output: ``"full"`` gives ``(N1, N2, O, O)``; ``"trace"`` gives ``(N1, N2)``, the sum over
            the ``O`` diagonal output pairs; ``"diagonal"`` gives ``(N1, N2, O)``.
        batch_size: If given, ``x1`` and ``x2`` are processed in blocks of at most this many
            inputs (bounds memory; the result does not depend on it).

    Returns:
        The kernel, in the model's dtype, on the model's device, with the shape given by
        ``output``; float64 when the model's dtype overflowed (entries beyond its range, e.g.
        3.4e38 for float32): the kernel is then recomputed on a float64 copy of the model,
        with a ``RuntimeWarning``.

    Raises:
        ValueError: On an unknown ``implementation``/``output``, a non-positive
            ``batch_size``, a model without trainable parameters or mismatched input shapes.
        TrainModeError: If BatchNorm is in training mode or dropout is active (see
            :func:`check_eval_mode`), or (:class:`SampleMixingError`) if the batched and
            per-sample forward passes differ (:func:`check_sample_independence`).
        ValueError: If the kernel is not finite because an input or parameter is.
        NumericalOverflowError: If it overflows even in float64.
        KernelMemoryError: If the estimated peak memory exceeds free memory (the message gives
            the estimate in GiB and suggests ``batch_size`` or a smaller width).

    """
    st = _setup(model, x1, x2, implementation, output, batch_size)
    impl, x1, x2, symmetric = st.impl, st.x1, st.x2, st.symmetric
    n1, n2, b1, b2 = x1.shape[0], x2.shape[0], st.b1, st.b2
    dtype, device = x1.dtype, x1.device
    shape = {"full": (n1, n2, st.n_out, st.n_out), "trace": (n1, n2),
             "diagonal": (n1, n2, st.n_out)}[output]
    result = torch.empty(shape, dtype=dtype, device=device)
    blocks1, blocks2 = _blocks(n1, b1), _blocks(n2, b2)
    _fill(impl, result, x1, x2, blocks1, blocks2, symmetric, output)
    if symmetric:
        result = (result + _transpose(result, output)) / 2
    if bool(torch.isfinite(result).all()):
        return result
    for what, t in (("x1", x1), ("x2", x2), *((f"parameter {k!r}", v) for k, v in
                                              model.named_parameters())):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{what} has NaN or Inf entries, so the empirical NTK does too")

    def in_dtype(dt: torch.dtype) -> torch.Tensor:
        if dt == dtype:
            return result
        wide = copy.deepcopy(model).to(dt)
        return empirical_ntk(wide, x1.to(dt), None if symmetric else x2.to(dt),
                             implementation=implementation, output=output,
                             batch_size=batch_size)

    return with_float64_fallback(in_dtype, dtype, "the empirical NTK")


def _fill(impl, result, x1, x2, blocks1, blocks2, symmetric, output) -> None:
    """Write the kernel blocks into ``result`` (upper block triangle mirrored if symmetric)."""
    for i, (s1, e1) in enumerate(blocks1):
        f1 = impl.features(x1[s1:e1])
        for j, (s2, e2) in enumerate(blocks2):
            if symmetric and j < i:
                continue
            f2 = f1 if symmetric and i == j else impl.features(x2[s2:e2])
            k = impl.gram(f1, f2)
            result[s1:e1, s2:e2] = k
            if symmetric and j > i:
                result[s2:e2, s1:e1] = _transpose(k, output)
