"""Configuration of ntkcheck's own tests."""

pytest_plugins = ["pytester"]
