import subprocess
import sys

import ntkcheck


def test_every_public_name_resolves():
    for name in ntkcheck.__all__:
        assert getattr(ntkcheck, name) is not None, name


def test_unknown_name_is_an_attribute_error():
    try:
        ntkcheck.does_not_exist  # noqa: B018
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_plugin_import_does_not_import_torch_or_pandas():
    code = ("import sys, ntkcheck.plugin.hooks; "
            "print(sorted(m for m in ('torch', 'pandas', 'pandera') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_console_script_prints_version():
    out = subprocess.run([sys.executable, "-m", "ntkcheck.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"ntkcheck {ntkcheck.__version__}"
