"""Benchmark of the kernel engine: time and peak memory of each empirical-NTK implementation.

Usage::

    /work/venv/bin/python benchmarks/bench_kernels.py [--nt /work/ntvenv/bin/python]

Every measurement runs in a fresh subprocess; its peak memory is the growth of the process's
peak resident set size (``ru_maxrss``) over the resident size just before the timed call.
Times (wall and process CPU) are the best of ``--repeats`` calls after one warm-up call (no
repeats for calls above 20 s). Ratios are against a plain torch.func Jacobian-contraction
baseline (the torch.func "Neural Tangent Kernels" tutorial: ``vmap(jacrev)`` per-sample
Jacobians, ``einsum`` contraction; the Jacobian of ``x1`` is reused because ``x2 = x1``).
Kernels are ``output="full"`` ``(N, N, O, O)`` in float64. Where neural-tangents imports in
the interpreter given by ``--nt`` (a separate venv), its structured-derivatives empirical
kernel and ``kernel_fn`` are timed on the same cases (other random weights; first call
includes jit compilation, the reported time is the best later call). neural-tangents 0.6.5
needs two names jax 0.5.3 dropped from ``jax.interpreters.ad`` for its structured
derivatives; the subprocess restores them before importing it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "mlp3x2048_o8_n16": dict(family="mlp", depth=3, width=2048, out=8, n=16),
    "mlp3x1024_o64_n4": dict(family="mlp", depth=3, width=1024, out=64, n=4),
    "cnn2x32_o10_n64": dict(family="cnn", depth=2, width=32, out=10, n=64),
}
IMPLS = ("baseline", "jacobian", "ntvp", "structured")
ANALYTIC = dict(depth=5, n=1797)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _digits(n: int):
    import torch
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data[:n] / 16.0, dtype=torch.float64)
    return x


def _timed(fn, repeats: int) -> tuple[float, float, int]:
    """Best wall and CPU time of ``repeats`` calls (after a warm-up unless slow), peak memory.

    The CPU time (user + system, all threads, ``time.process_time``) is less sensitive than
    the wall time to other processes competing for the cores.
    """
    base = _rss_bytes()
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    first = time.perf_counter() - t0
    times, cpus = [first], [time.process_time() - c0]
    if first < 20:
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return min(times), min(cpus), max(0, _peak_bytes() - base)


def baseline_ntk(model, x):
    """torch.func tutorial Jacobian contraction (full kernel), Jacobian computed once."""
    import torch
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(fnet_single), (None, 0))(params, x)
    jac = [j.flatten(2) for j in jac.values()]
    return sum(torch.einsum("Naf,Mbf->NMab", j, j) for j in jac)


def worker(case: str, impl: str, repeats: int) -> dict:
    import torch

    from ntkcheck.arch import ArchSpec
    from ntkcheck.kernels import empirical_ntk

    torch.set_num_threads(os.cpu_count() or 1)
    if case == "analytic":
        from ntkcheck.kernels import analytic_kernels

        x = _digits(ANALYTIC["n"])
        spec = ArchSpec(depth=ANALYTIC["depth"], activation="relu")
        t, cpu, mem = _timed(lambda: analytic_kernels(spec, x), repeats)
        return {"case": "analytic_d5_n1797", "impl": "analytic", "time_s": t, "cpu_s": cpu,
                "peak_bytes": mem}
    c = CASES[case]
    x = _digits(c["n"])
    shape = (64,) if c["family"] == "mlp" else (1, 8, 8)
    x = x.reshape(-1, *shape)
    spec = ArchSpec(family=c["family"], depth=c["depth"], activation="relu")
    model = spec.with_width(c["width"]).build(seed=0, input_shape=shape, out_features=c["out"])
    if impl == "baseline":
        def fn():
            with torch.no_grad():
                return baseline_ntk(model, x)
    else:
        def fn():
            return empirical_ntk(model, x, implementation=impl, output="full")
    t, cpu, mem = _timed(fn, repeats)
    return {"case": case, "impl": impl, "time_s": t, "cpu_s": cpu, "peak_bytes": mem}


NT_WORKER = r"""
import json, os, resource, sys, time, types
sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from jax._src import source_info_util
from jax.interpreters import ad
# neural-tangents 0.6.5's structured derivatives use two names jax 0.5 no longer re-exports
# from jax.interpreters.ad; restore them (this subprocess only).
ad.source_info_util = source_info_util
ad.config = jax.config
import neural_tangents as nt
from neural_tangents import stax
case, x_path = sys.argv[1], sys.argv[2]
x = np.load(x_path)
cfg = json.loads(sys.argv[3])
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
layers = []
for _ in range(cfg["depth"]):
    if cfg["family"] == "mlp":
        layers += [stax.Dense(cfg["width"], W_std=1.0, b_std=0.1), stax.Relu()]
    else:
        layers += [stax.Conv(cfg["width"], (3, 3), padding="SAME", W_std=1.0, b_std=0.1),
                   stax.Relu()]
if cfg["family"] == "cnn":
    layers.append(stax.GlobalAvgPool())
