"""Benchmark of the kernel engine: ntkcheck's NTK implementations against torch.func and
neural-tangents, measured in one run, interleaved.

Usage::

    python benchmarks/bench_kernels.py [--nt-python PATH] [--repeats 5] [--cases a,b]
                                       [--busy 1] [--json out.json]

The neural-tangents interpreter comes from ``--nt-python`` or the environment variable
``NTKCHECK_NT_PYTHON`` (a separate venv, see README.md, "Benchmarks"); without one the
neural-tangents columns are skipped with a message.

Each side runs in one long-lived worker process (ntkcheck and torch.func in this
interpreter, neural-tangents in its own) that builds a case once and then answers timing
requests, so that the runs of all implementations of a case alternate: round ``r`` times every
implementation once before round ``r + 1`` starts. The first call of each implementation
(jit compilation for neural-tangents, the ``auto`` probe for ntkcheck) is a warm-up and is
reported separately. Times are wall-clock seconds; the table gives the minimum and the median
over the rounds, and ratios ``baseline / implementation`` of the minima (above 1: faster than the
baseline). Peak memory is the largest resident-set growth over a call, sampled every
millisecond by a thread of the worker; ntkcheck's own estimate (``plan_empirical_ntk``) is
printed beside it.

Baselines: ``torch.func``: the torch.func "Neural Tangent Kernels" tutorial
(``vmap(jacrev)`` per-sample Jacobians, ``einsum`` contraction, the Jacobian of ``x1`` reused
because ``x2 = x1``), in the model's dtype; neural-tangents: ``empirical_kernel_fn`` with
``NtkImplementation.STRUCTURED_DERIVATIVES`` (jitted) on the same architecture (its own random
weights, same shapes and inputs), and ``kernel_fn`` for the analytic cases. ``--busy N`` starts
N processes that spin for the whole run (a machine shared with N busy programs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

# name: (kind, config). kind "empirical" or "analytic"; "impls" lists ntkcheck's candidates.
CASES: dict[str, dict] = {
    "mlp3x2048_o8_n16_full": dict(kind="empirical", family="mlp", depth=3, width=2048, out=8,
                                  n=16, output="full"),
    "mlp3x8192_o8_n128_trace": dict(kind="empirical", family="mlp", depth=3, width=8192, out=8,
                                    n=128, output="trace", baseline=False),
    "cnn2x64_gap_o10_n64_full": dict(kind="empirical", family="cnn", depth=2, width=64, out=10,
                                     n=64, output="full"),
    "cnn2x256_gap_o10_n64_full": dict(kind="empirical", family="cnn", depth=2, width=256,
                                      out=10, n=64, output="full"),
    "cnn2x64_gap_o10_img32_n16_full": dict(kind="empirical", family="cnn", depth=2, width=64,
                                           out=10, n=16, output="full", image=(3, 32, 32)),
    "resnet2x32_o10_n32_full": dict(kind="empirical", family="resnet", depth=2, width=32,
                                    out=10, n=32, output="full", nt=False),
    "transformer_d64_s16_o10_n16_full": dict(kind="empirical", family="transformer", width=64,
                                             out=10, n=16, output="full", nt=False),
    "analytic_mlp_d5_relu_n1797": dict(kind="analytic", family="mlp", depth=5, n=1797),
    "analytic_cnn2_relu_pool_n64": dict(kind="analytic", family="cnn", depth=2, n=64,
                                        pool=True),
}
IMPLS = ("structured", "jacobian", "ntvp", "auto")
NTVP_MAX_RATIO = 4.0  # ntvp is timed only where its multiply-add estimate is this close


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn) -> tuple[float, int]:
    """Wall time of ``fn()`` and its peak resident-set growth (sampled every millisecond)."""
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    done.set()
    thread.join()
    return elapsed, max(0, max(peak[0], _rss_bytes()) - base)


def digits(n: int):
    """The first ``n`` scikit-learn digits (repeated past 1797), scaled to [0, 1], float64."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits().data / 16.0
    return np.resize(data, (n, data.shape[1]))


