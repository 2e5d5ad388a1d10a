"""Neural contextual bandits from classification data, and NeuralUCB-style agents.

The bandit (Riquelme, Tucker & Snoek 2018, "Deep Bayesian bandits showdown", their
classification-to-bandit construction): each round shows one example of a classification data
set; there is one arm per class and pulling the arm of the example's class pays 1, any other
arm 0. The best arm always pays 1, so the regret of a round is ``1 - reward`` and the
cumulative regret is the number of wrong arms pulled. Examples are shown once each, in a
seeded random order (:meth:`ClassificationBandit.from_dataset`).

The agent (NeuralUCB; Zhou, Li & Gu 2020, "Neural contextual bandits with UCB-based
exploration", Algorithm 1). Arm ``a`` of context ``x`` is the disjoint encoding ``x_a = e_a
(x) x`` (their experiments; :meth:`ClassificationBandit.arm_contexts`), scored by one network
``f`` with one output. After ``t`` rounds with played arm contexts ``X_t`` and rewards
``r_t``, NeuralUCB pulls the arm maximizing::

    U(x_a) = f(x_a; theta_t) + gamma_t sqrt(g(x_a)^T Z_t^-1 g(x_a)),
    Z_t = lambda I + sum_i g_i g_i^T

with ``theta_t`` the minimizer of ``sum_i (f(x_i) - r_i)^2 / 2 + lambda / 2 ||theta - theta_0||^2``
and ``g`` the gradient of ``f`` (NTK parametrization: Zhou et al.'s ``1/m`` factors are
absorbed in the parameters). Here the network is centred (``f(., theta_0) = 0``,
:class:`ntkcheck.uncertainty.laplace.CenteredNetwork`) and taken in its kernel regime, the setting
of
NeuralUCB's analysis (their Lemmas 5.1-5.3): ``f`` is its linearization at ``theta_0`` trained
to convergence, so with the empirical NTK ``K = Theta_0`` of the width-``m`` network (Woodbury)::

    f(x_a; theta_t) = K(x_a, X_t) (K(X_t, X_t) + lambda I)^-1 r_t
    g^T Z_t^-1 g    = (K(x_a, x_a) - K(x_a, X_t) (K(X_t, X_t) + lambda I)^-1 K(X_t, x_a))
                      / lambda

(:func:`neural_ucb`). The two agents differ only in ``(lambda, gamma_t)``:

* :class:`TheoryExploration`: ``lambda = 1`` and Zhou et al.'s Theorem 4.5 confidence radius
  without its terms that vanish as ``m -> infinity``:
  ``gamma_t = nu sqrt(log det(I + K(X_t, X_t) / lambda) - 2 log delta) + sqrt(lambda) S`` with
  ``S = sqrt(2 h^T H^-1 h)`` (the RKHS-norm bound their theorem requires), ``H`` the analytic
  NTK Gram matrix of all arm contexts of all rounds and ``h`` their rewards
  (:func:`rkhs_norm_bound`), ``nu = 1/2`` (rewards in ``[0, 1]``), ``delta = 0.05``.
  Dropping the vanishing terms makes ``gamma_t`` smaller than the theorem's (less
  exploration).
* :class:`EvidenceExploration`: the linearized network as Bayesian linear regression (prior
  ``theta - theta_0 ~ N(0, s_p^2 I)``, noise ``s^2``), whose posterior is the GP with kernel
  ``s_p^2 K``; ``(s_p^2, s^2)`` maximize the log marginal likelihood of the rewards seen so far
  (Rasmussen & Williams 2006, eq. 2.30), re-tuned every few rounds; then ``lambda = s^2 /
  s_p^2`` and ``gamma = beta s`` (``beta = 1``), i.e. the UCB is the posterior mean plus one
  posterior standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.linalg
import scipy.optimize
import threadpoolctl
import torch

from ntkcheck.data import Dataset

__all__ = ["BanditRun", "ClassificationBandit", "EvidenceExploration", "Exploration",
           "ExplorationComparison", "TheoryExploration", "compare_exploration",
           "evidence_hyperparameters", "neural_ucb", "rkhs_norm_bound"]


class Exploration(Protocol):
    """Gives NeuralUCB's ``(lambda, gamma_t)`` from the data seen before round ``t``."""

    name: str

    def parameters(self, kernel_played: np.ndarray, rewards_played: np.ndarray
                   ) -> tuple[float, float]:
        """``(lambda, gamma_t)`` from the ``(t, t)`` kernel and ``(t,)`` rewards so far."""
        ...


