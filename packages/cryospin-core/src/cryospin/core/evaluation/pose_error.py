"""Rotation error of estimated poses against true poses, after the best global rotation and hand.

An ab-initio reconstruction is defined only up to a global rotation and a mirror
(docs/CONVENTIONS.md item 11), so estimated poses can be compared with the truth only after
searching both.

Conventions
-----------
Poses are RELION's matrix ``A`` ``(N, 3, 3)``: it maps map coordinates to image coordinates,
acting on column vectors, and the image is the projection of the map along the image ``z`` axis,
i.e. the integral of ``V(A^T p)`` over ``p_z``.

*Global rotation.* If a map is rotated, ``V'(x) = V(G x)``, its projections are those of ``V`` with
poses ``A' = A G`` (because ``V'(A'^T p) = V(G A'^T p)``).

*Mirror* (hand flip, :func:`cryospin.core.evaluation.align_maps.flip_hand`: ``z -> -z``,
``V'(x) = V(F x)`` with ``F = diag(1, 1, -1)``). ``F A'^T = A^T F`` holds for ``A' = F A F``, and
``F`` acting on *image* coordinates only reverses the integration variable ``p_z``, which leaves the
projection unchanged. Hence the mirrored map's projections are **exactly** (no image mirroring)
those of the original map at the conjugated poses ``A' = F A F``, a proper rotation
(:func:`flip_hand_poses`; proved numerically in ``tests/core/test_evaluation_pose_error.py``).

*Alignment result.* :func:`rotation_error` returns ``rotation`` ``R`` and ``flipped`` with the same
meaning as :func:`cryospin.core.evaluation.align_maps.align_maps`: the estimated map, mirrored first
when ``flipped`` and then rotated by ``R`` (``V_aligned(x) = V(R^T x)``), lies on the true map.
The estimated poses expressed in the true frame are then ``H(A_est) @ R.T`` with ``H(A) = F A F``
when flipped and ``H(A) = A`` otherwise (:func:`apply_pose_alignment`).

Shifts follow the map's 3D translation, ``s' = s - (A' t)_xy``: see
:mod:`cryospin.core.evaluation.shift_error`. A symmetric truth (e.g. C2) makes each particle's
pose ambiguous up to the symmetry: :func:`symmetric_pose_errors`.

The viewing (projection) direction of a pose in map coordinates is ``A^T e_z``, the third **row**
of ``A``; ``viewdir_errors_deg`` are the angles between the true and the aligned third rows.

Algorithm (inspired by the paper's ``utils/rot_calc_error.py``, which tries 1000 single-particle
references with and without flip): for each hand, candidate alignments ``Q = H(A_est,k)^T A_true,k``
from up to ``n_candidates`` particles are scored by the median geodesic error over up to ``n_score``
particles; the best is then refined by trimmed chordal-L2 (Procrustes, SVD) fits on the particles
with the smallest errors (nearest rotation: :func:`cryospin.core.so3.project_so3`), kept only while
the median error decreases. Everything is float64 numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cryospin.core.evaluation.arrays import as_numpy
from cryospin.core.evaluation.point_group import PointGroup, detect_point_group_cached
from cryospin.core.so3 import geodesic_distance_deg, project_so3

__all__ = [
    "FLIP",
    "PoseErrorResult",
    "apply_pose_alignment",
    "flip_hand_poses",
    "geodesic_deg",
    "rotation_error",
    "symmetric_pose_errors",
    "viewing_directions",
]

FLIP = np.diag([1.0, 1.0, -1.0])
"""The mirror ``z -> -z``, ``diag(1, 1, -1)``."""


def _as_rotations(x: Any, name: str) -> np.ndarray:
    arr = as_numpy(x, np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape (N, 3, 3), got {arr.shape}")
    return arr


def _rotation_pair(estimated: Any, true: Any) -> tuple[np.ndarray, np.ndarray]:
    est = _as_rotations(estimated, "estimated")
    tru = _as_rotations(true, "true")
    if est.shape != tru.shape:
        raise ValueError(f"estimated {est.shape} and true {tru.shape} shapes differ")
    return est, tru


def flip_hand_poses(rotations: Any) -> np.ndarray:
    """Poses of the hand-flipped (``z -> -z``) map that give the same images: ``F A F``.

    Accepts ``(..., 3, 3)`` numpy arrays or torch tensors; returns float64 numpy. An involution.
    """
    r = as_numpy(rotations, np.float64)
    if r.shape[-2:] != (3, 3):
        raise ValueError(f"rotations must have shape (..., 3, 3), got {r.shape}")
    return FLIP @ r @ FLIP


def viewing_directions(rotations: Any) -> np.ndarray:
    """Return the viewing (projection) directions ``(N, 3)`` in map coordinates: row 3 of ``A``.

    The image integrates along image ``z``; in map coordinates that is ``A^T e_z``, the third row.
    """
    r = _as_rotations(rotations, "rotations")
    return r[:, 2, :].copy()


def geodesic_deg(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Geodesic angle in degrees between rotations ``(..., 3, 3)`` (broadcasting), in ``[0, 180]``.

    The angle of ``M = R1^T R2`` as ``atan2(|vee(M)|, (tr M - 1) / 2)``, accurate near 0 and 180
    (:func:`cryospin.core.so3.geodesic_distance_deg` in float64).
    """
    r1, r2 = np.asarray(r1), np.asarray(r2)
    a, b = (torch.as_tensor(np.ascontiguousarray(r, dtype=np.float64)) for r in (r1, r2))
    dtype = np.result_type(r1.dtype, r2.dtype, np.float16)  # the inputs' float type
    return geodesic_distance_deg(a, b).numpy().astype(dtype, copy=False)


