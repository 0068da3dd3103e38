"""Evaluation glue for per-epoch metrics (:func:`make_epoch_evaluator`) and the final report.

Calls :mod:`cryospin.core.evaluation`: rotation error after the best global rotation and hand
(modulo a symmetry of the truth map), shift error after the best global translation, map
alignment, FSC. FSC curves come from :func:`cryospin.core.fsc.fsc` (unmasked). Also the run's
provenance for ``summary.json`` (:func:`run_provenance`).
"""

from __future__ import annotations

import functools
import platform
import shlex
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryospin.core.engine.results import EpochEvaluator, EpochState, Truth
from cryospin.core.evaluation.align_maps import align_maps
from cryospin.core.evaluation.fsc_eval import fsc_curves
from cryospin.core.evaluation.map_ops import rotate_map, translation_search
from cryospin.core.evaluation.pose_error import (
    apply_pose_alignment,
    rotation_error,
    symmetric_pose_errors,
)
from cryospin.core.evaluation.shift_error import shift_error
from cryospin.core.fsc import resolution_at_threshold


def truth_pose_metrics(
    rotations: np.ndarray,
    shifts_A: np.ndarray | None,
    true_rotations: np.ndarray,
    true_shifts_A: np.ndarray | None,
    truth_map: np.ndarray | None,
    alignment: Any | None,
    symmetric: bool = True,
) -> dict[str, Any]:
    """Numbers of estimated poses against true poses (and shifts, when known).

    The one chain of the final summary and of the per-epoch metrics (:func:`epoch_metrics`):

    * ``rotation_error_{median,mean}_deg`` and friends: :func:`rotation_error` (best global
      rotation and hand);
    * with ``symmetric``: ``rotation_error_sym_*``, ``symmetry_*``, ``point_group*`` and
      ``sym_alignment``: :func:`symmetric_pose_errors` with the map alignment ``alignment``
      (rotation and hand of ``fsc_vs_truth(...).alignment``, or ``None``);
    * with ``true_shifts_A``: ``shift_error_{median,mean}_A`` and ``global_shift_A``
      (:func:`~cryospin.core.evaluation.shift_error.shift_error`): the estimated shifts
      re-expressed in the truth's frame, ``s_i - (A'_i t)_xy``, for the best global translation
      ``t``, with ``A'_i`` the estimated poses under the global pose alignment (the symmetric
      one with ``symmetric``, else :func:`rotation_error`'s).

    Args:
        rotations: ``(N, 3, 3)`` estimated poses (RELION ``A``).
        shifts_A: ``(N, 2)`` estimated content shifts in Å (``-origin``), ``None`` for zeros.
        true_rotations: ``(N, 3, 3)`` true poses.
        true_shifts_A: ``(N, 2)`` true content shifts in Å (``-rlnOriginX/YAngst``) or ``None``.
        truth_map: the truth map (enables the symmetry check) or ``None``.
        alignment: map alignment estimate -> truth, or ``None``.
        symmetric: also measure errors modulo the truth map's point group.

    Returns:
        A JSON-friendly dictionary.
    """
    res = rotation_error(rotations, true_rotations)
    out: dict[str, Any] = res.summary()
    align = (res.rotation, res.flipped)
    if symmetric:
        sym = symmetric_pose_errors(rotations, true_rotations, truth_map, alignment)
        out.update(sym)
        a = sym["sym_alignment"]
        align = (np.asarray(a["rotation"]), a["flipped"])
    if true_shifts_A is not None:
        aligned = apply_pose_alignment(rotations, align[0], align[1])
        est = np.zeros((len(rotations), 2)) if shifts_A is None else shifts_A
        out.update(shift_error(est, true_shifts_A, aligned).summary("A"))
    return out


#: keys of :func:`truth_pose_metrics` that the per-epoch records leave out
_FINAL_ONLY = (
    "viewdir_error_mean_deg",
    "viewdir_error_median_deg",
    "flipped",
    "global_rotation",
    "sym_alignment",
    "global_shift_A",
)


