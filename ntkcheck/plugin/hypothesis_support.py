"""How claim tests use Hypothesis: settings from the profile, one verdict per architecture.

The profile sets the number of drawn architectures, derandomization and shrinking; each
example (one architecture swept over every width) gets its own verdict so Hypothesis shrinks a
failing claim to the simplest architecture that still breaks it; Hypothesis' files stay under
the report folder.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ntkcheck.plugin.options import (
    _CLAIM,
    _SETTINGS,
    RECORD_KEY,
)
from ntkcheck.profiles import Profile

if TYPE_CHECKING:  # ntkcheck.claim imports pandas and pandera: not at every pytest startup
    from ntkcheck.claim import Claim


@contextlib.contextmanager
def _hypothesis_storage(config: pytest.Config) -> Iterator[None]:
    """Keep Hypothesis' files (its constants cache) under the report folder during a claim.

    Hypothesis writes ``.hypothesis/`` into the working directory even without an example
    database; during claim tests it goes to ``<report dir>/.hypothesis`` instead, unless
    ``HYPOTHESIS_STORAGE_DIRECTORY`` says where it belongs.
    """
    try:
        from hypothesis import configuration
    except ImportError:  # pragma: no cover - hypothesis is a dependency
        yield
        return
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY") or not hasattr(
            configuration, "set_hypothesis_home_dir"):
        yield
        return
    previous = getattr(configuration, "__hypothesis_home_directory", None)
    base = config.stash[_SETTINGS].report_dir
    root = base if base.is_absolute() else Path(config.rootpath) / base
    configuration.set_hypothesis_home_dir(root / ".hypothesis")
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(previous)


class _HypothesisStorage:
    """Hypothesis collects its constants cache at collection: keep it in the report folder."""

    @pytest.hookimpl(wrapper=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]
                                      ) -> Any:
        """Hook wrapper: Hypothesis' collection hook writes under the report folder."""
        if not any(item.get_closest_marker("claim") for item in items):
            return (yield)
        with _hypothesis_storage(config):
            return (yield)


def _apply_hypothesis_settings(test: Any, profile: Profile, derandomize: bool) -> None:
    from hypothesis import HealthCheck, Phase
    from hypothesis import settings as hsettings

    parent = getattr(test, "_hypothesis_internal_use_settings", None) or hsettings.default
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
    if profile.shrink:
        phases.append(Phase.shrink)
    test._hypothesis_internal_use_settings = hsettings(
        parent,
        max_examples=profile.max_examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                               HealthCheck.differing_executors],
    )
    inner = test.hypothesis.inner_test
    if not getattr(inner, "_ntkcheck_wrapped", False):
        test.hypothesis.inner_test = _per_example_verdict(inner)


_current_item: ContextVar[pytest.Item | None] = ContextVar("ntkcheck_item", default=None)
_SEEN = pytest.StashKey[dict]()


class ClaimDoesNotHold(AssertionError):
    """A drawn or pinned architecture for which the claim does not hold.

    Its message is the verdict; the plugin reports it as that message, without a traceback.
    """


_KIND_WORDS = {"pinned": "pinned @example", "shrunk": "shrunk by Hypothesis",
               "drawn": "drawn by Hypothesis"}


def claim_failure_text(exc: BaseException, failing: dict | None = None) -> str | None:
    """The report text of a claim test that failed with :class:`ClaimDoesNotHold`.

    The verdict message(s) and the failing architecture (``failing``: ``{"spec", "kind"}``
    as the plugin stashes it), for the exception or an exception group made only of them;
    None for any other error, whose traceback matters. Hypothesis' own note is left out: it
    repeats every argument of the test, fixtures and data included.
    """
    group = getattr(exc, "exceptions", None)
    excs = list(group) if group is not None else [exc]
    if not excs or not all(isinstance(e, ClaimDoesNotHold) for e in excs):
        return None
    text = "\n\n".join(dict.fromkeys(str(e) for e in excs))
    if failing and failing.get("spec"):
        kind = _KIND_WORDS.get(str(failing.get("kind")), "failing")
        text += f"\nfailing architecture ({kind}): {failing['spec']}"
    return text