@dataclass(frozen=True)
class ClassificationBandit:
    """A classification data set as a contextual bandit (one arm per class).

    Attributes:
        name: Data set name.
        contexts: ``(T, d)`` float contexts in play order (flattened inputs).
        labels: ``(T,)`` int64 classes: the paying arm of each round.
        n_arms: Number of arms ``K`` (classes).

    """

    name: str
    contexts: torch.Tensor
    labels: torch.Tensor
    n_arms: int

    @classmethod
    def from_dataset(cls, data: Dataset, rounds: int, seed: int = 0) -> ClassificationBandit:
        """The first ``rounds`` examples of a seeded random order of ``data``.

        Args:
            data: A classification :class:`~ntkcheck.data.Dataset`.
            rounds: Number of rounds ``T`` (each example is shown at most once).
            seed: Seed of the order.

        Raises:
            ValueError: For a regression data set or ``rounds`` outside ``1..len(data)``.

        """
        if data.task != "classification":
            raise ValueError(f"{data.name} is a regression data set; a bandit needs classes")
        if not 1 <= rounds <= len(data):
            raise ValueError(f"{data.name} has {len(data)} examples; rounds={rounds} must lie "
                             "in 1..len(data) (each example is shown once)")
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        idx = order[:rounds].to(data.x.device)
        return cls(data.name, data.x[idx].reshape(rounds, -1), data.y[idx], data.n_classes)

    @property
    def rounds(self) -> int:
        """Number of rounds ``T``."""
        return int(self.contexts.shape[0])

    def arm_contexts(self) -> torch.Tensor:
        """Disjoint encodings of every arm of every round, ``(T * K, K * d)``, round-major.

        Row ``t * K + a`` is ``e_a (x) x_t``: ``x_t`` in block ``a``, zeros elsewhere (Zhou et
        al. 2020, experiments).
        """
        t, d = self.contexts.shape
        k = self.n_arms
        out = torch.zeros(t, k, k, d, dtype=self.contexts.dtype, device=self.contexts.device)
        idx = torch.arange(k, device=self.contexts.device)
        out[:, idx, idx, :] = self.contexts[:, None, :]
        return out.reshape(t * k, k * d)

    def rewards(self) -> torch.Tensor:
        """``(T, K)`` rewards: 1 for the label's arm, 0 otherwise (float64)."""
        return torch.nn.functional.one_hot(self.labels.cpu(), self.n_arms).to(torch.float64)


def rkhs_norm_bound(kernel: torch.Tensor | np.ndarray, rewards: torch.Tensor | np.ndarray
                    ) -> float:
    """``S = sqrt(2 h^T H^-1 h)``: Zhou et al. 2020, Theorem 4.5's bound on the reward's norm.

    ``H^-1`` is the pseudo-inverse over the eigenvalues above ``eps * lambda_max * n`` (the
    theorem assumes ``H`` positive definite; the cut keeps float64 rounding out).

    Args:
        kernel: ``H``, the ``(n, n)`` NTK Gram matrix of every arm context of every round.
        rewards: ``h``, the ``n`` rewards of those contexts (any shape with ``n`` entries).

    Returns:
        ``S >= 0``.

    Raises:
        ValueError: On mismatched sizes.

    """
    h_mat = np.asarray(torch.as_tensor(kernel).detach().cpu(), dtype=np.float64)
    h = np.asarray(torch.as_tensor(rewards).detach().cpu(), dtype=np.float64).reshape(-1)
    if h_mat.shape != (len(h), len(h)):
        raise ValueError(f"kernel {h_mat.shape} does not match {len(h)} rewards")
    lam, vec = scipy.linalg.eigh((h_mat + h_mat.T) / 2)
    keep = lam > np.finfo(np.float64).eps * max(lam[-1], 0.0) * len(h)
    proj = vec[:, keep].T @ h
    return float(math.sqrt(2.0 * np.sum(proj**2 / lam[keep])))


@dataclass
class TheoryExploration:
    """NeuralUCB's exploration from NTK theory (module docstring).

    Attributes:
        norm_bound: ``S`` (:func:`rkhs_norm_bound` with the analytic NTK).
        nu: Sub-Gaussian parameter of the reward noise (1/2: rewards in ``[0, 1]``).
        delta: Failure probability of the confidence bound.
        lam: Regularization ``lambda`` (Zhou et al. need ``lambda >= max(1, S^-2)``).

    """

    norm_bound: float
    nu: float = 0.5
    delta: float = 0.05
    lam: float = 1.0
    name: str = "theory"

    def parameters(self, kernel_played: np.ndarray, rewards_played: np.ndarray
                   ) -> tuple[float, float]:
        """``(lambda, gamma_t)`` given the kernel ``(t, t)`` and rewards ``(t,)`` seen so far."""
        t = len(rewards_played)
        logdet = 0.0
        if t:
            sign, logdet = np.linalg.slogdet(np.eye(t) + kernel_played / self.lam)
        gamma = (self.nu * math.sqrt(max(logdet - 2.0 * math.log(self.delta), 0.0))
                 + math.sqrt(self.lam) * self.norm_bound)
        return self.lam, gamma


