"""The fixtures the ntkcheck plugin gives claim tests.

``ntk_profile``, ``ntk_widths``, ``ntk_seeds``, ``ntk_sweep``, ``ntk_device``, ``ntk_digits``
and ``ntk_measure``; see README.md, "Write your own claim". Every name has the ``ntk_`` prefix
so that a project's own fixtures (a ``device`` fixture, say) neither replace nor are replaced
by ntkcheck's.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import pytest

from ntkcheck.plugin.options import (
    _CLAIM,
    _DEADLINE,
    _RECORDER,
    _RUN,
    _SETTINGS,
    _SINK,
    _is_worker,
)
from ntkcheck.plugin.recorder import Recorder
from ntkcheck.plugin.runtime import (
    NtkcheckWarning,
)
from ntkcheck.plugin.sweep import sweep_units
from ntkcheck.profiles import Profile

if TYPE_CHECKING:  # ntkcheck.claim imports pandas and pandera: not at every pytest startup
    pass


@pytest.fixture(scope="session")
def ntk_profile(pytestconfig: pytest.Config) -> Profile:
    """The active :class:`ntkcheck.profiles.Profile`, with command-line overrides applied."""
    return pytestconfig.stash[_SETTINGS].profile


@pytest.fixture(scope="session")
def ntk_widths(ntk_profile: Profile) -> list[int]:
    """Widths to sweep, increasing (``--ntk-widths`` or the profile's)."""
    return list(ntk_profile.widths)


@pytest.fixture(scope="session")
def ntk_seeds(ntk_profile: Profile) -> list[int]:
    """Seed indices ``0..n_seeds-1`` (``--ntk-seeds`` or the profile's)."""
    return list(range(ntk_profile.n_seeds))


@pytest.fixture
def ntk_sweep(request: pytest.FixtureRequest, ntk_widths: list[int], ntk_seeds: list[int]
              ) -> list[tuple[int, int]]:
    """The ``(width, seed)`` pairs this claim measures, narrowest width first.

    Every pair of ``widths`` x ``seeds``, or under ``--ntk-shard K/N`` this shard's share
    (:func:`ntkcheck.plugin.sweep.sweep_units`). Loop over it: ``for width,
     seed in ntk_sweep: ...``.
    """
    claim = request.node.stash.get(_CLAIM, None)
    shard = request.config.stash[_SETTINGS].shard
    return sweep_units(claim.id if claim else request.node.nodeid, ntk_widths, ntk_seeds,
                       shard)


@pytest.fixture(scope="session")
def ntk_device(pytestconfig: pytest.Config):
    """The ``torch.device`` claims run on (``--ntk-device``; under xdist, one GPU per worker)."""
    from ntkcheck.plugin.devices import resolve_device

    worker = getattr(pytestconfig, "workerinput", {}).get("workerid")
    option = pytestconfig.stash[_SETTINGS].device
    try:
        dev = resolve_device(option, worker)
    except (ValueError, RuntimeError) as exc:
        raise pytest.UsageError(str(exc)) from None
    if option.strip().lower() == "auto" and dev.type == "cpu":
        warnings.warn(NtkcheckWarning(
            "--ntk-device auto: no CUDA device is visible, so claims run on the CPU; pass "
            "--ntk-device cpu (or ntk_device = \"cpu\" in the ini file) to silence this"),
            stacklevel=1)
    return dev


@pytest.fixture(scope="session")
def ntk_digits(ntk_profile: Profile, ntk_device):
    """scikit-learn's digits (a seeded subset of ``n_inputs`` images), float64, on ``ntk_device``.

    See :func:`ntkcheck.data.load_dataset` for the preprocessing.
    """
    from ntkcheck.data import load_dataset

    return load_dataset("digits", n=ntk_profile.n_inputs, seed=0, device=ntk_device)


@pytest.fixture
def ntk_measure(request: pytest.FixtureRequest, ntk_device: Any) -> Recorder:
    """Record measurements: ``ntk_measure(spec, width=, seed=, value=, **extra)``.

    Also ``ntk_measure.seed(spec, width=, seed=)`` (derived initialization seed),
    ``with ntk_measure.guard(spec, width=, seed=) as init_seed:`` (a unit whose out-of-memory
    error is recorded as not measured) and ``ntk_measure.not_measured(...)``; see
    :class:`Recorder`.
    """
    claim = request.node.stash.get(_CLAIM, None)
    if claim is None:
        raise pytest.UsageError(
            f"{request.node.nodeid} uses `ntk_measure` but has no @pytest.mark.claim(...) marker"
        )
    config = request.config
    sink = config.stash.get(_SINK, None) if _is_worker(config) else config.stash.get(_RUN, None)
    recorder = Recorder(request.node, claim, config.stash[_SETTINGS], ntk_device, sink=sink,
                        deadline=request.node.stash.get(_DEADLINE, None))
    request.node.stash[_RECORDER] = recorder
    return recorder
