"""What the trainers take and hand back: the ground truth and a finished trainer's result."""

from __future__ import annotations

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
