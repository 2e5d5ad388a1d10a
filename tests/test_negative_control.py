"""Negative controls: the ntk-at-init claim must be able to fail.

A claim file that compares the empirical NTK with the analytic NTK of a network one layer
deeper than the one measured (a deliberately wrong reference) must fail at every width, and the
report must say so; the same file with the right depth must pass. Real kernels, small widths.
"""

import json

import pytest

CLAIM = '''
import itertools
import pytest
from hypothesis import given, strategies as st
from ntkcheck.arch import ArchSpec
from ntkcheck.kernels import analytic_kernels, empirical_ntk
from ntkcheck.metrics import relative_frobenius_error

@pytest.mark.claim(id="ntk-at-init-{tag}", statement="s", source="Jacot et al. 2018",
                   metric="relative Frobenius error", tolerance=0.1, rate=-0.5)
@given(spec=st.just(ArchSpec(depth=1, activation="relu")))
def test_claim(spec, ntk_widths, ntk_seeds, ntk_measure, ntk_digits):
    wrong = ArchSpec(depth=spec.depth + {offset}, activation=spec.activation)
    reference = analytic_kernels(wrong, ntk_digits.x).ntk
    for width, seed in itertools.product(ntk_widths, ntk_seeds):
        net = spec.with_width(width).build(seed=seed, input_shape=ntk_digits.input_shape)
        ntk_measure(spec, width=width, seed=seed,
                value=relative_frobenius_error(empirical_ntk(net, ntk_digits.x), reference))
'''


@pytest.mark.parametrize(("offset", "passes"), [(1, False), (0, True)])
def test_wrong_analytic_depth_fails_at_every_width(pytester, offset, passes):
    pytester.makepyfile(test_negctl_claim=CLAIM.format(tag=f"off{offset}", offset=offset))
    result = pytester.runpytest("--ntk-profile", "smoke", "--ntk-widths", "256,1024,2048,4096",
                                "--ntk-seeds", "2")
    result.assert_outcomes(passed=int(passes), failed=int(not passes))
    run = pytester.path / "reports" / "latest"
    verdict = [line for line in (run / "width_verdicts.csv").read_text().splitlines()[1:]]
    holds = [line.rsplit(",", 1)[1] for line in verdict]
    assert len(holds) == 4
    if passes:
        assert holds[-1] == "True"
    else:
        assert holds == ["False"] * 4
    html = (run / "report.html").read_text()
    if not passes:
        result.stdout.fnmatch_lines(["*fails at every width up to 4,096*"])
        assert "fails at every width up to 4,096" in html
    records = [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines()]
    assert len(records) == 4 * 2
