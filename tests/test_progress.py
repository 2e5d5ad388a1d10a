"""Progress of a running run: read from its folder, printed by the run and `ntkcheck watch`."""

import json

import pytest

from ntkcheck.cli import main
from ntkcheck.runs.progress import (
    ProgressPrinter,
    format_duration,
    read_progress,
    watch,
    write_plan,
)


def _record(cid, width, seed):
    return {"claim_id": cid, "arch_id": "mlp", "width": width, "seed": seed, "value": 0.1}


def _folder(tmp_path, main_records=(), part_records=(), plan=None):
    run = tmp_path / "run"
    run.mkdir()
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in main_records))
    part = "".join(json.dumps({"nodeid": "t", "claim": {"id": r["claim_id"]}, "record": r})
                   + "\n" for r in part_records)
    (run / "records.gw0.jsonl").write_text(part + '{"unfinished": ')  # a live writer's tail
    if plan:
        write_plan(run, **plan)
    return run


def test_units_are_counted_once_across_records_and_part_files(tmp_path):
    a = [_record("a", w, 0) for w in (8, 16)]
    b = [_record("b", w, s) for w in (8, 16) for s in (0, 1)]
    run = _folder(tmp_path, main_records=a, part_records=a + b,
                  plan=dict(expected_units=12, claim_tests=2, started=1000.0))
    p = read_progress(run)
    assert p.per_claim == {"a": 2, "b": 4} and p.done == 6
    assert p.expected == 12 and p.claim_tests == 2 and not p.finished
    # half done after 60 s: about 60 s left
    assert p.line(now=1060.0) == ("ntkcheck: 6/12 units (50%) · elapsed 1m00s · "
                                  "about 1m00s left")


def test_missing_or_corrupt_files_read_as_unknown(tmp_path):
    assert read_progress(tmp_path / "nowhere").done == 0
    run = _folder(tmp_path)
    (run / "plan.json").write_text("[1, 2]")
    p = read_progress(run)
    assert p.expected is None and p.line(now=0) == "ntkcheck: 0 unit(s) measured"


def test_format_duration():
    assert [format_duration(s) for s in (-3, 12.4, 250, 11_100)] == ["0s", "12s", "4m10s",
                                                                    "3h05m"]


def test_printer_emits_only_when_units_were_added(tmp_path):
    run = _folder(tmp_path, part_records=[_record("a", 8, 0)],
                  plan=dict(expected_units=4, claim_tests=1, started=0.0))
    lines = []
    printer = ProgressPrinter(run, lines.append, interval=3600)
    assert printer.tick() is not None and printer.tick() is None
    with open(run / "records.gw1.jsonl", "a") as fh:
        fh.write(json.dumps({"record": _record("a", 16, 0)}) + "\n")
    assert "2/4 units" in printer.tick() and len(lines) == 2


def test_watch_returns_when_the_run_finishes(tmp_path):
    run = _folder(tmp_path, part_records=[_record("a", 8, 0)],
                  plan=dict(expected_units=2, claim_tests=1, started=0.0))
    lines, sleeps = [], []

    def sleep(s):  # the run finishes while watch waits
        sleeps.append(s)
        (run / "records.jsonl").write_text(
            "".join(json.dumps(_record("a", w, 0)) + "\n" for w in (8, 16)))
        (run / "meta.json").write_text('{"finished": "2026-12-02T19:00:00"}')

    assert watch(run, interval=5, emit=lines.append, clock=lambda: 10.0, sleep=sleep) == 0
    assert sleeps == [5] and lines[-1].startswith("ntkcheck: 2 unit(s) measured in ")
    assert lines[-1].endswith(" · finished") and "left" not in lines[-1]


def test_an_ended_run_says_how_long_it_took_not_how_long_is_left(tmp_path):
    run = _folder(tmp_path, part_records=[_record("a", 8, 0)],
                  plan=dict(expected_units=4, claim_tests=1, started=0.0))
    (run / "meta.json").write_text('{"finished": null}')  # provisional: still running
    assert "about" in read_progress(run).line(now=10.0)
    (run / "meta.json").write_text('{"finished": "2026-12-02T19:00:00", "interrupted": true}')
    p = read_progress(run)
    assert p.finished and p.interrupted and p.line().endswith(" · interrupted")
    assert "left" not in p.line() and "%" not in p.line()


def test_watch_command(tmp_path, capsys):
    run = _folder(tmp_path, part_records=[_record("a", 8, 0)])
    assert main(["watch", str(run), "--once"]) == 0
    assert "1 unit(s) measured" in capsys.readouterr().out
    assert main(["--reports", str(tmp_path), "watch", "nope", "--once"]) == 2
    assert "not a run folder" in capsys.readouterr().err


CLAIM = '''
import pytest
from ntkcheck import ArchSpec


@pytest.mark.claim(id="progress", statement="s", source="t", metric="m", tolerance=1.0)
def test_claim(ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure(ArchSpec(depth=1), width=width, seed=seed, value=0.5)
'''


@pytest.mark.parametrize("quiet", [False, True])
def test_a_run_prints_its_plan_and_progress(pytester, quiet):
    pytester.makepyfile(test_claim=CLAIM)
    args = ["-p", "no:cacheprovider", "--ntk-widths", "8,16", "--ntk-seeds", "2",
            "--ntk-device", "cpu", *(["-q"] if quiet else [])]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    plan = json.loads((pytester.path / "reports" / "latest" / "plan.json").read_text())
    assert plan["expected_units"] == 4 and plan["claim_tests"] == 1
    if quiet:
        assert "ntkcheck: profile" not in out
    else:
        result.stdout.fnmatch_lines(["ntkcheck: profile quick · widths 8,16 · 2 seed(s) · "
                                     "1 claim test(s), about 4 units · run folder *",
                                     "ntkcheck: 4 unit(s) measured in * · finished"])


def test_collect_only_writes_no_run_folder(pytester):
    pytester.makepyfile(test_claim=CLAIM)
    pytester.runpytest_subprocess("--co", "-q", "-p", "no:cacheprovider").assert_outcomes()
    assert not (pytester.path / "reports").exists()
