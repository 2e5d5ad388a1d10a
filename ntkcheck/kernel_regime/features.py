"""Hidden representations of the networks :mod:`ntkcheck.arch` builds, and how they are compared.

* :func:`hidden_features`: the input of the read-out layer (the last hidden layer's features).
* :func:`linear_cka`: linear centered kernel alignment of two feature matrices (Kornblith et
  al. 2019), the similarity ``feature-learning`` uses.
* :func:`readout_covariance`: the covariance of the outputs given the hidden features, with
  the Gaussian read-out layer integrated out exactly; its average over initializations is the
  NNGP kernel (Lee et al. 2018; Matthews et al. 2018).
* :func:`lr_weighted_ntk`: the NTK with per-parameter learning rates, the kernel that gradient
  descent with :func:`ntkcheck.arch.param_groups` follows.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ntkcheck.arch import Conv, Dense, _multipliers
from ntkcheck.family import NotApplicable, family_of

__all__ = ["hidden_features", "linear_cka", "lr_weighted_ntk", "readout_covariance"]


def _readout(model: nn.Module) -> nn.Module:
    family = family_of(model)
    if family is not None:  # a user's network: its declared or last nn.Linear
        return family.readout_layer(model)
    outs = [m for m in model.modules() if isinstance(m, Dense) and m.role == "readout"]
    if len(outs) != 1:
        raise ValueError(f"expected one Dense layer with role='readout' (a network from "
                         f"ArchSpec.build), found {len(outs)}")
    return outs[0]


def hidden_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last hidden layer's features: the input of the read-out :class:`~ntkcheck.arch.Dense`.

    For a user's :class:`ntkcheck.family.ModelFamily` network the read-out is its declared
    ``readout`` or its last ``nn.Linear``.

    Args:
        model: A network from :meth:`ntkcheck.arch.ArchSpec.build` (or a family's).
        x: Inputs ``(N, *input_shape)``.

    Returns:
        ``(N, width)`` features (after the activation, and the global average pooling for image
        families), detached, in the model's dtype.

    Raises:
        ValueError: If the model has no single read-out layer.

    """
    readout = _readout(model)
    seen: list[torch.Tensor] = []
    handle = readout.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[-1].detach()


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear CKA of two representations of the same ``N`` inputs, in [0, 1].

    ``CKA = ||B_c^T A_c||_F^2 / (||A_c^T A_c||_F ||B_c^T B_c||_F)`` with column-centred
    ``A_c``, ``B_c`` (Kornblith et al. 2019, "Similarity of neural network representations
    revisited", eq. 5 with a linear kernel). Invariant to orthogonal transforms and isotropic
    scaling of either representation; 1 for identical ones. Computed in float64.

    Args:
        a: ``(N, P)`` features.
        b: ``(N, Q)`` features of the same inputs.

    Raises:
        ValueError: On a different number of rows, fewer than 2 rows, or a constant
            representation (CKA is undefined).

    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise ValueError(f"need two (N >= 2, features) matrices with the same N, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    a = a.double() - a.double().mean(0)
    b = b.double() - b.double().mean(0)
    if a.shape[0] < min(a.shape[1], b.shape[1]):
        # fewer inputs than features: the same sums through the (N, N) Gram matrices,
        # ||B^T A||_F^2 = tr(A A^T B B^T) and ||A^T A||_F = ||A A^T||_F (O(N^2 P), not O(N P^2))
        ka, kb = a @ a.T, b @ b.T
        aa, bb, ab = torch.linalg.norm(ka), torch.linalg.norm(kb), (ka * kb).sum()
    else:
        aa, bb = torch.linalg.norm(a.T @ a), torch.linalg.norm(b.T @ b)
        ab = torch.linalg.norm(b.T @ a) ** 2
    if aa == 0 or bb == 0:
        raise ValueError("a representation is constant over the inputs; CKA is undefined")
    return float(ab / (aa * bb))


def readout_covariance(model: nn.Module, x: torch.Tensor, spec) -> torch.Tensor:
    """``Cov[f(x), f(x') | hidden features]``, the read-out layer integrated out exactly.

    The read-out computes ``f = m_w w . phi(x) + m_b b`` with ``w``, ``b`` independent centred
    Gaussians of standard deviations ``s_w``, ``s_b`` and independent of the hidden features
    ``phi``; given ``phi``, ``f`` is exactly Gaussian with covariance
    ``(m_w s_w)^2 phi(x) . phi(x') + (m_b s_b)^2`` (``(sigma_w^2 / n) phi . phi' + sigma_b^2``
    under ``"ntk"`` and ``"standard"``; the first term over ``n^2`` under ``"mup"``). Its
    expectation over the hidden layers is the NNGP kernel at that width, and its fluctuation is
    what keeps a finite-width output from being the NNGP's Gaussian (Lee et al. 2018,
    "Deep neural networks as Gaussian processes", Sec. 2; Matthews et al. 2018).

    Args:
        model: A network from ``spec.with_width(n).build(...)``.
        x: Inputs ``(N, *input_shape)``.
        spec: Its :class:`ntkcheck.arch.ArchSpec` (for ``weight_std``/``bias_std``).

    Returns:
        ``(N, N)`` float64 covariance of each output unit.

    Raises:
        ValueError: If the model has no single read-out layer.
        ntkcheck.family.NotApplicable: For a user's ModelFamily network.

    """
    if family_of(model) is not None:
        raise NotApplicable("the read-out covariance needs the read-out's initialization "
                            "distribution, which ntkcheck knows for its own networks only")
    readout = _readout(model)
    phi = hidden_features(model, x).double()
    wm, bm, ws, bs = _multipliers(spec.parametrization, "readout", readout.in_features,
                                  spec.weight_std, spec.bias_std)
    cov = (wm * ws) ** 2 * (phi @ phi.T)
    if readout.bias is not None:
        cov = cov + (bm * bs) ** 2
    return cov


def lr_weighted_ntk(model: nn.Module, x: torch.Tensor, groups: list[dict],
                    lr: float) -> torch.Tensor:
    """``sum_p (lr_p / lr) J_p(X) J_p(X)^T``: the NTK seen by GD with per-parameter rates.

    Gradient descent with learning rate ``lr_p`` on parameter ``p`` moves the outputs by
    ``-(lr / N) Theta_lr (f - y)`` per step with this kernel (the module docstring of
    :mod:`ntkcheck.training.loops`), so ``N / lambda_max(Theta_lr)`` is the natural base rate. It is
    computed exactly by :func:`ntkcheck.kernels.empirical_ntk` on a copy of the network in
    which each parameter ``p`` is divided by ``sqrt(lr_p / lr)`` and its layer multiplier
    multiplied by the same factor (same function, Jacobian scaled by ``sqrt(lr_p / lr)``).

    Args:
        model: A network from :meth:`ntkcheck.arch.ArchSpec.build` (Dense/Conv layers only).
        x: Inputs ``(N, *input_shape)``.
        groups: Parameter groups as :func:`ntkcheck.arch.param_groups` returns them.
        lr: The base learning rate the groups were built with.

    Returns:
        ``(N, N)`` kernel (trace over outputs), the model's dtype.

    Raises:
        ValueError: If a group's parameter is not a Dense/Conv weight or bias of ``model``.

    """
    from ntkcheck.kernels import empirical_ntk

    if family_of(model) is not None:  # a user's network: only one rate for all is known
        if any(g["lr"] != lr for g in groups):
            raise NotApplicable("per-parameter learning rates on a user's network")
        return empirical_ntk(model, x)
    scale = {id(g["params"][0]): g["lr"] / lr for g in groups}
    twin = copy.deepcopy(model)
    for orig, mod in zip(model.modules(), twin.modules()):
        if isinstance(orig, (Dense, Conv)):
            factors = []
            for attr in ("weight", "bias"):
                p = getattr(orig, attr)
                if p is None:
                    factors.append(1.0)
                    continue
                if id(p) not in scale:
                    raise ValueError(f"no learning rate given for a {attr} of {orig!r}")
                s = scale.pop(id(p)) ** 0.5
                factors.append(s)
                with torch.no_grad():
                    getattr(mod, attr).div_(s)
            mod.set_multipliers(orig.weight_multiplier * factors[0],
                                orig.bias_multiplier * factors[1])
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    if set(scale) - frozen:
        raise ValueError("groups name parameters outside the model's Dense/Conv layers")
    return empirical_ntk(twin, x)
