"""The plugin stays out of the way of a test suite that runs no claim (issue 14, point 3).

A project that installs ntkcheck gets its plugin through the ``pytest11`` entry point in every
pytest run. Without a claim, the run must not import torch, pandas or pandera, change torch's
or BLAS's thread counts, replace the SIGTERM handler, or create a report folder. With a claim
(the control) the same probes must show the plugin at work, so the probes can fail.
"""

import json

import pytest

PROBE = '''
import json, os, signal, sys

HEAVY = ("torch", "pandas", "pandera", "threadpoolctl")


def probe():
    state = {"heavy": sorted(m for m in HEAVY if m in sys.modules),
             "sigterm_default": signal.getsignal(signal.SIGTERM) is signal.SIG_DFL}
    if "torch" in sys.modules:
        state["torch_threads"] = sys.modules["torch"].get_num_threads()
    return state


def pytest_sessionfinish(session):
    where = getattr(session.config, "workerinput", {}).get("workerid", "controller")
    with open(f"probe-{where}.json", "w") as fh:
        json.dump(probe(), fh)
'''

PLAIN = '''
import conftest


def test_plain():
    with open("probe-test.json", "w") as fh:
        import json
        json.dump(conftest.probe(), fh)
'''

CLAIM = '''
import json

import conftest
import pytest


@pytest.mark.claim(id="side-effects", statement="s", source="t", metric="m", tolerance=1.0)
def test_claim(ntk_sweep, ntk_measure):
    from ntkcheck import ArchSpec

    with open("probe-test.json", "w") as fh:
        json.dump(conftest.probe(), fh)
    for width, seed in ntk_sweep:
        ntk_measure(ArchSpec(depth=1), width=width, seed=seed, value=0.5)
'''


def _probes(pytester):
    return {p.stem.removeprefix("probe-"): json.loads(p.read_text())
            for p in pytester.path.glob("probe-*.json")}


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_suite_without_claims_sees_no_side_effect(pytester, workers):
    pytester.makeconftest(PROBE)
    pytester.makepyfile(test_plain=PLAIN)
    result = pytester.runpytest_subprocess("-n", workers, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    probes = _probes(pytester)
    assert "test" in probes and "controller" in probes
    for where, state in probes.items():
        assert state["heavy"] == [], (where, state)
        assert state["sigterm_default"], where
    assert not (pytester.path / "reports").exists()


def test_a_claims_session_does_configure_its_workers(pytester):
    """The control: with a claim, the worker runs torch at one thread and the run is written."""
    pytester.makeconftest(PROBE)
    pytester.makepyfile(test_claim=CLAIM)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "--ntk-widths",
                                           "8,16", "--ntk-seeds", "1", "--ntk-device", "cpu")
    result.assert_outcomes(passed=1)
    test = _probes(pytester)["test"]
    assert "torch" in test["heavy"] and test["torch_threads"] == 1
    assert (pytester.path / "reports" / "latest" / "records.jsonl").is_file()
