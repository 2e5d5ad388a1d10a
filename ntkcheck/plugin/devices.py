"""Device and parallelism choices for a test session: pure functions the plugin calls.

The CUDA device count is injectable everywhere (``cuda_count``, default
``torch.cuda.device_count()``), so the mapping logic is testable without a GPU.

Conventions: under pytest-xdist each worker has an id ``"gwK"`` (``K = 0, 1, ...``); the
controller (or a run without xdist) has ``"master"`` or no id. Worker ``K`` gets GPU
``K mod cuda_count``, so ``-n <number of GPUs>`` puts one worker on each GPU.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a device is resolved, not when the plugin loads
    import torch

__all__ = [
    "available_cpus",
    "visible_nvidia_gpus",
    "auto_num_workers",
    "resolve_device",
    "threads_per_worker",
    "worker_index",
]

_WORKER = re.compile(r"gw(\d+)")
_CUDA_K = re.compile(r"cuda:(\d+)")
_FORMS = "'auto', 'cpu', 'cuda' or 'cuda:K'"


def _cuda_count(cuda_count: int | None) -> int:
    if cuda_count is None:
        import torch

        count = torch.cuda.device_count()
    else:
        count = cuda_count
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"cuda_count must be an integer >= 0, got {count!r}")
    return count


def worker_index(worker_id: str | None) -> int | None:
    """Return ``K`` for an xdist worker id ``"gwK"``, else ``None`` (controller, no xdist)."""
    if worker_id is None:
        return None
    match = _WORKER.fullmatch(worker_id)
    return int(match.group(1)) if match else None


def resolve_device(
    option: str, worker_id: str | None = None, *, cuda_count: int | None = None
) -> torch.device:
    """Turn a ``--ntk-device`` option into the device this process should use.

    Args:
        option: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` (CUDA,
            required), or ``"cuda:K"`` (that GPU, for every worker). Case and surrounding
            spaces are ignored.
        worker_id: The xdist worker id (``"gw3"``), ``"master"`` or ``None``. With
            ``"auto"``/``"cuda"`` and several GPUs, worker ``gwK`` gets ``cuda:{K mod count}``;
            the controller and unknown ids get ``cuda:0``.
        cuda_count: Number of visible CUDA devices; ``torch.cuda.device_count()`` if ``None``.

    Returns:
        A ``torch.device`` with an explicit index for CUDA (``cuda:K``), or ``cpu``.

    Raises:
        ValueError: On an unknown option string, ``"cuda"`` or ``"cuda:K"`` when no CUDA
            device is visible, or ``"cuda:K"`` with ``K`` out of range; the message says
            which options would work.

    """
    import torch

    count = _cuda_count(cuda_count)
    if not isinstance(option, str):
        raise ValueError(f"device option must be a string ({_FORMS}), got {option!r}")
    opt = option.strip().lower()
    if opt == "cpu":
        return torch.device("cpu")
    if opt not in ("auto", "cuda") and not _CUDA_K.fullmatch(opt):
        raise ValueError(f"unknown device option {option!r}; use {_FORMS}")
    if opt == "auto" and count == 0:
        return torch.device("cpu")
    if count == 0:
        raise ValueError(
            f"device option {option!r} needs CUDA, but no CUDA device is visible "
            "(torch.cuda.device_count() == 0); use 'cpu', or 'auto' to take CUDA when present"
        )
    if opt in ("auto", "cuda"):
        k = worker_index(worker_id)
        return torch.device("cuda", 0 if k is None else k % count)
    k = int(_CUDA_K.fullmatch(opt).group(1))
    if k >= count:
        raise ValueError(
            f"device option {option!r} is out of range: {count} CUDA device(s) visible, "
            f"so use cuda:0 .. cuda:{count - 1}, or 'cuda' to spread workers over all of them"
        )
    return torch.device("cuda", k)


def available_cpus() -> int:
    """Return the number of CPUs this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def auto_num_workers(cpu_count: int | None = None, cuda_count: int | None = None) -> int:
    """Number of xdist workers for ``-n auto``: one per GPU if there are any, else one per CPU.

    Args:
        cpu_count: CPUs available; :func:`available_cpus` if ``None``.
        cuda_count: Visible CUDA devices; ``torch.cuda.device_count()`` if ``None``.

    Returns:
        ``cuda_count`` when it is positive, else ``cpu_count``; at least 1.

    Raises:
        ValueError: On a negative or non-integer count.

    """
    cpus = available_cpus() if cpu_count is None else cpu_count
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 0:
        raise ValueError(f"cpu_count must be an integer >= 0, got {cpus!r}")
    gpus = _cuda_count(cuda_count)
    return gpus if gpus > 0 else max(1, cpus)


def threads_per_worker(cpu_count: int, n_workers: int) -> int:
    """Torch intra-op threads per worker so that workers do not oversubscribe the CPUs.

    Args:
        cpu_count: CPUs available to the whole session.
        n_workers: Number of worker processes; 0 (xdist's ``-n 0``) means one process.

    Returns:
        ``max(1, cpu_count // max(n_workers, 1))``: never more threads in total than CPUs,
        unless there are more workers than CPUs, in which case each gets 1.

    Raises:
        ValueError: On a negative or non-integer count.

    """
    for name, value in (("cpu_count", cpu_count), ("n_workers", n_workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return max(1, cpu_count // max(n_workers, 1))


def visible_nvidia_gpus(proc: Path = Path("/proc/driver/nvidia/gpus"),
                        environ: dict[str, str] | None = None) -> int:
    """Count the NVIDIA GPUs this process may use, without importing torch.

    ``pytest -n auto`` asks for a worker count before any test is collected; importing torch
    (about a second, and CUDA initialisation) there would burden every project that installs
    ntkcheck, claims or not. ``CUDA_VISIBLE_DEVICES`` wins when set (its comma-separated
    entries up to the first invalid one, as CUDA reads it: ``""`` or ``"-1"`` hides every
    GPU); otherwise the Linux NVIDIA driver's ``/proc/driver/nvidia/gpus`` entries are counted.

    Args:
        proc: The driver's per-GPU folder (injectable for tests).
        environ: The environment (``os.environ`` if ``None``).

    Returns:
        The number of GPUs, 0 where none is visible or the count is unknown (no NVIDIA driver
        on Linux, another operating system): xdist's default worker count then applies.
    """
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = 0
        for entry in visible.split(","):
            entry = entry.strip()
            if not entry or entry.startswith("-"):
                break
            count += 1
        return count
    try:
        return sum(1 for _ in proc.iterdir())
    except OSError:
        return 0
