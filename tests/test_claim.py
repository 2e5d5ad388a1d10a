import math

import pandas as pd
import pandera.errors
import pytest

from ntkcheck.claim import Claim, ClaimError, record_schema

BASE = dict(id="ntk-at-init", statement="s", source="Jacot et al. 2018", metric="m",
            tolerance=0.1)


def _records(**overrides):
    row = dict(run_id="r", claim_id="ntk-at-init", arch_id="mlp-d1-relu-ntk-b", width=64,
               seed=0, value=0.5, profile="smoke", device="cpu", dtype="float64",
               elapsed_s=0.1, nodeid="claims/x.py::t")
    row.update(overrides)
    return pd.DataFrame([row])


def test_claim_from_marker_defaults_and_holds():
    claim = Claim.from_marker_kwargs(BASE)
    assert claim.rate is None and claim.direction == "below" and claim.units == ""
    assert claim.holds(0.1) and not claim.holds(0.11) and not claim.holds(math.nan)
    above = Claim.from_marker_kwargs({**BASE, "direction": "above", "rate": 1})
    assert above.holds(0.2) and not above.holds(0.05) and above.rate == 1.0


@pytest.mark.parametrize("bad", [
    {"tolerance": "0.1"}, {"tolerance": math.nan}, {"tolerance": True}, {"rate": "fast"},
    {"direction": "sideways"}, {"id": ""}, {"id": 3}, {"statement": 1},
])
def test_claim_rejects_bad_values(bad):
    with pytest.raises(ClaimError):
        Claim.from_marker_kwargs({**BASE, **bad})


def test_schema_accepts_a_valid_record():
    out = record_schema(["ntk-at-init"]).validate(_records())
    assert len(out) == 1


@pytest.mark.parametrize("bad", [
    {"value": math.nan}, {"value": math.inf}, {"width": 0}, {"seed": -1},
    {"claim_id": "unknown-claim"}, {"arch_id": ""},
])
def test_schema_rejects_bad_records(bad):
    with pytest.raises(pandera.errors.SchemaError):
        record_schema(["ntk-at-init"]).validate(_records(**bad))


def test_claim_scale_and_trend_keys():
    default = Claim.from_marker_kwargs(BASE)
    assert default.scale == "log" and default.trend is None
    assert "scale" not in default.to_dict() and "trend" not in default.to_dict()
    claim = Claim.from_marker_kwargs({**BASE, "scale": "semilog", "trend": "decreasing"})
    assert claim.scale == "semilog" and claim.trend == "decreasing"
    assert claim.to_dict()["trend"] == "decreasing"
    for bad in ({"scale": "linear"}, {"trend": "down"}, {"trend": True}):
        with pytest.raises(ClaimError):
            Claim.from_marker_kwargs({**BASE, **bad})


def test_claim_round_trips_through_its_dict():
    claim = Claim.from_marker_kwargs({**BASE, "scale": "semilog", "trend": "decreasing"})
    assert Claim.from_dict({**claim.to_dict(), "outcome": "failed"}) == claim
    assert Claim.from_dict(Claim.from_marker_kwargs(BASE).to_dict()).scale == "log"


def test_claim_domain_key():
    from ntkcheck.report.findings import DOMAIN_OF, domain_of

    default = Claim.from_marker_kwargs(BASE)
    assert default.domain is None and "domain" not in default.to_dict()
    claim = Claim.from_marker_kwargs({**BASE, "domain": "optimization"})
    assert claim.to_dict()["domain"] == "optimization"
    assert Claim.from_dict(claim.to_dict()) == claim
    assert domain_of("ntk-at-init", claim.to_dict()) == "optimization"  # the key wins
    assert domain_of("ntk-at-init") == DOMAIN_OF["ntk-at-init"] == "kernel-regime"
    assert domain_of("my-claim") == "other"
    for bad in ({"domain": "Sec 3.1"}, {"domain": 3}, {"domain": ""}):
        with pytest.raises(ClaimError, match="domain"):
            Claim.from_marker_kwargs({**BASE, **bad})
