"""Run profiles: how big a claims run is.

``smoke`` is for CI (seconds per claim), ``quick`` for a laptop CPU (the default: minutes for
the whole suite), ``paper`` for a GPU at the seed paper's scale. Command-line options
(``--ntk-widths``, ``--ntk-seeds``) override a profile's fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["CNN_CAP_REASON", "DEPTH_CAP_REASON", "PRACTICAL_CAP_REASON", "Profile", "PROFILES",
           "get_profile",
           "parse_widths"]

#: Why :attr:`Profile.cnn_max_width` exists, for ``ntk_measure.capped(..., why=CNN_CAP_REASON)``.
CNN_CAP_REASON = ("the profile's cnn_max_width: the second-order CNN claims (natural-gradient "
                  "steps on all N*O outputs) take minutes per unit above it on a CPU; the paper "
                  "profile sweeps every width")
#: Why :meth:`Profile.depth_width_cap` exists, for ``ntk_measure.capped(..., why=...)``.
DEPTH_CAP_REASON = ("the profile's depth_max_hidden: training or building an ensemble of deep "
                    "MLPs costs O(depth width^2) per step or network; the paper profile sweeps "
                    "every width at every depth")

#: Why :meth:`Profile.practical_width_cap` exists.
PRACTICAL_CAP_REASON = ("the profile's practical_max_width / practical_cnn_max_width: a converged "
                        "practical training run of this architecture costs too much on a CPU; "
                        "the paper profile trains every width")


@dataclass(frozen=True)
class Profile:
    """Sizes of a claims run.

    Attributes:
        name: Profile name.
        widths: Hidden widths swept by every claim, increasing.
        n_seeds: Seeds (independent initializations) per (architecture, width).
        n_inputs: Data points used by kernel and training claims.
        max_examples: Hypothesis examples (architectures) drawn per claim, besides pinned ones.
        train_steps: Gradient steps for training claims.
        derandomize: Whether Hypothesis draws the same architectures every run.
        shrink: Whether Hypothesis shrinks a failing claim to its simplest failing
            architecture (each shrink step re-runs the whole width sweep).
        cnn_max_width: Widest CNN (channels) that the second-order CNN claims measure, or
            None for every width: their natural-gradient steps on all ``N O`` outputs cost
            minutes per (width, seed) above it on a CPU, so wider CNNs are left to the
            ``paper`` profile on a GPU (the CNN kernel claims sweep every width).
        depths: MLP depths (hidden layers) that the depth-sweep claim tests measure, every
            one of them at every width (depth is a second axis, never drawn): the kernel
            regime needs width >> depth (Hanin & Nica 2020: the NTK's fluctuations grow
            like depth / width), so the width a claim needs is a function of depth.
        depth_max_hidden: Most hidden-to-hidden weights, ``(depth - 1) * width**2``, per
            network in a depth sweep that trains networks (a step costs O(N depth width^2))
            or builds ensembles of them (``nngp-*``); wider units are recorded as not
            measured (above the width cap) and left to the ``paper`` profile. None: no cap.
            Depth 1 is never capped; ``ntk-at-init``'s depth sweep measures every width.
        practical_max_width: Widest width the practical regime trains for a deep MLP
            (depth > 1, whose hidden ``width x width`` matrices make a converged training
            run on 1,497 digits cost O(width^2)), or None for every width. Depth-1 MLPs
            sweep every width.
        practical_cnn_max_width: The same for CNNs in the practical regime (a converged run
            of a CNN on 1,497 digits images takes minutes per network on one CPU core even
            at 64 channels); 0 measures none (the units are recorded as not measured: above
            the width cap), None every width.
        practical_examples: Examples of the practical regime's data set (trained on and
            held out), or None for all of them (1,797 digits: 1,497 trained on, 300 held
            out). Only ``smoke`` uses fewer, to stay a CI check.

    """

    name: str
    widths: tuple[int, ...]
    n_seeds: int
    n_inputs: int
    max_examples: int
    train_steps: int
    derandomize: bool
    shrink: bool = True
    cnn_max_width: int | None = None
    depths: tuple[int, ...] = (1, 2, 4)
    depth_max_hidden: int | None = None
    practical_max_width: int | None = None
    practical_cnn_max_width: int | None = None
    practical_examples: int | None = None

    def __post_init__(self) -> None:
        depths = tuple(self.depths)
        if (not depths or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                              for d in depths) or list(depths) != sorted(set(depths))):
            raise ValueError(f"profile {self.name!r}: depths must be distinct positive "
                             f"integers in increasing order, e.g. (1, 2, 4); got {self.depths!r}")
        object.__setattr__(self, "depths", depths)

    @property
    def n_cnn_inputs(self) -> int:
        """Inputs of the CNN settings: ``n_inputs // 4``, at least 8.

        An analytic CNTK costs O(N^2 (HW)^2) and a CNN training step O(N HW width), so CNN
        claims use a quarter of the profile's data points.
        """
        return max(8, self.n_inputs // 4)

    def width_cap(self, spec) -> int | None:
        """The widest width a kernel claim measures for ``spec``.

        :attr:`cnn_max_width` for the image families (``"cnn"``, ``"resnet"``), None (no cap)
        for MLPs. Use it as ``ntk_measure.capped(spec, ntk_sweep, profile.width_cap(spec))``.
        """
        return self.cnn_max_width if getattr(spec, "family", "mlp") != "mlp" else None

    def depth_sweep(self, spec):
        """``spec`` at each of :attr:`depths`, shallowest first: ``[replace(spec, depth=d)]``.

        Each copy has its own ``arch_id`` (``mlp-d1-...``, ``mlp-d2-...``), so every depth gets
        its own records and verdicts. Loop over it inside a claim test, with the widths of
        ``ntk_sweep`` inside: ``for spec_d in ntk_profile.depth_sweep(spec): for width, seed in
        ntk_sweep: ...``.

        Args:
            spec: An :class:`ntkcheck.arch.ArchSpec` (any family; its own depth is replaced).

        Returns:
            A list of specs, one per depth.

        """
        return [replace(spec, depth=d) for d in self.depths]

    def depth_width_cap(self, spec) -> int | None:
        """The widest width a training claim's depth sweep trains ``spec`` at.

        The largest width ``w`` with ``(spec.depth - 1) * w**2 <= depth_max_hidden``, or None
        (no cap) for depth 1 or without :attr:`depth_max_hidden`. Use it as
        ``ntk_measure.capped(spec, ntk_sweep, profile.depth_width_cap(spec),
        why=DEPTH_CAP_REASON)``.
        """
        if self.depth_max_hidden is None or spec.depth <= 1:
            return None
        return max(1, math.isqrt(self.depth_max_hidden // (spec.depth - 1)))
    def practical_width_cap(self, spec) -> int | None:
        """The widest width the practical regime trains for ``spec``.

        :attr:`practical_cnn_max_width` for image families, :attr:`practical_max_width` for
        MLPs deeper than one hidden layer, None (no cap) for depth-1 MLPs. Use it as
        ``ntk_measure.capped(spec, ntk_sweep, profile.practical_width_cap(spec))``.
        """
        if getattr(spec, "family", "mlp") != "mlp":
            return self.practical_cnn_max_width
        return self.practical_max_width if getattr(spec, "depth", 1) > 1 else None

    def with_overrides(self, widths: tuple[int, ...] | None = None,
                       n_seeds: int | None = None) -> Profile:
        """A copy with the given fields replaced (None keeps the profile's value)."""
        return replace(self, widths=widths or self.widths, n_seeds=n_seeds or self.n_seeds)


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", (32, 64, 128, 256), n_seeds=2, n_inputs=24, max_examples=1,
                     train_steps=20, derandomize=True, shrink=False, cnn_max_width=128,
                     depths=(1, 2), practical_max_width=128, practical_cnn_max_width=0,
                     practical_examples=600),
    "quick": Profile("quick", (64, 256, 1024, 4096), n_seeds=3, n_inputs=48, max_examples=2,
                     train_steps=50, derandomize=True, cnn_max_width=256, depths=(1, 2, 4),
                     depth_max_hidden=3 * 1024**2, practical_max_width=1024,
                     practical_cnn_max_width=0),
    "paper": Profile("paper", (64, 256, 1024, 4096, 16384), n_seeds=5, n_inputs=256,
                     max_examples=10, train_steps=500, derandomize=False, depths=(1, 2, 4, 8)),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``.

    Raises:
        ValueError: For an unknown name, listing the known ones.

    """
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown ntkcheck profile {name!r}; choose one of {sorted(PROFILES)}"
        ) from None


def parse_widths(text: str) -> tuple[int, ...]:
    """Parse ``"64,256,1024"`` into ``(64, 256, 1024)`` (sorted).

    Raises:
        ValueError: If an entry is not a positive integer, is given twice or is empty
            (``"64,,128"``), saying which, or if no width is given (``--ntk-widths=``).

    """
    widths = []
    parts = [p.strip() for p in str(text).split(",")]
    if any(parts) and not all(parts):  # "64,,128" or "64,128,": a width left out by mistake?
        raise ValueError(f"--ntk-widths: {text!r} has an empty entry; give comma-separated "
                         "positive integers such as 64,256,1024")
    for part in parts:
        if not part:
            continue
        try:
            w = int(part)
        except ValueError:
            raise ValueError(
                f"--ntk-widths: {part!r} is not an integer; give comma-separated positive "
                "integers such as 64,256,1024"
            ) from None
        if w < 1:
            raise ValueError(f"--ntk-widths: width {w} must be a positive integer")
        if w in widths:
            raise ValueError(f"--ntk-widths: width {w} is given twice; give each width once")
        widths.append(w)
    if not widths:
        raise ValueError("--ntk-widths: no widths given; e.g. --ntk-widths 64,256,1024")
    return tuple(sorted(set(widths)))
