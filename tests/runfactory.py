"""Small synthetic runs for the tests of ntkcheck.runs.store, ntkcheck.runs.compare and the CLI.

The metric is known exactly: value = scale * depth / sqrt(width) * (1 + 0.01 * seed), so a
claim with tolerance 0.1 holds at width 1024 for depth 1 (0.0625) and scale 2, and fails for
depth 2 (0.125).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ntkcheck.runs.store import Run, write_run

WIDTHS = (16, 64, 256, 1024)
SEEDS = (0, 1)


def claim(cid: str = "c1", tolerance: float = 0.1, outcome: str = "passed", **extra) -> dict:
    return {"id": cid, "statement": f"statement of {cid}", "source": "test", "metric": "m",
            "tolerance": tolerance, "rate": -0.5, "units": "", "direction": "below",
            "outcome": outcome, "nodeid": f"test_x.py::test_{cid}", "duration_s": 1.0,
            "longrepr": None, "shrunk_spec": None, **extra}


def records(cid: str = "c1", depths=(1,), widths=WIDTHS, seeds=SEEDS, scale: float = 2.0,
            run_id: str = "r1") -> pd.DataFrame:
    rows = []
    for depth in depths:
        for w in widths:
            for s in seeds:
                rows.append({
                    "run_id": run_id, "claim_id": cid, "arch_id": f"mlp-d{depth}-relu",
                    "family": "mlp", "depth": depth, "activation": "relu",
                    "parametrization": "ntk", "bias": True, "weight_std": 1.0, "bias_std": 0.1,
                    "width": w, "seed": s, "value": scale * depth / w**0.5 * (1 + 0.01 * s),
                    "profile": "smoke", "device": "cpu", "dtype": "float64", "elapsed_s": 0.01,
                    "nodeid": f"test_x.py::test_{cid}", "status": "measured",
                })
    return pd.DataFrame(rows)


def meta(run_id: str = "r1", **extra) -> dict:
    return {"run_id": run_id, "profile": "smoke", "widths": list(WIDTHS), "seeds": len(SEEDS),
            "device": "cpu", "started": "2025-01-02T03:04:05+00:00",
            "finished": "2025-01-02T03:05:05+00:00", "duration_s": 60.0,
            "git_commit": "0123456789abcdef", "interrupted": False, "schema_error": None,
            "n_records": None, **extra}


def make_run(run_id: str = "r1", claims: dict | None = None, recs: pd.DataFrame | None = None,
             **meta_extra) -> Run:
    claims = claims if claims is not None else {"c1": claim()}
    recs = recs if recs is not None else records(run_id=run_id)
    m = meta(run_id, **meta_extra)
    m["n_records"] = len(recs)
    return Run(records=recs.assign(run_id=run_id), claims=claims, meta=m)


def save(run: Run, reports: Path) -> Path:
    """Write ``run`` as ``reports/<run id>/`` (like the plugin) and return the folder."""
    return write_run(run, reports / run.run_id)
