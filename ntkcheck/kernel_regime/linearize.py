"""The linearized (first-order Taylor) model of a network around its parameters at initialization.

Lee et al. 2019 ("Wide neural networks of any depth evolve as linear models under gradient
descent"), eq. 5::

    f_lin(x; theta) = f(x; theta_0) + J(x; theta_0) (theta - theta_0),
    J(x; theta_0) = d f(x; theta) / d theta at theta_0.

:class:`LinearizedModel` evaluates this with one forward-mode product per call
(``torch.func.jvp`` of ``torch.func.functional_call`` at ``theta_0`` with tangent
``theta - theta_0``), so the Jacobian is never held in memory: a forward pass costs about two
passes of the network and its gradient about three. Its trainable parameters are ``theta``
(initialized to ``theta_0``), so any optimizer and :func:`ntkcheck.training.loops.train` train it
exactly like the network. Its NTK is constant: ``J(x; theta_0) J(x'; theta_0)^T``, the
network's empirical NTK at initialization.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.func import functional_call, jvp

__all__ = ["LinearizedModel", "linearize"]


def _key(name: str) -> str:
    return name.replace(".", "__")


class LinearizedModel(nn.Module):
    """``f_lin(x; theta) = f(x; theta_0) + J(x; theta_0)(theta - theta_0)`` (Lee 2019, eq. 5).

    Holds a frozen copy of the network whose parameters are ``theta_0`` (stored as buffers,
    so they move with ``.to()`` and are not trained) and one trainable parameter per network
    parameter, ``theta``, starting at ``theta_0``. Parameters of the network with
    ``requires_grad=False`` stay fixed at their value. Buffers (e.g. BatchNorm running
    statistics) are used as they are; a network whose output depends on the batch (BatchNorm
    in training mode) is linearized per batch, which is rarely what one wants.

    Shapes: as the network: input ``(N, *input_shape)``, output ``(N, O)``, dtype and device of
    the network's parameters.

    Attributes:
        base: The frozen network at ``theta_0`` (its parameters are buffers).
        theta: ``nn.ParameterDict`` of the trainable parameters, keyed by the network's
            parameter names with ``.`` replaced by ``__``.

    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        base = copy.deepcopy(model)
        self.names: list[str] = []
        theta = nn.ParameterDict()  # in the network's parameter order
        for name, p in list(base.named_parameters()):
            owner, attr = _split(base, name)
            del owner._parameters[attr]
            owner.register_buffer(attr, p.detach().clone())
            if p.requires_grad:
                self.names.append(name)
                theta[_key(name)] = nn.Parameter(p.detach().clone())
        if not self.names:
            raise ValueError("the model has no trainable parameters to linearize around")
        self.base = base
        self.theta = theta

    def theta_0(self) -> dict[str, torch.Tensor]:
        """The parameters at initialization, by the network's parameter names (buffers)."""
        buffers = dict(self.base.named_buffers())
        return {name: buffers[name] for name in self.names}

    def delta(self) -> dict[str, torch.Tensor]:
        """``theta - theta_0`` by parameter name (differentiable w.r.t. ``theta``)."""
        return {name: self.theta[_key(name)] - p0 for name, p0 in self.theta_0().items()}

    def param_groups(self, groups: list[dict]) -> list[dict]:
        """The network's parameter groups mapped onto this model's ``theta``.

        ``groups`` carry ``"name"`` keys, as :func:`ntkcheck.arch.param_groups` returns them;
        each group keeps its learning rate.

        Raises:
            KeyError: If a group names no trainable parameter of the network.

        """
        unknown = [g["name"] for g in groups if g["name"] not in self.names]
        if unknown:
            raise KeyError(f"no trainable parameter(s) {unknown} in the linearized network")
        return [{**g, "params": [self.theta[_key(g["name"])]]} for g in groups]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x; theta_0) + J(x; theta_0)(theta - theta_0)``, one ``torch.func.jvp``."""
        primals = self.theta_0()

        def f(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(self.base, params, (x,))

        with warnings.catch_warnings():
            # torch.func registers its jvp decompositions with torch.jit.script on first use
            warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated",
                                    category=DeprecationWarning)
            out, tangent_out = jvp(f, (primals,), (self.delta(),))
        return out + tangent_out


def _split(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, attr = name.split(".")
    for part in path:
        module = getattr(module, part)
    return module, attr


def linearize(model: nn.Module) -> LinearizedModel:
    """The first-order Taylor model of ``model`` around its current parameters.

    ``model`` itself is not changed (a copy is linearized).

    Args:
        model: Any ``torch.nn.Module`` with trainable parameters, e.g. from
            :meth:`ntkcheck.arch.ArchSpec.build`.

    Returns:
        A :class:`LinearizedModel`, equal to ``model`` at its current parameters, in the same
        train/eval mode, dtype and device.

    Raises:
        ValueError: If ``model`` has no parameter with ``requires_grad``.

    """
    lin = LinearizedModel(model)
    lin.train(model.training)
    return lin
