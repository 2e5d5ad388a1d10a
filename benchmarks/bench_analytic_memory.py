"""Memory guards of the analytic kernels: refusal time, a large Gram that fits, tanh gradients.

Usage::

    python benchmarks/bench_analytic_memory.py [--fit 20000] [--blocks 60000] [--tanh 40]
        [--baseline /path/to/old/checkout]

Every case runs in a fresh subprocess with one intra-op thread; its peak memory is the
process's peak resident set size (``ru_maxrss``), its time the wall time of the call. Cases:

* ``refuse``: ``analytic_kernels`` (depth-2 ReLU) on 60,000 x 784 inputs (full MNIST's
  size); on a machine with less than the estimate free, it must refuse at once.
* ``fit``: the same network on ``--fit`` inputs, the whole float64 NNGP and NTK.
* ``blocks``: the first two row blocks of 1,000 rows of ``--blocks`` inputs from
  ``analytic_kernel_blocks`` (the out-of-core path; the total is the number of blocks times
  the time of one).
* ``tanh``: a depth-3 tanh NTK (Gauss-Hermite quadrature dual) with input gradients on
  ``--tanh`` inputs; with ``--baseline`` the same case (at a quarter of the inputs, the
  baseline's memory grows with their square) runs against another checkout, for the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
from ntkcheck.arch import ArchSpec
from ntkcheck.kernels import KernelMemoryError, analytic_kernels
case, n = sys.argv[1], int(sys.argv[2])
gen = torch.Generator().manual_seed(0)
out = {"case": case, "n": n}
t = time.perf_counter()
if case in ("refuse", "fit", "blocks"):
    x = torch.rand(n, 784, dtype=torch.float64, generator=gen)
    spec = ArchSpec(depth=2, activation="relu", bias_std=0.1)
    t = time.perf_counter()
    if case == "blocks":
        from ntkcheck.kernels.analytic import analytic_kernel_blocks
        blocks = analytic_kernel_blocks(spec, x, block_rows=1000)
        for _ in range(2):
            next(blocks)
        out["per_block_s"] = (time.perf_counter() - t) / 2
    else:
        try:
            analytic_kernels(spec, x)
            out["result"] = "computed"
        except KernelMemoryError as exc:
            out["result"] = "refused: " + str(exc).split(";")[0]
else:
    x = torch.randn(n, 8, dtype=torch.float64, generator=gen).requires_grad_()
    k = analytic_kernels(ArchSpec(depth=3, activation="tanh", bias_std=0.5), x).ntk
    torch.autograd.grad(k.sum(), x)
out["wall_s"] = time.perf_counter() - t
out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps(out))
"""


def run(case: str, n: int, checkout: str | None = None) -> dict:
    env = dict(os.environ)
    if checkout:
        env["PYTHONPATH"] = checkout
    proc = subprocess.run([sys.executable, "-c", CHILD, case, str(n)], env=env,
                          capture_output=True, text=True, check=False,
                          cwd=checkout or os.getcwd())
    if proc.returncode:
        return {"case": case, "n": n, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", type=int, default=20000)
    parser.add_argument("--blocks", type=int, default=60000)
    parser.add_argument("--tanh", type=int, default=40)
    parser.add_argument("--baseline", default=None)
    args = parser.parse_args()
    results = [run("refuse", 60000), run("fit", args.fit), run("blocks", args.blocks),
               run("tanh", args.tanh)]
    if args.baseline:
        results.append({**run("tanh", max(2, args.tanh // 4), args.baseline),
                        "checkout": args.baseline})
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
