"""Comparing runs whose sweeps differ: allowed, with a warning that names the difference."""

from runfactory import make_run, save

from ntkcheck.cli import main
from ntkcheck.runs.compare import sweep_differences


def test_sweep_differences_name_profile_widths_and_inputs():
    a = make_run("a", profile="quick", widths=[64, 256, 1024, 4096], n_inputs=48, seeds=3)
    assert sweep_differences(a, make_run("b", profile="quick", widths=[64, 256, 1024, 4096],
                                         n_inputs=48, seeds=3)) == []
    b = make_run("b", profile="smoke", widths=[32, 64, 128, 256], n_inputs=24, seeds=3)
    assert sweep_differences(a, b) == [
        "profile differ: A quick, B smoke", "inputs differ: A 48, B 24",
        "widths differ: A [64, 256, 1024, 4096], B [32, 64, 128, 256]"]


def test_compare_warns_on_stderr_and_still_compares(tmp_path, capsys):
    save(make_run("a", profile="quick"), tmp_path)
    save(make_run("b", profile="smoke"), tmp_path)
    code = main(["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    out = capsys.readouterr()
    assert code == 0 and "OK: no regression from A to B" in out.out
    assert "warning: the runs' sweeps differ (profile differ: A quick, B smoke); a " in out.err
