"""Particle shifts under a global map alignment (rotation, hand, 3D translation), and their error.

An ab-initio map is defined only up to a global rotation, a mirror **and a translation**: with
estimated shifts, a 3D shift ``t`` of the whole map trades against the particles' 2D shifts. After
:func:`cryospin.core.evaluation.align_maps.align_maps` put the map into a reference frame, each
particle's shift must be re-expressed together with its rotation; this module does that and
measures shift errors against a truth after the best global translation.

Conventions
-----------
* Poses are RELION's ``A`` (map -> image coordinates, column vectors); a shift ``s = (sx, sy)``
  is the **content translation** of the image: ``image = phase_shift(CTF * slice, s)``
  (:func:`cryospin.core.slicing.phase_shift`, content moves by ``+s``), i.e. ``s = -origin``
  with RELION's ``rlnOriginX/YAngst`` (docs/CONVENTIONS.md item 9). Shifts and ``t`` share one unit
  (Å, or pixels = voxels).
* The alignment ``(R, t, flipped)`` has the meaning of ``align_maps``: the reference map is
  ``V_ref(x) = V'(R^T (x - t))`` with ``V' = flip_hand(V)`` when flipped (else ``V``), ``x`` and
  ``t`` ordered ``(x, y, z)`` from the centre voxel ``D // 2``.

Derivation
----------
The image of particle ``i`` is ``I_i(p) = P[A_i] V (p - s_i)`` with the projection
``P[A] V (p) = integral of V(A^T (p, p_z)) over p_z`` (``p = (p_x, p_y)`` image coordinates).

*Mirror.* ``P[A] V = P[F A F] flip(V)`` exactly, ``F = diag(1, 1, -1)``
(:mod:`cryospin.core.evaluation.pose_error`); ``F`` does not touch image ``x, y``, so the shift is
unchanged. Write ``B_i = H(A_i)`` (``F A_i F`` when flipped, else ``A_i``).

*Rotation and translation.* ``V'(y) = V_ref(R y + t)``. With ``A'_i = B_i R^T``,
``V'(B_i^T p) = V_ref(R B_i^T p + t) = V_ref(A'_i^T (p + A'_i t))``, and integrating over ``p_z``
absorbs the third component of ``A'_i t``, so ``P[B_i] V' (p) = P[A'_i] V_ref (p + (A'_i t)_xy)``.
Hence ``I_i(p) = P[A'_i] V_ref (p - s'_i)`` with

    A'_i = H(A_i) R^T,        s'_i = s_i - (A'_i t)_xy        (origins: o'_i = o_i + (A'_i t)_xy)

where ``(A'_i t)_xy`` is the first two components of the aligned pose applied to ``t``. Checked
against images of a map moved by ``scipy.ndimage`` in ``tests/core/test_evaluation_shift_error.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cryospin.core.evaluation.arrays import as_numpy

__all__ = ["ShiftErrorResult", "align_shifts", "shift_error"]


def _as_array(x: Any, name: str, tail: tuple[int, ...]) -> np.ndarray:
    arr = as_numpy(x, np.float64)
    if arr.ndim != len(tail) + 1 or arr.shape[1:] != tail:
        want = ", ".join(map(str, tail))
        raise ValueError(f"{name} must have shape (N, {want}), got {arr.shape}")
    return arr


def align_shifts(shifts: Any, aligned_rotations: Any, translation: Any) -> np.ndarray:
    """Re-express content shifts after a map alignment: ``s'_i = s_i - (A'_i t)_xy`` (module doc).

    Args:
        shifts: ``(N, 2)`` content translations ``(sx, sy)`` in the estimated map's frame.
        aligned_rotations: ``(N, 3, 3)`` poses already in the reference frame,
            ``A'_i = H(A_i) R^T``
            (:func:`~cryospin.core.evaluation.pose_error.apply_pose_alignment`).
        translation: ``(3,)`` map translation ``t`` ``(x, y, z)`` of the alignment, same unit as
            ``shifts`` (e.g. ``AlignmentInfo.shift_A`` with shifts in Å).

    Returns:
        ``(N, 2)`` float64 shifts in the reference frame (RELION origins: negate in and out).

    Raises:
        ValueError: bad shapes or ``N`` differs.
    """
    s = _as_array(shifts, "shifts", (2,))
    rot = _as_array(aligned_rotations, "aligned_rotations", (3, 3))
    t = np.asarray(translation, dtype=np.float64)
    if t.shape != (3,):
        raise ValueError(f"translation must have shape (3,), got {t.shape}")
    if len(s) != len(rot):
        raise ValueError(f"{len(s)} shifts but {len(rot)} rotations")
    return s - rot[:, :2, :] @ t


@dataclass(frozen=True)
class ShiftErrorResult:
    """Outcome of :func:`shift_error`.

    Attributes:
        errors: ``(N,)`` distance between re-expressed and true shifts (unit of the input).
        mean: mean of ``errors``.
        median: median of ``errors``.
        translation: ``(3,)`` best global map translation ``t`` ``(x, y, z)``.
    """

    errors: np.ndarray
    mean: float
    median: float
    translation: np.ndarray

    def summary(self, unit: str = "A") -> dict[str, Any]:
        """JSON-friendly numbers: ``shift_error_{median,mean}_{unit}``, ``global_shift_{unit}``."""
        return {
            f"shift_error_median_{unit}": self.median,
            f"shift_error_mean_{unit}": self.mean,
            f"global_shift_{unit}": self.translation.tolist(),
        }


def shift_error(
    estimated: Any, true: Any, aligned_rotations: Any, *, n_refine: int = 10
) -> ShiftErrorResult:
    """Per-particle shift errors after the best global translation of the map.

    The estimates are re-expressed with :func:`align_shifts` for the ``t`` that minimises
    ``sum_i |s_i - (A'_i t)_xy - s_true,i|^2`` (linear least squares in ``t``), then refitted on
    the better half of the particles (trimmed least squares) while the median error decreases,
    so that particles with wrong rotations do not pull ``t``. The analogue of
    :func:`~cryospin.core.evaluation.pose_error.rotation_error`'s best global rotation: a
    component of ``t`` along a direction that no particle's image plane sees is undetermined and
    set to 0 (minimum norm).

    Args:
        estimated: ``(N, 2)`` estimated content shifts (``-origin``), e.g. in Å.
        true: ``(N, 2)`` true content shifts, same unit.
        aligned_rotations: ``(N, 3, 3)`` estimated poses in the true frame, ``H(A_i) R^T``.
        n_refine: at most this many trimmed refits.

    Returns:
        :class:`ShiftErrorResult` (errors and ``t`` in the input's unit).

    Raises:
        ValueError: bad shapes or the numbers of particles differ.
    """
    est = _as_array(estimated, "estimated shifts", (2,))
    tru = _as_array(true, "true shifts", (2,))
    rot = _as_array(aligned_rotations, "aligned_rotations", (3, 3))
    if not len(est) == len(tru) == len(rot):
        raise ValueError(f"{len(est)} estimated, {len(tru)} true shifts, {len(rot)} rotations")
    design = rot[:, :2, :]  # (N, 2, 3): (A'_i t)_xy = design_i @ t
    target = est - tru

    def fit(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.linalg.lstsq(design[keep].reshape(-1, 3), target[keep].reshape(-1), rcond=None)[0]
        return t, np.linalg.norm(target - design @ t, axis=-1)

    t, err = fit(np.ones(len(est), dtype=bool))
    for _ in range(n_refine):
        t_new, err_new = fit(err <= np.median(err))
        if np.median(err_new) >= np.median(err) - 1e-12:
            break
        t, err = t_new, err_new
    return ShiftErrorResult(
        errors=err, mean=float(np.mean(err)), median=float(np.median(err)), translation=t
    )
