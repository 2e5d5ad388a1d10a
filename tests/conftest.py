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
import ntkcheck.bandits  # noqa: F401
import ntkcheck.calibration  # noqa: F401
import ntkcheck.claim  # noqa: F401
import ntkcheck.cli  # noqa: F401
import ntkcheck.compare  # noqa: F401
import ntkcheck.continual  # noqa: F401
import ntkcheck.data  # noqa: F401
import ntkcheck.devices  # noqa: F401
import ntkcheck.export  # noqa: F401
import ntkcheck.features  # noqa: F401
import ntkcheck.jacobian  # noqa: F401
import ntkcheck.kernels  # noqa: F401
import ntkcheck.linearize  # noqa: F401
import ntkcheck.lla  # noqa: F401
import ntkcheck.numerics  # noqa: F401
import ntkcheck.plugin  # noqa: F401
import ntkcheck.predict  # noqa: F401
import ntkcheck.recorder  # noqa: F401
import ntkcheck.report  # noqa: F401
import ntkcheck.runs  # noqa: F401
import ntkcheck.runtime  # noqa: F401
import ntkcheck.runwriter  # noqa: F401
import ntkcheck.secondorder  # noqa: F401
import ntkcheck.seeding  # noqa: F401
import ntkcheck.setting  # noqa: F401
import ntkcheck.status  # noqa: F401
import ntkcheck.strategies  # noqa: F401
import ntkcheck.sweep  # noqa: F401
import ntkcheck.train  # noqa: F401
import ntkcheck.uncertainty  # noqa: F401
import ntkcheck.verdict  # noqa: F401

pytest_plugins = ["pytester"]
