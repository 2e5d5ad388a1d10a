"""The fixtures the ntkcheck plugin gives claim tests.

``ntk_profile``, ``widths``, ``seeds``, ``sweep``, ``device``, ``digits`` and ``measure``;
see README.md, "Write your own claim".
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
def widths(ntk_profile: Profile) -> list[int]:
    """Widths to sweep, increasing (``--ntk-widths`` or the profile's)."""
    return list(ntk_profile.widths)


@pytest.fixture(scope="session")
def seeds(ntk_profile: Profile) -> list[int]:
    """Seed indices ``0..n_seeds-1`` (``--ntk-seeds`` or the profile's)."""
    return list(range(ntk_profile.n_seeds))


@pytest.fixture
def sweep(request: pytest.FixtureRequest, widths: list[int], seeds: list[int]
          ) -> list[tuple[int, int]]:
    """The ``(width, seed)`` pairs this claim measures, narrowest width first.

    Every pair of ``widths`` x ``seeds``, or under ``--ntk-shard K/N`` this shard's share
    (:func:`ntkcheck.plugin.sweep.sweep_units`). Loop over it: ``for width, seed in sweep: ...``.
    """
    claim = request.node.stash.get(_CLAIM, None)
    shard = request.config.stash[_SETTINGS].shard
    return sweep_units(claim.id if claim else request.node.nodeid, widths, seeds, shard)


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config):
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
def digits(ntk_profile: Profile, device):
    """scikit-learn's digits (a seeded subset of ``n_inputs`` images), float64, on ``device``.

    See :func:`ntkcheck.data.load_dataset` for the preprocessing.
    """
    from ntkcheck.data import load_dataset

    return load_dataset("digits", n=ntk_profile.n_inputs, seed=0, device=device)


@pytest.fixture
def measure(request: pytest.FixtureRequest, device: Any) -> Recorder:
    """Record measurements: ``measure(spec, width=, seed=, value=, **extra)``.

    Also ``measure.seed(spec, width=, seed=)`` (derived initialization seed),
    ``with measure.guard(spec, width=, seed=) as init_seed:`` (a unit whose out-of-memory
    error is recorded as not measured) and ``measure.not_measured(...)``; see
    :class:`Recorder`.
    """
    claim = request.node.stash.get(_CLAIM, None)
    if claim is None:
        raise pytest.UsageError(
            f"{request.node.nodeid} uses `measure` but has no @pytest.mark.claim(...) marker"
        )
    config = request.config
    sink = config.stash.get(_SINK, None) if _is_worker(config) else config.stash.get(_RUN, None)
    recorder = Recorder(request.node, claim, config.stash[_SETTINGS], device, sink=sink,
                        deadline=request.node.stash.get(_DEADLINE, None))
    request.node.stash[_RECORDER] = recorder
    return recorder
