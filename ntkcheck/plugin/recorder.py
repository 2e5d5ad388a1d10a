"""The recorder behind the ``ntk_measure`` fixture: one record per (architecture, width, seed)."""

from __future__ import annotations

import contextlib
import math
import time
import traceback
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ntkcheck.plugin.options import (
    RECORD_KEY,
    Settings,
)
from ntkcheck.plugin.runtime import (
    Deadline,
    NtkcheckWarning,
)
from ntkcheck.plugin.sweep import sweep_units
from ntkcheck.status import MEASURED, NOT_MEASURED

if TYPE_CHECKING:  # ntkcheck.claim imports pandas and pandera: not at every pytest startup
    from ntkcheck.claim import Claim


class Recorder:
    """Records one measurement at a time for the running claim test (the ``ntk_measure`` fixture).

    Call it as ``ntk_measure(spec, width=..., seed=..., value=..., **extra)``: ``spec`` is an
    :class:`ntkcheck.arch.ArchSpec` (its fields go into the record), ``value`` the metric (a
    finite float), ``extra`` further named builtin scalars (e.g. ``train_loss=0.01``). The
    record's ``arch_id`` is ``spec.arch_id``, with ``-practical`` appended in a claim test
    marked ``setting="practical"``.

    Each record reaches the run folder as it is made (a worker's part file, or
    ``records.jsonl`` without xdist), so a crash or Ctrl-C loses only the unit in progress.
    ``--ntk-timeout`` is checked at every call of :meth:`__call__`, :meth:`seed` and
    :meth:`guard`. Per unit (architecture, width, seed index):

    * :meth:`seed` gives the network's initialization seed, derived from the claim, the
      architecture, the width and the seed index (:func:`ntkcheck.seeding.derive_seed`), so
      records do not depend on workers or test order;
    * :meth:`guard` wraps a unit: an out-of-memory error inside it (the kernel engine's
      estimate, or the device's) becomes a "not measured: out of memory" record and the
      sweep goes on with the other widths;
    * :meth:`capped` sweeps only the widths up to a cap (e.g. ``Profile.cnn_max_width``) and
      records the wider units as "not measured: above the width cap".
    """

    def __init__(self, item: pytest.Item, claim: Claim, settings: Settings, device: Any,
                 sink: Any = None, deadline: Deadline | None = None) -> None:
        self._item = item
        self._claim = claim
        self._settings = settings
        self._device = str(device)
        self._sink = sink
        self._deadline = deadline or Deadline(None)
        self._last = time.perf_counter()
        self._seq = 0
        self._specs: dict[str, Any] = {}  # architectures used, by arch_id, in order
        self._done: set[tuple[str, int, int]] = set()
        self._init_seeds: dict[tuple[str, int, int], int] = {}

    def _record(self, spec: Any, width: int, seed: int, value: float | None, status: str,
                dtype: str) -> dict[str, Any]:
        now = time.perf_counter()
        if isinstance(width, bool) or int(width) < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        setting = getattr(self._claim, "setting", "theory")
        # A practical test's architecture is its own row: never pooled with (or, on merging
        # runs, deduplicated against) a theory test of the same claim on the same network.
        arch_id = spec.arch_id if setting == "theory" else f"{spec.arch_id}-{setting}"
        record: dict[str, Any] = {"run_id": "", "claim_id": self._claim.id, "arch_id": arch_id}
        record.update(spec.fields())
        record.update(width=int(width), seed=int(seed), value=value, status=status,
                      profile=self._settings.profile.name, device=self._device,
                      dtype=str(dtype).replace("torch.", ""), elapsed_s=now - self._last,
                      nodeid=self._item.nodeid, setting=setting)
        init = self._init_seeds.get((spec.arch_id, int(width), int(seed)))
        if init is not None:
            record["init_seed"] = init
        return record

    def _emit(self, spec: Any, record: dict[str, Any]) -> dict[str, Any]:
        with self._deadline.critical():
            record["seq"] = self._seq
            self._seq += 1
            self._specs.setdefault(spec.arch_id, spec)
            self._done.add((spec.arch_id, record["width"], record["seed"]))
            self._item.user_properties.append((RECORD_KEY, record))
            if self._sink is not None:
                self._sink.write({"nodeid": self._item.nodeid, "claim": self._claim.to_dict(),
                                  "record": record})
        self._last = time.perf_counter()
        return record

    def __call__(self, spec: Any, *, width: int, seed: int, value: float,
                 dtype: str = "float64", **extra: Any) -> dict[str, Any]:
        """Record one measurement and return the record.

        Raises:
            ValueError: A non-finite value, a non-positive width, or a non-scalar extra.
            SweepStopped: After recording, when ``--ntk-timeout`` has passed (the plugin
                catches it, keeps the records and reports the rest as not measured).

        """
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(
                f"claim {self._claim.id!r} measured a non-finite value ({value}) for "
                f"{spec.arch_id} at width {width}, seed {seed}; a claim must record finite "
                "metrics (check the data for NaN/Inf and the learning rate for divergence)"
            )
        record = self._record(spec, width, seed, value, MEASURED, dtype)
        for key, val in extra.items():
            if key in record or key in ("seq", "init_seed", "reason"):
                raise ValueError(f"measure(): extra value {key!r} clashes with a record field")
            if hasattr(val, "item"):
                val = val.item()
            if not isinstance(val, (int, float, str, bool)) and val is not None:
                raise ValueError(f"measure(): extra value {key!r} must be a builtin scalar")
            record[key] = val
        self._emit(spec, record)
        self._deadline.check()
        return record

    def seed(self, spec: Any, *, width: int, seed: int) -> int:
        """The initialization seed of unit (``spec``, ``width``, ``seed``); seeds global RNGs.

        Returns :func:`ntkcheck.seeding.derive_seed` of (claim id, ``spec.arch_id``, width,
        seed index) after seeding ``random``, NumPy and torch with it
        (:func:`ntkcheck.seeding.seed_everything`); the unit's record gets it as
        ``init_seed``. Pass it to ``spec.with_width(width).build(seed=...)``.

        Raises:
            ValueError: On a width below 1 or a negative seed index.
            SweepStopped: When ``--ntk-timeout`` has passed.

        """
        from ntkcheck.seeding import derive_seed, seed_everything

        self._deadline.check()
        init = derive_seed(self._claim.id, spec.arch_id, width, seed)
        seed_everything(init)
        self._specs.setdefault(spec.arch_id, spec)
        self._init_seeds[(spec.arch_id, int(width), int(seed))] = init
        return init

    def not_measured(self, spec: Any, *, width: int, seed: int, status: str,
                     reason: str) -> dict[str, Any]:
        """Record that unit (``spec``, ``width``, ``seed``) was not measured, and why.

        Args:
            spec: The architecture.
            width: The width.
            seed: The seed index.
            status: A key of :data:`ntkcheck.status.NOT_MEASURED` (``"oom"``, ``"timeout"``,
                ``"capped"``).
            reason: One line for the report.

        Raises:
            ValueError: On an unknown status.

        """
        if status not in NOT_MEASURED:
            raise ValueError(f"status must be one of {tuple(NOT_MEASURED)}, got {status!r}")
        record = self._record(spec, width, seed, None, status, "")
        record["reason"] = str(reason).splitlines()[0][:500] if reason else status
        return self._emit(spec, record)

    def capped(self, spec: Any, sweep: Any, max_width: int | None,
               why: str = "") -> Iterator[tuple[int, int]]:
        """The ``(width, seed)`` pairs of ``ntk_sweep`` up to ``max_width``; record the rest.

        ``for width, seed in measure.capped(spec, sweep, ntk_profile.cnn_max_width):`` runs
        the units at widths ``<= max_width`` and records each wider unit as not measured with
        status ``"capped"`` (the report's grid and the terminal summary say "not measured:
        above the width cap"), so a width a claim leaves out on purpose reads differently
        from one that was lost. Verdicts judge the widest width measured.

        Args:
            spec: The architecture.
            sweep: The ``ntk_sweep`` fixture (or any iterable of ``(width, seed)`` pairs).
            max_width: The widest width to measure; None measures every width.
            why: Why the cap exists, appended to the record's ``reason``.

        Returns:
            An iterator over the ``(width, seed)`` pairs to measure, in ``ntk_sweep``'s order.

        """
        for width, seed in sweep:
            if max_width is None or width <= max_width:
                yield width, seed
            elif (spec.arch_id, int(width), int(seed)) not in self._done:
                reason = f"width {width} is above the cap {max_width}" + (
                    f" ({why})" if why else "")
                self.not_measured(spec, width=width, seed=seed, status="capped",
                                  reason=reason)

    def _units(self) -> list[tuple[int, int]]:
        p = self._settings.profile
        return sweep_units(self._claim.id, list(p.widths), list(range(p.n_seeds)),
                           self._settings.shard)

    def fill_not_measured(self, status: str, reason: str) -> int:
        """Record every unfinished unit of the architectures used so far; return how many."""
        n = 0
        for arch_id, spec in list(self._specs.items()):
            for width, seed in self._units():
                if (arch_id, width, seed) not in self._done:
                    self.not_measured(spec, width=width, seed=seed, status=status,
                                      reason=reason)
                    n += 1
        return n

    @contextlib.contextmanager
    def guard(self, spec: Any, *, width: int, seed: int | None = None) -> Iterator[int | None]:
        """Run one unit (or every seed of one width); an out-of-memory error skips it.

        ``with measure.guard(spec, width=w, seed=s) as init_seed:`` yields
        :meth:`seed` ``(spec, width=w, seed=s)`` (None when ``seed`` is None). When the body
        raises an out-of-memory error (:func:`ntkcheck.plugin.runtime.is_out_of_memory`: the kernel
        engine's :class:`~ntkcheck.kernels.KernelMemoryError` estimate, or
        ``torch.cuda.OutOfMemoryError``), the error is swallowed, memory is freed, the unit
        (every unmeasured seed of the width when ``seed`` is None) is recorded as "not
        measured: out of memory" with the error's first line as ``reason``, and an
        :class:`ntkcheck.plugin.runtime.NtkcheckWarning` is issued. Other errors propagate.

        Raises:
            SweepStopped: At entry, when ``--ntk-timeout`` has passed.

        """
        from ntkcheck.plugin.runtime import free_memory, is_out_of_memory

        self._deadline.check()
        init = self.seed(spec, width=width, seed=seed) if seed is not None else None
        self._specs.setdefault(spec.arch_id, spec)
        reason = None
        try:
            yield init
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            traceback.clear_frames(exc.__traceback__)  # drop the failed unit's tensors
        if reason is None:
            return
        free_memory(self._device)
        seeds = [seed] if seed is not None else [s for w, s in self._units() if w == width]
        for s in seeds:
            if (spec.arch_id, int(width), int(s)) not in self._done:
                self.not_measured(spec, width=width, seed=s, status="oom", reason=reason)
        warnings.warn(
            NtkcheckWarning(f"claim {self._claim.id!r}: {spec.arch_id} at width {width} not "
                            f"measured: out of memory ({reason}); the sweep goes on"),
            stacklevel=3,
        )
