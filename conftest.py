"""Repository-root pytest configuration.

The ntkcheck plugin itself is loaded through its ``pytest11`` entry point (installing the
package is enough); this file only keeps pytest out of generated folders.
"""

collect_ignore = ["reports", "benchmarks", "build"]
