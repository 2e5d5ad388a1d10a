"""Second-order optimization in the kernel regime (Wenger et al. 2023, Sec. 3.1).

* :mod:`~ntkcheck.optim.jacobian`: Jacobian matrices and operators, Gram spectra, Jacobian
  stability: the two conditions of fast natural-gradient descent (Zhang et al. 2019).
* :mod:`~ntkcheck.optim.natural_gradient`: natural gradient / Gauss-Newton descent, tuned
  gradient descent, and both on the linearized model in closed form.
* :mod:`~ntkcheck.optim.optimizers`: SGD with momentum, Adam, K-FAC (curvlinops) and
  mini-batch Gauss-Newton as practitioners run them, each run recorded as a loss curve.
"""
