"""Memory estimates and the guard that refuses kernels that would not fit in memory.

Available memory is read without psutil: on CUDA from ``torch.cuda.mem_get_info``; on the CPU
from ``MemAvailable`` in ``/proc/meminfo`` (Linux), else from ``os.sysconf`` (available physical
pages times the page size).
"""

from __future__ import annotations

import os

import torch

GIB = float(1 << 30)


class KernelMemoryError(MemoryError):
    """Raised before forming a Jacobian or kernel whose estimated size exceeds free memory."""


def available_memory_bytes(device: torch.device | str = "cpu") -> int | None:
    """Bytes of memory currently available on ``device``.

    Args:
        device: A torch device (``"cpu"``, ``"cuda:0"``, ...).

    Returns:
        Available bytes, or ``None`` where they cannot be determined (then nothing is refused).

    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(estimate_bytes: float, device: torch.device | str, what: str,
                 advice: str | None = None) -> None:
    """Raise :class:`KernelMemoryError` if ``estimate_bytes`` exceeds the available memory.

    Args:
        estimate_bytes: Estimated peak bytes of the computation about to run.
        device: Device the computation runs on.
        what: Short description of the computation, used in the message.
        advice: What to do instead, ending the message (default: the empirical NTK's
            ``batch_size``, width and implementation choices).

    Raises:
        KernelMemoryError: If the estimate exceeds the memory available on ``device``; the
            message gives both in GiB and suggests ``batch_size`` or a smaller width.

    """
    available = available_memory_bytes(device)
    if available is None or estimate_bytes <= available:
        return
    if advice is None:
        advice = ("pass a smaller batch_size= (inputs are then processed in blocks), use a "
                  "smaller width, or choose implementation='structured' or 'ntvp', which never "
                  "hold the full Jacobian")
    raise KernelMemoryError(
        f"{what} needs an estimated {estimate_bytes / GIB:.2f} GiB but only "
        f"{available / GIB:.2f} GiB is available on {torch.device(device)}; {advice}"
    )