def epoch_metrics(state: EpochState, truth: Truth) -> dict[str, Any]:
    """Per-epoch metrics of ``state`` (poses and map at the end of an epoch) against ``truth``.

    Rotation errors after the best global rotation and hand, modulo the point group of the truth
    map when there is one (:func:`truth_pose_metrics`, on the rows ``state.indices`` of the
    truth). The resolution vs truth (FSC 0.5) puts the map into the truth's frame with that same
    pose alignment when true poses are known (cheap: one resampling and an FFT translation
    search, no rotation search), else with a full
    :func:`~cryospin.core.evaluation.align_maps.align_maps` search (only when
    ``state.with_map``).

    Shift errors ``shift_error_{median,mean}_A`` (Å): with true content shifts
    (``truth.shifts_A``) and only when the run estimates shifts (``state.shifts_px`` given;
    without it the estimates are all zero and the number would only measure the true shifts):
    the current shifts (the encoder's winning shifts in the amortized stage, the pose table's in
    the direct stage) times the pixel size, under the pose alignment above.

    Returns:
        A JSON-friendly dictionary (empty without a truth).
    """
    out: dict[str, Any] = {}
    align = None
    idx = state.indices
    if truth.rotations is not None:
        est_A = None if state.shifts_px is None else state.shifts_px * state.pixel_size_A
        true_A = None if est_A is None or truth.shifts_A is None else truth.shifts_A[idx]
        full = truth_pose_metrics(
            state.rotations,
            est_A,
            truth.rotations[idx],
            true_A,
            truth.volume,
            None,
            symmetric=truth.volume is not None,
        )
        a = full.get("sym_alignment") or {
            "rotation": full["global_rotation"],
            "flipped": full["flipped"],
        }
        align = (np.asarray(a["rotation"]), a["flipped"])
        out["rotation_error_median_deg"] = full.pop("rotation_error_median_deg")
        out["rotation_error_mean_deg"] = full.pop("rotation_error_mean_deg")
        out.update({k: v for k, v in full.items() if k not in _FINAL_ONLY})
    if truth.volume is not None and (state.with_map or align is not None):
        vol = state.volume().numpy()
        apix = state.pixel_size_A
        if align is not None:
            # the poses fix rotation and hand; the map may still sit off-centre (shifts)
            rotated = rotate_map(vol, align[0], flip=align[1])
            t = translation_search(truth.volume, rotated)
            aligned = rotate_map(vol, align[0], t, flip=align[1])
        else:
            aligned, _ = align_maps(np.asarray(truth.volume), vol, apix)
        _, curve = fsc_curves(aligned, truth.volume, apix)
        out["resolution_vs_truth_A"] = resolution_at_threshold(
            torch.as_tensor(curve), vol.shape[-1], apix, 0.5
        )
    return out


def make_epoch_evaluator(truth: Truth) -> EpochEvaluator | None:
    """Return the per-epoch evaluation against ``truth`` (``None`` when nothing is known)."""
    if truth.rotations is None and truth.volume is None:
        return None
    return functools.partial(epoch_metrics, truth=truth)


def command_line() -> str:
    """Return the process's arguments shell-quoted, the program by file name (``cryospin run``)."""
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []
    return shlex.join(argv)


def run_provenance(started_at: datetime) -> dict[str, Any]:
    """Provenance fields of ``summary.json``: versions, command line, start time.

    * ``cryospin_version`` (:data:`cryospin.core.__version__`) and ``package_versions``: every
      installed distribution whose name starts with ``cryospin`` (plugins included), by name;
    * ``torch_version``, ``numpy_version``, ``python_version``;
    * ``command_line``: :func:`command_line`;
    * ``started_at``: ``started_at`` in ISO 8601 with its UTC offset (pass an aware datetime).
    """
    from cryospin.core import __version__

    packages = {
        dist.metadata["Name"]: dist.version
        for dist in metadata.distributions()
        if (dist.metadata["Name"] or "").lower().startswith("cryospin")
    }
    return {
        "cryospin_version": __version__,
        "package_versions": dict(sorted(packages.items())),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "command_line": command_line(),
        "started_at": started_at.isoformat(timespec="seconds"),
    }
