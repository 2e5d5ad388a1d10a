"""The run store: run folders written, read, merged, compared and exported.

* :mod:`~ntkcheck.runs.writer`: the run folder written on the controlling pytest process.
* :mod:`~ntkcheck.runs.store`: find, load, merge and write stored runs.
* :mod:`~ntkcheck.runs.outcomes`: the tests a claim is made of and their outcomes.
* :mod:`~ntkcheck.runs.compare` and :mod:`~ntkcheck.runs.export`: compare two runs; export
  tables as CSV or Parquet.

The HTML report is :mod:`ntkcheck.report`; the command line is :mod:`ntkcheck.cli`.
"""
