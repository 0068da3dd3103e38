"""Evaluation glue for per-epoch metrics and the final report.

Calls :mod:`cryospin.core.evaluation` (rotation error after global alignment and hand, map
alignment, FSC).

FSC curves come from :func:`cryospin.core.fsc.fsc` (unmasked).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def fsc_curve(a: Any, b: Any, pixel_size_A: float) -> tuple[np.ndarray, np.ndarray]:
    """``(spatial frequency in 1/Å, FSC)`` of two maps (:func:`fsc_eval.fsc_curves`)."""
    from cryospin.core.evaluation.fsc_eval import fsc_curves

    return fsc_curves(a, b, pixel_size_A)


def resolution_at(freq: np.ndarray, curve: np.ndarray, threshold: float) -> float:
    """Resolution in Å where the FSC first falls below ``threshold`` (:mod:`cryospin.core.fsc`)."""
    from cryospin.core.fsc import resolution_at_threshold

    box = 2 * (len(curve) - 1)
    apix = 1.0 / (box * freq[1]) if len(freq) > 1 and freq[1] > 0 else 1.0
    return resolution_at_threshold(torch.as_tensor(curve), box, apix, threshold)


def align_to_truth(volume: Any, truth: Any, pixel_size_A: float) -> tuple[np.ndarray, Any]:
    """Align ``volume`` onto ``truth`` (global rotation and hand): ``(aligned map, info)``."""
    from cryospin.core.evaluation.align_maps import align_maps

    return align_maps(np.asarray(truth), np.asarray(volume), pixel_size_A)


def pose_errors(estimated: np.ndarray, true: np.ndarray) -> Any:
    """:func:`cryospin.core.evaluation.pose_error.rotation_error` result."""
    from cryospin.core.evaluation.pose_error import rotation_error

    return rotation_error(estimated, true)


def epoch_metrics(trainer: Any, idx: np.ndarray, with_map: bool = True) -> dict[str, Any]:
    """Per-epoch metrics against the truth held by ``trainer.truth`` (empty when none).

    Rotation errors after the best global rotation and hand
    (:func:`~cryospin.core.evaluation.pose_error.rotation_error`). The resolution vs truth (FSC 0.5)
    puts the map into the truth's frame with that same pose alignment when true poses are known
    (cheap: one resampling, no search), else with a full
    :func:`~cryospin.core.evaluation.align_maps.align_maps` search (only when ``with_map``).
    """
    out: dict[str, Any] = {}
    truth = trainer.truth
    res = None
    if truth.rotations is not None:
        res = pose_errors(trainer.rot[idx].numpy().astype(np.float64), truth.rotations[idx])
        out["rotation_error_median_deg"] = res.median_deg
        out["rotation_error_mean_deg"] = res.mean_deg
    if truth.volume is not None and (with_map or res is not None):
        with torch.no_grad():
            vol = trainer.decoder.to_map().detach().float().cpu().numpy()
        apix = trainer.data.pixel_size_A
        if res is not None:
            from cryospin.core.evaluation.align_maps import rotate_map

            aligned = rotate_map(vol, res.rotation, flip=res.flipped)
        else:
            aligned, _ = align_to_truth(vol, truth.volume, apix)
        freq, curve = fsc_curve(aligned, truth.volume, apix)
        out["resolution_vs_truth_A"] = resolution_at(freq, curve, 0.5)
    return out
