"""Analytic kernels against golden values from neural-tangents 0.6.5 (float64).

The data come from scripts/make_golden_kernels.py, run in a separate environment.
"""

import json
from pathlib import Path

import pytest
import torch

from ntkcheck.kernels import get_dual, mlp_kernels
from ntkcheck.kernels.cntk import cnn_kernels

DATA = json.loads((Path(__file__).parent / "data" / "golden_kernels.json").read_text())


def case_id(c: dict) -> str:
    slope = f"{c['slope']}" if c["slope"] is not None else ""
    return (f"{c['family']}-{c['activation']}{slope}-d{c['depth']}-{c['parametrization']}-"
            f"{'b' if c['bias'] else 'nb'}-{c['inputs']}")


@pytest.mark.parametrize("case", DATA["cases"], ids=case_id)
def test_matches_neural_tangents(case):
    kw = dict(depth=case["depth"], dual=get_dual(case["activation"], slope=case["slope"]),
              weight_std=case["weight_std"], bias_std=case["bias_std"], bias=case["bias"],
              parametrization=case["parametrization"], width=case["width"])
    inputs = DATA["inputs"][case["inputs"]]
    if case["family"] == "mlp":
        if case["inputs"] == "vectors-cross":
            x1, x2 = (torch.tensor(v, dtype=torch.float64) for v in inputs)
        else:
            x1, x2 = torch.tensor(inputs, dtype=torch.float64), None
        nngp, ntk = mlp_kernels(x1, x2, **kw)
    else:
        nngp, ntk = cnn_kernels(torch.tensor(inputs, dtype=torch.float64), None,
                                pool=case["pool"], **kw)
    ref_nngp = torch.tensor(case["nngp"], dtype=torch.float64)
    ref_ntk = torch.tensor(case["ntk"], dtype=torch.float64)
    # Elementwise relative tolerance; kernels involving a zero-norm input are exact zeros.
    torch.testing.assert_close(nngp, ref_nngp, rtol=1e-10, atol=0)
    torch.testing.assert_close(ntk, ref_ntk, rtol=1e-10, atol=0)
