"""How fast do the NTK and the linearization gap vanish with width? A rate study.

The ``lazy-kernel`` and ``linearized-dynamics`` claims predict a log-log slope of -1 in width
(Dyer & Gur-Ari 2020; Huang & Yau 2020), sharper than the O(width^-1/2) upper bound of Lee et
al. 2019, Thm 2.1. This script measures both metrics exactly as the claims do (depth-1 MLPs in
the NTK parametrization on digits, full-batch GD on the MSE), at several learning rates for the
same continuous time ``t = steps * lr``, and over a wider sweep than the ``quick`` profile, so
that the slope can be read off where the asymptotics apply. It prints, per setting, the mean
metric per width and the fitted slope with its 95% interval over all widths and over the
widest three.

Run: ``python scripts/lazy_rate_study.py`` (about 5-10 minutes on 2 CPU cores);
``--widths``, ``--seeds``, ``--factors`` and ``--activations`` change the sweep.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from ntkcheck.arch import ArchSpec
from ntkcheck.data import load_dataset
from ntkcheck.kernel_regime.linearize import linearize
from ntkcheck.kernels import empirical_ntk
from ntkcheck.metrics import fit_rate, relative_change
from ntkcheck.training.loops import kernel_lr, train

#: The claims' fixed time: the quick profile's 50 steps at the kernel rate N / lambda_max.
STEPS_AT_FACTOR_1 = 50
N_TRAIN, N_TEST = 48, 32


def measure(spec: ArchSpec, width: int, seed: int, factor: float) -> tuple[float, float]:
    """(lazy-kernel metric, linearized-dynamics metric) of one network."""
    data = load_dataset("digits", n=N_TRAIN + N_TEST, seed=0)
    train_set, test_set = data.split(N_TRAIN)
    x, z = train_set.x, test_set.x
    steps = round(STEPS_AT_FACTOR_1 / factor)

    # lazy-kernel: scalar regression targets, as claims/test_lazy_training.py
    net = spec.with_width(width).build(seed=1000 * width + seed, input_shape=(1, 8, 8))
    lr, _ = kernel_lr(spec.with_width(width), net, x, factor=factor)
    before = empirical_ntk(net, x)
    train(net, x, train_set.regression_targets(), lr=lr, steps=steps)
    kernel_change = relative_change(empirical_ntk(net, x), before)

    # linearized-dynamics: one-hot targets, held-out inputs, as test_linearized_dynamics.py
    net = spec.with_width(width).build(seed=1000 * width + seed, input_shape=(1, 8, 8),
                                       out_features=10)
    lin = linearize(net)
    lr, _ = kernel_lr(spec.with_width(width), net, x, factor=factor)
    y = train_set.one_hot()
    outs: list[torch.Tensor] = []
    train(net, x, y, lr=lr, steps=steps, callback=lambda k, m: outs.append(m(z)))
    devs: list[float] = []
    train(lin, x, y, lr=lr, steps=steps,
          callback=lambda k, m: devs.append(float(torch.linalg.norm(outs[k] - m(z))
                                                  / torch.linalg.norm(outs[k]))))
    return kernel_change, max(devs)


def _fit(widths: list[int], values: list[float]) -> str:
    fit = fit_rate(widths, values)
    return f"{fit.slope:+.2f} [{fit.slope_low:+.2f}, {fit.slope_high:+.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="64,256,1024,4096,16384")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--factors", default="1.0,0.1",
                        help="learning rates as multiples of N / lambda_max (same time t)")
    parser.add_argument("--activations", default="erf,relu")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    for activation in args.activations.split(","):
        spec = ArchSpec(depth=1, activation=activation)
        for factor in (float(f) for f in args.factors.split(",")):
            start = time.perf_counter()
            ws, kernel, gap = [], [], []
            for width in widths:
                for seed in range(args.seeds):
                    k, g = measure(spec, width, seed, factor)
                    ws.append(width)
                    kernel.append(k)
                    gap.append(g)
            elapsed = time.perf_counter() - start
            print(f"\n{spec.arch_id}, lr = {factor} N/lambda_max, "
                  f"{round(STEPS_AT_FACTOR_1 / factor)} steps ({elapsed:.0f} s)")
            print(f"  {'width':>6} {'lazy-kernel':>12} {'linearized':>12}")
            for width in widths:
                idx = [i for i, w in enumerate(ws) if w == width]
                print(f"  {width:>6} {sum(kernel[i] for i in idx) / len(idx):>12.3e} "
                      f"{sum(gap[i] for i in idx) / len(idx):>12.3e}")
            wide = [i for i, w in enumerate(ws) if w in widths[-3:]]
            for name, vals in (("lazy-kernel", kernel), ("linearized-dynamics", gap)):
                print(f"  {name}: slope all widths {_fit(ws, vals)}; widest three "
                      f"{_fit([ws[i] for i in wide], [vals[i] for i in wide])}")


if __name__ == "__main__":
    main()
