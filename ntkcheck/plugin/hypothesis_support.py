"""How claim tests use Hypothesis: settings from the profile, one verdict per architecture.

The profile sets the number of drawn architectures, derandomization and shrinking; each
example (one architecture swept over every width) gets its own verdict so Hypothesis shrinks a
failing claim to the simplest architecture that still breaks it; Hypothesis' files stay under
the report folder.

An architecture is an :class:`ntkcheck.arch.ArchSpec` or a member of a user's
:class:`ntkcheck.family.ModelFamily`: both are keyed by ``arch_id`` and named by their repr
in the report. A member marked not applicable, or a measurement raising
:class:`ntkcheck.family.NotApplicable`, skips the test with the reason. Under
``--ntk-model`` (:func:`configure_model_option`) the strategies draw that family, and the
claim tests that cannot (they build a built-in architecture themselves) are skipped as not
applicable.
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


def _is_spec(value: object) -> bool:
    """Whether a drawn argument is an architecture: an ArchSpec or a user's ModelFamily."""
    from ntkcheck.arch import ArchSpec
    from ntkcheck.family import ModelFamily

    return isinstance(value, (ArchSpec, ModelFamily))


def _run_applicable(inner: Any, specs: list, args: tuple, kwargs: dict) -> Any:
    """Run one example; a measurement that does not apply to a user family skips the test."""
    from ntkcheck.family import NotApplicable, is_family

    try:
        return inner(*args, **kwargs)
    except NotApplicable as exc:
        names = ", ".join(s.arch_id for s in specs) or "this network"
        pytest.skip(f"not applicable to {names}: {exc}")
    except NotImplementedError as exc:  # e.g. no analytic kernel for a user's network
        if not any(is_family(s) for s in specs):
            raise
        pytest.skip(f"not applicable to {', '.join(s.arch_id for s in specs)}: {exc}")


def _per_example_verdict(inner: Any) -> Any:
    """Wrap a Hypothesis inner test: one verdict per drawn architecture, measured once.

    Each example (one architecture, swept over every width) fails when the claim does not hold
    at the widest width, so Hypothesis shrinks a failing claim to the simplest architecture
    that still breaks it. An architecture drawn twice is not measured again: its first outcome
    is replayed (the measurement is deterministic), which keeps shrinking consistent.
    """
    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # the failure is the claim's message, not this frame
        item = _current_item.get()
        if item is None:
            return inner(*args, **kwargs)
        specs = [v for v in kwargs.values() if _is_spec(v)]
        for spec in specs:
            if getattr(spec, "not_applicable", ""):
                pytest.skip(f"not applicable to {spec.arch_id}: {spec.not_applicable}")
        key = tuple(v.arch_id for v in specs)
        seen = item.stash.setdefault(_SEEN, {})
        result = None
        if key and key not in seen:
            _note_draw(item, key)
        if key and key in seen:
            message = seen[key]
        else:
            n_before = len(item.user_properties)
            result = _run_applicable(inner, specs, args, kwargs)
            new = [r for k, r in item.user_properties[n_before:] if k == RECORD_KEY]
            partial = item.config.stash[_SETTINGS].shard is not None
            message = _verdict_failure(item.stash[_CLAIM], new) if new and not partial else None
            if key:
                seen[key] = message
        if message is not None:
            item.stash[_SHRUNK] = {"spec": ", ".join(repr(s) for s in specs),
                                   "kind": _failure_kind(item, key)}
            # One raise statement for first runs and replays: Hypothesis identifies a failure
            # by its exception type and line, and a replay from another line looks flaky.
            raise ClaimDoesNotHold(message)
        return result

    wrapper._ntkcheck_wrapped = True  # type: ignore[attr-defined]
    return wrapper


#: User property of each architecture a claim test draws, in order:
#: ``{"arch_ids": [record arch ids], "kind": "pinned" | "drawn"}``. Merging the runs of
#: ``--ntk-shard`` uses them to keep what the unsharded run would have drawn
#: (:func:`ntkcheck.runs.store.merge_runs`).
DRAW_KEY = "ntkcheck.draw"