def evidence_hyperparameters(kernel: np.ndarray, rewards: np.ndarray,
                             start: tuple[float, float] = (1.0, 1.0),
                             bounds: tuple[float, float] = (1e-6, 1e6)) -> tuple[float, float]:
    """``(s_p^2, s^2)`` maximizing ``log N(r | 0, s_p^2 K + s^2 I)`` (R&W 2006, eq. 2.30).

    With ``K = V diag(l) V^T`` the negative log evidence is
    ``1/2 sum_i [(v_i^T r)^2 / (s_p^2 l_i + s^2) + log(s_p^2 l_i + s^2)]`` (+ const), minimized
    over the logarithms by SciPy's L-BFGS-B with its analytic gradient.

    Args:
        kernel: ``(t, t)`` kernel of the played contexts.
        rewards: ``(t,)`` rewards.
        start: Initial ``(s_p^2, s^2)``.
        bounds: Bounds of each variance.

    Returns:
        ``(prior variance s_p^2, noise variance s^2)``.

    """
    lam, vec = scipy.linalg.eigh((kernel + kernel.T) / 2)
    lam = np.maximum(lam, 0.0)
    proj2 = (vec.T @ rewards) ** 2

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        sp, sn = math.exp(z[0]), math.exp(z[1])
        c = sp * lam + sn
        value = 0.5 * float(np.sum(proj2 / c + np.log(c)))
        dc = 0.5 * (1.0 / c - proj2 / c**2)  # d value / d c
        return value, np.array([float(np.sum(dc * lam)) * sp, float(np.sum(dc)) * sn])

    lb = [(math.log(bounds[0]), math.log(bounds[1]))] * 2
    res = scipy.optimize.minimize(objective, np.log(np.asarray(start, dtype=np.float64)),
                                  jac=True, method="L-BFGS-B", bounds=lb)
    return float(math.exp(res.x[0])), float(math.exp(res.x[1]))


@dataclass
class EvidenceExploration:
    """NeuralUCB's exploration tuned online by the marginal likelihood (module docstring).

    Attributes:
        beta: Posterior standard deviations added to the mean.
        tune_every: Re-tune the hyperparameters every this many rounds.
        start_after: First tuning once this many rewards are seen (before: ``s_p = s = 1``).

    """

    beta: float = 1.0
    tune_every: int = 10
    start_after: int = 5
    name: str = "evidence"
    prior_var: float = field(default=1.0, init=False)
    noise_var: float = field(default=1.0, init=False)

    def parameters(self, kernel_played: np.ndarray, rewards_played: np.ndarray
                   ) -> tuple[float, float]:
        """``(lambda, gamma)`` given the kernel ``(t, t)`` and rewards ``(t,)`` seen so far."""
        t = len(rewards_played)
        if t >= self.start_after and (t - self.start_after) % self.tune_every == 0:
            self.prior_var, self.noise_var = evidence_hyperparameters(
                kernel_played, rewards_played, start=(self.prior_var, self.noise_var))
        return self.noise_var / self.prior_var, self.beta * math.sqrt(self.noise_var)


@dataclass(frozen=True)
class BanditRun:
    """One agent's run.

    Attributes:
        arms: ``(T,)`` arms pulled.
        rewards: ``(T,)`` rewards received.
        gammas: ``(T,)`` exploration parameter ``gamma_t`` used at each round.
        lams: ``(T,)`` regularization ``lambda`` used at each round.

    """

    arms: np.ndarray
    rewards: np.ndarray
    gammas: np.ndarray
    lams: np.ndarray

    @property
    def regret(self) -> float:
        """Cumulative regret ``sum_t (1 - r_t)`` (the best arm always pays 1)."""
        return float(np.sum(1.0 - self.rewards))


