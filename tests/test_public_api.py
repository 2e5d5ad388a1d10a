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


def test_claims_import_only_the_public_api():
    """Claim files are what users copy: every ntkcheck name they use is in ``ntkcheck.__all__``."""
    import ast
    import pathlib

    claims = pathlib.Path(__file__).resolve().parents[1] / "claims"
    offenders = []
    for path in sorted(claims.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ntkcheck"):
                for alias in node.names:
                    if node.module != "ntkcheck" or alias.name not in ntkcheck.__all__:
                        offenders.append(f"{path.name}: from {node.module} import {alias.name}")
            elif isinstance(node, ast.Import):
                offenders += [f"{path.name}: import {a.name}" for a in node.names
                              if a.name.startswith("ntkcheck.")]
    assert not offenders, offenders
