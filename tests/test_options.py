"""Option checks that run before any test: the report folder must be writable."""

from pathlib import Path

import pytest

from ntkcheck.plugin.options import check_report_dir


def test_a_new_report_folder_is_checked_without_leaving_folders_behind(tmp_path):
    check_report_dir(tmp_path / "a" / "b" / "reports")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "reports").mkdir()
    check_report_dir(tmp_path / "reports")
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]


def test_a_file_in_the_way_or_an_unwritable_place_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt' is a file, not a folder; pass a writable"):
        check_report_dir(tmp_path / "notes.txt" / "reports")
    with pytest.raises(ValueError, match="cannot create the folder '/proc/x/reports'"):
        check_report_dir(Path("/proc/x/reports"))
