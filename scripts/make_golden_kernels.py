"""Generate golden infinite-width kernels with neural-tangents 0.6.5.

Writes tests/data/golden_kernels.json.

neural-tangents is not a dependency of ntkcheck. Run this script in a separate environment::

    python3 -m venv /work/ntvenv
    /work/ntvenv/bin/pip install jax==0.5.3 jaxlib==0.5.3 frozendict typing-extensions numpy
    /work/ntvenv/bin/pip install --no-deps neural-tangents==0.6.5
    /work/ntvenv/bin/python scripts/make_golden_kernels.py

Inputs are small dyadic rationals (multiples of 1/4), so every input dot product is exact in
float64 and identical or parallel (scaled by 2 or -1) inputs are exactly degenerate in both
libraries. The input sets include identical, parallel, anti-parallel, zero-norm and sparse
(one-hot) inputs. Kernels are computed in float64 (``jax_enable_x64``) with ``kernel_fn`` of
``stax.serial`` networks (Novak et al. 2020, "Neural Tangents: fast and easy infinite neural
networks in Python"); the test is ``tests/test_kernels_golden.py``.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

# neural_tangents.experimental imports tensorflow; it is not needed for kernel_fn.
sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden_kernels.json"


def vector_inputs() -> np.ndarray:
    """(8, 5) float64: two random rows, a copy, 2x and -1x multiples, zero, sparse, random."""
    rng = np.random.default_rng(20240601)
    a, b, c = (rng.integers(-8, 9, size=5) / 4 for _ in range(3))
    sparse = np.zeros(5)
    sparse[2] = 1.5
    return np.stack([a, b, a, 2 * a, -b, np.zeros(5), sparse, c]).astype(np.float64)


def vector_inputs_2() -> np.ndarray:
    """(3, 5): a copy of row 0 of :func:`vector_inputs`, a 2x multiple of row 1, a new row."""
    x = vector_inputs()
    rng = np.random.default_rng(7)
    return np.stack([x[0], 2 * x[1], rng.integers(-8, 9, size=5) / 4]).astype(np.float64)


def image_inputs() -> np.ndarray:
    """(4, 2, 4, 4) NCHW: a random image, its 2x multiple, a zero image, a sparse image."""
    rng = np.random.default_rng(99)
    a = rng.integers(-4, 5, size=(2, 4, 4)) / 4
    sparse = np.zeros((2, 4, 4))
    sparse[1, 2, 1] = 2.0
    return np.stack([a, 2 * a, np.zeros((2, 4, 4)), sparse]).astype(np.float64)


def activation(name: str, slope: float | None):
    return {
        "relu": stax.Relu,
        "erf": stax.Erf,
        "abs": stax.Abs,
        "identity": stax.Identity,
        "leaky_relu": lambda: stax.LeakyRelu(slope),
    }[name]()


def mlp_case(act, slope, depth, param, bias, sw, sb, width, inputs):
    b_std = sb if bias else None
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=sw, b_std=b_std, parameterization=param),
                   activation(act, slope)]
    layers.append(stax.Dense(1, W_std=sw, b_std=b_std, parameterization=param))
    _, _, kernel_fn = stax.serial(*layers)
    x1, x2 = inputs
    k = kernel_fn(x1, x2, ("nngp", "ntk"))
    return {"family": "mlp", "activation": act, "slope": slope, "depth": depth,
            "parametrization": param, "bias": bias, "weight_std": sw, "bias_std": sb,
            "width": width, "pool": False, "nngp": np.asarray(k.nngp).tolist(),
            "ntk": np.asarray(k.ntk).tolist()}


def cnn_case(act, slope, depth, param, bias, sw, sb, width, pool, images):
    b_std = sb if bias else None
    layers = []
    for _ in range(depth):
        layers += [stax.Conv(width, (3, 3), padding="SAME", W_std=sw, b_std=b_std,
                             parameterization=param), activation(act, slope)]
        if pool:
            layers.append(stax.AvgPool((2, 2), strides=(2, 2)))
    layers += [stax.GlobalAvgPool(),
               stax.Dense(1, W_std=sw, b_std=b_std, parameterization=param)]
    _, _, kernel_fn = stax.serial(*layers)
    nhwc = np.transpose(images, (0, 2, 3, 1))
    k = kernel_fn(nhwc, None, ("nngp", "ntk"))
    return {"family": "cnn", "activation": act, "slope": slope, "depth": depth,
            "parametrization": param, "bias": bias, "weight_std": sw, "bias_std": sb,
            "width": width, "pool": pool, "nngp": np.asarray(k.nngp).tolist(),
            "ntk": np.asarray(k.ntk).tolist()}


def main() -> None:
    x, x2 = vector_inputs(), vector_inputs_2()
    imgs = image_inputs()
    cases = []
    acts = [("relu", None), ("erf", None), ("leaky_relu", 0.1), ("leaky_relu", 0.3),
            ("abs", None), ("identity", None)]
    for act, slope in acts:
        for param, width in (("ntk", 512), ("standard", 512)):
            for depth, bias, sw, sb in ((1, False, 1.0, 0.0), (3, True, 1.4, 0.3)):
                c = mlp_case(act, slope, depth, param, bias, sw, sb, width, (x, None))
                c["inputs"] = "vectors"
                cases.append(c)
        c = mlp_case(act, slope, 2, "ntk", True, 1.2, 0.5, 512, (x, x2))
        c["inputs"] = "vectors-cross"
        cases.append(c)
    for act, slope in (("relu", None), ("erf", None)):
        for param in ("ntk", "standard"):
            c = cnn_case(act, slope, 2, param, True, 1.3, 0.2, 64, False, imgs)
            c["inputs"] = "images"
            cases.append(c)
    c = cnn_case("relu", None, 2, "ntk", False, 1.0, 0.0, 64, True, imgs)
    c["inputs"] = "images"
    cases.append(c)
    data = {
        "generator": "neural-tangents 0.6.5, jax 0.5.3, float64; scripts/make_golden_kernels.py",
        "inputs": {"vectors": x.tolist(), "vectors-cross": [x.tolist(), x2.tolist()],
                   "images": imgs.tolist()},
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {len(cases)} cases, {OUT.stat().st_size / 1024:.1f} kB to {OUT}")


if __name__ == "__main__":
    main()
