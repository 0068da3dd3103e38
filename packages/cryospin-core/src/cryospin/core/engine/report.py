"""Evaluation glue for per-epoch metrics and the final report.

Calls :mod:`cryospin.core.evaluation`: rotation error after the best global rotation and hand
(modulo a symmetry of the truth map), shift error after the best global translation, map
alignment, FSC. FSC curves come from :func:`cryospin.core.fsc.fsc` (unmasked). Also the run's
provenance for ``summary.json`` (:func:`run_provenance`).
"""

from __future__ import annotations

import platform
import shlex
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


def epoch_metrics(trainer: Any, idx: np.ndarray, with_map: bool = True) -> dict[str, Any]:
    """Per-epoch metrics against the truth held by ``trainer.truth`` (empty when none).

    Rotation errors after the best global rotation and hand
    (:func:`~cryospin.core.evaluation.pose_error.rotation_error`). The resolution vs truth (FSC 0.5)
    puts the map into the truth's frame with that same pose alignment when true poses are known
    (cheap: one resampling and an FFT translation search, no rotation search) - after resolving a
    symmetry of the truth (:func:`~cryospin.core.evaluation.pose_error.symmetric_pose_errors`)
    when the truth map has one - else with a full
    :func:`~cryospin.core.evaluation.align_maps.align_maps` search (only when ``with_map``).

    Shift errors ``shift_error_{median,mean}_A`` (Å): with true rotations and content shifts
    (``truth.shifts_A``) and only when the run estimates shifts (``trainer.cfg.shifts``; without it
    the estimates are all zero and the number would only measure the true shifts), the trainer's
    current shifts (``trainer.shift`` in pixels: the encoder's winning shifts in the amortized
    stage, the pose table's in the direct stage) times the pixel size, compared by
    :func:`~cryospin.core.evaluation.shift_error.shift_error` (best global translation) under the
    pose alignment above.

    Args:
        trainer: a :class:`~cryospin.core.engine.trainer.Trainer` or a view with its attributes
            ``truth``, ``rot`` ``(N, 3, 3)``, ``shift`` ``(N, 2)`` (pixels), ``cfg``,
            ``decoder`` and ``data.pixel_size_A`` (rows: global indices).
        idx: global indices of the particles to evaluate.
        with_map: compute the resolution vs the truth map even without true poses.

    Returns:
        A JSON-friendly dictionary (empty without a truth).
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
        if truth.shifts_A is not None and trainer.cfg.shifts:
            est_A = trainer.shift[idx].numpy().astype(np.float64) * trainer.data.pixel_size_A
            aligned = apply_pose_alignment(est, align[0], align[1])
            sh = shift_error(est_A, truth.shifts_A[idx], aligned)
            out["shift_error_median_A"] = sh.median
            out["shift_error_mean_A"] = sh.mean
    if truth.volume is not None and (with_map or align is not None):
        with torch.no_grad():
            vol = trainer.decoder.to_map().detach().float().cpu().numpy()
        apix = trainer.data.pixel_size_A
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


def truth_pose_metrics(
    rotations: np.ndarray,
    shifts_A: np.ndarray | None,
    true_rotations: np.ndarray,
    true_shifts_A: np.ndarray | None,
    truth_map: np.ndarray | None,
    alignment: Any | None,
) -> dict[str, Any]:
    """Summary numbers of the final poses against true poses (and shifts, when known).

    * ``rotation_error_{median,mean}_deg`` and friends: :func:`rotation_error` (best global
      rotation and hand);
    * ``rotation_error_sym_*`` and ``symmetry_*``: :func:`symmetric_pose_errors` with the map
      alignment ``alignment`` (rotation and hand of ``fsc_vs_truth(...).alignment``, or ``None``);
    * with ``true_shifts_A``: ``shift_error_{median,mean}_A`` and ``global_shift_A``
      (:func:`~cryospin.core.evaluation.shift_error.shift_error`): the estimated shifts
      re-expressed in the truth's frame, ``s_i - (A'_i t)_xy``, for the best global translation
      ``t``, with ``A'_i`` the estimated poses under the symmetry-aware global alignment.

    Args:
        rotations: ``(N, 3, 3)`` estimated poses (RELION ``A``).
        shifts_A: ``(N, 2)`` estimated content shifts in Å (``-origin``), ``None`` for zeros.
        true_rotations: ``(N, 3, 3)`` true poses.
        true_shifts_A: ``(N, 2)`` true content shifts in Å (``-rlnOriginX/YAngst``) or ``None``.
        truth_map: the truth map (enables the symmetry check) or ``None``.
        alignment: map alignment estimate -> truth, or ``None``.

    Returns:
        A JSON-friendly dictionary (``sym_alignment`` included).
    """
    res = rotation_error(rotations, true_rotations)
    out: dict[str, Any] = res.summary()
    sym = symmetric_pose_errors(rotations, true_rotations, truth_map, alignment)
    out.update(sym)
    if true_shifts_A is not None:
        a = sym["sym_alignment"]
        aligned = apply_pose_alignment(rotations, np.asarray(a["rotation"]), a["flipped"])
        est = np.zeros((len(rotations), 2)) if shifts_A is None else shifts_A
        out.update(shift_error(est, true_shifts_A, aligned).summary("A"))
    return out


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