def neural_ucb(kernel: torch.Tensor | np.ndarray, rewards: torch.Tensor | np.ndarray,
               exploration: Exploration) -> BanditRun:
    """Run NeuralUCB in its kernel regime (module docstring) for ``T`` rounds.

    Args:
        kernel: ``(T*K, T*K)`` empirical NTK of the centred network at initialization over
            every arm context, round-major (:meth:`ClassificationBandit.arm_contexts`).
        rewards: ``(T, K)`` rewards of every arm of every round.
        exploration: Gives ``(lambda, gamma_t)`` each round from the data seen so far.

    Returns:
        A :class:`BanditRun`. Ties between arms go to the lowest arm index.

    Raises:
        ValueError: On mismatched shapes.

    """
    g = np.asarray(torch.as_tensor(kernel).detach().cpu(), dtype=np.float64)
    r_all = np.asarray(torch.as_tensor(rewards).detach().cpu(), dtype=np.float64)
    t_rounds, k = r_all.shape
    if g.shape != (t_rounds * k, t_rounds * k):
        raise ValueError(f"kernel {g.shape} does not match {t_rounds} rounds of {k} arms")
    g = (g + g.T) / 2
    with threadpoolctl.threadpool_limits(1):  # small matrices: BLAS threads only cost here
        return _run(g, r_all, exploration)


def _run(g: np.ndarray, r_all: np.ndarray,
         exploration: Exploration) -> BanditRun:
    t_rounds, k = r_all.shape
    played: list[int] = []
    arms, got, gammas, lams = (np.zeros(t_rounds, dtype=np.int64), np.zeros(t_rounds),
                               np.zeros(t_rounds), np.zeros(t_rounds))
    for t in range(t_rounds):
        cand = t * k + np.arange(k)
        r_played = got[:t]
        k_pp = g[np.ix_(played, played)]
        lam, gamma = exploration.parameters(k_pp, r_played)
        prior = g[cand, cand]
        if t:
            chol = scipy.linalg.cho_factor(k_pp + lam * np.eye(t), lower=True)
            k_pc = g[np.ix_(played, cand)]
            mean = k_pc.T @ scipy.linalg.cho_solve(chol, r_played)
            half = scipy.linalg.solve_triangular(chol[0], k_pc, lower=True)
            var = (prior - np.sum(half**2, axis=0)) / lam
        else:
            mean, var = np.zeros(k), prior / lam
        ucb = mean + gamma * np.sqrt(np.maximum(var, 0.0))
        a = int(np.argmax(ucb))
        arms[t], got[t], gammas[t], lams[t] = a, r_all[t, a], gamma, lam
        played.append(int(cand[a]))
    return BanditRun(arms, got, gammas, lams)


@dataclass(frozen=True)
class ExplorationComparison:
    """Regret of the two agents on one bandit with one network.

    Attributes:
        theory: The run with the NTK-theory exploration.
        evidence: The run with the evidence-tuned exploration.
        norm_bound: ``S`` used by the theory agent.

    """

    theory: BanditRun
    evidence: BanditRun
    norm_bound: float

    @property
    def regret_ratio(self) -> float:
        """``regret(theory) / max(regret(evidence), 1)`` (> 1: theory explores worse)."""
        return self.theory.regret / max(self.evidence.regret, 1.0)


def compare_exploration(
    spec,
    bandit: ClassificationBandit,
    *,
    width: int,
    seed: int,
    norm_bound: float | None = None,
    theory: Callable[[float], Exploration] | None = None,
    device: str | torch.device = "cpu",
) -> ExplorationComparison:
    """Run both agents on ``bandit`` with the centred width-``width`` network of ``spec``.

    Args:
        spec: An NTK-parametrized :class:`~ntkcheck.arch.ArchSpec` with an analytic NTK
            (an MLP; arm contexts are vectors).
        bandit: The bandit.
        width: Hidden width ``m``.
        seed: Initialization seed of the network.
        norm_bound: ``S``; computed from the analytic NTK of every arm context when None
            (:func:`rkhs_norm_bound`; it does not depend on the width or seed).
        theory: Builds the first agent's exploration from ``S``; :class:`TheoryExploration`
            by default (tests pass other agents as controls).
        device: Device of the network and kernels.

    Returns:
        An :class:`ExplorationComparison`.

    """
    from ntkcheck.kernels import analytic_kernels, empirical_ntk
    from ntkcheck.uncertainty.laplace import CenteredNetwork

    contexts = bandit.arm_contexts().to(device)
    rewards = bandit.rewards()
    if norm_bound is None:
        norm_bound = rkhs_norm_bound(analytic_kernels(spec, contexts).ntk, rewards)
    net = spec.with_width(width).build(seed=seed, input_shape=(contexts.shape[1],),
                                       device=device, dtype=contexts.dtype)
    kernel = empirical_ntk(CenteredNetwork(net).eval(), contexts)
    first = (theory or TheoryExploration)(norm_bound)
    return ExplorationComparison(neural_ucb(kernel, rewards, first),
                                 neural_ucb(kernel, rewards, EvidenceExploration()),
                                 float(norm_bound))
