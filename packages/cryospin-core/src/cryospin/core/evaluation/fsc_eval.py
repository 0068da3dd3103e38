"""FSC after alignment: against a known truth (threshold 0.5) and between half-maps (0.143).

Ab-initio maps land in an arbitrary frame and hand (docs/CONVENTIONS.md items 11, 16, 17), so the
estimate (or half-map B) is first aligned onto the truth (or half-map A) with
:func:`cryospin.core.evaluation.align_maps.align_maps`; the curve itself is
:func:`cryospin.core.fsc.fsc` (shell ``s`` at ``s / (D * apix)`` 1/Å, shells ``0 .. D // 2``) and
the resolution :func:`cryospin.core.fsc.resolution_at_threshold` (first crossing, interpolated).

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
from cryospin.core.evaluation.map_ops import radius_sq

__all__ = ["FSCResult", "fsc_curves", "fsc_vs_truth", "half_map_fsc", "soft_sphere_mask"]


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
        return out


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def fsc_curves(
    map1: Any, map2: Any, pixel_size_A: float, mask: Any | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(frequency_per_A, fsc)`` of two maps on the same grid (no alignment; numpy or torch)."""
    from cryospin.core.fsc import fsc, shell_frequencies

    a = torch.as_tensor(np.asarray(_np(map1), dtype=np.float64))
    b = torch.as_tensor(np.asarray(_np(map2), dtype=np.float64))
    m = None if mask is None else torch.as_tensor(np.asarray(_np(mask), dtype=np.float64))
    curve = fsc(a, b, mask=m).numpy()
    return shell_frequencies(a.shape[-1], pixel_size_A).numpy(), curve


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _evaluate(
    first: Any,
    second: Any,
    pixel_size_A: float,
    threshold: float,
    align: bool,
    mask: Any | None,
    kind: str,
    align_kwargs: dict[str, Any],
) -> FSCResult:
    from cryospin.core.fsc import resolution_at_threshold

    a = np.asarray(_np(first), dtype=np.float64)
    b = np.asarray(_np(second), dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3 or len(set(a.shape)) != 1:
        raise ValueError(f"maps must be cubic and of equal shape, got {a.shape} and {b.shape}")
    info: AlignmentInfo | None = None
    if align:
        aligned, info = align_maps(a, b, pixel_size_A, **align_kwargs)
    else:
        aligned = b.astype(np.float32)
    box = a.shape[0]
    m = soft_sphere_mask(box) if mask is None else np.asarray(_np(mask), dtype=np.float64)
    freq, curve = fsc_curves(a, aligned, pixel_size_A)
    _, curve_m = fsc_curves(a, aligned, pixel_size_A, mask=m)
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
    **align_kwargs: Any,
) -> FSCResult:
    """Gold-standard FSC between half-maps after aligning ``half_b`` onto ``half_a`` (0.143).

    Same arguments as :func:`fsc_vs_truth`; ``result.aligned`` is half-map B in A's frame, so
    ``0.5 * (half_a + result.aligned)`` is the full map.
    """
    return _evaluate(
        half_a, half_b, pixel_size_A, threshold, align, mask, "half_maps", align_kwargs
    )
