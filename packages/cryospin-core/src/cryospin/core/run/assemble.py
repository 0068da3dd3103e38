"""Assembly step of a run: the trainers' results (per process, per half-set) -> one result.

With several processes the poses are first gathered on rank 0 (the other ranks stop here). With
half-sets the map is the mean of half 1 and half 2 aligned onto half 1, and half 2's poses are
expressed in half 1's frame (the alignment comes from the gold-standard FSC, which is therefore
computed here and reported by :mod:`cryospin.core.run.evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cryospin.core.engine import distributed
from cryospin.core.engine.results import TrainResult
from cryospin.core.run.train import Trained

if TYPE_CHECKING:
    from cryospin.core.evaluation.fsc_eval import FSCResult


@dataclass
class Assembled:
    """The run's result over every particle (rows: global indices, ``n`` particles).

    Attributes:
        results: the (gathered) trainers' results, half-set 1 first.
        volume: ``(L, L, L)`` real-space map (the half-maps' mean with half-sets).
        rotations: ``(n, 3, 3)`` poses (RELION ``A``), half 2's in half 1's frame.
        shifts_px: ``(n, 2)`` content shifts in pixels of the working box (zero when not
            estimated).
        head_usage: share of the particles won by each encoder head at the last amortized pass.
        half_maps: the gold-standard FSC of the half-maps
            (:class:`~cryospin.core.evaluation.fsc_eval.FSCResult`, ``aligned`` = half 2 in
            half 1's frame), ``None`` without half-sets.
        half_seeds: the half-sets' seeds, ``None`` without half-sets.
    """

    results: list[TrainResult]
    volume: np.ndarray
    rotations: np.ndarray
    shifts_px: np.ndarray
    head_usage: list[float]
    half_maps: FSCResult | None = None
    half_seeds: tuple[int, int] | None = None


def assemble(trained: Trained, n: int, pixel_size_A: float) -> Assembled | None:
    """Gather and merge the trainers' results of a run over ``n`` particles (``pixel_size_A`` Å).

    Returns ``None`` on ranks other than 0 of a process group (they write nothing).

    Raises:
        RuntimeError: the half-map FSC returned no alignment of half 2 onto half 1.
    """
    results = distributed.gather_results(trained.results)  # rank 0 assembles the poses once
    if results is None:
        return None
    rotations, shifts_px, winners = _merge_poses(results, n)
    heads = max(r.n_heads for r in results)
    counts = np.bincount(winners[winners >= 0], minlength=heads)
    usage = (counts / max(counts.sum(), 1)).tolist()
    asm = Assembled(results, results[0].volume.numpy(), rotations, shifts_px, usage)
    if trained.half_seeds is not None:
        _join_halves(asm, pixel_size_A)
        asm.half_seeds = trained.half_seeds
    return asm


def _merge_poses(results: list[TrainResult], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotations ``(n, 3, 3)``, shifts ``(n, 2)`` px and winning heads ``(n,)`` by global index.

    Rows no result holds: zero rotation and shift, winner -1 (every particle belongs to one).
    """
    rotations = np.zeros((n, 3, 3))
    shifts_px = np.zeros((n, 2))
    winners = np.full(n, -1)
    for r in results:
        rotations[r.indices] = r.rotations
        if r.shifts_px is not None:
            shifts_px[r.indices] = r.shifts_px
        if r.winners is not None:
            winners[r.indices] = r.winners
    return rotations, shifts_px, winners


def _join_halves(asm: Assembled, pixel_size_A: float) -> None:
    """Align half 2 onto half 1 (map and poses) and average the maps, in place.

    Half 2's rotations are re-expressed in half 1's frame, and its shifts for the map's 3D
    translation (:mod:`cryospin.core.evaluation.shift_error`).
    """
    from cryospin.core.evaluation.fsc_eval import half_map_fsc
    from cryospin.core.evaluation.pose_error import apply_pose_alignment
    from cryospin.core.evaluation.shift_error import align_shifts

    v1, v2 = asm.results[0].volume.numpy(), asm.results[1].volume.numpy()
    gs = half_map_fsc(v1, v2, pixel_size_A)
    align = gs.alignment
    if align is None:  # half_map_fsc aligns by default
        raise RuntimeError("half-map FSC returned no alignment of half 2 onto half 1")
    asm.half_maps = gs
    asm.volume = 0.5 * (v1 + gs.aligned)
    i2 = asm.results[1].indices
    asm.rotations[i2] = apply_pose_alignment(asm.rotations[i2], align.rotation, align.flipped)
    asm.shifts_px[i2] = align_shifts(
        asm.shifts_px[i2], asm.rotations[i2], align.shift_A / pixel_size_A
    )