def _note_draw(item: pytest.Item, key: tuple[str, ...]) -> None:
    """Record that the claim test drew the architectures ``key`` (first time only)."""
    setting = getattr(item.stash[_CLAIM], "setting", "theory")
    arch_ids = [a if setting == "theory" else f"{a}-{setting}" for a in key]
    kind = "pinned" if _failure_kind(item, key) == "pinned" else "drawn"
    item.user_properties.append((DRAW_KEY, {"arch_ids": arch_ids, "kind": kind}))


#: The failing architecture of a claim test: ``{"spec": repr, "kind": ...}`` where kind is
#: ``"pinned"`` (an ``@example``: Hypothesis reports it at once and shrinks nothing),
#: ``"shrunk"`` (drawn, and the profile shrinks: the simplest failing one Hypothesis found)
#: or ``"drawn"`` (drawn, and the profile does not shrink).
_SHRUNK = pytest.StashKey[dict]()


def _failure_kind(item: pytest.Item, key: tuple[str, ...]) -> str:
    """Whether the failing architectures ``key`` are a pinned example, shrunk or drawn."""
    obj = getattr(item, "obj", None)
    for ex in getattr(obj, "hypothesis_explicit_examples", ()) or ():
        values = list(getattr(ex, "kwargs", {}).values()) + list(getattr(ex, "args", ()))
        if tuple(v.arch_id for v in values if _is_spec(v)) == key:
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


# --- --ntk-model: the shipped claims on a user's model family -----------------------------------


def configure_model_option(config: pytest.Config, target: str | None) -> None:
    """Load ``--ntk-model package.module:factory`` and point the strategies at its family.

    Nothing happens without the option. With it, the family's Monte-Carlo reference width
    defaults to the run's widest width, :mod:`ntkcheck.strategies` draws its members, and a
    :class:`_ModelOption` plugin marks the claim tests that cannot draw them (tests of a
    built-in architecture they construct themselves) not applicable.

    Raises:
        pytest.UsageError: If the target cannot be loaded (the message says why and how).

    """
    if not target:
        return
    import sys
    from dataclasses import replace

    from ntkcheck.family import load_family, set_active_family

    root = str(config.rootpath)
    if root not in sys.path:  # looked up on sys.path first, then in the rootdir
        sys.path.append(root)
    try:
        family = load_family(target)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if family.reference_width is None:
        family = replace(family, reference_width=max(config.stash[_SETTINGS].profile.widths))
    set_active_family(family)
    config.add_cleanup(lambda: set_active_family(None))
    config.pluginmanager.register(_ModelOption(target, family), "ntkcheck-model")


class _ModelOption:
    """Under ``--ntk-model``: the report header line and the not-applicable tests."""

    def __init__(self, target: str, family: Any) -> None:
        self.target = target
        self.family = family

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        """Say which family the shipped claims run on, and what stands in for the kernel."""
        choices = ", ".join(f"{k} in {list(v)}" for k, v in self.family.choices.items())
        return [f"ntkcheck: --ntk-model {self.target}: family {self.family.name!r} "
                f"({self.family.parametrization}; {choices or 'no choices'}); infinite-width "
                f"reference: {self.family.kernel_reference}"]

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]
                                      ) -> None:
        """Skip claim tests that do not draw an architecture; drop pinned built-in examples."""
        from hypothesis import Phase
        from hypothesis import settings as hsettings

        for item in items:
            if item.get_closest_marker("claim") is None:
                continue
            obj = getattr(item, "obj", None)
            if obj is None or not getattr(obj, "is_hypothesis_test", False):
                item.add_marker(pytest.mark.skip(
                    reason=f"not applicable to --ntk-model {self.family.name}: this test "
                           "measures a built-in architecture it constructs itself"))
                continue
            current = getattr(obj, "_hypothesis_internal_use_settings", None)
            if current is not None and Phase.explicit in current.phases:
                obj._hypothesis_internal_use_settings = hsettings(
                    current, phases=[p for p in current.phases if p != Phase.explicit])