def case_inputs(cfg: dict):
    """Inputs as a float64 NumPy array in NCHW (images) or (N, features) layout."""
    import numpy as np

    if "image" in cfg:
        return np.random.default_rng(0).standard_normal((cfg["n"], *cfg["image"]))
    if cfg["family"] == "transformer":
        return np.random.default_rng(0).standard_normal((cfg["n"], 16, cfg["width"]))
    x = digits(cfg["n"])
    return x.reshape(-1, 1, 8, 8) if cfg["family"] in ("cnn", "resnet") else x


class _Transformer:
    """One post-norm transformer encoder block, mean over positions, linear read-out."""

    @staticmethod
    def build(width: int, out: int):
        import torch
        from torch import nn

        torch.manual_seed(0)

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.block = nn.TransformerEncoderLayer(width, nhead=4,
                                                        dim_feedforward=2 * width,
                                                        dropout=0.0, batch_first=True)
                self.head = nn.Linear(width, out)

            def forward(self, x):
                return self.head(self.block(x).mean(1))

        return Net().eval()


# ---------------------------------------------------------------------------- torch worker
def baseline_ntk(model, x, output: str):
    """torch.func tutorial Jacobian contraction, Jacobian computed once (``x2 = x1``)."""
    import torch
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(fnet_single), (None, 0))(params, x)
    jac = [j.flatten(2) for j in jac.values()]
    spec = "Naf,Mbf->NMab" if output == "full" else "Naf,Maf->NM"
    return sum(torch.einsum(spec, j, j) for j in jac)


def _torch_case(name: str):
    import torch

    from ntkcheck.arch import ArchSpec
    from ntkcheck.kernels import analytic_kernels, empirical_ntk, plan_empirical_ntk

    cfg = CASES[name]
    x = torch.as_tensor(case_inputs(cfg))
    if cfg["kind"] == "analytic":
        spec = ArchSpec(family=cfg["family"], depth=cfg["depth"], activation="relu",
                        pool=cfg.get("pool", False))
        return {"analytic": lambda: analytic_kernels(spec, x).ntk}, {}
    x = x.float()
    if cfg["family"] == "transformer":
        model = _Transformer.build(cfg["width"], cfg["out"])
    else:
        spec = ArchSpec(family=cfg["family"], depth=cfg["depth"], activation="relu")
        model = spec.with_width(cfg["width"]).build(seed=0, input_shape=tuple(x.shape[1:]),
                                                    out_features=cfg["out"]).float().eval()
    plan = plan_empirical_ntk(model, x, output=cfg["output"])
    fns = {}
    if cfg.get("baseline", True):
        def base():
            with torch.no_grad():
                return baseline_ntk(model, x, cfg["output"])
        fns["torch.func"] = base
    best = min(plan.estimated_flops.values())
    for impl in IMPLS:
        if impl == "ntvp" and plan.estimated_flops["ntvp"] > NTVP_MAX_RATIO * best:
            continue
        if impl == "jacobian" and not cfg.get("baseline", True):
            continue  # the Jacobian alone does not fit (the baseline's reason too)
        fns[impl] = (lambda impl=impl: empirical_ntk(model, x, implementation=impl,
                                                     output=cfg["output"]))
    info = {"auto_choice": plan.implementation, "estimated_bytes": plan.estimated_bytes,
            "estimated_flops": plan.estimated_flops}
    return fns, info


def serve_torch() -> None:
    """Answer JSON-line requests ``{"case", "impl"}`` with one timed call each."""
    import torch

    cases: dict[str, tuple] = {}
    for line in sys.stdin:
        req = json.loads(line)
        if req["case"] not in cases:
            cases[req["case"]] = _torch_case(req["case"])
        fns, info = cases[req["case"]]
        if req.get("list"):
            print(json.dumps({"impls": list(fns), "info": info,
                              "threads": torch.get_num_threads()}), flush=True)
            continue
        try:
            t, mem = measure(fns[req["impl"]])
            print(json.dumps({"time_s": t, "peak_bytes": mem}), flush=True)
        except Exception as exc:  # noqa: BLE001 - reported, not raised, by the driver
            print(json.dumps({"error": f"{type(exc).__name__}: {str(exc)[:200]}"}),
                  flush=True)


