"""Theory and practical settings of a claim, and the tests a claim is made of.

A claim (one ``id``) may be measured by several tests: its theory setting (the assumptions
the prediction is proven under: NTK parametrization, full-batch GD, ...) and *practical*
settings where the theory need not hold (standard parametrization, Adam, mini-batch SGD,
muP). The claim marker's ``setting`` key says which (``"theory"``, the default, or
``"practical"``); every record carries it in its ``setting`` column (records written before
the column existed count as theory).

A claim's status comes from its theory tests (from all its tests when it has no theory
test); the practical tests' result is reported beside it (``practical_outcome``), so a claim
whose theory setting holds does not read "failed" because a practical setting, where theory
need not hold, fails. Each test keeps its own pytest outcome.

A run's ``claims.json`` entry holds the claim's metadata, the claim-level ``outcome``,
``practical_outcome``, ``nodeid`` (its first failing theory test, else its first theory
test), ``duration_s`` (summed over its tests), ``longrepr`` and ``shrunk_spec`` (of the test
``nodeid`` names), and ``tests``: one entry per test (:data:`TEST_FIELDS`). Entries written
before ``tests`` existed are read as one theory test (:func:`claim_tests`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported where it is used: the plugin imports this module
    import pandas as pd

__all__ = ["THEORY", "PRACTICAL", "SETTINGS", "OUTCOME_RANK", "TEST_FIELDS", "claim_tests",
           "summarize_claim", "arch_settings", "record_settings", "worst_outcome",
           "shrunk_label", "run_counts", "headline"]

THEORY = "theory"
PRACTICAL = "practical"
#: Values of the claim marker's ``setting`` key and of the records' ``setting`` column.
SETTINGS = (THEORY, PRACTICAL)
#: Outcomes from best to worst: a claim's outcome is the worst of its tests'.
OUTCOME_RANK = {"passed": 0, "skipped": 1, "failed": 2, "interrupted": 3, "error": 4}
#: Fields of one test in a ``claims.json`` entry's ``tests`` list.
TEST_FIELDS = ("nodeid", "setting", "outcome", "duration_s", "longrepr", "shrunk_spec",
               "shrunk_kind")
#: How the report words a failing architecture Hypothesis reported, by ``shrunk_kind``.
SHRUNK_LABELS = {
    "shrunk": "Smallest failing architecture found by Hypothesis (shrunk)",
    "pinned": "Failing pinned example (@example; Hypothesis shrinks nothing)",
    "drawn": "Failing drawn architecture (this profile does not shrink)",
}


def shrunk_label(kind: Any) -> str:
    """Words for a ``shrunk_kind`` (old runs, without one: "Failing architecture ...")."""
    return SHRUNK_LABELS.get(str(kind), "Failing architecture reported by Hypothesis")


def worst_outcome(outcomes: list[str]) -> str | None:
    """The worst of ``outcomes`` (:data:`OUTCOME_RANK`), None for none."""
    if not outcomes:
        return None
    return max(outcomes, key=lambda o: OUTCOME_RANK.get(o, 0))


def _setting(value: Any) -> str:
    return PRACTICAL if str(value) == PRACTICAL else THEORY


def claim_tests(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tests of a ``claims.json`` entry, each with every :data:`TEST_FIELDS` key.

    An entry written before ``tests`` existed gives one theory test from its ``nodeid``,
    ``outcome``, ``duration_s``, ``longrepr`` and ``shrunk_spec`` (kind unknown: None).
    """
    tests = entry.get("tests")
    if isinstance(tests, Mapping):
        tests = list(tests.values())
    if not tests:
        if not entry.get("nodeid") and not entry.get("outcome"):
            return []
        tests = [{"nodeid": entry.get("nodeid"), "setting": entry.get("setting"),
                  "outcome": entry.get("outcome"), "duration_s": entry.get("duration_s"),
                  "longrepr": entry.get("longrepr"), "shrunk_spec": entry.get("shrunk_spec"),
                  "shrunk_kind": None}]
    out = []
    for t in tests:
        t = dict(t)
        t["setting"] = _setting(t.get("setting"))
        for key in TEST_FIELDS:
            t.setdefault(key, None)
        out.append(t)
    return out


