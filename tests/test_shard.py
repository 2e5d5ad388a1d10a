"""A sweep split with ``--ntk-shard K/N`` and merged by ``ntkcheck report`` equals one run."""

from __future__ import annotations

import pandas as pd
import pytest

from ntkcheck.cli import main
from ntkcheck.runs.store import RECORD_KEY, load_run

# The metric depends on the architecture, width and seed only, so every unit measures the
# same value wherever it runs. Tolerance 10 holds everywhere: no shrinking, the same draws.
CLAIM = '''
import pytest
from hypothesis import example, given
from ntkcheck import strategies
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="sharded", statement="s", source="test", metric="depth*2/sqrt(width)",
                   tolerance=10.0, rate=-0.5)
@given(spec=strategies.mlps(min_depth=1, max_depth=3))
@example(spec=ArchSpec(depth=1))
def test_sharded(spec, ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure(spec, width=width, seed=seed,
                value=spec.depth * 2 / width ** 0.5 * (1 + 0.01 * seed), extra_note=seed)
'''
ARGS = ["--ntk-profile", "quick", "--ntk-widths", "8,16,32,64,128,256", "--ntk-seeds", "3",
        "-p", "no:cacheprovider"]
IGNORED = ["run_id", "elapsed_s", "nodeid", "seq"]  # seq: order of measurement in a run


def _comparable(records: pd.DataFrame) -> pd.DataFrame:
    out = records.drop(columns=[c for c in IGNORED if c in records.columns])
    out = out.sort_values(list(RECORD_KEY)).reset_index(drop=True)
    return out[sorted(out.columns)].astype(object)


def test_three_shards_merge_into_the_unsharded_run(pytester: pytest.Pytester, capsys) -> None:
    pytester.makepyfile(test_sharded_claim=CLAIM)
    job = pytester.path / "job-42"  # as a Slurm array job would: one report folder per job
    shard_runs = []
    for k in range(3):
        pytester.runpytest(*ARGS, "--ntk-shard", f"{k}/3", "--ntk-report", str(job)
                           ).assert_outcomes(passed=1)
        shard_runs.append((job / "latest").resolve())
    pytester.runpytest(*ARGS).assert_outcomes(passed=1)
    whole = load_run(pytester.path / "reports" / "latest")

    shards = [load_run(p) for p in shard_runs]
    sizes = [len(s.records) for s in shards]
    assert all(sizes) and sum(sizes) == len(whole.records)  # each unit ran exactly once
    assert [s.meta["shard"] for s in shards] == ["0/3", "1/3", "2/3"]

    # The job's folder stands for all its runs (its `latest` link is not merged twice).
    code = main(["report", str(job), "-o", str(pytester.path / "merged.html"),
                 "--save", str(pytester.path / "merged")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "merged 3 runs" in out and "missing" not in out
    merged = load_run(pytester.path / "merged")

    pd.testing.assert_frame_equal(_comparable(merged.records), _comparable(whole.records))
    pd.testing.assert_frame_equal(merged.verdicts()[1], whole.verdicts()[1])
    assert merged.claims["sharded"]["outcome"] == whole.claims["sharded"]["outcome"] == "passed"
    assert merged.meta["shard"] == ["0/3", "1/3", "2/3"] and "shards_missing" not in merged.meta
    html = (pytester.path / "merged.html").read_text()
    assert "merged from 3 runs" in html

    # Two shards of three: the merge says which one is missing.
    code = main(["report", *map(str, shard_runs[:2]), "-o", str(pytester.path / "part.html")])
    assert code == 0
    assert "shard(s) 2/3 missing" in capsys.readouterr().err
    assert 'id="shards-missing"' in (pytester.path / "part.html").read_text()


def test_shards_keep_only_what_the_unsharded_run_draws(pytester: pytest.Pytester,
                                                        capsys) -> None:
    """The pinned example fails: the unsharded run draws nothing more, and neither may the
    merge of shards (which cannot judge it, so Hypothesis draws every example there)."""
    pytester.makepyfile(test_sharded_claim=CLAIM.replace("tolerance=10.0", "tolerance=0.01"))
    job = pytester.path / "job-7"
    shard_runs = []
    for k in range(2):
        pytester.runpytest(*ARGS, "--ntk-shard", f"{k}/2", "--ntk-report", str(job)
                           ).assert_outcomes(passed=1)  # a shard does not judge
        shard_runs.append(load_run((job / "latest").resolve()))
    pytester.runpytest(*ARGS).assert_outcomes(failed=1)
    whole = load_run(pytester.path / "reports" / "latest")
    assert set(whole.records["arch_id"]) == {"mlp-d1-relu-ntk-b"}  # the pinned one only
    drawn = set().union(*(set(s.records["arch_id"]) for s in shard_runs))
    assert len(drawn) > 1  # the shards drew more
    code = main(["report", str(job), "--save", str(pytester.path / "merged")])
    assert code == 0, capsys.readouterr()
    merged = load_run(pytester.path / "merged")
    pd.testing.assert_frame_equal(_comparable(merged.records), _comparable(whole.records))
    pd.testing.assert_frame_equal(merged.verdicts()[1], whole.verdicts()[1])
    assert merged.claims["sharded"]["outcome"] == whole.claims["sharded"]["outcome"] == "failed"
