"""The kernel regime: linearized networks, closed-form predictions, lazy training, features.

* :mod:`~ntkcheck.kernel_regime.linearize`: the linearized network (Lee et al. 2019, eq. 5).
* :mod:`~ntkcheck.kernel_regime.predict`: MSE gradient flow, kernel regression and the NTK-GP
  in closed form.
* :mod:`~ntkcheck.kernel_regime.features`: hidden representations, CKA, the learning-rate
  weighted NTK (feature learning).
"""
