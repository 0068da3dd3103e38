"""Evaluation step of a run: the final FSC curves and numbers, pose errors against the truth.

Without a truth and without half-sets nothing is measured (the curves and numbers are empty).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryospin.core.engine import report
from cryospin.core.run.assemble import Assembled
from cryospin.core.run.context import RunInputs


@dataclass
class Evaluation:
    """What the final evaluation found.

    Attributes:
        curves: ``{label: (frequency_per_A, fsc, threshold)}`` for ``fsc.png``.
        fsc_columns: ``{column: (L // 2 + 1,) fsc}`` for ``fsc.csv`` (vs-truth curves first).
        summary: ``summary.json`` fields, in the file's order: the half-maps' FSC
            (``gold_standard_resolution_A``..., ``half_seeds``), the FSC vs the truth map
            (``resolution_vs_truth_A``...), the pose errors (``rotation_error_*``...).
    """

    curves: dict[str, tuple[np.ndarray, np.ndarray, float]] = field(default_factory=dict)
    fsc_columns: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def evaluate(asm: Assembled, run: RunInputs) -> Evaluation:
    """Measure the assembled result: half-map FSC, FSC vs ``run.truth.volume``, pose errors.

    Rotation errors (also modulo a symmetry of the truth map, e.g. HSP90's C2) when the particle
    file has true poses; shift errors too when the run estimates shifts and the file has them
    (without ``--shifts`` every estimate is 0 and the "error" would only restate the true shifts).
    """
    ev = Evaluation()
    gs = asm.half_maps
    if gs is not None:
        ev.curves.update(gs.curves())
        ev.fsc_columns.update({"fsc_half_maps": gs.fsc, "fsc_half_maps_masked": gs.fsc_masked})
        ev.summary.update(gs.summary())
        ev.summary["gold_standard_resolution_A"] = gs.resolution_A
        ev.summary["half_seeds"] = list(asm.half_seeds or ())
    truth, alignment = run.truth, None
    if truth.volume is not None:
        from cryospin.core.evaluation.fsc_eval import fsc_vs_truth

        vt = fsc_vs_truth(asm.volume, truth.volume, run.pixel_size_A)
        ev.curves.update(vt.curves())
        ev.fsc_columns = {
            "fsc_vs_truth": vt.fsc,
            "fsc_vs_truth_masked": vt.fsc_masked,
            **ev.fsc_columns,
        }
        ev.summary.update(vt.summary())
        ev.summary["resolution_vs_truth_A"] = vt.resolution_A
        alignment = vt.alignment
    if truth.rotations is not None:
        true_shifts = truth.shifts_A if run.cfg.shifts else None
        ev.summary.update(
            report.truth_pose_metrics(
                asm.rotations,
                asm.shifts_px * run.pixel_size_A,
                truth.rotations,
                true_shifts,
                truth.volume,
                alignment,
            )
        )
    return ev
