"""ntkcheck: check the predictions of neural tangent kernel theory against real networks."""

__version__ = "0.1.0"
