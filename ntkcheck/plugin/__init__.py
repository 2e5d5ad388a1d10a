"""The ntkcheck pytest plugin: options, fixtures, the recorder and Hypothesis support.

The hooks live in :mod:`ntkcheck.plugin.hooks` (the ``pytest11`` entry point). Importing this
package imports neither torch nor pandas: a project that installs ntkcheck and runs no claim
pays nothing for it.
"""
