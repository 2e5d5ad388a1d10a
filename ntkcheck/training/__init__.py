"""Training: the loops (full-batch GD, mini-batch SGD, Adam) and the regimes claims train in.

* :mod:`~ntkcheck.training.loops`: training loops, losses in the theory's units, and the
  kernel-scaled learning rate of the theory setting.
"""
