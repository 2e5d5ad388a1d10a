"""Training: the loops (full-batch GD, mini-batch SGD, Adam) and the regimes claims train in.

* :mod:`~ntkcheck.training.loops`: training loops, losses in the theory's units, and the
  kernel-scaled learning rate of the theory setting.
* :mod:`~ntkcheck.training.regimes`: the theory regime and the one practical regime every
  training claim's practical test uses (standard parametrization, width-independent learning
  rate chosen once on a grid, Adam / SGD with momentum, mini-batches, cross-entropy, trained
  to convergence), and the cached practical training run claims measure.
"""
