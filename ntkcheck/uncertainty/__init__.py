"""Uncertainty quantification: linearized Laplace, the NTK-GP, calibration, bandits (Sec. 3.2).

* :mod:`~ntkcheck.uncertainty.laplace`: the linearized Laplace approximation through
  laplace-torch, and the NTK Gaussian process it becomes.
* :mod:`~ntkcheck.uncertainty.lla`: end-to-end LLA measurements of one network.
* :mod:`~ntkcheck.uncertainty.calibration`: NLL, ECE and interval coverage.
* :mod:`~ntkcheck.uncertainty.bandits`: neural contextual bandits and NeuralUCB-style agents.
"""