def _angle_from_trace(tr: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(0.5 * (tr - 1.0), -1.0, 1.0)))


@dataclass(frozen=True)
class PoseErrorResult:
    """Outcome of :func:`rotation_error`.

    Attributes:
        errors_deg: ``(N,)`` geodesic error of each aligned estimate, degrees.
        viewdir_errors_deg: ``(N,)`` angle between aligned and true viewing directions, degrees.
        mean_deg: mean of ``errors_deg``.
        median_deg: median of ``errors_deg``.
        rotation: ``(3, 3)`` rotation ``R`` that maps the estimated frame onto the true one (after
            the mirror when ``flipped``); same meaning as ``align_maps``' ``info.rotation``.
        flipped: whether the estimated hand is the mirror of the truth's.
        aligned: ``(N, 3, 3)`` estimated poses in the true frame, ``H(A_est) @ R.T``.
    """

    errors_deg: np.ndarray
    viewdir_errors_deg: np.ndarray
    mean_deg: float
    median_deg: float
    rotation: np.ndarray
    flipped: bool
    aligned: np.ndarray

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (no per-particle arrays)."""
        return {
            "rotation_error_mean_deg": self.mean_deg,
            "rotation_error_median_deg": self.median_deg,
            "viewdir_error_mean_deg": float(np.mean(self.viewdir_errors_deg)),
            "viewdir_error_median_deg": float(np.median(self.viewdir_errors_deg)),
            "flipped": self.flipped,
            "global_rotation": self.rotation.tolist(),
        }


def apply_pose_alignment(rotations: Any, rotation: np.ndarray, flipped: bool) -> np.ndarray:
    """Express estimated poses in the reference frame: ``H(A) @ rotation.T`` (see module doc).

    Use it to align, e.g., every head's poses with the alignment found for the selected head.
    Accepts ``(..., 3, 3)``; returns float64 numpy.
    """
    a = as_numpy(rotations, np.float64)
    if flipped:
        a = FLIP @ a @ FLIP
    return a @ np.asarray(rotation, dtype=np.float64).T


def _best_for_hand(
    est: np.ndarray,
    true: np.ndarray,
    rng: np.random.Generator,
    n_candidates: int,
    n_score: int,
    n_refine: int,
) -> tuple[np.ndarray, float]:
    """Best ``Q`` (``true ~ est @ Q``) for one hand, and its median error over all particles."""
    n = est.shape[0]
    # M_i = est_i^T true_i; the error of est_i Q against true_i has cos = (<M_i, Q> - 1) / 2.
    m = np.swapaxes(est, -1, -2) @ true
    cand_idx = rng.choice(n, size=min(n, n_candidates), replace=False)
    score_idx = rng.choice(n, size=min(n, n_score), replace=False) if n > n_score else np.arange(n)
    candidates = m[cand_idx]  # Q_k = est_k^T true_k
    traces = np.einsum("iab,kab->ki", m[score_idx], candidates)
    medians = np.median(_angle_from_trace(traces), axis=1)
    q = candidates[int(np.argmin(medians))]

    def errors(qq: np.ndarray) -> np.ndarray:
        return _angle_from_trace(np.einsum("iab,ab->i", m, qq))

    err = errors(q)
    best_median = float(np.median(err))
    for _ in range(n_refine):
        keep = err <= np.median(err)  # the better half: trimmed Procrustes
        q_new = project_so3(m[keep].sum(0))
        err_new = errors(q_new)
        med_new = float(np.median(err_new))
        if med_new >= best_median - 1e-12:
            break
        q, err, best_median = q_new, err_new, med_new
    return q, best_median


def rotation_error(
    estimated: Any,
    true: Any,
    *,
    hands: str = "both",
    n_candidates: int = 256,
    n_score: int = 4096,
    n_refine: int = 25,
    seed: int = 0,
) -> PoseErrorResult:
    """Per-particle rotation errors after the best global rotation and hand (see module doc).

    Args:
        estimated: ``(N, 3, 3)`` estimated poses (RELION ``A``), numpy or torch.
        true: ``(N, 3, 3)`` true poses, same order.
        hands: ``"both"`` (search the mirror too), ``"same"`` or ``"flipped"``.
        n_candidates: particles whose single-particle alignment is tried as a global candidate.
        n_score: particles on which candidates are scored (median error).
        n_refine: at most this many trimmed-Procrustes refinement steps.
        seed: seed of the particle subsampling.

    Returns:
        :class:`PoseErrorResult`. The errors are invariant to any global rotation applied to the
        estimates (``A_est -> A_est @ G``), and to mirroring them when ``hands="both"``.

    Raises:
        ValueError: shapes differ or are not ``(N, 3, 3)``, or ``hands`` is unknown.
    """
    est, tru = _rotation_pair(estimated, true)
    if hands not in ("both", "same", "flipped"):
        raise ValueError(f"hands must be 'both', 'same' or 'flipped', got {hands!r}")
    options = {"both": (False, True), "same": (False,), "flipped": (True,)}[hands]
    best: tuple[float, bool, np.ndarray] | None = None
    for flipped in options:
        rng = np.random.default_rng(seed)
        h = FLIP @ est @ FLIP if flipped else est
        q, med = _best_for_hand(h, tru, rng, n_candidates, n_score, n_refine)
        if best is None or med < best[0]:
            best = (med, flipped, q)
    assert best is not None
    _, flipped, q = best
    rotation = q.T
    aligned = apply_pose_alignment(est, rotation, flipped)
    errors = geodesic_deg(tru, aligned)
    cos_view = np.clip(np.einsum("ij,ij->i", aligned[:, 2, :], tru[:, 2, :]), -1.0, 1.0)
    view = np.degrees(np.arccos(cos_view))
    return PoseErrorResult(
        errors_deg=errors,
        viewdir_errors_deg=view,
        mean_deg=float(np.mean(errors)),
        median_deg=float(np.median(errors)),
        rotation=rotation,
        flipped=bool(flipped),
        aligned=aligned,
    )


def _cluster_center(rots: np.ndarray, tol_deg: float = 15.0) -> tuple[np.ndarray, int]:
    """Most populated rotation among ``rots`` ``(n, 3, 3)`` (within ``tol_deg``), SVD-refined.

    Up to 64 members (seeded draw) are tried as centres; returns the centre, refined as the
    nearest rotation to the mean of its neighbours, and its neighbour count.
    """
    rng = np.random.default_rng(0)
    cands = rng.choice(len(rots), size=min(len(rots), 64), replace=False)
    # angle(R_k, R_i) < tol  <=>  trace(R_k^T R_i) = <R_k, R_i> > 1 + 2 cos(tol)
    limit = 1.0 + 2.0 * np.cos(np.radians(tol_deg))
    counts = (np.einsum("kab,nab->kn", rots[cands], rots) > limit).sum(axis=1)
    best = int(np.argmax(counts))  # the first of equal counts, as in the seeded draw order
    near = np.einsum("ab,nab->n", rots[cands[best]], rots) > limit
    return project_so3(rots[near].sum(0)), int(counts[best])


def _largest_cluster_alignment(
    est: np.ndarray, tru: np.ndarray, flipped: bool
) -> tuple[np.ndarray, bool]:
    """Global alignment ``(R, flipped)`` from the largest cluster of ``A_true^T H(A_est)``.

    ``A_true,i^T H(A_est,i) = R`` for every correctly posed particle (``aligned = H(A) R^T``), so
    the most populated residual is the alignment (for a symmetric truth, one of its symmetry
    mates ``g R``, equally valid modulo the group). Unlike a median-error search it is not pulled
    between the branches of a symmetric particle.
    """
    h = FLIP @ est @ FLIP if flipped else est
    center, _ = _cluster_center(np.swapaxes(tru, -1, -2) @ h)
    return center, flipped


def _group_alignment(
    est: np.ndarray,
    tru: np.ndarray,
    ops: np.ndarray,
    start: tuple[np.ndarray, bool],
    n_refine: int = 10,
) -> tuple[np.ndarray, bool, np.ndarray]:
    """Refine a global alignment modulo the group: ``(R, flipped, errors modulo G)``.

    Each step gives every particle its nearest symmetry mate ``A_true,i g_i`` and refits
    ``R^T = proj(sum H(A_est,i)^T A_true,i g_i)`` over the better half of the particles (trimmed
    Procrustes), kept while the median error modulo ``G`` decreases.
    """
    r, flipped = np.asarray(start[0], dtype=np.float64), bool(start[1])
    h = FLIP @ est @ FLIP if flipped else est
    m = np.swapaxes(tru, -1, -2) @ h  # M_i = T_i^T H_i; error of H_i R^T vs T_i g: <M_i R^T, g>

    def errors(rr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        traces = np.einsum("nab,gab->ng", m @ rr.T, ops)
        best = traces.argmax(axis=1)
        cos = np.clip(0.5 * (traces[np.arange(len(m)), best] - 1.0), -1.0, 1.0)
        return np.degrees(np.arccos(cos)), best

    err, best = errors(r)
    for _ in range(n_refine):
        keep = err <= np.median(err)
        # H_i R^T ~ T_i g_i  =>  R^T ~ H_i^T T_i g_i = (g_i^T M_i)^T
        mates = np.swapaxes(ops[best[keep]], -1, -2) @ m[keep]
        r_new = project_so3(np.swapaxes(mates, -1, -2).sum(0)).T
        err_new, best_new = errors(r_new)
        if np.median(err_new) >= np.median(err) - 1e-12:
            break
        r, err, best = r_new, err_new, best_new
    return r, flipped, err


def symmetric_pose_errors(
    estimated: Any,
    true: Any,
    truth_map: Any | None,
    alignment: Any | None,
    min_correlation: float = 0.75,
    group: PointGroup | None = None,
) -> dict[str, Any]:
    """Rotation errors modulo the point group of the truth map (C1, Cn or Dn, pseudo included).

    A symmetric particle (HSP90 2CG9 is a C2 homodimer, a D7 complex has 14 equivalent poses)
    gives the same image at every pose ``A g`` (``g`` in the group ``G`` of the truth, acting on
    the right: :mod:`cryospin.core.evaluation.point_group`), so an ab-initio run may assign any of
    them; the plain error (:func:`rotation_error`) mixes ~0 and large errors. Procedure:

    1. ``G`` is :func:`~cryospin.core.evaluation.point_group.detect_point_group` of
       ``truth_map`` (cached per map: it depends on the truth only), or ``group`` when given;
    2. starting alignments: the map alignment ``alignment`` (anything with ``rotation`` and
       ``flipped``, e.g. ``fsc_vs_truth(...).alignment``; see :func:`apply_pose_alignment`) when
       given, and for each hand the largest cluster of the residual rotations
       ``A_true^T H(A_est)`` (a median-error search is pulled between the branches);
    3. each start is refined modulo ``G`` (nearest mate per particle, trimmed Procrustes); the one
       with the smallest median error modulo ``G`` wins, and the per-particle errors are
       ``min_g angle(A_aligned,i, A_true,i g)``
       (:func:`~cryospin.core.evaluation.point_group.pose_errors_modulo_group`).

    Args:
        estimated: ``(N, 3, 3)`` estimated poses (RELION ``A``), numpy or torch.
        true: ``(N, 3, 3)`` true poses, same order.
        truth_map: the truth ``(D, D, D)`` ``[z, y, x]``, or ``None`` (C1 unless ``group``).
        alignment: map alignment estimate -> truth, or ``None``.
        min_correlation: smallest self-correlation of the truth (cropped to 32 voxels) under
            every operator of the group.
        group: a known group (skips the detection).

    Returns:
        ``{"point_group": "C1" | "C<n>" | "D<n>", "point_group_order": |G|,
        "symmetry_deg": 360/n of the principal axis or None for C1, "symmetry_correlation":
        smallest self-correlation over the operators or None, "rotation_error_sym_median_deg",
        "rotation_error_sym_mean_deg", "rotation_error_sym_under5_frac" (share of particles under
        5 degrees modulo G), "sym_alignment": {"rotation": R (3x3 list), "flipped": bool}}``;
        ``sym_alignment`` is the global alignment estimate -> truth (pose convention of
        :func:`apply_pose_alignment`) under which the errors are measured.

    Raises:
        ValueError: shapes differ or are not ``(N, 3, 3)``.
    """
    est, tru = _rotation_pair(estimated, true)
    if group is None:
        group = (
            PointGroup.trivial()
            if truth_map is None
            else detect_point_group_cached(truth_map, min_correlation=min_correlation)
        )
    starts = [_largest_cluster_alignment(est, tru, flipped) for flipped in (False, True)]
    if alignment is not None:
        starts.insert(0, (np.asarray(alignment.rotation, dtype=np.float64), alignment.flipped))
    fits = [_group_alignment(est, tru, group.operators, s) for s in starts]
    r, flipped, err = min(fits, key=lambda f: float(np.median(f[2])))
    principal = (
        None
        if group.axis is None
        else 360.0 / (group.order // 2 if group.two_fold is not None else group.order)
    )
    return {
        "point_group": group.name,
        "point_group_order": group.order,
        "symmetry_deg": principal,
        "symmetry_correlation": group.correlation,
        "rotation_error_sym_median_deg": float(np.median(err)),
        "rotation_error_sym_mean_deg": float(np.mean(err)),
        "rotation_error_sym_under5_frac": float(np.mean(err < 5.0)),
        "sym_alignment": {"rotation": r.tolist(), "flipped": bool(flipped)},
    }
