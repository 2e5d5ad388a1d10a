"""Thread use of the kernels' loops over small blocks.

PyTorch's CPU kernels for ``sqrt``, ``exp`` and ``pow`` (the vectorized-math ones) split even
a few thousand elements across the intra-op thread pool. A loop over cache-sized blocks then
opens one parallel region per operation, and on a machine whose other cores are busy each
region waits for a descheduled worker thread (a scheduler time slice). The loops that run
many small elementwise operations therefore run them on the calling thread; matrix products
outside those loops keep the thread setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def calling_thread_only() -> Iterator[None]:
    """Run the PyTorch CPU operations inside the block with one intra-op thread.

    ``torch.set_num_threads`` is process-wide: the previous setting is restored on exit, also
    when the block raises. Use it only around loops of small operations (blocks that fit in a
    core's cache), where a parallel region costs more than the work it splits.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