layers.append(stax.Dense(cfg["out"], W_std=1.0, b_std=0.1))
init_fn, apply_fn, kernel_fn = stax.serial(*layers)
out = {}
if cfg.get("empirical", True):
    _, params = init_fn(jax.random.PRNGKey(0), x.shape)
    f = nt.empirical_kernel_fn(apply_fn, trace_axes=(), vmap_axes=0,
                               implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES)
    f = jax.jit(f, static_argnames="get")
    base = rss()
    t0 = time.perf_counter(); f(x, None, "ntk", params).block_until_ready()
    first = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        f(x, None, "ntk", params).block_until_ready()
        times.append(time.perf_counter() - t0)
    best = min(times)
    out["empirical_structured"] = {"time_s": best, "first_call_s": first,
        "peak_bytes": max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)}
base = rss()
kf = jax.jit(kernel_fn, static_argnames="get")
t0 = time.perf_counter(); kf(x, None, "ntk").block_until_ready(); first = time.perf_counter() - t0
times = []
for _ in range(3):
    t0 = time.perf_counter()
    kf(x, None, "ntk").block_until_ready()
    times.append(time.perf_counter() - t0)
out["kernel_fn"] = {"time_s": min(times), "first_call_s": first,
    "peak_bytes": max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)}
print(json.dumps(out))
"""


def run_nt(nt_python: str, tmp: Path) -> dict:
    """Time neural-tangents on the same cases in a subprocess; {} where it does not import."""
    import numpy as np

    probe = subprocess.run([nt_python, "-c", "import neural_tangents"], capture_output=True,
                           env={**os.environ, "PYTHONPATH": ""})
    if probe.returncode != 0 and b"experimental" not in probe.stderr:
        return {}
    results = {}
    jobs = {k: dict(v) for k, v in CASES.items()}
    jobs["analytic"] = dict(family="mlp", depth=ANALYTIC["depth"], width=512, out=1,
                            n=ANALYTIC["n"], empirical=False)
    for case, cfg in jobs.items():
        x = _digits(cfg["n"]).numpy()
        if cfg["family"] == "cnn":
            x = x.reshape(-1, 8, 8, 1)  # NHWC
        path = tmp / f"nt_{case}.npy"
        np.save(path, x)
        proc = subprocess.run([nt_python, "-c", NT_WORKER, case, str(path), json.dumps(cfg)],
                              capture_output=True, text=True, env={**os.environ,
                                                                   "PYTHONPATH": ""})
        if proc.returncode != 0:
            results[case] = {"error": proc.stderr.strip().splitlines()[-1:]}
        else:
            results[case] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "IMPL"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nt", default="/work/ntvenv/bin/python",
                        help="python of a venv with neural-tangents ('' to skip)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats)))
        return

    import torch

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    results = []
    jobs = [(c, i) for c in CASES for i in IMPLS] + [("analytic", "analytic")]
    for case, impl in jobs:
        proc = subprocess.run([sys.executable, __file__, "--worker", case, impl, "--repeats",
                               str(args.repeats)], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["killed"])[-1]
            results.append({"case": case, "impl": impl, "error": tail[:160]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"\n{'case':<20} {'impl':<12} {'time [s]':>10} {'cpu [s]':>9} {'peak [MiB]':>11} "
          f"{'time/base':>10} {'cpu/base':>9} {'mem/base':>9}")
    base = {r["case"]: r for r in results if r["impl"] == "baseline" and "error" not in r}
    for r in results:
        if "error" in r:
            print(f"{r['case']:<20} {r['impl']:<12} ERROR {r['error']}")
            continue
        b = base.get(r["case"])
        tr = f"{r['time_s'] / b['time_s']:.3g}" if b else "-"
        cr = f"{r['cpu_s'] / b['cpu_s']:.3g}" if b else "-"
        mr = f"{r['peak_bytes'] / max(b['peak_bytes'], 1):.3g}" if b else "-"
        print(f"{r['case']:<20} {r['impl']:<12} {r['time_s']:>10.4f} {r['cpu_s']:>9.3f} "
              f"{r['peak_bytes'] / 2**20:>11.1f} {tr:>10} {cr:>9} {mr:>9}")
    nt_results = {}
    if args.nt and Path(args.nt).exists():
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            nt_results = run_nt(args.nt, Path(tmp))
        print("\nneural-tangents 0.6.5 (jax, float64, same shapes, other random weights):")
        for case, res in nt_results.items():
            for kind, r in res.items():
                if kind == "error":
                    print(f"{case:<20} ERROR {r}")
                    continue
                b = base.get(case)
                tr = f"{r['time_s'] / b['time_s']:.3g}" if b else "-"
                print(f"{case:<20} {kind:<22} {r['time_s']:>10.4f} s (first call "
                      f"{r['first_call_s']:.2f} s) peak {r['peak_bytes'] / 2**20:.1f} MiB "
                      f"time/base {tr}")
    if args.json:
        args.json.write_text(json.dumps({"torch": results, "neural_tangents": nt_results},
                                        indent=1))


if __name__ == "__main__":
    main()
