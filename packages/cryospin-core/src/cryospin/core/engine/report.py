"""Evaluation glue for per-epoch metrics and the final report.

Calls :mod:`cryospin.core.evaluation` (rotation error after global alignment and hand, map
alignment, FSC).

FSC curves come from :func:`cryospin.core.fsc.fsc` (unmasked).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cryospin.core.evaluation.align_maps import align_maps
from cryospin.core.evaluation.fsc_eval import fsc_curves
from cryospin.core.evaluation.pose_error import rotation_error
from cryospin.core.fsc import resolution_at_threshold


def epoch_metrics(trainer: Any, idx: np.ndarray, with_map: bool = True) -> dict[str, Any]:
    """Per-epoch metrics against the truth held by ``trainer.truth`` (empty when none).

    Rotation errors after the best global rotation and hand
    (:func:`~cryospin.core.evaluation.pose_error.rotation_error`). The resolution vs truth (FSC 0.5)
    puts the map into the truth's frame with that same pose alignment when true poses are known
    (cheap: one resampling, no search) - after resolving a symmetry of the truth
    (:func:`symmetric_pose_errors`) when the truth map has one - else with a full
    :func:`~cryospin.core.evaluation.align_maps.align_maps` search (only when ``with_map``).
    """
    out: dict[str, Any] = {}
    truth = trainer.truth
    align = None
    if truth.rotations is not None:
        est = trainer.rot[idx].numpy().astype(np.float64)
        res = rotation_error(est, truth.rotations[idx])
        out["rotation_error_median_deg"] = res.median_deg
        out["rotation_error_mean_deg"] = res.mean_deg
        align = (res.rotation, res.flipped)
        if truth.volume is not None:
            sym = symmetric_pose_errors(est, truth.rotations[idx], truth.volume, None)
            a = sym.pop("sym_alignment")
            out.update(sym)
            align = (np.asarray(a["rotation"]), a["flipped"])
    if truth.volume is not None and (with_map or align is not None):
        with torch.no_grad():
            vol = trainer.decoder.to_map().detach().float().cpu().numpy()
        apix = trainer.data.pixel_size_A
        if align is not None:
            from cryospin.core.evaluation.map_ops import rotate_map

            aligned = rotate_map(vol, align[0], flip=align[1])
        else:
            aligned, _ = align_maps(np.asarray(truth.volume), vol, apix)
        _, curve = fsc_curves(aligned, truth.volume, apix)
        out["resolution_vs_truth_A"] = resolution_at_threshold(
            torch.as_tensor(curve), vol.shape[-1], apix, 0.5
        )
    return out


def _cluster_center(rots: np.ndarray, tol_deg: float = 15.0) -> tuple[np.ndarray, int]:
    """Most populated rotation among ``rots`` (within ``tol_deg``), refined by SVD; its count."""
    from cryospin.core.evaluation.pose_error import geodesic_deg

    rng = np.random.default_rng(0)
    best, center = -1, rots[0]
    for k in rng.choice(len(rots), size=min(len(rots), 64), replace=False):
        count = int((geodesic_deg(rots, np.broadcast_to(rots[k], rots.shape)) < tol_deg).sum())
        if count > best:
            best, center = count, rots[k]
    near = geodesic_deg(rots, np.broadcast_to(center, rots.shape)) < tol_deg
    u, _, vt = np.linalg.svd(rots[near].sum(0))
    return u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt, best


def _largest_cluster_alignment(est: np.ndarray, tru: np.ndarray) -> tuple[np.ndarray, bool]:
    """Global alignment ``(R, flipped)`` from the largest cluster of ``A_true^T H(A_est)``.

    Unlike a median-error search it is not pulled between the branches of a symmetric particle.
    """
    from cryospin.core.evaluation.pose_error import FLIP

    best: tuple[int, np.ndarray, bool] | None = None
    for flipped in (False, True):
        h = FLIP @ est @ FLIP if flipped else est
        center, count = _cluster_center(np.swapaxes(tru, -1, -2) @ h)
        if best is None or count > best[0]:
            best = (count, center, flipped)
    assert best is not None
    return best[1], best[2]


def symmetric_pose_errors(
    estimated: np.ndarray,
    true: np.ndarray,
    truth_map: np.ndarray | None,
    alignment: Any | None,
    min_share: float = 0.1,
    min_correlation: float = 0.9,
) -> dict[str, Any]:
    """Rotation errors modulo a symmetry of the truth, when the truth map has one.

    A symmetric particle (HSP90 2CG9 is a C2 homodimer) has two or more poses that give the same
    image, so an ab-initio run may assign either to each particle; the plain error after the best
    global rotation then mixes ~0 and ~180 degree errors. Procedure:

    1. put the estimates in the truth's frame with the map alignment ``alignment`` (from
       :func:`~cryospin.core.evaluation.fsc_eval.fsc_vs_truth`; its rotation and hand), else with
       the largest cluster of the residual rotations ``A_true^T H(A_est)`` over both hands (a
       median-error search is pulled between the branches of a symmetric particle);
    2. the residual rotations ``E_i = A_true,i^T A_est,i``: if at least ``min_share`` of them are
       more than 90 degrees from the identity, the most populated such rotation (within 15 degrees)
       is a candidate symmetry ``S``;
    3. ``S`` is accepted only if the **truth map** is invariant under it (real-space correlation of
       the truth and the truth rotated by ``S`` at least ``min_correlation``); each particle then
       takes the nearer of ``E_i`` and ``E_i S^T``, and the global rotation is searched again
       (:func:`pose_errors`).

    Returns ``{"symmetry_deg": angle of S or None, "symmetry_correlation": ...,
    "rotation_error_sym_median_deg": ..., "rotation_error_sym_mean_deg": ...}`` (the last two
    equal the plain errors when no symmetry is accepted).
    """
    from cryospin.core.evaluation.map_ops import real_space_correlation, rotate_map
    from cryospin.core.evaluation.pose_error import apply_pose_alignment, geodesic_deg

    est = np.asarray(estimated, dtype=np.float64)
    tru = np.asarray(true, dtype=np.float64)
    if alignment is not None:
        r1, f1 = np.asarray(alignment.rotation, dtype=np.float64), bool(alignment.flipped)
    else:
        r1, f1 = _largest_cluster_alignment(est, tru)
    aligned = apply_pose_alignment(est, r1, f1)
    resid = np.swapaxes(tru, -1, -2) @ aligned
    far = np.flatnonzero(
        np.degrees(np.arccos(np.clip((np.trace(resid, axis1=1, axis2=2) - 1) / 2, -1, 1))) > 90
    )
    out: dict[str, Any] = {"symmetry_deg": None, "symmetry_correlation": None}
    fixed = aligned
    if truth_map is not None and len(far) >= min_share * len(est):
        rng = np.random.default_rng(0)
        best, s_rot = -1, None
        for k in rng.choice(far, size=min(len(far), 64), replace=False):
            count = int(
                (geodesic_deg(resid[far], np.broadcast_to(resid[k], resid[far].shape)) < 15).sum()
            )
            if count > best:
                best, s_rot = count, resid[k]
        u, _, vt = np.linalg.svd(
            resid[far][geodesic_deg(resid[far], np.broadcast_to(s_rot, resid[far].shape)) < 15].sum(
                0
            )
        )
        s_rot = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
        corr = real_space_correlation(truth_map, rotate_map(truth_map, s_rot))
        out["symmetry_correlation"] = float(corr)
        if corr >= min_correlation:
            out["symmetry_deg"] = float(
                np.degrees(np.arccos(np.clip((np.trace(s_rot) - 1) / 2, -1, 1)))
            )
            other = aligned @ s_rot.T
            d0 = geodesic_deg(tru, aligned)
            d1 = geodesic_deg(tru, other)
            fixed = np.where((d1 < d0)[:, None, None], other, aligned)
    res = rotation_error(fixed, tru)
    out["rotation_error_sym_median_deg"] = res.median_deg
    out["rotation_error_sym_mean_deg"] = res.mean_deg
    # compose the two alignments: H2(H1(A) R1^T) R2^T = H(A) R^T (module pose_error conventions)
    flip = np.diag([1.0, 1.0, -1.0])
    total = res.rotation @ (flip @ r1 @ flip if res.flipped else r1)
    out["sym_alignment"] = {"rotation": total.tolist(), "flipped": bool(f1 != res.flipped)}
    return out
