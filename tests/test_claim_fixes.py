"""The scientific fixes of issue 19 that live in claim metadata (each fails on the old claims).

* ``gd-rate`` predicts an exact per-step contraction: its source must be a result that proves
  the exact rate (Lee et al. 2019's linearized dynamics; Arora et al. 2019, Thm 4.1), not only
  Du et al. 2018's Thm 4.1, a bound; and ReLU at depth 1, the setting of Arora et al.'s theorem,
  is a theory test, not a "practical" one.
* ``forgetting-bounded`` is no longer a claim: its bound could not fail (README).
"""

import sys
from pathlib import Path

import pytest

CLAIMS = Path(__file__).resolve().parents[1] / "claims"
sys.path.insert(0, str(CLAIMS))


def _marker(test) -> dict:
    (mark,) = [m for m in test.pytestmark if m.name == "claim"]
    return mark.kwargs


def test_gd_rate_cites_the_exact_rate_and_judges_relu_as_theory():
    import test_gd_rate as gd

    source = gd.RATE["source"]
    assert "Arora et al. 2019, Thm 4.1" in source and "Lee et al. 2019" in source
    assert "Du et al. 2018" not in source
    relu = _marker(gd.test_gd_rate_relu)
    assert relu["id"] == "gd-rate" and relu.get("setting", "theory") == "theory"
    assert not hasattr(gd, "test_gd_rate_practical") or _marker(
        gd.test_gd_rate_practical).get("setting") == "practical"


def test_forgetting_bounded_is_not_a_claim_any_more():
    text = (CLAIMS / "test_continual.py").read_text()
    assert 'id="forgetting-bounded"' not in text
    with pytest.raises(AttributeError):
        import test_continual

        test_continual.test_forgetting_bounded  # noqa: B018