def summarize_claim(entry: dict[str, Any]) -> dict[str, Any]:
    """Set an entry's claim-level fields from its ``tests`` (in place); return the entry.

    ``outcome``: the worst outcome of the theory tests (of all tests when there is no theory
    test; ``has_theory`` is then False and the headline counts the claim under its practical
    setting only); ``practical_outcome``: the worst of the practical tests' (None without any);
    ``nodeid``, ``longrepr``, ``shrunk_spec``: of the first theory test with the claim's
    outcome; ``duration_s``: the sum over tests.
    """
    tests = claim_tests(entry)
    if not tests:
        return entry
    has_theory = any(t["setting"] == THEORY for t in tests)
    theory = [t for t in tests if t["setting"] == THEORY] or tests
    practical = [t for t in tests if t["setting"] == PRACTICAL]
    outcome = worst_outcome([str(t.get("outcome") or "passed") for t in theory])
    named = next(t for t in theory if str(t.get("outcome") or "passed") == outcome)
    entry["tests"] = tests
    entry["outcome"] = outcome
    entry["has_theory"] = has_theory
    entry["practical_outcome"] = worst_outcome(
        [str(t.get("outcome") or "passed") for t in practical])
    entry["nodeid"] = named.get("nodeid")
    entry["longrepr"] = named.get("longrepr") if outcome not in ("passed", "skipped") else None
    entry["shrunk_spec"] = named.get("shrunk_spec") if named.get("shrunk_kind") == "shrunk" \
        else None
    entry["duration_s"] = float(sum(float(t.get("duration_s") or 0.0) for t in tests))
    return entry


def record_settings(records: pd.DataFrame) -> pd.Series:
    """The setting of each record (``"theory"`` where the column is missing or empty)."""
    import pandas as pd

    if "setting" not in records.columns:
        return pd.Series(THEORY, index=records.index, dtype=object)
    return records["setting"].map(_setting)


def arch_settings(records: pd.DataFrame) -> dict[tuple[str, str], str]:
    """The setting of each (claim, architecture) of ``records``.

    ``"practical"`` or ``"theory"``: a practical test's records carry their own architecture
    id (``<arch_id>-practical``, :class:`ntkcheck.plugin.recorder.Recorder`), so every (claim,
    architecture) has one setting.
    """
    if not len(records):
        return {}
    frame = records[["claim_id", "arch_id"]].astype(str).assign(_s=record_settings(records))
    out = {}
    for (cid, aid), s in frame.groupby(["claim_id", "arch_id"], sort=False)["_s"]:
        out[(cid, aid)] = PRACTICAL if (s == PRACTICAL).any() else THEORY
    return out


def run_counts(claims: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Counts for a run's headline: claims by status, practical settings, tests by outcome.

    Returns:
        ``claims`` (how many have a theory test), ``claim_outcomes`` (claim-level outcome -> count),
        ``practical_claims`` (claims with a practical test), ``practical_outcomes``
        (their practical outcome -> count), ``tests``, ``test_outcomes`` (outcome -> count)
        and ``practical_tests_failed`` (practical tests that failed or errored).
    """
    from collections import Counter

    entries = [summarize_claim(dict(c)) for c in claims.values()]
    tests = [t for c in entries for t in claim_tests(c)]
    practical = [c for c in entries if c.get("practical_outcome")]
    theory = [c for c in entries if c.get("has_theory", True)]  # practical-only: not counted
    return {
        "claims": len(theory),
        "claim_outcomes": Counter(str(c.get("outcome") or "unknown") for c in theory),
        "practical_claims": len(practical),
        "practical_outcomes": Counter(str(c["practical_outcome"]) for c in practical),
        "tests": len(tests),
        "test_outcomes": Counter(str(t.get("outcome") or "unknown") for t in tests),
        "practical_tests_failed": sum(t["setting"] == PRACTICAL
                                      and t.get("outcome") in ("failed", "error")
                                      for t in tests),
    }


def _counted(counts: Mapping[str, int]) -> str:
    order = sorted(counts, key=lambda o: (OUTCOME_RANK.get(o, 9), o))
    return ", ".join(f"{counts[o]} {o}" for o in order if counts[o]) or "none"


def headline(claims: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: claims (status from their theory setting), practical settings, tests.

    E.g. ``22 claims (theory setting): 17 passed, 5 failed; practical setting of 5 claims:
    4 failed, 1 passed; 43 tests: 31 passed, 12 failed (4 of them in a practical
    setting)``.
    """
    n = run_counts(claims)
    text = (f"{n['claims']} claim{'' if n['claims'] == 1 else 's'} (theory setting): "
            f"{_counted(n['claim_outcomes'])}")
    if n["practical_claims"]:
        text += (f"; practical setting of {n['practical_claims']} claim"
                 f"{'' if n['practical_claims'] == 1 else 's'}: "
                 f"{_counted(n['practical_outcomes'])}")
    text += f"; {n['tests']} test{'' if n['tests'] == 1 else 's'}: {_counted(n['test_outcomes'])}"
    if n["practical_tests_failed"]:
        text += f" ({n['practical_tests_failed']} of them in a practical setting)"
    return text