# ------------------------------------------------------------------- neural-tangents worker
NT_SERVER = r"""
import json, sys, types
sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from jax._src import source_info_util
from jax.interpreters import ad
# neural-tangents 0.6.5's structured derivatives use two names jax 0.5 no longer re-exports
# from jax.interpreters.ad; restore them (this process only).
ad.source_info_util = source_info_util
ad.config = jax.config
import neural_tangents as nt
from neural_tangents import stax
sys.path.insert(0, sys.argv[1])
import bench_kernels as B

built = {}
def build(name):
    cfg = B.CASES[name]
    x = B.case_inputs(cfg)
    if x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)  # NHWC
    layers = []
    for _ in range(cfg["depth"]):
        if cfg["family"] == "mlp":
            layers += [stax.Dense(cfg.get("width", 1), W_std=1.0, b_std=0.1), stax.Relu()]
        else:
            layers += [stax.Conv(cfg.get("width", 1), (3, 3), padding="SAME", W_std=1.0,
                                 b_std=0.1), stax.Relu()]
            if cfg.get("pool"):
                layers.append(stax.AvgPool((2, 2), strides=(2, 2)))
    if cfg["family"] == "cnn":
        layers.append(stax.GlobalAvgPool())
    layers.append(stax.Dense(cfg.get("out", 1), W_std=1.0, b_std=0.1))
    init_fn, apply_fn, kernel_fn = stax.serial(*layers)
    # float64 for the analytic kernels, float32 (as ntkcheck's models) for the empirical ones;
    # each case is traced right after it is built, under its own setting.
    jax.config.update("jax_enable_x64", cfg["kind"] == "analytic")
    if cfg["kind"] == "analytic":
        kf = jax.jit(kernel_fn, static_argnames="get")
        return "kernel_fn", lambda: kf(x, None, "ntk").block_until_ready()
    x = x.astype(np.float32)
    _, params = init_fn(jax.random.PRNGKey(0), x.shape)
    trace = () if cfg["output"] == "full" else (-1,)
    f = nt.empirical_kernel_fn(apply_fn, trace_axes=trace, vmap_axes=0,
                               implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES)
    f = jax.jit(f, static_argnames="get")
    return "nt.structured", lambda: f(x, None, "ntk", params).block_until_ready()

for line in sys.stdin:
    req = json.loads(line)
    try:
        if req["case"] not in built:
            built[req["case"]] = build(req["case"])
        label, fn = built[req["case"]]
        if req.get("list"):
            print(json.dumps({"impls": [label], "versions": {"jax": jax.__version__,
                  "neural_tangents": getattr(nt, "__version__", "?")}}), flush=True)
            continue
        t, mem = B.measure(fn)
        print(json.dumps({"time_s": t, "peak_bytes": mem}), flush=True)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {str(exc)[:200]}"}), flush=True)
"""


class Worker:
    """A long-lived worker process answering one JSON line per request."""

    def __init__(self, argv: list[str], env: dict | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)

    def ask(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines()
            return {"error": (err or ["worker exited"])[-1][:200]}
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def nt_python(option: str | None) -> str | None:
    """The neural-tangents interpreter: ``--nt-python``, else ``$NTKCHECK_NT_PYTHON``."""
    path = option or os.environ.get("NTKCHECK_NT_PYTHON")
    return path if path and Path(path).exists() else None


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg()}


def run_case(name: str, workers: dict[str, Worker], repeats: int) -> dict:
    """Warm-up call of every implementation, then ``repeats`` interleaved rounds."""
    impls: list[tuple[str, str]] = []
    info: dict = {}
    for side, w in workers.items():
        if side == "nt" and not CASES[name].get("nt", True):
            continue  # no neural-tangents counterpart of this network
        listing = w.ask({"case": name, "list": True})
        if "error" in listing:
            info[f"{side}_error"] = listing["error"]
            continue
        impls += [(side, i) for i in listing["impls"]]
        info.update(listing.get("info", {}))
        if "versions" in listing:
            info["nt_versions"] = listing["versions"]
    runs: dict[str, dict] = {impl: {"times": [], "peak_bytes": 0} for _, impl in impls}
    for rnd in range(repeats + 1):
        for side, impl in impls:
            if "error" in runs[impl]:
                continue
            res = workers[side].ask({"case": name, "impl": impl})
            if "error" in res:
                runs[impl]["error"] = res["error"]
                continue
            if rnd == 0:
                runs[impl]["first_call_s"] = res["time_s"]
            else:
                runs[impl]["times"].append(res["time_s"])
            runs[impl]["peak_bytes"] = max(runs[impl]["peak_bytes"], res["peak_bytes"])
    for r in runs.values():
        if r["times"]:
            r["min_s"], r["median_s"] = min(r["times"]), statistics.median(r["times"])
    return {"case": name, "config": CASES[name], "info": info, "runs": runs}


