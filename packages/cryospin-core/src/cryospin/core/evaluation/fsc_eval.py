"""FSC after alignment: against a known truth (threshold 0.5) and between half-maps (0.143).

Ab-initio maps land in an arbitrary frame and hand (docs/CONVENTIONS.md items 11, 16, 17), so the
estimate (or half-map B) is first aligned onto the truth (or half-map A) with
:func:`cryospin.core.evaluation.align_maps.align_maps`; the curve itself is
:func:`cryospin.core.fsc.fsc` (shell ``s`` at ``s / (D * apix)`` 1/Å, shells ``0 .. D // 2``) and
the resolution :func:`cryospin.core.fsc.resolution_at_threshold` (first crossing, interpolated).

**Half-maps: held-out Fourier coefficients.** Aligning two half-maps picks the rotation, shift
and hand that maximise their agreement, so the FSC of the aligned pair is biased upwards wherever
the data say little (independently initialised runs on pure-noise images gave 0.2-0.6 at shells
1-3 of a 16-voxel box, and a "resolution" of 23-32 Å). :func:`half_map_fsc` therefore aligns half
B onto half A with a random, Friedel-symmetric half of A's Fourier coefficients zeroed
(:func:`holdout_partition`), and computes both curves on the other half only: the alignment never
sees the coefficients it is judged on, so on noise the held-out FSC has mean ~0 (it is noisier,
with half the voxels per shell). This holds while neighbouring Fourier coefficients are
independent, as for noise filling the box; a map confined to radius ``r`` correlates its
coefficients over about ``D / (2 r)`` voxels, and some bias then remains in the lowest shells.

Both an unmasked curve and a masked one are computed; the default mask is a soft sphere
(:func:`soft_sphere_mask`) centred on the box centre ``D // 2``, radius ``0.4 D`` and a raised-
cosine edge ``0.05 D`` wide, applied to both maps after alignment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cryospin.core.evaluation.align_maps import AlignmentInfo, align_maps
from cryospin.core.evaluation.arrays import as_numpy
from cryospin.core.evaluation.map_ops import radius_sq

__all__ = [
    "FSCResult",
    "fsc_curves",
    "fsc_vs_truth",
    "half_map_fsc",
    "holdout_partition",
    "soft_sphere_mask",
]


def soft_sphere_mask(
    box: int, radius: float | None = None, edge: float | None = None
) -> np.ndarray:
    """Soft spherical mask ``(box, box, box)`` in ``[0, 1]``, centred on voxel ``box // 2``.

    1 within ``radius`` voxels (default ``0.4 box``), 0 beyond ``radius + edge`` (default edge
    ``0.05 box``, at least 2 voxels), a raised cosine in between.
    """
    radius = 0.4 * box if radius is None else float(radius)
    edge = max(2.0, 0.05 * box) if edge is None else float(edge)
    dist = np.sqrt(radius_sq(box))
    if edge <= 0:
        return (dist <= radius).astype(np.float64)
    t = np.clip((dist - radius) / edge, 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


@dataclass
class FSCResult:
    """FSC curves of two maps after alignment.

    Attributes:
        frequency_per_A: ``(D // 2 + 1,)`` shell frequencies (1/Å), shell ``s`` at ``s / (D apix)``.
        fsc: unmasked FSC per shell.
        fsc_masked: FSC with the soft mask applied to both maps.
        threshold: 0.5 (vs truth) or 0.143 (half-maps).
        resolution_A: resolution of the unmasked curve at ``threshold``.
        resolution_masked_A: resolution of the masked curve.
        alignment: the alignment applied to the second map, or ``None`` when not aligned.
        aligned: the second map after alignment (float32 ``(D, D, D)``).
        kind: ``"vs_truth"`` or ``"half_maps"``.
        holdout: the curves use only the Fourier coefficients held out of the alignment.
    """

    frequency_per_A: np.ndarray
    fsc: np.ndarray
    fsc_masked: np.ndarray
    threshold: float
    resolution_A: float
    resolution_masked_A: float
    alignment: AlignmentInfo | None
    aligned: np.ndarray = field(repr=False)
    kind: str = "vs_truth"
    holdout: bool = False

    @property
    def shells(self) -> np.ndarray:
        """Shell indices ``0 .. D // 2``."""
        return np.arange(self.fsc.size)

    def curves(self) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
        """``{label: (frequency_per_A, fsc, threshold)}`` for :func:`plots.plot_fsc`."""
        base = "vs truth" if self.kind == "vs_truth" else "half-maps"
        return {
            f"{base} (unmasked)": (self.frequency_per_A, self.fsc, self.threshold),
            f"{base} (masked)": (self.frequency_per_A, self.fsc_masked, self.threshold),
        }

    def summary(self) -> dict[str, Any]:
        """JSON-friendly numbers (no curves): resolutions, threshold, alignment."""
        key = "resolution_vs_truth" if self.kind == "vs_truth" else "gold_standard_resolution"
        out: dict[str, Any] = {
            f"{key}_A": _finite_or_none(self.resolution_A),
            f"{key}_masked_A": _finite_or_none(self.resolution_masked_A),
            "fsc_threshold": self.threshold,
        }
        if self.alignment is not None:
            out["alignment"] = self.alignment.to_dict()
        if self.kind == "half_maps":
            out["fsc_fourier_holdout"] = self.holdout
        return out


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def fsc_curves(
    map1: Any, map2: Any, pixel_size_A: float, mask: Any | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(frequency_per_A, fsc)`` of two maps on the same grid (no alignment; numpy or torch)."""
    from cryospin.core.fsc import fsc, shell_frequencies

    a = torch.as_tensor(as_numpy(map1, np.float64))
    b = torch.as_tensor(as_numpy(map2, np.float64))
    m = None if mask is None else torch.as_tensor(as_numpy(mask, np.float64))
    curve = fsc(a, b, mask=m).numpy()
    return shell_frequencies(a.shape[-1], pixel_size_A).numpy(), curve


def holdout_partition(box: int, seed: int = 0) -> np.ndarray:
    """Return a random half of the Fourier voxels, ``(D, D, D)`` bool, closed under ``k -> -k``.

    Centred layout (DC at index ``D // 2``, :func:`cryospin.core.fourier.fft3_centered`); the
    partner of index ``i`` is ``(2 (D // 2) - i) mod D`` (for even ``D`` the unpaired first
    plane is its own partner). Zeroing either part of a real map's spectrum keeps it real. DC is
    always held out (a Pearson-scored alignment ignores it; the curve keeps its DC shell).
    """
    u = np.random.default_rng(seed).random((box, box, box))
    neg = (2 * (box // 2) - np.arange(box)) % box
    keep = (u + u[np.ix_(neg, neg, neg)]) > 1.0
    keep[box // 2, box // 2, box // 2] = True
    return keep


def _fsc_on(a: np.ndarray, b: np.ndarray, keep: np.ndarray, mask: Any | None) -> np.ndarray:
    """FSC per shell (:func:`cryospin.core.fsc.fsc` shells) over the Fourier voxels ``keep``."""
    from cryospin.core.fourier import fft3_centered, shell_index

    ta, tb = torch.as_tensor(a), torch.as_tensor(np.asarray(b, dtype=np.float64))
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask, dtype=np.float64))
        ta, tb = ta * m, tb * m
    f1, f2 = fft3_centered(ta), fft3_centered(tb)
    n = a.shape[0] // 2 + 1
    idx = shell_index(a.shape[0], 3)
    sel = torch.as_tensor(keep) & (idx < n)
    idx = idx[sel]

    def shell_sum(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n, dtype=x.dtype).index_add(0, idx, x[sel])

    cross = shell_sum((f1 * f2.conj()).real)
    p1 = shell_sum(f1.abs() ** 2)
    p2 = shell_sum(f2.abs() ** 2)
    return (cross / torch.sqrt(p1 * p2).clamp_min(1e-30)).numpy()


def _without(vol: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """Return the real map ``vol`` with its centred Fourier coefficients at ``drop`` zeroed."""
    from cryospin.core.fourier import fft3_centered, ifft3_centered

    f = fft3_centered(torch.as_tensor(vol))
    return ifft3_centered(f * torch.as_tensor(~drop)).real.numpy()


def _evaluate(
    first: Any,
    second: Any,
    pixel_size_A: float,
    threshold: float,
    align: bool,
    mask: Any | None,
    kind: str,
    align_kwargs: dict[str, Any],
    holdout: bool = False,
) -> FSCResult:
    from cryospin.core.fsc import resolution_at_threshold

    a = as_numpy(first, np.float64)
    b = as_numpy(second, np.float64)
    if a.shape != b.shape or a.ndim != 3 or len(set(a.shape)) != 1:
        raise ValueError(f"maps must be cubic and of equal shape, got {a.shape} and {b.shape}")
    info: AlignmentInfo | None = None
    box = a.shape[0]
    held = holdout_partition(box) if (align and holdout) else None
    if align:
        ref = a if held is None else _without(a, held)
        aligned, info = align_maps(ref, b, pixel_size_A, **align_kwargs)
    else:
        aligned = b.astype(np.float32)
    m = soft_sphere_mask(box) if mask is None else as_numpy(mask, np.float64)
    freq, curve = fsc_curves(a, aligned, pixel_size_A)
    _, curve_m = fsc_curves(a, aligned, pixel_size_A, mask=m)
    if held is not None:
        curve, curve_m = _fsc_on(a, aligned, held, None), _fsc_on(a, aligned, held, m)
    return FSCResult(
        frequency_per_A=freq,
        fsc=curve,
        fsc_masked=curve_m,
        threshold=threshold,
        resolution_A=resolution_at_threshold(torch.as_tensor(curve), box, pixel_size_A, threshold),
        resolution_masked_A=resolution_at_threshold(
            torch.as_tensor(curve_m), box, pixel_size_A, threshold
        ),
        alignment=info,
        aligned=aligned,
        kind=kind,
        holdout=held is not None,
    )


def fsc_vs_truth(
    estimate: Any,
    truth: Any,
    pixel_size_A: float,
    *,
    align: bool = True,
    mask: Any | None = None,
    threshold: float = 0.5,
    **align_kwargs: Any,
) -> FSCResult:
    """FSC of ``estimate`` against ``truth`` after aligning the estimate onto the truth.

    Args:
        estimate: reconstructed map ``(D, D, D)``.
        truth: ground-truth map on the same grid.
        pixel_size_A: voxel size in Å.
        align: search rotation, hand and shift first (:func:`align_maps`); ``False`` when the
            estimate is already in the truth's frame.
        mask: real-space mask for the masked curve (default :func:`soft_sphere_mask`).
        threshold: resolution threshold (0.5 against a truth).
        **align_kwargs: passed to :func:`align_maps` (e.g. ``hands="same"``).

    Returns:
        :class:`FSCResult` (``kind="vs_truth"``).
    """
    return _evaluate(
        truth, estimate, pixel_size_A, threshold, align, mask, "vs_truth", align_kwargs
    )


def half_map_fsc(
    half_a: Any,
    half_b: Any,
    pixel_size_A: float,
    *,
    align: bool = True,
    mask: Any | None = None,
    threshold: float = 0.143,
    holdout: bool = True,
    **align_kwargs: Any,
) -> FSCResult:
    """Gold-standard FSC between half-maps after aligning ``half_b`` onto ``half_a`` (0.143).

    Same arguments as :func:`fsc_vs_truth`; ``result.aligned`` is half-map B in A's frame, so
    ``0.5 * (half_a + result.aligned)`` is the full map. With ``holdout`` (and ``align``) the
    alignment is fitted on A without a random half of its Fourier coefficients and both curves
    are computed on that half only (module doc: no alignment bias; ``result.holdout``).
    """
    return _evaluate(
        half_a, half_b, pixel_size_A, threshold, align, mask, "half_maps", align_kwargs, holdout
    )
