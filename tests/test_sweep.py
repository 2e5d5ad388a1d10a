import pytest

from ntkcheck.plugin.sweep import Shard, parse_shard, sweep_units, unit_shard


def test_parse_shard():
    assert parse_shard("2/5") == Shard(2, 5)
    for bad in ("5/5", "-1/3", "a/b", "3", "1/0"):
        with pytest.raises(ValueError, match="--ntk-shard"):
            parse_shard(bad)


def test_shards_partition_the_sweep():
    widths, seeds = [16, 64, 256, 1024, 4096], [0, 1, 2]
    full = sweep_units("ntk-at-init", widths, seeds)
    assert full == [(w, s) for w in widths for s in seeds]
    parts = [sweep_units("ntk-at-init", widths, seeds, Shard(k, 3)) for k in range(3)]
    assert sorted(u for p in parts for u in p) == sorted(full)
    assert sum(len(p) for p in parts) == len(full)
    assert all(p == sorted(p) for p in parts)  # narrowest width first within a shard


def test_unit_shard_is_stable_across_processes():
    # sha256-based: the same value in every process and Python version (no hash salt).
    assert unit_shard("ntk-at-init", 64, 0, 7) == unit_shard("ntk-at-init", 64, 0, 7)
    assert [unit_shard("c", w, 0, 1000) for w in (16, 64)] == [
        int.from_bytes(__import__("hashlib").sha256(f"c|{w}|0".encode()).digest()[:8], "big")
        % 1000 for w in (16, 64)]


def test_shard_run_records_without_partial_verdicts(pytester):
    pytester.makepyfile('''
import pytest
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="never-holds", statement="s", source="s", metric="m", tolerance=0.0)
def test_claim(ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure(ArchSpec(depth=1), width=width, seed=seed, value=1.0)
''')
    counts = []
    for k in range(3):
        result = pytester.runpytest("--ntk-widths", "8,16,32,64", "--ntk-seeds", "2",
                                    "--ntk-shard", f"{k}/3", "--ntk-report", f"shard{k}")
        result.assert_outcomes(passed=1)  # a shard sees part of the sweep: no verdict
        records = (pytester.path / f"shard{k}" / "latest" / "records.jsonl")
        counts.append(len(records.read_text().splitlines()) if records.exists() else 0)
    assert sum(counts) == 8
    full = pytester.runpytest("--ntk-widths", "8,16,32,64", "--ntk-seeds", "2")
    full.assert_outcomes(failed=1)