def _per_example_verdict(inner: Any) -> Any:
    """Wrap a Hypothesis inner test: one verdict per drawn architecture, measured once.

    Each example (one architecture, swept over every width) fails when the claim does not hold
    at the widest width, so Hypothesis shrinks a failing claim to the simplest architecture
    that still breaks it. An architecture drawn twice is not measured again: its first outcome
    is replayed (the measurement is deterministic), which keeps shrinking consistent.
    """
    from ntkcheck.arch import ArchSpec

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # the failure is the claim's message, not this frame
        item = _current_item.get()
        if item is None:
            return inner(*args, **kwargs)
        key = tuple(v.arch_id for v in kwargs.values() if isinstance(v, ArchSpec))
        seen = item.stash.setdefault(_SEEN, {})
        result = None
        if key and key in seen:
            message = seen[key]
        else:
            n_before = len(item.user_properties)
            result = inner(*args, **kwargs)
            new = [r for k, r in item.user_properties[n_before:] if k == RECORD_KEY]
            partial = item.config.stash[_SETTINGS].shard is not None
            message = _verdict_failure(item.stash[_CLAIM], new) if new and not partial else None
            if key:
                seen[key] = message
        if message is not None:
            specs = [v for v in kwargs.values() if isinstance(v, ArchSpec)]
            item.stash[_SHRUNK] = {"spec": ", ".join(repr(s) for s in specs),
                                   "kind": _failure_kind(item, key)}
            # One raise statement for first runs and replays: Hypothesis identifies a failure
            # by its exception type and line, and a replay from another line looks flaky.
            raise ClaimDoesNotHold(message)
        return result

    wrapper._ntkcheck_wrapped = True  # type: ignore[attr-defined]
    return wrapper


#: The failing architecture of a claim test: ``{"spec": repr, "kind": ...}`` where kind is
#: ``"pinned"`` (an ``@example``: Hypothesis reports it at once and shrinks nothing),
#: ``"shrunk"`` (drawn, and the profile shrinks: the simplest failing one Hypothesis found)
#: or ``"drawn"`` (drawn, and the profile does not shrink).
_SHRUNK = pytest.StashKey[dict]()


def _failure_kind(item: pytest.Item, key: tuple[str, ...]) -> str:
    """Whether the failing architectures ``key`` are a pinned example, shrunk or drawn."""
    from ntkcheck.arch import ArchSpec

    obj = getattr(item, "obj", None)
    for ex in getattr(obj, "hypothesis_explicit_examples", ()) or ():
        values = list(getattr(ex, "kwargs", {}).values()) + list(getattr(ex, "args", ()))
        if tuple(v.arch_id for v in values if isinstance(v, ArchSpec)) == key:
            return "pinned"
    return "shrunk" if item.config.stash[_SETTINGS].profile.shrink else "drawn"


def _verdict_failure(claim: Claim, records: list[dict[str, Any]]) -> str | None:
    """The failure message of ``records`` for ``claim``, or None when the claim holds."""
    import pandas as pd

    from ntkcheck.verdict import compute_verdicts

    _, per_arch = compute_verdicts(pd.DataFrame(records), {claim.id: claim})
    failing = per_arch[~per_arch["holds_at_widest"].astype(bool)]
    if not len(failing):
        return None
    relation = "<=" if claim.direction == "below" else ">="
    where = (" in its practical setting (where the theory need not hold)"
             if getattr(claim, "setting", "theory") == "practical" else "")
    lines = [f"claim {claim.id!r} does not hold at the widest width{where} "
             f"(needs metric {relation} {claim.tolerance:g}):"]
    lines += [f"  {r.arch_id}: {r.message}" for r in failing.itertuples()]
    return "\n".join(lines)
