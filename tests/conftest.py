"""Configuration of ntkcheck's own tests."""

# pytester's in-process runs remove modules first imported during an inner run from
# sys.modules afterwards; torch cannot be imported twice in one process, so import the heavy
# modules (and everything of ntkcheck's) once here, before any inner run.
import contextlib

import matplotlib  # noqa: F401
import numpy.fft  # noqa: F401
import pandas  # noqa: F401
import pandera.pandas  # noqa: F401
import scipy.linalg  # noqa: F401
import scipy.stats  # noqa: F401
import sklearn.datasets  # noqa: F401
import torch  # noqa: F401
import torch._dynamo  # noqa: F401  (torch.optim's first step imports it)

with contextlib.suppress(ImportError):  # the optional extra "uncertainty" (laplace-torch)
    import laplace  # noqa: F401

import ntkcheck.arch  # noqa: F401
import ntkcheck.claim  # noqa: F401
import ntkcheck.cli  # noqa: F401
import ntkcheck.continual  # noqa: F401
import ntkcheck.data  # noqa: F401
import ntkcheck.kernel_regime.features  # noqa: F401
import ntkcheck.kernel_regime.linearize  # noqa: F401
import ntkcheck.kernel_regime.predict  # noqa: F401
import ntkcheck.kernels  # noqa: F401
import ntkcheck.numerics  # noqa: F401
import ntkcheck.optim.jacobian  # noqa: F401
import ntkcheck.optim.natural_gradient  # noqa: F401
import ntkcheck.plugin.devices  # noqa: F401
import ntkcheck.plugin.hooks  # noqa: F401
import ntkcheck.plugin.recorder  # noqa: F401
import ntkcheck.plugin.runtime  # noqa: F401
import ntkcheck.plugin.sweep  # noqa: F401
import ntkcheck.report  # noqa: F401
import ntkcheck.runs.compare  # noqa: F401
import ntkcheck.runs.export  # noqa: F401
import ntkcheck.runs.outcomes  # noqa: F401
import ntkcheck.runs.store  # noqa: F401
import ntkcheck.runs.writer  # noqa: F401
import ntkcheck.seeding  # noqa: F401
import ntkcheck.status  # noqa: F401
import ntkcheck.strategies  # noqa: F401
import ntkcheck.training.loops  # noqa: F401
import ntkcheck.uncertainty.bandits  # noqa: F401
import ntkcheck.uncertainty.calibration  # noqa: F401
import ntkcheck.uncertainty.laplace  # noqa: F401
import ntkcheck.uncertainty.lla  # noqa: F401
import ntkcheck.verdict  # noqa: F401

pytest_plugins = ["pytester"]
