"""What the trainer takes and hands back: the truth, the per-epoch evaluation, the result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Truth:
    """Ground truth for evaluation; each field ``None`` when unknown. Rows are global indices.

    Attributes:
        volume: the truth map ``(L, L, L)`` ``[z, y, x]`` at the working box and pixel size.
        rotations: ``(N, 3, 3)`` true poses (RELION ``A``).
        shifts_A: ``(N, 2)`` true **content** shifts ``(x, y)`` in Å, i.e. minus RELION's
            ``rlnOriginX/YAngst`` (:mod:`cryospin.core.evaluation.shift_error`).
    """

    volume: np.ndarray | None = None
    rotations: np.ndarray | None = None
    shifts_A: np.ndarray | None = None


@dataclass
class TrainResult:
    """What a finished trainer hands back."""

    volume: torch.Tensor  # (L, L, L) real space
    indices: np.ndarray  # global particle indices
    rotations: np.ndarray  # (n, 3, 3)
    shifts_px: np.ndarray | None  # (n, 2) content translation in pixels
    winners: np.ndarray | None  # (n,) winning head at the last amortized pass, -1 if none
    stage_stats: dict[str, dict[str, float | None]] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    n_heads: int = 1
    switch_epoch: int | None = None
    epochs: int | None = None  # the resolved schedule's total (engine.schedule)
    global_batch: int | None = None  # particles per step over every process (summary.json)


@dataclass(frozen=True)
class EpochState:
    """What the per-epoch evaluation sees at the end of an epoch: arrays, never the trainer.

    Attributes:
        epoch: the finished epoch (0-based).
        indices: ``(n,)`` int64 global indices of the particles evaluated (in one process all of
            them; with several processes those gathered for evaluation).
        rotations: ``(n, 3, 3)`` float64 current poses (RELION ``A``) of those particles.
        shifts_px: ``(n, 2)`` float64 current content shifts in pixels of the working box, or
            ``None`` when the run does not estimate shifts.
        pixel_size_A: pixel size of the working box (Å).
        volume: returns the current map ``(L, L, L)`` (real space, ``[z, y, x]``, float32, CPU);
            called only by an evaluation that needs it (it costs an inverse 3D FFT).
        with_map: the schedule asks for map metrics this epoch (``eval_every``).
    """

    epoch: int
    indices: np.ndarray
    rotations: np.ndarray
    shifts_px: np.ndarray | None
    pixel_size_A: float
    volume: Callable[[], torch.Tensor]
    with_map: bool


#: The per-epoch evaluation: an :class:`EpochState` in, JSON-friendly metrics out (merged into
#: the epoch's ``metrics.jsonl`` record; ``{}`` without a truth).
EpochEvaluator = Callable[[EpochState], dict[str, Any]]