def report(result: dict) -> None:
    runs, info = result["runs"], result["info"]
    ok = {k: v for k, v in runs.items() if "min_s" in v}
    ours = {k: v for k, v in ok.items() if k in IMPLS or k == "analytic"}
    fastest = min(ours, key=lambda k: ours[k]["min_s"]) if ours else None
    base = ok.get("torch.func")
    ntb = ok.get("nt.structured") or ok.get("kernel_fn")
    print(f"\n{result['case']}" + (f"  (auto -> {info['auto_choice']})"
                                  if "auto_choice" in info else ""))
    print(f"  {'implementation':<15} {'min [s]':>9} {'median [s]':>11} {'peak [MiB]':>11} "
          f"{'est. [MiB]':>11} {'torch.func/x':>13} {'nt/x':>8} {'x/fastest':>10}")
    for k, r in runs.items():
        if "error" in r:
            print(f"  {k:<15} ERROR {r['error']}")
            continue
        if "min_s" not in r:
            continue
        est = info.get("estimated_bytes", {}).get(k)
        est_s = f"{est / 2**20:11.1f}" if est is not None else f"{'-':>11}"
        tb = f"{base['min_s'] / r['min_s']:13.2f}" if base else f"{'-':>13}"
        tn = f"{ntb['min_s'] / r['min_s']:8.2f}" if ntb else f"{'-':>8}"
        tf = (f"{r['min_s'] / ours[fastest]['min_s']:10.2f}"
              if fastest and k in ours else f"{'-':>10}")
        print(f"  {k:<15} {r['min_s']:9.4f} {r['median_s']:11.4f} "
              f"{r['peak_bytes'] / 2**20:11.1f} {est_s} {tb} {tn} {tf}")
    for key in ("torch_error", "nt_error"):
        if key in info:
            print(f"  {key}: {info[key]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=["torch"], help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per case")
    parser.add_argument("--cases", default="", help="comma-separated case names (default all)")
    parser.add_argument("--nt-python", default=None,
                        help="python of a venv with neural-tangents (default: "
                             "$NTKCHECK_NT_PYTHON; without either neural-tangents is skipped)")
    parser.add_argument("--busy", type=int, default=0,
                        help="spinning processes to start for the run (a shared machine)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.serve:
        serve_torch()
        return
    names = [c for c in args.cases.split(",") if c] or list(CASES)
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    here = str(Path(__file__).resolve().parent)
    workers = {"torch": Worker([sys.executable, __file__, "--serve", "torch"])}
    nt = nt_python(args.nt_python)
    if nt:
        env = {**os.environ, "PYTHONPATH": here}
        workers["nt"] = Worker([nt, "-c", NT_SERVER, here], env=env)
    else:
        print("neural-tangents: no interpreter (--nt-python or NTKCHECK_NT_PYTHON); skipped")
    # Each spinner stops by itself when this process is gone (also when it is killed).
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(args.busy)]
    info = machine()
    info["busy_processes"] = args.busy
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    results = []
    try:
        for name in names:
            results.append(run_case(name, workers, args.repeats))
            report(results[-1])
            if args.json:  # after every case, so that an interrupted run keeps its cases
                args.json.write_text(json.dumps({"machine": info, "repeats": args.repeats,
                                                 "results": results}, indent=1))
    finally:
        for p in spinners:
            p.kill()
        for w in workers.values():
            w.close()
    if args.json:
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
